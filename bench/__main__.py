"""``python -m bench [--small] [--only NAMES] [--markdown FILE] [--debian13]``:
run the benchmarks, each in its own lab (everything it creates is removed,
also on failure), and print one table; ``--debian13``: inside the Debian
13 machine of tests/platform (bench/debian13.py).  Exit status 1 only when
a benchmark could not run; times never fail anything.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

from tests.lab import Lab
from wg_pod_hook import runtime

from . import common
from .common import Result, Row, load_note, render_table

# The benches' own state directory (records, locks, the daemon's sockets),
# as the suite has its own: an installation's /run/wg-pod and its daemon are
# never touched, and nothing is left behind.  $WG_POD_STATE_DIR overrides
# (the suite's smoke test runs the benches in its own).
BENCH_STATE_DIR = "/run/wg-pod-bench"

BENCHES = {
    "start": "bench.b_start",
    "hook": "bench.b_hook",
    "first": "bench.b_first",
    "throughput": "bench.b_throughput",
    "scale": "bench.b_scale",
    "daemon": "bench.b_daemon",
}


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny sizes (CI: code check only)")
    parser.add_argument("--only", default="", help="comma list of: " + ", ".join(BENCHES))
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--tree",
        type=Path,
        help="measure the wg_pod_hook package under this directory (a scratch copy)",
    )
    parser.add_argument("--debug", action="store_true")
    parser.add_argument(
        "--debian13",
        action="store_true",
        help="inside the Debian 13 machine (podman 5.4, crun), against the .deb of this tree",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    if os.geteuid() != 0:
        print("bench/run: needs root (namespaces, podman)", file=sys.stderr)
        return 2
    if args.tree is not None:
        if not (args.tree / "wg_pod_hook" / "__init__.py").exists():
            parser.error(f"--tree {args.tree}: no wg_pod_hook package there")
        common.TREE = args.tree.resolve()
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if args.debian13:
        if args.tree is not None:
            parser.error("--debian13 measures the installed package: no --tree")
        from . import debian13

        inner = ["--only", ",".join(names), *(["--small"] if args.small else [])]
        code, report = debian13.run([*inner, *(["--debug"] if args.debug else [])])
        print(report, end="")
        if args.markdown:
            args.markdown.write_text(report)
        return code

    own = os.environ.setdefault(runtime.STATE_DIR_ENV, BENCH_STATE_DIR) == BENCH_STATE_DIR
    # The daemons the benches start run the measured package too: ahead of
    # the virtualenv's editable install, which names this repository.
    os.environ["PYTHONPATH"] = common.code_path()
    try:
        return _run(names, args)
    finally:
        if own:
            shutil.rmtree(BENCH_STATE_DIR, ignore_errors=True)


def _run(names: list[str], args: argparse.Namespace) -> int:
    rows: list[Row] = []
    details: list[str] = []
    failed: list[str] = []
    started = time.monotonic()
    details.append(f"machine: {machine()}")
    details.append(f"before: {load_note()}")
    if common.TREE is not None:
        details.append(f"package measured: {common.TREE}/wg_pod_hook (--tree)")
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            module = importlib.import_module(BENCHES[name])
            with Lab() as lab:
                result: Result = module.run(lab, args.small)
        except Exception as exc:
            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        rows += result.rows
        details += result.details
        details.append(f"{name}: {time.monotonic() - t0:.0f} s")
    details.append(f"after: {load_note()}")
    mode = "small (CI check, figures meaningless)" if args.small else "full"
    report = "\n".join(
        [
            f"wg-pod benchmarks, {mode} mode, {time.monotonic() - started:.0f} s",
            "",
            render_table(rows),
            "",
            *(f"- {line}" for line in details),
            *(f"- FAILED {line}" for line in failed),
        ]
    )
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
