"""Prints what the VM run did at the end of the outer session (kernel, accelerator, counts)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    from tests.vm.test_vm import SUMMARY_KEY

    run = config.stash.get(SUMMARY_KEY, None)
    if run is None:
        return
    vm = run.vm
    tr = terminalreporter
    tr.section("tests/vm: the integration suite inside the VM")
    tr.write_line(
        f"kernel {vm.kernel}, accelerator {vm.accel} (tried {', '.join(vm.boot_attempts)}), "
        f"VM wall time {vm.seconds:.0f}s, inner pytest {run.result.get('pytest_seconds')}s"
    )
    for backend in ("kernel", "userspace", "none"):
        counts = run.counts(backend)
        if counts:
            label = {"none": "not parametrised by backend"}.get(backend, f"backend {backend}")
            tr.write_line(f"{label}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if vm.out.exists():
        tr.write_line(f"inner output kept in {vm.out}")
