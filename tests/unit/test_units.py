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
