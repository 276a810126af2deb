"""The command says what it knows and no more (issue 27): state it cannot
read is not "no tunnels", a record without a backend is not "None
backend", a podman socket that is not there says how to start it, a failed
wireguard-go start quotes wireguard-go, ``check`` ends with its verdict and
the backend it would use here, ``--debug`` goes after the subcommand too,
``health`` and ``check`` speak JSON, and ``--help`` names the annotation."""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.lab import the_runtime
from tests.unit.test_check import KEY_A, KEY_B, KEY_C, allowed_dir, needs_root, write
from wg_pod_hook import cli, podman
from wg_pod_hook.errors import BackendUnavailable
from wg_pod_hook.kernel import backends
from wg_pod_hook.kernel.backends import Probe, kernel, userspace
from wg_pod_hook.kernel.backends.userspace import UserspaceBackend, last_lines
from wg_pod_hook.runtime import Runtime
from wg_pod_hook.state import records
from wg_pod_hook.state.records import NetnsId, TunnelRecord
from wg_pod_hook.tunnel import status

__all__ = ["allowed_dir"]  # a fixture, used by name

REAL_NAMES = podman.names
WHO = "needs root, or run as the rootless podman user whose tunnels these are"


def main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# 1. State it cannot read


def denied(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """``directory`` answers as /run/wg-pod does to an ordinary user (root
    reads any directory, so chmod cannot show it)."""
    listdir, scandir = os.listdir, os.scandir

    def refuse(path: str | os.PathLike[str] = ".") -> None:
        if Path(path) == directory:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    def listing(path: str | os.PathLike[str] = ".") -> list[str]:
        refuse(path)
        return listdir(path)

    def scanning(path: str | os.PathLike[str] = ".") -> os.ScandirIterator[str]:
        refuse(path)
        return scandir(path)

    monkeypatch.setattr(os, "listdir", listing)
    monkeypatch.setattr(os, "scandir", scanning)


@pytest.fixture(autouse=True)
def _no_podman(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podman, "names", lambda url=None: {})


def test_status_of_state_it_cannot_read_is_an_error_not_no_tunnels(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir.mkdir()
    assert main(capsys, "status") == (0, "no tunnels\n", "")
    denied(monkeypatch, state_dir)
    message = f"cannot read wg-pod's state {state_dir}: Permission denied ({WHO})"
    assert main(capsys, "status") == (1, "", f"wg-pod: {message}\n")
    assert main(capsys, "status", "--json") == (1, "", f"wg-pod: {message}\n")
    assert main(capsys, "health") == (2, "", f"wg-pod: cannot tell the health: {message}\n")


def as_a_rootless_user(monkeypatch: pytest.MonkeyPatch, state: Path) -> list[int]:
    """This process as an ordinary user would be (a rootless runtime, not
    in a user namespace); the exit status each re-execution under podman
    unshare was asked to give on failure, instead of it happening."""
    runtime = Runtime(str(state), False, user=4242)
    monkeypatch.setattr(Runtime, "of_process", staticmethod(lambda: runtime))
    unshared: list[int] = []

    def in_user_namespace(failed: int = 1) -> int:
        unshared.append(failed)
        return 0

    monkeypatch.setattr(cli, "in_user_namespace", in_user_namespace)
    return unshared


def test_a_user_without_state_of_their_own_is_told_who_can_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ordinary user (nobody, one without podman or a session, so
    without a runtime directory): not podman unshare's error, not "no
    tunnels"; health cannot know (2), status fails (1)."""
    state = tmp_path / "run-user-4242" / "wg-pod"
    unshared = as_a_rootless_user(monkeypatch, state)
    message = f"cannot read wg-pod's state {state}: No such file or directory ({WHO})"
    assert main(capsys, "status") == (1, "", f"wg-pod: {message}\n")
    assert main(capsys, "health") == (2, "", f"wg-pod: cannot tell the health: {message}\n")
    code, out, err = main(capsys, "health", "--json")
    assert (code, err) == (2, f"wg-pod: cannot tell the health: {message}\n")
    assert json.loads(out) == {
        "version": 1,
        "verdict": "unknown",
        "exit_status": 2,
        "reason": message,
        "tunnels": [],
    }
    assert unshared == []


def test_a_rootless_user_who_has_run_no_tunnel_yet_goes_on_to_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Their runtime directory is there, wg-pod's state in it not yet: their
    command goes into their user namespace, to say "no tunnels" there."""
    state = tmp_path / "run-user-4242" / "wg-pod"
    state.parent.mkdir()
    unshared = as_a_rootless_user(monkeypatch, state)
    assert main(capsys, "status") == (0, "", "")
    assert main(capsys, "health") == (0, "", "")
    assert unshared == [1, 2]


def test_a_rootless_user_with_state_of_their_own_goes_on_to_their_tunnels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "run-user-4242-wg-pod"
    state.mkdir()
    unshared = as_a_rootless_user(monkeypatch, state)
    assert main(capsys, "status") == (0, "", "")
    assert main(capsys, "health") == (0, "", "")
    assert unshared == [1, 2]  # podman that cannot be run: health cannot know


# 2. A record without a backend


def test_a_record_without_a_backend_says_backend_unknown(state_dir: Path) -> None:
    """A hook killed before it chose a backend leaves a record naming none."""
    records.write(
        the_runtime(),
        TunnelRecord(
            container_id="e5" * 32,
            interface="wg0",
            config="/etc/wg/wg0.conf",
            netns=NetnsId("/proc/self/ns/net", *_identity("/proc/self/ns/net")),
            created=time.time(),
            writer=None,
        ),
    )
    (tunnel,) = status.collect(the_runtime())
    text = status.render([tunnel])
    assert "  interface: wg0 (backend unknown)" in text
    assert "None" not in text
    assert "its setup was interrupted" in text
    broken = status.TunnelStatus("f6" * 32, None, "?", None, None, None, (), ())
    assert "  interface: ? (backend unknown)" in status.render([broken])


def _identity(path: str) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


# 3. wireguard-go's own words when it fails to start


def test_the_last_lines_of_wireguard_go_in_one_bounded_line() -> None:
    output = (
        b"ERROR: (wgp0123456789ab) 2026/12/06 21:27:18 Failed to create TUN device: "
        b'CreateTUN("wgp0123456789ab") failed; /dev/net/tun does not exist\n' + b"\0" * 100
    )
    assert last_lines(output) == (
        'Failed to create TUN device: CreateTUN("wgp0123456789ab") failed; '
        "/dev/net/tun does not exist"
    )
    many = b"".join(b"line %d\n" % n for n in range(10)) + b"\n\n"
    assert last_lines(many) == "line 7; line 8; line 9"
    assert last_lines(b"") == ""
    long = b"x" * 2000 + b"\x1b[31m\n"
    assert len(last_lines(long).encode()) <= userspace.OUTPUT_BYTES
    assert last_lines(long).endswith("x?[31m")  # no terminal escapes in an error line


def fake_wireguard_go(tmp_path: Path, body: str) -> UserspaceBackend:
    """The userspace backend, its command a script in place of wireguard-go."""
    script = tmp_path / "fake-wireguard-go"
    script.write_text(f"#!{sys.executable}\nimport os, socket, sys, time\n{body}\n")
    script.chmod(0o755)
    backend = UserspaceBackend(Runtime(str(tmp_path / "state"), True))
    backend.command = (str(script),)
    backend.sockets = tmp_path
    return backend


def test_a_start_that_fails_quotes_wireguard_go(tmp_path: Path) -> None:
    backend = fake_wireguard_go(
        tmp_path,
        "print('ERROR: (wgp0) 2026/12/06 21:27:18 Failed to create TUN device: boom', flush=True)\n"
        "print('stderr too', file=sys.stderr)\n"
        "sys.exit(1)",
    )
    backend.create("wgp0", None)
    with pytest.raises(Exception, match="exited with status 1") as caught:
        backend.wait_ready("wgp0")
    assert str(caught.value) == (
        f"start {backend.command[0]}: exited with status 1: "
        "Failed to create TUN device: boom; stderr too"
    )
    assert backend.output is None


def test_what_wireguard_go_writes_once_ready_is_never_read(tmp_path: Path) -> None:
    """Its output is let go once its socket listens, before any UAPI set:
    nothing it writes after (a UAPI error could echo a key) can reach an
    error; and what it keeps writing costs at most OUTPUT_KEPT bytes."""
    backend = fake_wireguard_go(
        tmp_path,
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.bind('{tmp_path}/' + sys.argv[-1] + '.sock')  # where backend.sockets says\n"
        "s.listen()\n"
        "print('what a UAPI set could make it say')\n"
        "time.sleep(30)",
    )
    process = backend.create("wgp1", None)
    try:
        backend.wait_ready("wgp1")
        assert backend.output is None
    finally:
        userspace.stop_process(process.pid, process.start)


def test_its_output_file_cannot_grow() -> None:
    fd = userspace._output_file()
    assert fd is not None
    try:
        assert os.pwrite(fd, b"x", userspace.OUTPUT_KEPT - 1) == 1
        with pytest.raises(OSError) as caught:
            os.pwrite(fd, b"x", userspace.OUTPUT_KEPT)
        assert caught.value.errno == errno.EPERM
    finally:
        os.close(fd)


# 4. The podman API socket


def test_a_socket_that_is_not_there_is_named_with_how_to_start_it(
    tmp_path: Path,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "podman" / "podman.sock"
    for how in ("--url", "unix://", "unix:", "http+unix://"):
        if how == "--url":
            monkeypatch.delenv(podman.URL_ENV, raising=False)
            args = ["leave", "web", "--url", f"unix://{missing}"]
        else:
            monkeypatch.setenv(podman.URL_ENV, f"{how}{missing}")
            args = ["leave", "web"]
        code, out, err = main(capsys, *args)
        assert (code, out) == (1, ""), how
        assert err.startswith(f"wg-pod: podman API socket {missing} is not there: start it with ")
        assert "`systemctl enable --now podman.socket`" in err
        assert "`systemctl --user enable --now podman.socket`" in err
        assert "GET operation failed" not in err and len(err.splitlines()) == 1


def test_a_users_socket_gets_the_users_unit() -> None:
    mine = "/run/user/4242/podman/podman.sock"
    with pytest.raises(podman.PodmanError) as caught:
        podman.api_url(f"unix://{mine}")
    assert str(caught.value) == (
        f"podman API socket {mine} is not there: start it with "
        "`systemctl --user enable --now podman.socket` "
        "(without systemd: `podman system service --time 0 &`)"
    )


def test_a_socket_in_a_directory_only_root_may_search_is_not_called_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "podman.sock"
    stat = os.stat

    def denied(target: str | os.PathLike[str], **kw: object) -> os.stat_result:
        if Path(target) == path:  # as /run/podman/podman.sock is to an ordinary user
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
        return stat(target, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(podman.os, "stat", denied)
    with pytest.raises(podman.PodmanError) as caught:
        podman.api_url(f"unix://{path}")
    assert str(caught.value).startswith(f"podman API socket {path}: permission denied (")


def test_a_socket_nothing_listens_on_says_so(
    tmp_path: Path, state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "podman.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(path))  # the file of a service that stopped
        code, out, err = main(capsys, "leave", "web", "--url", f"unix://{path}")
    assert (code, out) == (1, "")
    assert err.startswith(
        f"wg-pod: podman API socket {path}: nothing listens on it (connection refused): "
        "start it with `systemctl enable --now podman.socket`"
    )


# 5 and 7. check's verdict, its backend here, and its JSON


def test_the_probe_asks_the_backends_in_the_setups_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_check import config_text, plan_of

    plan = plan_of(config_text("198.51.100.7:4500"))
    runtime = Runtime("/nonexistent/wg-pod", True)
    monkeypatch.setattr(kernel, "LOADED", "/nonexistent/sys/module/wireguard")
    monkeypatch.setattr(kernel, "_installed", lambda: False)
    monkeypatch.setattr(userspace.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(userspace, "TUN", "/dev/null")
    assert backends.probe(plan, runtime) == Probe(
        "userspace", "/usr/bin/wireguard-go", ("kernel: no wireguard module in this kernel",)
    )
    monkeypatch.setattr(kernel, "_installed", lambda: True)
    assert backends.probe(plan, runtime) == Probe(
        "kernel", "module wireguard, loaded at the first tunnel", ()
    )
    rootless = Runtime("/nonexistent/wg-pod", True, user=4242)
    assert backends.probe(plan, rootless).passed_over == (
        "kernel: module wireguard is not loaded, and a user namespace cannot load it "
        "(root: modprobe wireguard)",
    )
    monkeypatch.setattr(userspace.shutil, "which", lambda name: None)
    monkeypatch.setattr(kernel, "_installed", lambda: False)
    assert backends.probe(plan, runtime) == Probe(
        None,
        "",
        (
            "kernel: no wireguard module in this kernel",
            "userspace: wireguard-go is not installed",
        ),
    )


HERE = Probe("userspace", "/usr/bin/wireguard-go", ("kernel: no wireguard module in this kernel",))
NOWHERE = Probe(
    None, "", ("kernel: no wireguard module", "userspace: wireguard-go is not installed")
)


def config_with_secrets() -> str:
    return (
        f"[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.250.0.2/24\n"
        f"[Peer]\nPublicKey = {KEY_B}\nPresharedKey = {KEY_C}\nAllowedIPs = 0.0.0.0/0\n"
        "Endpoint = 198.51.100.7:4500\n"
    )


@needs_root
def test_check_ends_with_its_verdict_and_the_backend_here(
    allowed_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(allowed_dir, config_with_secrets())
    monkeypatch.setattr(cli, "probe", lambda plan, runtime: HERE)
    code, out, err = main(capsys, "check", str(path))
    assert code == 0
    assert out.splitlines()[-1] == (
        f"ok: {path} is valid; backend here: userspace "
        "(/usr/bin/wireguard-go; kernel: no wireguard module in this kernel)"
    )
    monkeypatch.setattr(cli, "probe", lambda plan, runtime: NOWHERE)
    code, out, err = main(capsys, "check", str(path))
    assert code == 1
    assert "ok:" not in out and "backend:     auto" in out  # the plan, then the refusal
    assert err == (
        f"wg-pod: backend: {path} is valid, but no backend can run it here: "
        "kernel: no wireguard module; userspace: wireguard-go is not installed\n"
    )


def test_a_backend_the_settings_chose_says_so() -> None:
    from tests.unit.test_check import config_text, plan_of

    plan = plan_of(config_text(None))
    chosen = Probe("userspace", "/usr/bin/wireguard-go", ())
    assert cli.backend_here(plan, chosen) == "userspace (/usr/bin/wireguard-go)"
    from dataclasses import replace

    assert (
        cli.backend_here(replace(plan, backend="userspace"), chosen)
        == "userspace (/usr/bin/wireguard-go; as the settings ask)"
    )


@needs_root
def test_check_json_is_the_plan_as_data_without_keys(
    allowed_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(allowed_dir, config_with_secrets())
    monkeypatch.setattr(cli, "probe", lambda plan, runtime: HERE)
    code, out, err = main(
        capsys, "check", str(path), "--json", "--annotation", "wg-pod.port-remapping=80:8080"
    )
    assert (code, err) == (0, "")
    assert KEY_A not in out and KEY_C not in out
    data = json.loads(out)
    assert (data["version"], data["ok"], data["problem"]) == (1, True, None)
    assert data["config"] == str(path) and data["interface"] == "office"
    assert data["private_key_from"] == f"{path}, line 2"
    assert data["backend"] == {
        "setting": "auto",
        "here": "userspace",
        "runs_on": "/usr/bin/wireguard-go",
        "passed_over": ["kernel: no wireguard module in this kernel"],
    }
    assert data["addresses"] == ["10.250.0.2/24"]
    assert data["kill_switch"] is True and data["reply_path"] == [4]
    assert data["port_remapping"] == [{"if_port": 80, "container_port": 8080, "protocol": "tcp"}]
    (peer,) = data["peers"]
    assert peer == {
        "public_key": KEY_B,
        "endpoint": "198.51.100.7:4500",
        "endpoint_now": "198.51.100.7:4500",
        "allowed_ips": ["0.0.0.0/0"],
        "preshared_key": True,
        "persistent_keepalive": None,
    }
    assert "table inet" in data["nftables"]

    monkeypatch.setattr(cli, "probe", lambda plan, runtime: NOWHERE)
    code, out, err = main(capsys, "check", str(path), "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and data["backend"]["here"] is None
    assert data["problem"] == err.removeprefix("wg-pod: ").rstrip("\n")


# 6. --debug after the subcommand


def test_debug_goes_before_or_after_any_subcommand() -> None:
    (commands,) = [
        a.choices for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert cli.parser().parse_args(["--debug", "status"]).debug is True
    assert cli.parser().parse_args(["status"]).debug is False
    for name, sub in commands.items():
        assert any("--debug" in a.option_strings for a in sub._actions), name
    assert cli.parser().parse_args(["status", "--debug"]).debug is True
    assert cli.parser().parse_args(["health", "web", "--debug"]).debug is True
    assert cli.parser().parse_args(["cdi", "list", "--debug"]).debug is True


def test_debug_after_the_subcommand_logs_details(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir.mkdir()
    monkeypatch.setattr(podman, "names", REAL_NAMES)  # which logs why it has none
    code, out, err = main(capsys, "status", "--url", "unix:///nonexistent/podman.sock", "--debug")
    assert (code, out) == (0, "no tunnels\n")
    assert "DEBUG" in err


# 8. The annotation in the top-level help


def test_the_top_level_help_names_the_annotation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The main way in: podman run --annotation wg-pod.config=/etc/wireguard/wg0.conf" in text
    assert "checks configs, joins running containers, and shows tunnels" in text


def test_the_kernel_backend_finds_its_module_loaded_or_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "LOADED", str(tmp_path / "sys-module-wireguard"))
    monkeypatch.setattr(kernel, "MODULES", str(tmp_path / "lib-modules"))
    listing = tmp_path / "lib-modules" / os.uname().release / "modules.dep"
    backend = kernel.KernelBackend(Runtime("/nonexistent/wg-pod", True))
    with pytest.raises(BackendUnavailable, match="no wireguard module in this kernel"):
        backend.available()
    listing.parent.mkdir(parents=True)
    listing.write_text("kernel/drivers/net/tun.ko.xz:\n")
    with pytest.raises(BackendUnavailable):
        backend.available()
    listing.write_text("kernel/drivers/net/wireguard/wireguard.ko.xz: kernel/lib/x.ko.xz\n")
    assert backend.available() == "module wireguard, loaded at the first tunnel"
    (tmp_path / "sys-module-wireguard").mkdir()
    assert backend.available() == "module wireguard"
