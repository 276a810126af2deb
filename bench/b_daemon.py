"""6. The daemon: how fast a tunnel is back after its wireguard-go is killed
(until the container fetches through it again), against what a restart
pays for the tunnel alone (one run of the hook) measured in the same lab;
how fast it follows a peer whose DNS name moves to another address (a real
dnsmasq in the lab); and the daemon's CPU and memory while it watches many
idle tunnels."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.integration.support import PEER_NAME, DnsServer, fetch_in
from tests.lab import (
    Daemon,
    HookRunner,
    Lab,
    rss_kib,
    the_runtime,
    with_resolv_conf,
    write_settings,
)
from wg_pod_hook.daemon import loop as daemon_module
from wg_pod_hook.state import records

from .common import Result, Row, Setup, Stats, timed

DEADLINE = 30.0
# The endpoint rule's wait, shortened from wireguard-tools' 135 s so the
# bench takes seconds: what remains is the daemon's own part.
REFRESH_AFTER = 3


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(lab: Lab, small: bool) -> Result:
    setup = Setup(lab)
    # The hook and the daemon resolve host names through the lab's dnsmasq
    # (their own /etc/resolv.conf in a private mount namespace).
    dns = DnsServer(lab, setup.peer)
    settings = write_settings(
        lab.tmp / "wg-pod-daemon.yaml",
        [setup.config_dir.path],
        endpoint_refresh_after=REFRESH_AFTER,
    )
    prefix = with_resolv_conf(dns.resolv_conf)
    hook = HookRunner(lab, settings, prefix=prefix)
    daemon = Daemon(lab, settings, prefix)
    result = Result()

    # Repair: kill wireguard-go, time until the container's fetch works again.
    standin = lab.standin()
    conf = str(setup.config())
    hook.up(standin, {"wg-pod.config": conf})
    fetch_in(standin, setup.peer.url_v4)
    repairs: list[float] = []
    for _ in range(3 if small else 12):
        record = records.load(the_runtime(), standin.id)
        assert record is not None and record.process is not None
        os.kill(record.process.pid, signal.SIGKILL)
        start = time.perf_counter()
        fetch_in(standin, setup.peer.url_v4, timeout=DEADLINE)
        repairs.append((time.perf_counter() - start) * 1000)
        time.sleep(0.5)  # the daemon's look after the repair

    # The baseline: one run of the hook, what a container restart pays for
    # its tunnel (on new stand-ins, each with its own config).
    runs = []
    for index in range(3 if small else 8):
        fresh = lab.standin()
        conf_n = str(setup.config(f"b{index}.conf"))
        runs.append(timed(lambda s=fresh, c=conf_n: hook.up(s, {"wg-pod.config": c})))
    result.rows.append(
        Row(
            "daemon",
            "wireguard-go killed -> the container fetches again",
            "ms",
            Stats.of(repairs),
            baseline=Stats.of(runs),
            baseline_what="one hook run (a restart's tunnel setup)",
        )
    )

    # Footprint: many idle tunnels.
    count = 5 if small else 50
    for index in range(count):
        idle = lab.standin()
        hook.up(idle, {"wg-pod.config": str(setup.config(f"i{index}.conf"))})
    wait = 5.0 if small else 30.0
    deadline = time.monotonic() + 20
    while (
        len(list(Path(the_runtime().health).glob("*.json"))) < count and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    cpu_before, started = _cpu_seconds(daemon.process.pid), time.monotonic()
    time.sleep(wait)
    cpu = (_cpu_seconds(daemon.process.pid) - cpu_before) / (time.monotonic() - started) * 100
    rss = rss_kib(daemon.process.pid) / 1024
    tunnels = len(records.all_ids(the_runtime()))
    result.rows.append(
        Row("daemon", f"CPU, {tunnels} tunnels idle over {wait:.0f} s", "%", Stats.of([cpu]))
    )
    result.rows.append(Row("daemon", f"RSS with {tunnels} tunnels", "MiB", Stats.of([rss])))
    result.details.append(
        "daemon: repair is event-driven (netlink link events), so its time is the "
        "hook's work less the interpreter start; idle CPU is one look at each tunnel "
        "every 10 s"
    )

    # Last, as it moves the peer: its DNS name moves to another address;
    # time until the container fetches again.
    named = lab.standin()
    named_conf = setup.config("named.conf", endpoint=f"{PEER_NAME}:{setup.peer.listen_port}")
    hook.up(named, {"wg-pod.config": str(named_conf)})
    fetch_in(named, setup.peer.url_v4)
    follows: list[float] = []
    for _ in range(1 if small else 3):
        dns.move_peer()
        start = time.perf_counter()
        fetch_in(named, setup.peer.url_v4, timeout=DEADLINE + REFRESH_AFTER)
        follows.append(time.perf_counter() - start)
    result.rows.append(
        Row(
            "daemon",
            f"peer's DNS name moves -> fetches again (refresh after {REFRESH_AFTER} s)",
            "s",
            Stats.of(follows),
        )
    )
    result.details.append(
        f"daemon: a moved endpoint is noticed at the daemon's next look (every "
        f"{daemon_module.TICK:g} s) once the peer's last handshake is older than "
        f"endpoint_refresh_after ({REFRESH_AFTER} s here, 135 s by default, the rule of "
        "wireguard-tools' reresolve-dns); then one lookup and one UAPI/netlink set, and "
        "the next handshake. The floor is refresh_after plus up to one look interval"
    )
    return result
