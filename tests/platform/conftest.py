"""The platform tier's collection and its report at the end of the session.

``inside/`` holds scenarios that only make sense in the Debian 13 machine
(quadlet, journald): collected there (``WG_POD_TEST_PODMAN=system``), never
on the host.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.lab import SYSTEM_PODMAN

collect_ignore = [] if SYSTEM_PODMAN else ["inside"]
# test_platform.Summary of this session (here, not there: importing
# test_platform collects the inner ids, which runs pytest).
SUMMARY_KEY = pytest.StashKey[Any]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    summary = config.stash.get(SUMMARY_KEY, None)
    if summary is None:
        return
    tr = terminalreporter
    tr.section("tests/platform: Debian 13 machine (systemd-nspawn)")
    for line in summary.lines():
        tr.write_line(line)
