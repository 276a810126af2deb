"""The hook's kept failures (failures.py) and how ``wg-pod status`` shows them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab import the_runtime, use_state_dir
from wg_pod_hook.model.oci import parse_state
from wg_pod_hook.state import failures
from wg_pod_hook.tunnel import status

CID = "ab" * 32


pytestmark = pytest.mark.usefixtures("state_dir")


def test_a_failure_is_kept_with_id_name_time_stage_and_message(state_dir: Path) -> None:
    failure_dir = state_dir / "failed"
    path = failures.remember(
        the_runtime(), CID, "createRuntime", "config: /etc/wg/x.conf:2: bad", "web", 1e9
    )
    assert path is not None and path.parent == failure_dir
    assert oct(failure_dir.stat().st_mode & 0o777) == "0o700"
    (kept,) = failures.recent(the_runtime())
    assert kept == failures.Failure(
        CID, "web", 1e9, "createRuntime", "config: /etc/wg/x.conf:2: bad"
    )


def test_failures_are_bounded_in_number_and_size() -> None:
    for i in range(failures.MAX_KEPT + 7):
        failures.remember(
            the_runtime(), f"{i:064x}", "createRuntime", "x" * 10_000, "n" * 1000, now=1000 + i
        )
    kept = failures.recent(the_runtime())
    assert len(kept) == failures.MAX_KEPT
    # newest first; the oldest went
    assert kept[0].container_id == f"{failures.MAX_KEPT + 6:064x}"
    assert kept[-1].container_id == f"{7:064x}"
    assert all(len(f.message) == failures.MAX_MESSAGE for f in kept)
    assert all(f.name is not None and len(f.name) == failures.MAX_NAME for f in kept)


def test_a_message_is_one_line_and_a_bad_id_is_unknown() -> None:
    failures.remember(
        the_runtime(), "../../etc/passwd", "createRuntime", "two\nlines\r\n", None, now=5
    )
    (kept,) = failures.recent(the_runtime())
    assert kept.container_id == "unknown"
    assert kept.message == "two lines"
    assert kept.name is None


def test_a_start_forgets_the_containers_failures() -> None:
    other = "cd" * 32
    failures.remember(the_runtime(), CID, "createRuntime", "first", now=1)
    failures.remember(the_runtime(), other, "createRuntime", "other", now=2)
    failures.remember(the_runtime(), CID, "createRuntime", "second", now=3)
    failures.forget(the_runtime(), CID)
    assert [f.container_id for f in failures.recent(the_runtime())] == [other]


def test_unreadable_files_are_skipped(state_dir: Path) -> None:
    failures.remember(the_runtime(), CID, "createRuntime", "kept", now=2)
    (state_dir / "failed" / f"{1:020d}-{CID}.json").write_text("{not json")
    assert [f.message for f in failures.recent(the_runtime())] == ["kept"]


def test_an_unwritable_directory_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    use_state_dir(monkeypatch, blocker)
    assert failures.remember(the_runtime(), CID, "createRuntime", "lost", now=1) is None
    assert failures.recent(the_runtime()) == []


def test_the_name_comes_from_conmon_among_the_ancestors() -> None:
    """A real process whose argv reads like conmon's (``-c ID ... -n NAME``)."""
    code = "import time; time.sleep(30)"
    proc = subprocess.Popen(
        ["conmon", "-c", code, "--api-version", "1", "-u", code, "-n", "web"],
        executable=sys.executable,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"conmon\0"):
            assert time.monotonic() < deadline, "the stand-in conmon did not start"
            time.sleep(0.01)
        assert failures.container_name(code, proc.pid) == "web"
        assert failures.container_name("another-container", proc.pid) is None
    finally:
        proc.kill()
        proc.wait()
    # No conmon above the test process.
    assert failures.container_name(CID) is None


def test_status_shows_failures_in_human_and_json_output() -> None:
    failures.remember(
        the_runtime(), CID, "createRuntime", "config: /etc/wg/broken.conf:2: bad", now=0
    )
    kept = status.with_names(failures.recent(the_runtime()), {CID: "web"})
    text = status.render([], failed=kept)
    assert text.splitlines()[:3] == [
        "no tunnels",
        "",
        f"container: web ({CID[:12]})",
    ]
    assert "  failed to start: config: /etc/wg/broken.conf:2: bad" in text
    assert "1970-01-01 00:00:00 UTC (createRuntime)" in text
    data = json.loads(json.dumps(status.as_json([], failed=kept)))
    assert data == {
        "version": 1,
        "tunnels": [],
        "failures": [
            {
                "container_id": CID,
                "name": "web",
                "time": 0.0,
                "stage": "createRuntime",
                "message": "config: /etc/wg/broken.conf:2: bad",
            }
        ],
    }


@pytest.mark.parametrize("runtime_status", ["creating", "created"])
def test_both_runtimes_createruntime_states_parse(runtime_status: str) -> None:
    """runc passes ``creating`` at createRuntime, crun ``created``; the hook
    acts on neither, so both must read the same."""
    state = parse_state(
        json.dumps({"id": CID, "status": runtime_status, "pid": 42, "bundle": "/b"})
    )
    assert (state.id, state.pid, state.status) == (CID, 42, runtime_status)
