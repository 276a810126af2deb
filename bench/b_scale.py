"""5. Scale: N containers with tunnels started in parallel: all reach the
peer through their tunnel; the hook's own wall time (p50/p99) and peak
memory, measured by a wrapper around wg-pod-hook; nothing left after removal.
Twice: the hook standalone, and handing its work to a running daemon.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.lab import Daemon, Lab, link_names, the_runtime
from wg_pod_hook.model.names import temp_name

from .common import Result, Row, Setup, Stats, hook_command, timed

FETCH = "for i in $(seq 1 30); do timeout 5 wget -qO- {url} && exit 0; sleep 0.2; done; exit 1"

# Runs the real hook as a child and appends its wall time and peak RSS
# (getrusage of the waited child: wireguard-go, never waited, is not counted).
WRAPPER = """#!{python} -I
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen({hook!r} + sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
ms = (time.perf_counter() - start) * 1000
with open({log!r}, "a") as log:
    log.write(json.dumps({{"stage": sys.argv[1], "ms": ms, "maxrss_kb": usage.ru_maxrss}}) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(lab: Lab, small: bool) -> Result:
    count = 3 if small else 50
    log = lab.tmp / "hook-times.jsonl"
    wrapper = lab.tmp / "hook-wrapper"
    wrapper.write_text(
        WRAPPER.format(
            python=sys.base_exec_prefix + "/bin/python3",
            hook=hook_command(lab),
            log=str(log),
        )
    )
    wrapper.chmod(0o755)
    os.chmod(lab.tmp, 0o755)  # runc runs the hook as root, but keep it readable
    setup = Setup(lab, hook=str(wrapper))
    result = Result()
    for way in ("standalone", "through the daemon"):
        daemon = Daemon(lab, setup.settings) if way != "standalone" else None
        try:
            _parallel(setup, count, way, log, result)
        finally:
            if daemon is not None:
                daemon.stop()
    return result


def _parallel(setup: Setup, count: int, way: str, log: Path, result: Result) -> None:
    log.unlink(missing_ok=True)
    confs = [setup.config(f"c{i}.conf") for i in range(count)]
    cidfiles = [setup.lab.tmp / f"cid-{i}" for i in range(count)]
    for path in cidfiles:
        path.unlink(missing_ok=True)

    def one(i: int) -> bool:
        _, done = setup.podman.run(
            "sh",
            "-c",
            FETCH.format(url=setup.peer.url_v4),
            annotations={"wg-pod.config": str(confs[i])},
            options=["--cidfile", str(cidfiles[i])],
            check=False,
            timeout=600,
        )
        return done.returncode == 0 and setup.peer.page in done.stdout

    ok: list[bool] = []
    with ThreadPoolExecutor(max_workers=count) as pool:
        wall = timed(lambda: ok.extend(pool.map(one, range(count))))

    entries = [json.loads(line) for line in log.read_text().splitlines()]
    creates = [e["ms"] for e in entries if e["stage"] == "createRuntime"]
    rss = [e["maxrss_kb"] / 1024 for e in entries]
    ids = [p.read_text().strip() for p in cidfiles if p.exists()]
    left = _leftovers(ids)
    connected = sum(ok)
    result.rows += [
        Row("scale", f"{count} parallel, {way}: hook createRuntime", "ms", Stats.of(creates)),
        Row("scale", f"{count} parallel, {way}: hook peak RSS", "MiB", Stats.of(rss)),
    ]
    p99 = (
        statistics.quantiles(creates, n=100, method="inclusive")[98]
        if len(creates) > 1
        else creates[0]
    )
    details = [
        f"scale, {way}: {connected}/{count} containers connected through their tunnels; "
        f"all {count} started and exited in {wall / 1000:.1f} s",
        f"scale, {way}: hook createRuntime p50 {statistics.median(creates):.0f} ms, "
        f"p99 {p99:.0f} ms; peak RSS max {max(rss):.1f} MiB",
        f"scale, {way}: left after removal: {left or 'nothing'}",
    ]
    result.details += details
    if connected != count or left or len(ids) != count:
        raise RuntimeError("; ".join(details))


def _leftovers(container_ids: list[str]) -> list[str]:
    """Host-side interfaces, wireguard-go processes and records of these containers."""
    names = {temp_name(cid) for cid in container_ids}
    left = [f"link {n}" for n in link_names() if n in names]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "wireguard-go" in argv[0] and names & set(argv):
            left.append(f"process {pid}")
    left += [
        f"record {c[:12]}"
        for c in container_ids
        if Path(the_runtime().records, f"{c}.json").exists()
    ]
    return left
