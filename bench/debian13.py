"""``bench/run --debian13 [--only NAMES] ...``: the benchmarks inside the
Debian 13 machine of ``tests/platform`` (podman 5.4 with crun, Python 3.13,
systemd), where users run podman today.

The machine is booted from its cached root, the .deb built from this tree
is installed (its daemon stopped: the benches start their own), and the
benches run inside from the bind-mounted tree against the installed
package: its byte-compiled code in /usr/lib/wg-pod (``--tree``), its
``wg-pod`` for the daemon, the machine's own podman.  The table is the
inner run's; the machine is removed afterwards, also on failure.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from tests.lab import PODMAN_MODE_ENV
from tests.platform.machine import (
    INNER_REPO,
    INNER_VENV,
    Machine,
    MachineError,
    install,
    root,
)

PACKAGE_DIR = "/usr/lib/wg-pod"
TIMEOUT = 3600.0


def run(bench_args: Sequence[str]) -> tuple[int, str]:
    """Boot, install, run ``python -m bench BENCH_ARGS`` inside: its exit
    status and report (its progress goes to stderr)."""
    machine = Machine(root())
    try:
        machine.boot()
        install(machine)
        done = run_inside(machine, bench_args)
    except MachineError as exc:
        print(f"bench/run --debian13: {exc}", file=sys.stderr)
        return 1, ""
    finally:
        for problem in machine.stop():
            print(f"bench/run --debian13: cleanup: {problem}", file=sys.stderr)
    print(done.stderr, end="", file=sys.stderr)
    return done.returncode, done.stdout


def run_inside(machine: Machine, bench_args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """``python -m bench BENCH_ARGS`` in a machine booted with the package
    installed (tests/platform runs it in its own machine)."""
    return machine.run(
        [f"{INNER_VENV}/bin/python", "-m", "bench", *bench_args, "--tree", PACKAGE_DIR],
        env={
            PODMAN_MODE_ENV: "system",
            # pyroute2 for the benches' own helpers: the package's copy
            "PYTHONPATH": PACKAGE_DIR,
            "PYTHONDONTWRITEBYTECODE": "1",  # the tree is mounted read-only
            "TMPDIR": "/tmp",
        },
        cwd=INNER_REPO,
        check=False,
        timeout=TIMEOUT,
        step="the benches inside the machine",
    )
