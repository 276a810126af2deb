"""2. Hook latency: ``wg-pod-hook createRuntime`` (as the packages install
it) against a throwaway namespace with a process, standalone and handing
its work to a running daemon, vs the original tool's procedure as separate
commands (bench/manual.sh); poststop both ways; and a breakdown of the
standalone hook's time (interpreter start, imports with ``-X importtime``,
and cProfile of a run).
"""

from __future__ import annotations

import contextlib
import os
import pstats
import re
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

from tests.lab import Client, ContainerStandIn, Daemon, HookRunner, Lab
from tests.lab import run as sh

from .common import (
    REPO,
    Result,
    Row,
    Setup,
    Stats,
    child_python,
    hook_command,
    interleaved,
    timed,
)

MANUAL = REPO / "bench" / "manual.sh"


def _host_routes_client(setup: Setup) -> tuple[Client, str]:
    """A client with /32 and /128 addresses, so every allowed prefix needs a
    route of its own (in the hook and in the script alike)."""
    client = setup.peer.add_client()
    text = client.config
    for address in client.addresses:
        text = text.replace(str(address), f"{address.ip}/{address.max_prefixlen}")
    return client, text


ANNOTATIONS_EXTRA = {
    "wg-pod.delete-default": "true",
    "wg-pod.port-remapping": "80:8080",
    "wg-pod.kill-switch": "off",
}


def _kill_pidfile(path: Path) -> None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def run(lab: Lab, small: bool) -> Result:
    setup = Setup(lab)
    client, text = _host_routes_client(setup)
    conf = setup.config_dir.write("wg0.conf", text)
    annotations = {"wg-pod.config": str(conf), **ANNOTATIONS_EXTRA}
    hook = HookRunner(lab, setup.settings, command=hook_command(lab))
    poststops: list[float] = []
    keyfile = lab.secret_file(client.private_key + "\n")
    addresses = ",".join(f"{a.ip}/{a.max_prefixlen}" for a in client.addresses)
    allowed = ",".join(str(n) for n in client.allowed_ips)

    def hook_once() -> float:
        standin = lab.standin()
        try:
            ms = timed(lambda: hook.up(standin, annotations, check=True))
            _check_tunnel(standin)
        finally:
            standin.stop()
            poststops.append(timed(lambda: hook.down(standin, annotations)))
        return ms

    def manual_once() -> float:
        standin = lab.standin()
        tmp = f"wgpb{os.urandom(5).hex()}"
        pidfile = lab.tmp / f"manual-{tmp}.pid"
        argv = [
            str(MANUAL),
            str(standin.pid),
            tmp,
            "wg0",
            addresses,
            str(keyfile),
            client.peer_public_key,
            allowed,
            client.endpoint,
            str(pidfile),
        ]
        try:
            ms = timed(lambda: sh(argv, timeout=60))
            _check_tunnel(standin)
        finally:
            _kill_pidfile(pidfile)
            standin.stop()
            Path(f"/var/run/wireguard/{tmp}.sock").unlink(missing_ok=True)
        return ms

    hook_once()  # warm-up: page cache, .pyc files
    manual_once()
    pairs = 2 if small else 12
    poststops.clear()
    hooked, manual = interleaved(pairs, hook_once, manual_once)
    alone_down = Stats.of(poststops)
    daemon = Daemon(lab, setup.settings)
    hook_once()  # the daemon's first request
    poststops.clear()
    warm, manual_warm = interleaved(pairs, hook_once, manual_once)
    warm_down = Stats.of(poststops)
    daemon.stop()
    rows = [
        Row(
            "hook",
            "wg-pod-hook createRuntime, standalone",
            "ms",
            Stats.of(hooked),
            Stats.of(manual),
            "manual.sh",
        ),
        Row(
            "hook",
            "wg-pod-hook createRuntime, through the daemon",
            "ms",
            Stats.of(warm),
            Stats.of(manual_warm),
            "manual.sh",
        ),
        Row("hook", "wg-pod-hook poststop, standalone", "ms", alone_down),
        Row(
            "hook",
            "wg-pod-hook poststop, through the daemon",
            "ms",
            warm_down,
            alone_down,
            "standalone",
        ),
    ]
    details: list[str] = [
        "hook: the hook as the packages install it: /usr/bin/python3 -IS with wg-pod's "
        "code first on its path (packaging/launcher.in)"
    ]
    rows += _breakdown(lab, small, hook, annotations, details)
    return Result(rows, details)


def _check_tunnel(standin: ContainerStandIn) -> None:
    """Both ways must leave the same result: wg0 up, no IPv4 default route."""
    links = standin.links()
    if "wg0" not in links:
        raise RuntimeError(f"no wg0 in {standin.name}: {links}")
    if standin.default_routes(4):
        raise RuntimeError(f"default route left in {standin.name}")


def _median_ms(argv: list[str], n: int) -> Stats:
    return Stats.of(
        [
            timed(lambda: subprocess.run(argv, check=True, capture_output=True, env=os.environ))
            for _ in range(n)
        ]
    )


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_times(module: str) -> dict[str, float]:
    """Self time (ms) of everything ``import module`` loads, grouped by top-level package."""
    done = subprocess.run(
        child_python(f"import {module}", "-X", "importtime"),
        check=True,
        capture_output=True,
        text=True,
    )
    groups: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            top = match.group(4).split(".")[0]
            groups[top] += int(match.group(1)) / 1000
    return dict(groups)


def _breakdown(
    lab: Lab, small: bool, hook: HookRunner, annotations: dict[str, str], details: list[str]
) -> list[Row]:
    n = 3 if small else 10
    start = _median_ms(child_python("pass"), n)
    rows = [Row("hook", "breakdown: interpreter start (python -c pass)", "ms", start)]
    # The thin hook imports wg_pod_hook.hook (and handoff) only; standalone,
    # poststop adds stages (teardown), createRuntime lifecycle (netlink, pyroute2).
    for module, stage in (
        ("wg_pod_hook.hook", "the thin hook"),
        ("wg_pod_hook.stages", "standalone poststop"),
        ("wg_pod_hook.tunnel.lifecycle", "standalone createRuntime"),
    ):
        rows.append(
            Row(
                "hook",
                f"breakdown: python -c 'import {module}' ({stage}'s imports)",
                "ms",
                _median_ms(child_python(f"import {module}"), n),
                start,
                "python -c pass",
            )
        )
    groups = import_times("wg_pod_hook.tunnel.lifecycle")
    total = sum(groups.values())
    top = sorted(groups.items(), key=lambda kv: -kv[1])[:8]
    details.append(
        "hook: -X importtime, import wg_pod_hook.tunnel.lifecycle: "
        f"{total:.0f} ms self time in all, "
        "by package: " + ", ".join(f"{name} {ms:.0f}" for name, ms in top)
    )
    rows.append(
        Row(
            "hook",
            "breakdown: createRuntime's imports, pyroute2.* self time (-X importtime)",
            "ms",
            Stats.of([groups.get("pyroute2", 0.0)]),
        )
    )
    rows += _profile(lab, hook, annotations, details)
    return rows


# (label, file suffix, function name): cumulative time of these in a profiled run.
_PROFILED = (
    ("backend start (wireguard-go, UAPI socket)", "lifecycle.py", "_create"),
    ("backend configure (UAPI set)", "userspace.py", "configure"),
    ("nft (libnftables in-process)", "nft.py", "apply"),
    ("records, stale-record prune", "teardown.py", "prune_stale"),
    ("validate (annotations, config, plan)", "lifecycle.py", "prepare"),
)


def _profile(
    lab: Lab, hook: HookRunner, annotations: dict[str, str], details: list[str]
) -> list[Row]:
    """One hook run under cProfile; where its time goes (profiler overhead included)."""
    standin = lab.standin()
    out = lab.tmp / "hook.prof"
    state = standin.oci_state(annotations)
    # main, not the installed entry point: that one ends with os._exit,
    # before cProfile could write its file.
    script = lab.tmp / "profiled_hook.py"
    script.write_text("from wg_pod_hook.hook import main\nraise SystemExit(main())\n")
    profiled = f"import cProfile; cProfile.run(open({str(script)!r}).read(), {str(out)!r})"
    argv = [*child_python(profiled), "createRuntime"]
    try:
        total = timed(
            lambda: sh(argv, input=state, env=hook.env, timeout=60),
        )
    finally:
        standin.stop()
        sh(
            [*hook.command, "poststop"],
            input=state,
            env=hook.env,
            check=False,
        )
    stats = pstats.Stats(str(out))
    table = stats.stats  # type: ignore[attr-defined]
    found: dict[str, float] = {}
    netlink = 0.0
    for (filename, _line, name), (_cc, _nc, _tt, ct, callers) in table.items():
        for label, suffix, func in _PROFILED:
            if filename.endswith(suffix) and name == func:
                found[label] = ct * 1000
        if filename.endswith("wg_pod_hook/kernel/netlink.py"):
            # Only calls made by the lifecycle: nested netlink.py calls are inside them.
            for (caller_file, _l, _n), entry in callers.items():
                if caller_file.endswith("wg_pod_hook/tunnel/lifecycle.py"):
                    netlink += entry[3] * 1000
        if filename.endswith("wg_pod_hook/hook.py") and name == "main":
            found["main"] = ct * 1000
    found["netlink (netlink.Netlink calls from lifecycle)"] = netlink
    rows = [
        Row("hook", f"profile: {label}", "ms", Stats.of([ms]), note="1 run, cProfile")
        for label, ms in found.items()
        if label != "main"
    ]
    details.append(
        f"hook: profiled run {total:.0f} ms wall, hook.main {found.get('main', 0):.0f} ms "
        "(the rest: interpreter start and imports)"
    )
    return rows
