"""The platform tier's known gaps (tests/platform/gaps.py) without a machine:
the verdict on inner outcomes, fake and from a real pytest run through the
inner plugin, and the system tests' side of the bargain (the gap's
assertion comes last, after the no-leak checks)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.platform.gaps import KNOWN_GAPS, Gap, Verdict, verdict
from tests.platform.inner import REPORT_ENV

REPO = Path(__file__).resolve().parents[2]
GAP = Gap("a reason", "the gap's assertion")
GAPS = {("*", "t.py::test_gap"): GAP, ("crun", "t.py::test_crun_gap"): GAP}


def failed(*failures: tuple[str, str], message: str = "inner text") -> dict[str, Any]:
    return {
        "status": "failed",
        "message": message,
        "failures": [{"when": when, "crash": crash} for when, crash in failures],
    }


def test_the_gap_failing_at_its_assertion_is_an_xfail() -> None:
    outcome = failed(("call", "AssertionError: the gap's assertion\nassert ['x'] == ['y']"))
    assert verdict("runc", "t.py::test_gap", outcome, GAPS) == (
        Verdict.XFAIL,
        "known gap (runc): a reason",
    )


def test_a_known_gap_that_passes_fails_strictly() -> None:
    seen, text = verdict("crun", "t.py::test_gap", {"status": "passed", "message": ""}, GAPS)
    assert seen is Verdict.FAILED
    assert text.startswith("XPASS(strict): a known gap passes now with crun: drop it")


@pytest.mark.parametrize(
    "outcome",
    [
        # an earlier assertion (a leak) failed: the gap's was never reached
        failed(("call", "AssertionError: assert '198.18.0.53' not in 'nameserver 1.2.3.4'")),
        # the gap's words inside another failure, or its message extended
        failed(("call", "AssertionError: assert 'the gap's assertion' in ''")),
        failed(("call", "AssertionError: the gap's assertion, and more")),
        failed(("call", "Failed: the gap's assertion")),
        failed(("call", "RuntimeError: boom"), message="AssertionError: the gap's assertion"),
        # at the gap's assertion, but the teardown failed too, or in setup
        failed(
            ("call", "AssertionError: the gap's assertion"),
            ("teardown", "AssertionError: leftovers"),
        ),
        failed(("setup", "AssertionError: the gap's assertion")),
        # an old report without the crash lines
        {"status": "failed", "message": "AssertionError: the gap's assertion"},
        {"status": "skipped", "message": "no podman"},
    ],
)
def test_a_known_gap_failing_any_other_way_is_a_failure(outcome: dict[str, Any]) -> None:
    seen, text = verdict("crun", "t.py::test_gap", outcome, GAPS)
    assert seen is Verdict.FAILED, text


def test_a_gap_is_matched_by_its_exact_test_id_and_runtime() -> None:
    at_the_gap = failed(("call", "AssertionError: the gap's assertion"))
    for runtime, test_id in (
        ("crun", "t.py::test_gap[auto]"),
        ("crun", "t.py::test_ga"),
        ("crun", "u.py::test_gap"),
        ("runc", "t.py::test_crun_gap"),
    ):
        assert verdict(runtime, test_id, at_the_gap, GAPS)[0] is Verdict.FAILED, test_id
    assert verdict("crun", "t.py::test_crun_gap", at_the_gap, GAPS)[0] is Verdict.XFAIL


def test_other_tests_pass_and_fail_as_they_are() -> None:
    assert verdict("crun", "t.py::x", {"status": "passed"}, GAPS) == (Verdict.PASSED, "")
    assert verdict("crun", "t.py::x", failed(("call", "E")), GAPS)[0] is Verdict.FAILED


FAKE_TESTS = """
def nameservers():
    return ["198.18.0.1"]

def test_gap():
    assert "10.250.0.53" in "answered 10.250.0.53"
    assert nameservers() == ["10.250.0.1"], "the gap's assertion"

def test_leak_first():
    assert "198.18.0.53" not in "answered 198.18.0.53"
    assert nameservers() == ["10.250.0.1"], "the gap's assertion"

def test_fixed():
    assert nameservers() == ["198.18.0.1"], "the gap's assertion"
"""


def test_a_real_inner_report_gives_the_verdicts(tmp_path: Path) -> None:
    """pytest with the inner plugin, as in the machine, then the verdicts:
    only the test failing at the gap's own assertion is an xfail."""
    (tmp_path / "t.py").write_text(FAKE_TESTS)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "t.py", "-q", "--rootdir", str(tmp_path)),
            *("-p", "no:cacheprovider", "-p", "tests.platform.inner"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, REPORT_ENV: str(report), "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    outcomes = json.loads(report.read_text())["outcomes"]
    gaps = {("*", f"t.py::{name}"): GAP for name in ("test_gap", "test_leak_first", "test_fixed")}
    seen = {test_id: verdict("crun", test_id, outcomes[test_id], gaps)[0] for _, test_id in gaps}
    assert seen == {
        "t.py::test_gap": Verdict.XFAIL,
        "t.py::test_leak_first": Verdict.FAILED,
        "t.py::test_fixed": Verdict.FAILED,
    }


def _asserts(path: Path, function: str) -> list[ast.Assert]:
    tree = ast.parse(path.read_text())
    (found,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function]
    return sorted((n for n in ast.walk(found) if isinstance(n, ast.Assert)), key=lambda n: n.lineno)


def test_each_gaps_assertion_is_the_last_in_its_system_test() -> None:
    """The gap failing at its assertion must mean every check before it (the
    no-leak ones) passed: it is the test's last assertion, it exists once, and
    checks come before it."""
    for (_, test_id), gap in sorted(KNOWN_GAPS.items()):
        path, _, name = test_id.partition("::")
        asserts = _asserts(REPO / path, name.partition("[")[0])
        messages = [a.msg.value if isinstance(a.msg, ast.Constant) else None for a in asserts]
        assert messages.count(gap.assertion) == 1, messages
        assert messages[-1] == gap.assertion, messages
        assert len(asserts) >= 3, messages
