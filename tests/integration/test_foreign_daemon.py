"""A wg-pod daemon the suite did not start on its state directory (an
orphan of an aborted run): a root session refuses to start beside it,
saying which process it is and how to stop it, and leaves it running; the
lab's Daemon() never removes its socket. The installation's daemon (the
package's wg-pod.service, on /run/wg-pod) is none of the suite's business:
a session runs beside it, and nothing reaches it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import (
    REPO,
    Daemon,
    Lab,
    LabError,
    daemon_lock_holders,
    socket_servers,
    the_runtime,
    venv_command,
    wait_for,
)
from wg_pod_hook import runtime

pytestmark = pytest.mark.root


@pytest.fixture
def foreign(lab: Lab, settings: Path) -> subprocess.Popen[str]:
    """``wg-pod daemon`` started by hand, as systemd or a lost run would."""
    argv = ["env", f"WG_POD_SETTINGS={settings}", *venv_command("wg-pod", "wg_pod_hook.cli")]
    process = lab.popen([*argv, "daemon"], name="foreign-daemon")
    wait_serving(lab, process, "foreign-daemon", the_runtime().hook_socket)
    return process


def wait_serving(lab: Lab, process: subprocess.Popen[str], name: str, hook_socket: str) -> None:
    """Until ``process`` (a daemon the lab started as ``name``) serves
    ``hook_socket``; LabError, with its log, when it exits first."""

    def serving() -> bool:
        if process.poll() is not None:
            raise LabError(f"the daemon exited: {lab.log_of(name)}")
        return socket_servers(hook_socket) == [process.pid]

    wait_for(serving, timeout=15, what=f"the daemon {name} on {hook_socket}")


def still_serving(process: subprocess.Popen[str]) -> bool:
    state = the_runtime()
    return (
        process.poll() is None
        and daemon_lock_holders() == [process.pid]
        and socket_servers(state.hook_socket) == [process.pid]
        and socket_servers(state.daemon_socket) == [process.pid]
        and Path(state.hook_socket).exists()
        and Path(state.daemon_socket).exists()
    )


def test_a_root_session_refuses_to_start_beside_it(foreign: subprocess.Popen[str]) -> None:
    session = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_lab.py::test_a_free_udp_port_is_free_for_both_families",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    pid = foreign.pid
    assert session.returncode == pytest.ExitCode.USAGE_ERROR, session.stdout + session.stderr
    (line,) = [line for line in session.stderr.splitlines() if line.startswith("ERROR: ")]
    assert "a wg-pod daemon this test session did not start is running" in line
    assert f"PID {pid} (" in line
    state = the_runtime()
    served = f"serves {state.hook_socket} and {state.daemon_socket}"
    assert f"holds the lock on {state.state_dir}, {served}: " in line
    assert f"stop it with `kill {pid}`" in line
    assert "passed" not in session.stdout
    assert still_serving(foreign), "the session touched the daemon it refused"


def test_the_runner_leaves_a_running_daemons_socket(
    lab: Lab, settings: Path, foreign: subprocess.Popen[str]
) -> None:
    with pytest.raises(LabError, match="another wg-pod daemon is running"):
        Daemon(lab, settings)
    assert still_serving(foreign), "Daemon() removed the running daemon's socket"


@pytest.fixture
def installations(lab: Lab) -> int:
    """The pid of a daemon on the installation's /run/wg-pod, as the
    package's wg-pod.service runs it: the one running there, else one
    started for this test (and /run/wg-pod goes with it if it made it)."""
    running = daemon_lock_holders(runtime.DEFAULT_STATE_DIR)
    if running:
        return running[0]
    state_dir = Path(runtime.DEFAULT_STATE_DIR)
    if not state_dir.exists():
        lab.defer(f"remove {state_dir}", lambda: shutil.rmtree(state_dir, ignore_errors=True))
    command = venv_command("wg-pod", "wg_pod_hook.cli")
    process = lab.popen(
        ["env", "-u", runtime.STATE_DIR_ENV, *command, "--debug", "daemon"],
        name="installations-daemon",
    )
    wait_serving(lab, process, "installations-daemon", str(state_dir / "hook.sock"))
    return process.pid


def test_a_session_runs_beside_the_installations_daemon_and_never_reaches_it(
    lab: Lab, installations: int
) -> None:
    session = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_handoff.py::"
            "test_the_hook_hands_both_stages_to_the_daemon_and_imports_no_netlink",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert session.returncode == pytest.ExitCode.OK, session.stdout + session.stderr
    assert " passed" in session.stdout.splitlines()[-1], session.stdout
    assert daemon_lock_holders(runtime.DEFAULT_STATE_DIR) == [installations]
    assert not list(Path(runtime.DEFAULT_STATE_DIR).glob("*.json")), "a record on /run/wg-pod"
    # Its log (ours only; "" for one already running) names no container.
    assert "container " not in lab.log_of("installations-daemon")
