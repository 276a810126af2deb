"""The daemon's unit text, its install into a directory, and sd_notify."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from wg_pod_hook import cli, units
from wg_pod_hook.errors import SetupError
from wg_pod_hook.runtime import Runtime


def test_the_unit_runs_the_given_wg_pod_and_keeps_its_children() -> None:
    text = units.service("/opt/wg-pod/bin/wg-pod")
    lines = text.splitlines()
    assert "ExecStart=/opt/wg-pod/bin/wg-pod daemon" in lines
    assert "Type=notify" in lines and "KillMode=process" in lines
    assert "WantedBy=multi-user.target" in lines


def test_install_and_uninstall_in_a_directory(tmp_path: Path) -> None:
    written = units.install(tmp_path / "units", "/usr/bin/wg-pod")
    assert written == tmp_path / "units" / units.NAME
    assert written.read_text() == units.service("/usr/bin/wg-pod")
    assert units.uninstall(tmp_path / "units") == written
    assert not written.exists()
    assert units.uninstall(tmp_path / "units") is None


def test_a_rootless_users_unit_is_wanted_by_their_default_target(tmp_path: Path) -> None:
    """Written where asked; their user manager is asked to start it only
    when it runs and the directory is theirs."""
    written = units.install(tmp_path / "units", "/usr/bin/wg-pod", user=tmp_path / "theirs")
    lines = written.read_text().splitlines()
    assert "WantedBy=default.target" in lines and "ExecStart=/usr/bin/wg-pod daemon" in lines
    assert units.uninstall(tmp_path / "units", user=tmp_path / "theirs") == written
    assert units.user_dir("/home/alice") == Path("/home/alice/.config/systemd/user")


def test_install_wants_an_absolute_path(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="must be absolute"):
        units.install(tmp_path, "wg-pod")
    assert not (tmp_path / units.NAME).exists()


def test_ready_tells_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        units.ready()
        assert listener.recv(64) == b"READY=1"


class Sockets:
    """Stands in for the socket module in units: counts the sockets opened
    and records what is sent, to whom."""

    AF_UNIX, SOCK_DGRAM, SOCK_CLOEXEC = socket.AF_UNIX, socket.SOCK_DGRAM, socket.SOCK_CLOEXEC

    def __init__(self) -> None:
        self.opened = 0
        self.sent: list[tuple[bytes, str]] = []

    def socket(self, *args: object) -> Sockets:
        self.opened += 1
        return self

    def __enter__(self) -> Sockets:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def sendto(self, data: bytes, address: str) -> None:
        self.sent.append((data, address))


@pytest.mark.parametrize("value", [None, ""])
def test_ready_without_systemd_does_nothing(
    value: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No NOTIFY_SOCKET (or an empty one, which sd_notify ignores too): no
    socket opened, nothing sent to a guessed address, nothing logged, nothing
    raised, and the environment as it was."""
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    sockets = Sockets()
    monkeypatch.setattr(units, "socket", sockets)
    environment = dict(os.environ)
    caplog.set_level(logging.INFO)
    units.ready()
    assert (sockets.opened, sockets.sent) == (0, [])
    assert caplog.records == []
    assert dict(os.environ) == environment

    # The control: with a socket named, the stand-in sees the datagram.
    monkeypatch.setenv("NOTIFY_SOCKET", "@wg-pod-test")
    units.ready()
    assert (sockets.opened, sockets.sent) == (1, [(b"READY=1", "\0wg-pod-test")])


def test_the_module_prints_the_unit_for_the_makefile(capsys: pytest.CaptureFixture[str]) -> None:
    assert units.main(["/usr/bin/wg-pod"]) == 0
    assert capsys.readouterr().out == units.service("/usr/bin/wg-pod")
    assert units.main(["wg-pod"]) == 2


def test_install_user_is_for_a_rootless_user_only(tmp_path: Path) -> None:
    """Root's daemon is ``install --daemon``; ``--user`` names it."""
    args = cli.parser().parse_args(["install", "--user", "--daemon"])
    with pytest.raises(SystemExit, match=r"--user: .* \(root's: wg-pod install --daemon\)"):
        args.func(args, Runtime(str(tmp_path), root=True))
    assert list(tmp_path.iterdir()) == []


def test_a_settings_file_goes_into_the_daemons_environment(tmp_path: Path) -> None:
    """``install --settings FILE --daemon``: the daemon reads FILE, as the
    hooks do; without one the unit sets no environment."""
    text = units.service("/usr/bin/wg-pod", settings="/etc/wg-pod/site.yaml")
    assert text == (
        "[Unit]\n"
        "Description=wg-pod daemon: keeps containers' WireGuard tunnels up\n"
        "Documentation=man:wg-pod(8)\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "Environment=WG_POD_SETTINGS=/etc/wg-pod/site.yaml\n"
        "ExecStart=/usr/bin/wg-pod daemon\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "KillMode=process\n"
        "SyslogIdentifier=wg-pod\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    assert not any(line.startswith("Environment") for line in units.service("/x").splitlines())
    written = units.install(tmp_path, "/usr/bin/wg-pod", settings="/etc/wg-pod/site.yaml")
    assert written.read_text() == text


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("/etc/wg pod/s.yaml", 'Environment="WG_POD_SETTINGS=/etc/wg pod/s.yaml"'),
        ("/etc/100%/s.yaml", "Environment=WG_POD_SETTINGS=/etc/100%%/s.yaml"),
        ('/etc/a"b\\c.yaml', 'Environment="WG_POD_SETTINGS=/etc/a\\"b\\\\c.yaml"'),
    ],
)
def test_the_settings_path_is_quoted_for_systemd(path: str, line: str) -> None:
    """Blanks, quotes and backslashes quoted (C escapes), ``%`` doubled
    (a specifier otherwise): systemd hands the daemon the path as given."""
    assert line in units.service("/usr/bin/wg-pod", settings=path).splitlines()


def test_a_settings_path_must_be_absolute_and_for_roots_daemon(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="must be absolute"):
        units.install(tmp_path, "/usr/bin/wg-pod", settings="site.yaml")
    with pytest.raises(SetupError, match="line break"):
        units.install(tmp_path, "/usr/bin/wg-pod", settings="/etc/a\nExecStartPre=/bin/x")
    with pytest.raises(SetupError, match=r"rootless user's daemon reads ~/.config"):
        units.install(tmp_path, "/usr/bin/wg-pod", user=tmp_path, settings="/etc/s.yaml")
    assert not (tmp_path / units.NAME).exists()


def test_install_settings_daemon_gives_the_hooks_and_the_daemon_one_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wg-pod install --settings FILE --daemon``: the daemon reads the file
    the hooks read (its unit says so), named absolutely for both."""
    monkeypatch.chdir(tmp_path)
    hooks, systemd = tmp_path / "hooks.d", tmp_path / "systemd"
    argv = ["install", "--hooks-dir", str(hooks), "--systemd-dir", str(systemd)]
    assert cli.main([*argv, "--settings", "my.yaml", "--daemon"]) == 0
    wanted = str(tmp_path / "my.yaml")
    unit = (systemd / units.NAME).read_text().splitlines()
    assert f"Environment=WG_POD_SETTINGS={wanted}" in unit
    definitions = sorted(hooks.glob("*.json"))
    assert len(definitions) == 2, definitions
    for definition in definitions:
        assert f"WG_POD_SETTINGS={wanted}" in definition.read_text()
