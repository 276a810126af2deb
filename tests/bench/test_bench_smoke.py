"""The benchmarks' small mode, so the benchmark code keeps working.

Only that the table comes out is checked, never a time: benchmarks do not
fail CI on speed (see BENCHMARKS.md for the figures). The benches inside the
Debian 13 machine run in the platform tier's machine
(tests/platform/test_platform.py), which is booted once.
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
