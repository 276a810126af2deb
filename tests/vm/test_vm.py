"""The kernel backend on a real WireGuard kernel: the integration suite inside a VM.

One VM boot per session (see tests/vm/vm.py) runs, inside,
``python -m pytest tests/integration -p no:cacheprovider -p tests.vm.inner
-q -rs --junitxml=...``: the same test code as on the host, where the
``[kernel]`` variants skip and here must run (tests/vm/inner.py says which
variants the VM leaves to the host). Each inner test becomes one outer test
``test_in_vm[<inner id>]``, so its id shows the backend and an inner failure
is an outer failure with the inner message. The inner ids are collected on
the host (collection needs no root and no WireGuard), so an inner test that
never reported (VM crash, timeout) fails too.

Fails, never skips, when qemu or the kernel is missing (scripts/setup
installs them), the VM does not boot or a module does not load. Skips only
without root.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.lab import collect_inner_ids
from tests.vm.inner import LEFT_OUT, left_out_reason, run_in_vm
from tests.vm.vm import GUEST_OUT, REPO, VMError, VMRun, run_pytest_in_vm

SELECTION = ["tests/integration", "-p", "no:cacheprovider", "-p", "tests.vm.inner"]
INNER_ARGS = [*SELECTION, "-q", "-rs", f"--junitxml={GUEST_OUT}/junit.xml"]
# The whole VM run, boot included; the guest interrupts pytest a minute earlier.
VM_TIMEOUT = float(os.environ.get("WG_POD_VM_TIMEOUT", "1500"))
SUMMARY_KEY = pytest.StashKey["InnerRun"]()


# The inner test ids, collected on the host with the VM's selection.
INNER_IDS = collect_inner_ids(SELECTION)


@dataclass
class Outcome:
    status: str  # passed, failed, skipped
    message: str = ""
    seconds: float = 0.0


@dataclass
class InnerRun:
    vm: VMRun
    result: dict[str, Any]  # the guest's result.json (the output dir may be gone later)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    collected: list[str] = field(default_factory=list)

    def counts(self, backend: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for test_id, outcome in self.outcomes.items():
            if backend is None or backend_of(test_id) == backend:
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts


def backend_of(test_id: str) -> str:
    if "test_kernel.py" in test_id or "kernel" in test_id.rpartition("[")[2]:
        return "kernel"
    if "userspace" in test_id.rpartition("[")[2]:
        return "userspace"
    return "none"


def node_id(testcase: ET.Element) -> str:
    """junit's ``classname`` + ``name`` back to pytest's node id."""
    classname = testcase.get("classname", "")
    name = testcase.get("name", "")
    parts = classname.split(".")
    # The module is the longest dotted prefix that is a file in the repo.
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (REPO / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return f"{classname}::{name}"


def parse_junit(path: Path) -> dict[str, Outcome]:
    outcomes = {}
    for case in ET.parse(path).iter("testcase"):
        outcome = Outcome("passed", seconds=float(case.get("time", "0")))
        for child in case:
            if child.tag in ("failure", "error"):
                text = "\n".join((child.text or "").strip().splitlines()[-40:])
                outcome = Outcome("failed", f"{child.get('message', '')}\n{text}", outcome.seconds)
                break
            if child.tag == "skipped":
                outcome = Outcome("skipped", child.get("message", ""), outcome.seconds)
        outcomes[node_id(case)] = outcome
    return outcomes


@pytest.fixture(scope="module")
def inner(request: pytest.FixtureRequest) -> Iterator[InnerRun]:
    """Boots the VM once and runs the inner suite; qemu is gone when this returns."""
    if os.geteuid() != 0:
        pytest.skip("needs root (qemu sharing / over 9p, network namespaces): sudo ./scripts/test")
    try:
        vm = run_pytest_in_vm(INNER_ARGS, timeout=VM_TIMEOUT)
    except VMError as exc:
        pytest.fail(f"tests/vm: {exc}", pytrace=False)
    if not vm.junit.exists():
        pytest.fail(
            f"tests/vm: the inner pytest wrote no junit XML (exit {vm.result.get('pytest_exit')}); "
            f"its log ({vm.out}/pytest.log) ends:\n" + "\n".join(vm.pytest_log.splitlines()[-40:]),
            pytrace=False,
        )
    run = InnerRun(vm, vm.result, parse_junit(vm.junit), INNER_IDS)
    request.config.stash[SUMMARY_KEY] = run
    yield run
    if run.result.get("pytest_exit") == 0 and set(run.outcomes) == set(INNER_IDS):
        shutil.rmtree(vm.out, ignore_errors=True)


def test_vm_boots_debian_kernel_and_loads_wireguard(inner: InnerRun) -> None:
    result = inner.result
    assert result.get("uname") == inner.vm.kernel
    assert "wireguard" in result.get("modules", [])
    # 0: all passed, 1: some failed (reported per test below); anything else
    # (usage error, internal error, nothing collected, killed) is a broken run.
    assert result.get("pytest_exit") in (0, 1), (
        f"inner pytest exit {result.get('pytest_exit')}; log ends:\n"
        + "\n".join(inner.vm.pytest_log.splitlines()[-40:])
    )


def test_kernel_variants_ran_inside(inner: InnerRun) -> None:
    kernel = inner.counts("kernel")
    assert kernel.get("passed", 0) > 0, kernel
    assert kernel.get("skipped", 0) == 0, [
        f"{i}: {o.message}"
        for i, o in inner.outcomes.items()
        if o.status == "skipped" and backend_of(i) == "kernel"
    ]


def test_every_inner_result_was_expected(inner: InnerRun) -> None:
    assert sorted(set(inner.outcomes) - set(INNER_IDS)) == []


def _short(test_id: str) -> str:
    return test_id.removeprefix("tests/integration/")


@pytest.mark.parametrize("test_id", INNER_IDS, ids=[_short(i) for i in INNER_IDS])
def test_in_vm(inner: InnerRun, test_id: str) -> None:
    outcome = inner.outcomes.get(test_id)
    if outcome is None:
        pytest.fail(
            f"{test_id} did not report inside the VM; inner log ({inner.vm.out}/pytest.log) "
            "ends:\n" + "\n".join(inner.vm.pytest_log.splitlines()[-20:]),
            pytrace=False,
        )
    if outcome.status == "failed":
        pytest.fail(f"inside the VM: {outcome.message}", pytrace=False)
    if outcome.status == "skipped":
        if backend_of(test_id) == "kernel":
            pytest.fail(f"skipped inside the VM, where it must run: {outcome.message}")
        pytest.skip(f"skipped inside the VM: {outcome.message}")


def test_every_kernel_variant_is_run_in_the_vm_or_explained() -> None:
    """Each kernel variant the VM leaves out has a reason in tests/vm/inner.py
    (the host's skip message), each reason names a variant that exists and
    is left out, and the VM's selection is what inner.py says. No VM needed."""
    ids = collect_inner_ids(["-p", "no:cacheprovider", "tests/integration"])
    kernel = [i for i in ids if backend_of(i) == "kernel"]
    assert sorted(i for i in kernel if run_in_vm(i)) == sorted(INNER_IDS)
    unexplained = [i for i in kernel if "records no reason" in left_out_reason(i)]
    assert unexplained == []
    left_out = {i.partition("::")[2].partition("[")[0] for i in kernel if not run_in_vm(i)}
    stale = [f for reasons in LEFT_OUT.values() for f in reasons if f not in left_out]
    assert stale == []
