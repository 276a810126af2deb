"""What every benchmark shares: timing, statistics, the result table, and a
lab (tests/lab) with a WireGuard peer, a config dir, settings and hooks.

Machines are noisy: each benchmark measures its baseline in the same run,
interleaved with the measured case, and reports medians and ratios.
"""

from __future__ import annotations

import atexit
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab import (
    ConfigDir,
    Lab,
    Peer,
    Podman,
    make_config_dir,
    venv_command,
    write_settings,
)

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# ``bench/run --tree DIR``: measure the wg_pod_hook package in DIR (a scratch
# copy with a candidate change) instead of the installed one, everywhere the
# benchmarks run the hook or import it.
TREE: Path | None = None


SYSTEM_PYTHON = "/usr/bin/python3"


def code_path() -> str:
    """Where the measured wg_pod_hook is: --tree, else this repository."""
    return str(TREE if TREE is not None else REPO)


# What the packages ship next to wg_pod_hook (pyroute2, in /usr/lib/wg-pod)
# or install for it (python3-yaml); the benchmarks take these from the test
# virtualenv.
HOOK_LIBRARIES = ("pyroute2", "yaml", "_yaml")
_library_dir: Path | None = None


def library_dir() -> Path:
    """A directory of links to the virtualenv's copies of HOOK_LIBRARIES and
    nothing else, removed at exit.  Not the whole site-packages: the
    standalone hook runs the site module late (after its path is set), and
    a .pth file of the machine's that imports a package the virtualenv has
    (certifi, here) would cost it time no installed hook pays."""
    global _library_dir
    if _library_dir is None:
        site = Path(sysconfig.get_paths()["purelib"])
        _library_dir = Path(tempfile.mkdtemp(prefix="wg-pod-bench-lib-"))
        _library_dir.chmod(0o755)
        atexit.register(shutil.rmtree, _library_dir, ignore_errors=True)
        for name in HOOK_LIBRARIES:
            if (site / name).exists():
                (_library_dir / name).symlink_to(site / name)
    return _library_dir


def path_prelude() -> str:
    """The launcher's sys.path (see hook_command), as a line of Python."""
    return (
        f"import sys; sys.path.insert(0, {code_path()!r}); "
        f"sys.path.append({str(library_dir())!r})\n"
    )


def child_python(code: str, *options: str) -> list[str]:
    """``code`` in the Python the installed hook runs in (the system one,
    isolated, with the launcher's path), after ``options`` such as
    ``-X importtime``; ``code`` "pass" leaves the path alone."""
    if code != "pass":
        code = path_prelude() + code
    return [SYSTEM_PYTHON, "-I", *options, "-c", code]


def hook_command(lab: Lab) -> list[str]:
    """The hook as the packages install it (packaging/launcher.in): the
    system Python in isolated mode, without the site module, with wg-pod's
    code first on its path;
    here this tree (or --tree) and, for pyroute2 and PyYAML, the test
    virtualenv's site-packages, which the packages ship instead."""
    launcher = lab.tmp / "wg-pod-hook"
    if not launcher.exists():
        launcher.write_text(
            f"#!{SYSTEM_PYTHON} -IS\n{path_prelude()}from wg_pod_hook.hook import run\nrun()\n"
        )
        launcher.chmod(0o755)
        os.chmod(lab.tmp, 0o755)
    return [str(launcher)]


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (in the row's unit)."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass(frozen=True)
class Row:
    """One line of the table: a measurement, optionally with its baseline."""

    bench: str
    what: str
    unit: str
    stats: Stats
    baseline: Stats | None = None
    baseline_what: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline.median == 0:
            return None
        return self.stats.median / self.baseline.median


@dataclass
class Result:
    """What one benchmark produced: table rows and free-form detail lines."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row]) -> str:
    """A Markdown table: median, min, max, n, the baseline's median and the ratio."""
    header = ["bench", "measure", "unit", "median", "min", "max", "n", "baseline (median)", "ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        s = row.stats
        base = "" if row.baseline is None else f"{row.baseline_what}: {_fmt(row.baseline.median)}"
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        what = row.what + (f" ({row.note})" if row.note else "")
        cells = [row.bench, what, row.unit, _fmt(s.median), _fmt(s.low), _fmt(s.high), str(s.n)]
        lines.append("| " + " | ".join([*cells, base, ratio]) + " |")
    return "\n".join(lines)


def timed(action: Callable[[], object]) -> float:
    """Wall time of ``action()`` in milliseconds."""
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def interleaved(
    pairs: int, measured: Callable[[], float], baseline: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Alternate measured and baseline runs (order swapped every other pair)
    so drifting machine load hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(pairs):
        if i % 2:
            b.append(baseline())
            a.append(measured())
        else:
            a.append(measured())
            b.append(baseline())
    return a, b


class Setup:
    """A lab with one peer, a config dir, settings and a hooks dir made by
    ``wg-pod install`` (optionally pointing at another hook executable)."""

    def __init__(self, lab: Lab, *, hook: str | None = None) -> None:
        if hook is None:
            hook = hook_command(lab)[0]
        self.lab = lab
        self.peer: Peer = lab.peer()
        self.config_dir: ConfigDir = make_config_dir(lab)
        self.settings = write_settings(lab.tmp / "wg-pod.yaml", [self.config_dir.path])
        self.hooks_dir = lab.tmp / "hooks.d"
        self.hooks_dir.mkdir()
        argv = [
            *venv_command("wg-pod", "wg_pod_hook.cli"),
            "install",
            "--hooks-dir",
            str(self.hooks_dir),
            "--settings",
            str(self.settings),
        ]
        if hook is not None:
            argv += ["--hook", hook]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        self.podman = Podman(lab, hooks_dir=self.hooks_dir)

    def config(self, name: str = "wg0.conf", **kw: object) -> Path:
        """A new client of the peer, written as a config the hook accepts."""
        return self.config_dir.write(name, self.peer.client_config(**kw))  # type: ignore[arg-type]


def load_note() -> str:
    """The machine's load, to print next to the figures."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {os.cpu_count()} CPUs"
