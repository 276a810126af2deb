"""wg-pod where its users run it: Debian 13, podman 5.4, crun, netavark,
quadlet and journald under a real systemd (see machine.py for the machine).

One machine per session: the cached Debian 13 root booted with
systemd-nspawn, the ``.deb`` built from this tree installed with apt-get
(the package tier's file when the tree has not changed), the busybox test
image imported. Then the podman scenarios of
``tests/system`` (the same code as on the host, run against the machine's
own podman, ``WG_POD_TEST_PODMAN=system``) and the machine-only ones of
``tests/platform/inside`` (quadlet, journald) run inside, once with crun
(podman's default there) and once with runc. Each inner test is one outer
test ``test_in_machine[<runtime>-<inner id>]``; an inner skip is a failure
here (the machine has every facility), and so is an inner test that never
reported. A known gap (gaps.py: one test, failing at one assertion, exactly)
is an xfail; the same test failing otherwise, or passing, is a failure
(strict). The inner ids are collected on the host. The benches' small
mode runs in the same machine at the end (``bench/run --debian13`` boots
one of its own).

Fails, never skips, when the machine cannot be built, booted or set up,
naming the step; skips only without root. The machine, its cgroups and its
files are removed afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.debian13 import run_inside
from tests.lab import PODMAN_MODE_ENV, collect_inner_ids
from tests.package.build import Deb
from tests.platform.conftest import SUMMARY_KEY
from tests.platform.gaps import KNOWN_GAPS, Verdict, known_gap, verdict
from tests.platform.inner import REPORT_ENV
from tests.platform.machine import (
    INNER_OUT,
    INNER_REPO,
    INNER_VENV,
    RUNTIME_CONF,
    Machine,
    MachineError,
    Root,
    install,
    root,
)

SELECTION = ["tests/system", "tests/platform/inside"]
RUNTIMES = ("crun", "runc")
# One inner run, per runtime; the whole tier stays near a quarter hour.
INNER_TIMEOUT = float(os.environ.get("WG_POD_PLATFORM_TIMEOUT", "600"))
LOG_DIR = Path("/var/tmp/wgpt-platform-logs")


# The inner test ids, collected on the host with the machine's selection.
INNER_IDS = collect_inner_ids(["-p", "no:cacheprovider", *SELECTION], {PODMAN_MODE_ENV: "system"})


@dataclass
class InnerRun:
    runtime: str
    exit: int | None
    seconds: float
    outcomes: dict[str, dict[str, Any]]
    log_tail: str

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes.values():
            counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
        return counts


@dataclass
class Summary:
    start: float = field(default_factory=time.monotonic)
    image: Root | None = None
    deb: Deb | None = None
    boot_seconds: float | None = None
    setup_seconds: float | None = None
    runs: dict[str, InnerRun] = field(default_factory=dict)
    wall_seconds: float | None = None
    failed_step: str | None = None

    def lines(self) -> list[str]:
        out = []
        if self.image is not None:
            v = self.image.versions
            how = "built" if self.image.built else "from the cache"
            out.append(
                f"Debian {v.get('debian')} root {self.image.key} "
                f"({how}, {self.image.seconds:.0f}s): "
                + ", ".join(
                    f"{p} {v[p]}"
                    for p in ("podman", "crun", "runc", "netavark", "conmon", "systemd", "python3")
                    if p in v
                )
            )
            if self.image.offline:
                out.append(f"newest cached root taken: {self.image.offline}")
        if self.deb is not None:
            how = f"built in {self.deb.build_seconds:.0f}s" if self.deb.built else "from the cache"
            out.append(f"the .deb {self.deb.path.name} {self.deb.key}: {how}")
        if self.boot_seconds is not None:
            out.append(
                f"boot to systemd 'running': {self.boot_seconds:.0f}s; "
                f"package and image installed: {self.setup_seconds or 0:.0f}s"
            )
        for runtime, run in self.runs.items():
            counts = ", ".join(f"{n} {s}" for s, n in sorted(run.counts().items())) or "nothing"
            out.append(
                f"runtime {runtime}: {counts} of {len(INNER_IDS)} "
                f"(inner pytest {run.seconds:.0f}s, exit {run.exit})"
            )
        for runtime, run in self.runs.items():
            for test_id, outcome in sorted(run.outcomes.items()):
                gap = known_gap(runtime, test_id)
                if gap:
                    if verdict(runtime, test_id, outcome)[0] is Verdict.XFAIL:
                        seen = "fails as known"
                    elif outcome["status"] == "passed":
                        seen = "PASSES now (strict: a failure, drop the gap)"
                    else:
                        seen = "FAILS otherwise (a real failure)"
                    out.append(f"known gap, {runtime}, {seen}: {_short(test_id)}: {gap.reason}")
        if self.failed_step:
            out.append(f"FAILED at: {self.failed_step}")
        if self.wall_seconds is not None:
            out.append(f"tier wall time: {self.wall_seconds:.0f}s")
        return out


def use_runtime(machine: Machine, runtime: str) -> None:
    """crun is podman's default on Debian 13; runc through a drop-in of the
    machine's own containers.conf.d, which every podman there reads
    (including quadlet units and conmon's cleanup processes)."""
    conf = machine.root / RUNTIME_CONF.lstrip("/")
    if runtime == "crun":
        conf.unlink(missing_ok=True)
    else:
        machine.write(RUNTIME_CONF, f'[engine]\nruntime = "{runtime}"\n')
    # The API service reads the configuration when it starts.
    machine.run(["systemctl", "stop", "podman.service"], check=False)
    actual = machine.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"]).stdout
    if actual.strip() != runtime:
        raise MachineError(f"switch to {runtime}", f"podman info says {actual.strip()!r}")


def run_inner(machine: Machine, runtime: str) -> InnerRun:
    use_runtime(machine, runtime)
    report = machine.out / f"result-{runtime}.json"
    start = time.monotonic()
    proc = machine.run(
        [
            f"{INNER_VENV}/bin/python",
            "-m",
            "pytest",
            *SELECTION,
            *("-p", "no:cacheprovider", "-p", "tests.platform.inner", "-q", "-rs"),
        ],
        env={
            PODMAN_MODE_ENV: "system",
            REPORT_ENV: f"{INNER_OUT}/{report.name}",
            # wg-pod's own code for the tests' helpers: the installed package's
            # pyroute2 (the repository's wg_pod_hook comes first on the path).
            "PYTHONPATH": "/usr/lib/wg-pod",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": "/tmp",
        },
        cwd=INNER_REPO,
        check=False,
        timeout=INNER_TIMEOUT,
        step=f"inner pytest with {runtime}",
    )
    seconds = time.monotonic() - start
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
    # The machine goes at the end of the session: its inner log stays when
    # something failed, for a look at the whole run.
    kept = LOG_DIR / f"inner-{runtime}.log"
    kept.unlink(missing_ok=True)
    if proc.returncode != 0:
        LOG_DIR.mkdir(mode=0o700, exist_ok=True)
        journal = machine.run(
            [
                *("journalctl", "-q", "--no-pager", "-o", "short-precise", "-n", "400"),
                *("-t", "wg-pod", "-t", "podman", "-t", "conmon"),
            ],
            check=False,
        )
        kept.write_text(
            proc.stdout
            + proc.stderr
            + "\n==== the machine's journal (wg-pod, podman, conmon)\n"
            + journal.stdout
        )
    if not report.exists():
        raise MachineError(
            f"inner pytest with {runtime}", f"wrote no report (exit {proc.returncode}):\n{tail}"
        )
    data = json.loads(report.read_text())
    tail += f"\n(the whole inner log: {kept})" if kept.exists() else ""
    return InnerRun(runtime, data.get("exit"), seconds, data.get("outcomes", {}), tail)


@pytest.fixture(scope="module")
def machine(request: pytest.FixtureRequest) -> Iterator[Machine]:
    if os.geteuid() != 0:
        pytest.skip("needs root (mmdebstrap, systemd-nspawn): run sudo ./scripts/test")
    summary = Summary()
    request.config.stash[SUMMARY_KEY] = summary
    booted: Machine | None = None
    try:
        summary.image = root()
        booted = Machine(summary.image)
        booted.boot()
        summary.boot_seconds = booted.boot_seconds
        start = time.monotonic()
        summary.deb = install(booted)
        summary.setup_seconds = time.monotonic() - start
    except MachineError as exc:
        summary.failed_step = exc.step
        problems = booted.stop() if booted is not None else []
        summary.wall_seconds = time.monotonic() - summary.start
        pytest.fail(
            f"tests/platform: {exc}" + "".join(f"\n(cleanup: {p})" for p in problems),
            pytrace=False,
        )
    yield booted
    problems = booted.stop()
    summary.wall_seconds = time.monotonic() - summary.start
    if problems:
        pytest.fail("tests/platform: cleanup: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def inner(machine: Machine, request: pytest.FixtureRequest) -> Callable[[str], InnerRun]:
    """``inner(runtime)``: the inner run with that runtime, run once."""
    summary = request.config.stash[SUMMARY_KEY]

    def get(runtime: str) -> InnerRun:
        if runtime not in summary.runs:
            try:
                summary.runs[runtime] = run_inner(machine, runtime)
            except MachineError as exc:
                summary.failed_step = exc.step
                summary.runs[runtime] = InnerRun(runtime, None, 0.0, {}, str(exc))
        return summary.runs[runtime]

    return get


def test_the_machine_is_debian_13_with_podman_5_crun_and_the_package(machine: Machine) -> None:
    from wg_pod_hook import __version__

    assert machine.image.versions["debian"].startswith("13"), machine.image.versions
    assert machine.run(["podman", "--version"]).stdout.split()[-1].startswith("5.")
    info = machine.run(
        ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}"]
    ).stdout.split()
    assert info == ["crun", "netavark"], info
    python = machine.run(["python3", "--version"]).stdout.split()[-1]
    assert python.startswith("3.13."), python
    assert machine.run(["systemctl", "is-system-running"]).stdout.strip() == "running"
    installed = machine.run(["dpkg-query", "-W", "-f=${Version}", "wg-pod"]).stdout
    assert installed == __version__
    assert machine.run(["wg-pod", "--version"]).stdout.strip() == f"wg-pod {__version__}"
    hooks = machine.run(["ls", "/usr/share/containers/oci/hooks.d"]).stdout.split()
    assert hooks == ["wg-pod-createRuntime.json", "wg-pod-poststop.json"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_inner_run_completed_and_reported_every_test(
    inner: Callable[[str], InnerRun], runtime: str
) -> None:
    run = inner(runtime)
    # 0: all passed, 1: some failed (reported one by one below); anything
    # else (usage error, nothing collected, interrupted) is a broken run.
    assert run.exit in (0, 1), f"inner pytest with {runtime}: exit {run.exit}:\n{run.log_tail}"
    assert sorted(set(run.outcomes) - set(INNER_IDS)) == []
    assert sorted(set(INNER_IDS) - set(run.outcomes)) == []


def _short(test_id: str) -> str:
    return test_id.removeprefix("tests/")


@pytest.mark.parametrize(
    ("runtime", "test_id"),
    [(runtime, test_id) for runtime in RUNTIMES for test_id in INNER_IDS],
    ids=[f"{runtime}-{_short(test_id)}" for runtime in RUNTIMES for test_id in INNER_IDS],
)
def test_in_machine(inner: Callable[[str], InnerRun], runtime: str, test_id: str) -> None:
    run = inner(runtime)
    outcome = run.outcomes.get(test_id)
    if outcome is None:
        pytest.fail(
            f"{test_id} did not report inside the machine ({runtime}); the run ends:\n"
            + run.log_tail,
            pytrace=False,
        )
    seen, text = verdict(runtime, test_id, outcome)
    if seen is Verdict.XFAIL:
        pytest.xfail(text)
    if seen is Verdict.FAILED:
        pytest.fail(text, pytrace=False)


def test_every_known_gap_names_an_inner_test_and_a_runtime() -> None:
    """A gap whose test was renamed or removed would match nothing, silently."""
    assert sorted(i for _, i in KNOWN_GAPS if i not in INNER_IDS) == []
    assert sorted(r for r, _ in KNOWN_GAPS if r not in (*RUNTIMES, "*")) == []


def test_the_cache_holds_one_root(machine: Machine) -> None:
    """A changed package list replaces the cached root rather than adding one."""
    parent = machine.image.path.parent.parent
    roots = [p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert roots == [machine.image.key], roots


def test_the_benches_run_inside(machine: Machine) -> None:
    """The benches' small mode inside this machine (podman 5.4 + crun, Python
    3.13), against the installed package: what ``bench/run --debian13`` does
    after its own boot. Only that the table comes out is checked, never a time."""
    use_runtime(machine, "crun")
    done = run_inside(machine, ["--only", "hook", "--small"])
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    assert "| hook | wg-pod-hook createRuntime, through the daemon |" in table, table
    assert "Python 3.13" in table and "package measured: /usr/lib/wg-pod/wg_pod_hook" in table
    assert "FAILED" not in table
