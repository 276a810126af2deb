"""The thin hook and the warm daemon (issue 14): with a daemon running, the
hook hands its stage over (handoff.py) and imports next to nothing; the
daemon's worker does exactly the hook's work.  Without an answer (a worker
killed at any step, a stuck daemon) the hook does the work itself and
nothing is left over; a request the hook could not make is refused."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import (
    WIREGUARD_GO,
    assert_nothing_left,
    fetch_in,
    handled_by_the_daemon,
    wireguard_processes,
    write_config,
)
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    children,
    link_names,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from wg_pod_hook import handoff
from wg_pod_hook.kernel import cgroups
from wg_pod_hook.model.names import temp_name
from wg_pod_hook.model.settings import POSTSTOP_ANSWERED
from wg_pod_hook.state import health, records
from wg_pod_hook.tunnel.dns import own_file
from wg_pod_hook.tunnel.lifecycle import STEP_NAMES

pytestmark = pytest.mark.root

# What the thin hook must not import: the work's modules and what they pull in.
HEAVY = (
    "pyroute2",
    "asyncio",
    "yaml",
    "wg_pod_hook.tunnel.lifecycle",
    "wg_pod_hook.tunnel.teardown",
)


@pytest.fixture
def daemon(lab: Lab, hook: HookRunner) -> Daemon:
    return Daemon(lab, hook.settings, hook.prefix)


def imports(stderr: str) -> set[str]:
    """The modules of a ``PYTHONPROFILEIMPORTTIME=1`` run's report."""
    found = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            found.add(line.rsplit("|", 1)[1].strip())
    return found


def test_the_hook_hands_both_stages_to_the_daemon_and_imports_no_netlink(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, daemon: Daemon
) -> None:
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    profiled = {"PYTHONPROFILEIMPORTTIME": "1"}
    done = hook("createRuntime", standin, annotations, env=profiled)
    assert done.returncode == 0, done.stderr
    loaded = imports(done.stderr)
    assert "wg_pod_hook.handoff" in loaded
    assert not [m for m in loaded if m.startswith(HEAVY)], sorted(loaded)
    assert handled_by_the_daemon(daemon, standin.id, "wg0 up")
    assert peer.page in fetch_in(standin, peer.url_v4)
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.complete
    wait_for(
        lambda: health.read(the_runtime(), standin.id) is not None,
        timeout=5,
        what="the daemon's look",
    )

    standin.stop()
    done = hook("poststop", standin, annotations, env=profiled)
    assert done.returncode == 0, done.stderr
    assert not [m for m in imports(done.stderr) if m.startswith(HEAVY)]
    # Answered before the teardown, which the worker then does.
    wait_for(
        lambda: handled_by_the_daemon(daemon, standin.id, "tunnel taken down"),
        timeout=10,
        what="the worker's teardown",
    )
    assert not records.path_for(the_runtime(), standin.id).exists()
    assert wireguard_processes(temp_name(standin.id)) == []


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_wireguard_go_the_daemon_starts_for_a_hook_lives_where_the_hooks_would(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Daemon,
    cgroup: Path,
) -> None:
    """In the cgroups of the container's parent (under podman, the runtime
    in conmon's cgroup), not the daemon's."""
    (cgroup / "cgroup.procs").write_text(str(daemon.process.pid))
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.process is not None
    home = cgroups.container_home(standin.pid)
    assert home is not None
    assert (
        cgroups.membership(record.process.pid)[frozenset()] == cgroups.membership(home)[frozenset()]
    )
    assert cgroups.membership(record.process.pid)[frozenset()] != "/" + cgroup.name


@pytest.mark.parametrize("step", STEP_NAMES)
def test_a_worker_killed_at_any_step_leaves_the_hook_to_do_the_work(
    step: str,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Daemon,
    backend: str,
) -> None:
    """The daemon's worker dies right after ``step``; the hook gets no
    answer, clears what the worker left and sets the tunnel up itself."""
    dying = hook.with_settings(fault_injection_kill_after=f"daemon:{step}")
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    dying.up(standin, annotations)
    assert "fault injection: killing the hook after " + step in daemon.path.read_text()
    assert peer.page in fetch_in(standin, peer.url_v4)
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.complete and record.writer is None
    assert len(wireguard_processes(temp_name(standin.id))) == WIREGUARD_GO[backend]
    assert daemon.process.poll() is None, "the daemon died with its worker"
    standin.stop()
    dying.down(standin, annotations)
    # The daemon answers a poststop before its worker takes the tunnel down.
    name, record_file = temp_name(standin.id), records.path_for(the_runtime(), standin.id)
    wait_for(
        lambda: (
            not wireguard_processes(name) and name not in link_names() and not record_file.exists()
        ),
        timeout=20,
        what=f"the tunnel of {standin.id[:12]} taken down after poststop's answer",
    )


@pytest.mark.parametrize("then", ["next start", "gc"])
def test_a_daemon_killed_between_a_poststops_answer_and_its_teardown_leaves_nothing_after(
    then: str,
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Daemon,
) -> None:
    """The daemon answers a poststop before its teardown: killed right
    then, it leaves the tunnel and its record; the next start's prune or
    ``wg-pod gc`` takes them down."""
    standin = make_standin()
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, annotations)
    standin.stop()
    hook.with_settings(fault_injection_kill_after=POSTSTOP_ANSWERED).down(standin, annotations)
    wait_for(lambda: daemon.process.poll() is not None, timeout=10, what="the daemon killed")
    name = temp_name(standin.id)
    # Not taken down: its record stays (the interface went with the
    # namespace, and wireguard-go with its TUN).
    assert records.path_for(the_runtime(), standin.id).exists()

    if then == "gc":
        assert run([*venv_command("wg-pod", "wg_pod_hook.cli"), "gc"]).returncode == 0
    else:
        other = make_standin()
        hook.up(other, {"wg-pod.config": write_config(config_dir, peer.client_config(), "b.conf")})
        assert peer.page in fetch_in(other, peer.url_v4)
    assert not records.path_for(the_runtime(), standin.id).exists()
    assert wireguard_processes(name) == []
    assert name not in link_names()
    assert not own_file(the_runtime(), standin.id).exists()


def test_a_stuck_daemon_holds_no_start_past_the_deadline(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, daemon: Daemon
) -> None:
    """A stopped daemon: the hook waits handoff.DEADLINE, then does the work
    itself; the daemon, when it goes on, finds the hook gone and does
    nothing to the tunnel."""
    os.kill(daemon.process.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
        waited = time.monotonic() - start
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)
    assert handoff.DEADLINE <= waited < handoff.DEADLINE + 20, waited
    before = records.load(the_runtime(), standin.id)
    assert before is not None and before.complete
    wait_for(
        lambda: "its hook gave up waiting" in daemon.path.read_text(),
        timeout=10,
        what="the daemon's worker to find its hook gone",
    )
    assert records.load(the_runtime(), standin.id) == before
    assert len(wireguard_processes(temp_name(standin.id))) == 1
    assert peer.page in fetch_in(standin, peer.url_v4)


def the_spare(daemon: Daemon) -> int:
    """The daemon's one waiting worker (its other workers have answered)."""
    found: list[int] = []

    def one() -> bool:
        found[:] = children(daemon.process.pid)
        return len(found) == 1

    wait_for(one, timeout=10, what="one worker waiting")
    return found[0]


def fd_targets(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    return [os.readlink(fds / name) for name in os.listdir(fds)]


def netlink_sockets_in(standin: ContainerStandIn) -> set[str]:
    """socket:[INODE] of every netlink socket in the stand-in's namespace."""
    lines = Path(f"/proc/{standin.pid}/net/netlink").read_text().splitlines()[1:]
    return {f"socket:[{line.split()[-1]}]" for line in lines}


def test_a_waiting_worker_holds_none_of_the_daemons_handles(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Daemon,
) -> None:
    """A spare, forked after the daemon watches a tunnel, may wait for long:
    it must not keep that tunnel's namespace alive (a socket in it), nor
    hold the daemon's pidfds, epoll or sockets."""
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    wait_for(
        lambda: health.read(the_runtime(), standin.id) is not None,
        timeout=5,
        what="the daemon's watch",
    )
    second = lab.standin()
    hook.up(second, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    spare = the_spare(daemon)  # forked with the first tunnel watched
    inside = netlink_sockets_in(standin)
    assert inside & set(fd_targets(daemon.process.pid)), "the daemon watches no tunnel"
    held = fd_targets(spare)
    assert not inside & set(held), held
    assert not [t for t in held if t in ("anon_inode:[pidfd]", "anon_inode:[eventpoll]")], held
    daemon_sockets = {t for t in fd_targets(daemon.process.pid) if t.startswith("socket:")}
    assert len(daemon_sockets & set(held)) <= 1, held  # the log's socket at most


def test_a_waiting_worker_killed_is_replaced_and_ends_with_the_daemon(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, daemon: Daemon
) -> None:
    spare = the_spare(daemon)
    os.kill(spare, signal.SIGKILL)
    wait_for(lambda: children(daemon.process.pid) == [], timeout=10, what="the spare reaped")
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert handled_by_the_daemon(daemon, standin.id, "wg0 up")
    spare = the_spare(daemon)
    assert spare != daemon.process.pid
    daemon.stop()
    wait_for(lambda: not Path(f"/proc/{spare}").exists(), timeout=10, what="the spare's end")


def ask_raw(data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(10)
        sock.connect(the_runtime().hook_socket)
        sock.sendall(data)
        return sock.recv(handoff.MAX_MESSAGE)


def test_a_malformed_request_is_refused(daemon: Daemon) -> None:
    for data in (b"hello", b"wg-pod-hook/2\0createRuntime\0\x000.0\0{}", b"\xff" * 100):
        assert handoff.decode_answer(ask_raw(data)) == (
            1,
            "wg-pod: the daemon got a malformed request",
        )
    code, line = handoff.decode_answer(
        ask_raw(handoff.encode_request("prestart", None, None, None, "{}"))
    )
    assert code == 1 and line is not None and "unknown stage" in line
    assert daemon.process.poll() is None


def test_a_request_of_a_non_root_user_is_refused_and_nothing_is_done(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, daemon: Daemon
) -> None:
    """A non-root user gets nothing from the daemon, by two guards, each
    tested on its own, whatever modes an earlier run left: the state
    directory (0700, root's) keeps them from the socket; and with the
    directory and the socket opened to everyone for this test, the daemon
    still refuses anyone but root (SO_PEERCRED) with the hook's own words."""
    state = standin.oci_state({"wg-pod.config": write_config(config_dir, peer.client_config())})
    socket_path = the_runtime().hook_socket
    directory = Path(socket_path).parent
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(socket_path).st_mode & 0o777 == 0o600
    asking = (
        "import sys; from wg_pod_hook import handoff; from wg_pod_hook.runtime import Runtime; "
        "print(handoff.ask(sys.argv[1], sys.stdin.read(), Runtime(sys.argv[2], root=False)))"
    )

    def ask_as_nobody(stage: str) -> str:
        done = run(
            [
                *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
                *(sys.executable, "-c", asking, stage, str(directory)),
            ],
            input=state,
            env={"PYTHONPATH": str(Path(handoff.__file__).parent.parent)},
        )
        return done.stdout.strip()

    # The directory stops them: no answer at all, so their hook would do
    # the work itself, as that user, and fail its own root check.
    for stage in ("createRuntime", "poststop"):
        assert ask_as_nobody(stage) == "None"
    assert "not root" not in daemon.path.read_text()

    os.chmod(directory, 0o711)
    os.chmod(socket_path, 0o666)
    try:
        refused = f"wg-pod: container ?: {handoff.NOT_ROOT} (journalctl -t wg-pod)"
        for stage, expected in (("createRuntime", (1, refused)), ("poststop", (0, None))):
            assert ask_as_nobody(stage) == repr(expected)
    finally:
        os.chmod(socket_path, 0o600)
        os.chmod(directory, 0o700)
    assert "not root" in daemon.path.read_text()
    assert not records.path_for(the_runtime(), standin.id).exists()
    assert_nothing_left(standin)
