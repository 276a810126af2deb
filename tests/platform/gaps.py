"""The platform tier's known gaps, and the verdict on one inner test.

A known gap is one inner test (its exact id, for one runtime or ``"*"``)
that fails inside the Debian 13 machine for a known, reported reason, at one
assertion: the one whose message is the gap's ``assertion``, exactly. The
system tests put that assertion last in the test, after the no-leak checks
(tests/unit/test_platform_gaps.py holds them to it), so the gap failing
there means every check before it passed. :func:`verdict`:

- the test failing at that assertion, in its call and nowhere else: xfail;
- the same test failing any other way: a failure (a real one);
- the test passing: a failure too (strict): a fixed gap must leave
  ``KNOWN_GAPS``, or a later regression of it would hide as "known";
- a skip inside the machine: a failure (the machine has every facility).

Standard library only: test_platform.py and the unit tests use it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gap:
    reason: str
    # The message of the assertion that fails, exactly (its first line):
    # the failure's crash line is then "AssertionError: <assertion>".
    assertion: str


# Keyed by (runtime or "*", inner test id).  None today: the last ones
# were podman 5's resolv.conf, written after createRuntime over what the
# hook wrote there (wg-pod now mounts its own file over it, tunnel/dns.py).
KNOWN_GAPS: dict[tuple[str, str], Gap] = {}


class Verdict(enum.Enum):
    PASSED = "passed"
    XFAIL = "xfail"
    FAILED = "failed"


def known_gap(
    runtime: str, test_id: str, gaps: Mapping[tuple[str, str], Gap] = KNOWN_GAPS
) -> Gap | None:
    return gaps.get((runtime, test_id)) or gaps.get(("*", test_id))


def fails_as_the_gap(outcome: Mapping[str, Any], gap: Gap) -> bool:
    """One failure, in the test's call, at the gap's assertion (inner.py
    records each failing phase with its crash line)."""
    failures = outcome.get("failures") or []
    if len(failures) != 1 or failures[0].get("when") != "call":
        return False
    crash = str(failures[0].get("crash", "")).split("\n", 1)[0]
    return crash == f"AssertionError: {gap.assertion}"


def verdict(
    runtime: str,
    test_id: str,
    outcome: Mapping[str, Any],
    gaps: Mapping[tuple[str, str], Gap] = KNOWN_GAPS,
) -> tuple[Verdict, str]:
    """The outer verdict on one inner test's outcome (inner.py's record) and
    the text to report it with."""
    gap = known_gap(runtime, test_id, gaps)
    status = outcome.get("status")
    if status == "passed" and gap is None:
        return Verdict.PASSED, ""
    if status == "passed" and gap is not None:
        return Verdict.FAILED, (
            f"XPASS(strict): a known gap passes now with {runtime}: drop it from "
            f"KNOWN_GAPS (tests/platform/gaps.py): {gap.reason}"
        )
    if status == "skipped":
        return Verdict.FAILED, (
            f"skipped inside the machine ({runtime}), where it must run: "
            f"{outcome.get('message', '')}"
        )
    if status == "failed" and gap is not None and fails_as_the_gap(outcome, gap):
        return Verdict.XFAIL, f"known gap ({runtime}): {gap.reason}"
    expected = (
        f" (not as its known gap, which fails only at {gap.assertion!r})" if gap is not None else ""
    )
    return Verdict.FAILED, (
        f"inside the machine ({runtime}){expected}:\n{outcome.get('message', status)}"
    )
