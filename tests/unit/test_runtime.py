"""The runtime: where the state lives, from the process's environment, and
the one atomic writer of the files there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import the_runtime
from wg_pod_hook import hooksd, runtime
from wg_pod_hook.runtime import Runtime
from wg_pod_hook.state import failures, health, records

CID = "c" * 64


def test_the_default_is_run_wg_pod_and_every_path_is_under_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(runtime.STATE_DIR_ENV, raising=False)
    state = Runtime.of_process()
    assert state.is_default and state.root == (os.geteuid() == 0)
    assert (state.records, state.failed, state.health, state.locks) == (
        "/run/wg-pod",
        "/run/wg-pod/failed",
        "/run/wg-pod/health",
        "/run/wg-pod/locks",
    )
    assert (state.hook_socket, state.daemon_socket) == (
        "/run/wg-pod/hook.sock",
        "/run/wg-pod/daemon.sock",
    )


def test_the_environment_names_another_and_a_relative_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(runtime.STATE_DIR_ENV, "/run/elsewhere/")
    state = Runtime.of_process()
    assert not state.is_default and state.hook_socket == "/run/elsewhere/hook.sock"
    monkeypatch.setenv(runtime.STATE_DIR_ENV, "run/wg-pod")
    with pytest.raises(ValueError, match="WG_POD_STATE_DIR=run/wg-pod: not an absolute path"):
        Runtime.of_process()


def test_the_hook_refuses_a_relative_state_directory_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wg_pod_hook.hook", "createRuntime"],
        input="{}",
        capture_output=True,
        text=True,
        env={**os.environ, runtime.STATE_DIR_ENV: "relative"},
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "wg-pod: WG_POD_STATE_DIR=relative: not an absolute path\n"


def test_records_failures_and_health_go_where_the_runtime_says(state_dir: Path) -> None:
    netns = records.NetnsId("/proc/self/ns/net", 1, 2)
    records.write(the_runtime(), records.TunnelRecord(CID, "wg0", "/etc/wg/wg0.conf", netns, 0.0))
    failures.remember(the_runtime(), CID, "createRuntime", "config: bad", now=5.0)
    health.write(the_runtime(), health.Health(CID, health.State.IDLE, since=1.0, checked=1.0))
    made = sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*"))
    assert made == [
        f"{CID}.json",
        "failed",
        f"failed/{5 * 10**9:020d}-{CID}.json",
        "health",
        f"health/{CID}.json",
    ]
    for directory in (state_dir, state_dir / "failed", state_dir / "health"):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert (state_dir / f"{CID}.json").stat().st_mode & 0o777 == 0o600


def test_a_writer_killed_before_its_rename_leaves_an_orphan_that_gc_finds(
    state_dir: Path,
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    kept = []
    for directory in (state_dir, state_dir / "failed", state_dir / "health"):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        orphan = directory / f".tmp-{CID}-{dead.pid}.json"
        orphan.write_text("{")
        kept.append(orphan)
        (directory / f".tmp-{CID}-{os.getpid()}.json").write_text("{")  # a live writer's
    assert sorted(records.orphaned_temporaries(the_runtime())) == sorted(kept)
    assert runtime.writer_pid(f".tmp-{CID}-{dead.pid}.json") == dead.pid
    assert runtime.writer_pid(f"{CID}.json") is None


def test_a_failed_write_leaves_the_old_file_and_no_temporary(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    runtime.write_file(str(state_dir), "x.json", b"old")
    (state_dir / "x.json").chmod(0o600)
    os.mkdir(state_dir / "y.json")  # os.replace cannot put a file over a directory
    with pytest.raises(OSError):
        runtime.write_file(str(state_dir), "y.json", b"new")
    assert (state_dir / "x.json").read_bytes() == b"old"
    assert sorted(p.name for p in state_dir.iterdir()) == ["x.json", "y.json"]


def test_definitions_carry_a_state_directory_of_its_own_only() -> None:
    default = hooksd.definition("createRuntime", "/usr/bin/wg-pod-hook")
    assert not [e for e in default["hook"]["env"] if e.startswith(runtime.STATE_DIR_ENV)]
    own = hooksd.definition("createRuntime", "/usr/bin/wg-pod-hook", state_dir="/run/x")
    assert f"{runtime.STATE_DIR_ENV}=/run/x" in own["hook"]["env"]
