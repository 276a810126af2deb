"""pytest plugin for the run inside the Debian 13 machine (``-p tests.platform.inner``).

Writes every test's outcome (passed; failed with its message and, per
failing phase, pytest's crash line; skipped with its reason) and the run's
duration as JSON to ``$WG_POD_PLATFORM_REPORT``, which the outer tests
(test_platform.py, with gaps.py's verdict) turn into one test each.
Standard library and pytest only.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "WG_POD_PLATFORM_REPORT"
_outcomes: dict[str, dict[str, Any]] = {}
_start = time.monotonic()


def _crash(report: pytest.TestReport) -> str:
    """What failed, as pytest's summary line has it ("AssertionError: msg",
    then the comparison): what tests/platform/gaps.py matches a gap by."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    lines = str(report.longrepr or "").strip().splitlines()
    return lines[-1] if lines else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _outcomes.setdefault(
        report.nodeid, {"status": "passed", "message": "", "failures": [], "seconds": 0.0}
    )
    entry["seconds"] += report.duration
    if report.failed:
        text = str(report.longrepr)
        entry["status"] = "failed"
        entry["message"] += f"[{report.when}] " + "\n".join(text.splitlines()[-60:]) + "\n"
        entry["failures"].append({"when": report.when, "crash": _crash(report)})
    elif report.skipped and entry["status"] != "failed":
        entry["status"] = "skipped"
        longrepr = report.longrepr
        entry["message"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    data = {
        "exit": int(exitstatus),
        "seconds": round(time.monotonic() - _start, 1),
        "outcomes": _outcomes,
    }
    Path(path).write_text(json.dumps(data, indent=1))
