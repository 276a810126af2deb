"""The benchmarks' small mode, so the benchmark code keeps working.

Only that the table comes out is checked, never a time: benchmarks do not
fail CI on speed (see BENCHMARKS.md for the figures).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.podman, pytest.mark.root]


def test_bench_small_mode_prints_the_table(tmp_path: Path) -> None:
    report = tmp_path / "bench.md"
    done = subprocess.run(
        [str(REPO / "bench" / "run"), "--small", "--markdown", str(report)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = report.read_text()
    assert (
        "| bench | measure | unit | median | min | max | n | baseline (median) | ratio |" in table
    )
    for bench in ("start", "hook", "first", "throughput", "scale", "daemon"):
        assert f"| {bench} |" in table, table
    assert "FAILED" not in table


def test_bench_runs_inside_the_debian_13_machine() -> None:
    """``--debian13``: the benches inside the platform tier's machine (podman
    5.4 + crun, Python 3.13), against the .deb built from this tree."""
    done = subprocess.run(
        [str(REPO / "bench" / "run"), "--debian13", "--small", "--only", "hook"],
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    assert "| hook | wg-pod-hook createRuntime, through the daemon |" in table, table
    assert "Python 3.13" in table and "package measured: /usr/lib/wg-pod/wg_pod_hook" in table
    assert "FAILED" not in table
