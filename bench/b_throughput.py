"""4. Throughput: bulk TCP from the container through the tunnel (hook,
wireguard-go) vs the same backend set up by ``wg-quick up`` in a plain
namespace, to the same sink in the peer's namespace, interleaved.

Both senders are busybox ``head -c N /dev/zero | nc``; the sink times from
its first byte to EOF, so process and container start-up are not counted.
"""

from __future__ import annotations

import sys

from tests.lab import Lab, token, wait_for
from tests.lab import run as sh

from .common import REPO, Result, Row, Setup, Stats

PORT = 5201
SEND = "head -c {size} /dev/zero | nc {ip} {port}"


def run(lab: Lab, small: bool) -> Result:
    setup = Setup(lab)
    peer = setup.peer
    size = (4 if small else 200) * 1024 * 1024
    pairs = 1 if small else 6
    ip = str(peer.tunnel_v4.ip)
    sink = lab.popen(
        [sys.executable, str(REPO / "bench" / "sink.py"), str(PORT), str(3 * pairs + 2), "120"],
        netns=peer.ns.name,
        name="sink",
    )
    wait_for(lambda: "listening" in lab.log_of("sink"), timeout=10, what="sink")

    # The container, with the hook.
    conf = setup.config()
    name, _ = setup.podman.run(
        "sleep", "3600", annotations={"wg-pod.config": str(conf)}, detach=True
    )

    # The baseline: wg-quick (wireguard-go, as this kernel has no WireGuard)
    # in a namespace with a veth to the host, like a container's.
    ns = lab.netns()
    _, underlay = lab.veth(ns)
    ns.run(["ip", "route", "add", "default", "via", str(underlay.host_v4.ip)])
    # The peer's namespace knows only its own veth: the way back to this one.
    peer.run(
        ["ip", "route", "add", str(underlay.inner_v4.network), "via", str(peer.underlay.host_v4.ip)]
    )
    ifname = f"wgb{token()}"  # not wgq: the pool's names
    quick_conf = lab.secret_file(peer.client_config())
    wg_conf = quick_conf.with_name(f"{ifname}.conf")
    quick_conf.rename(wg_conf)
    ns.run(["wg-quick", "up", str(wg_conf)], timeout=30)

    def down() -> None:
        ns.run(["wg-quick", "down", str(wg_conf)], check=False, timeout=30)

    lab.defer(f"wg-quick down {ifname}", down)

    fetch = f"until timeout 5 wget -q -O /dev/null {peer.url_v4}; do sleep 0.1; done"
    setup.podman("exec", name, "timeout", "30", "sh", "-c", fetch)
    ns.run(["timeout", "30", "busybox", "sh", "-c", fetch], timeout=40)

    def transfer(argv: list[str], via: str) -> float:
        before = len(_sink_lines(lab))
        if via == "podman":
            setup.podman(*argv, timeout=300)
        elif via == "host":
            sh(argv, timeout=300)
        else:
            ns.run(argv, timeout=300)
        wait_for(lambda: len(_sink_lines(lab)) > before, timeout=30, what="sink result")
        got, seconds = _sink_lines(lab)[before]
        if got != size:
            raise RuntimeError(f"sink got {got} bytes of {size}")
        mbit = got * 8 / seconds / 1e6
        return mbit

    pid = setup.podman("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    send = SEND.format(size=size, ip=ip, port=PORT)

    def container() -> float:
        return transfer(["exec", name, "sh", "-c", send], "podman")

    def quick() -> float:
        return transfer(["busybox", "sh", "-c", send], "ns")

    def nsenter() -> float:
        # The container's tunnel with the sender outside the container's
        # cgroups (nsenter into its network namespace only): tells the
        # tunnel's cost from the CPU share podman's cgroups give the container.
        argv = ["nsenter", f"--net=/proc/{pid}/ns/net", "busybox", "sh", "-c", send]
        return transfer(argv, "host")

    container()  # warm-up (both directions' handshakes, TCP caches)
    quick()
    hooked: list[float] = []
    plain: list[float] = []
    entered: list[float] = []
    for i in range(pairs):
        order = [(hooked, container), (plain, quick), (entered, nsenter)]
        for samples, action in order[i % 3 :] + order[: i % 3]:
            samples.append(action())
    sink.terminate()
    row = Row(
        "throughput",
        f"TCP {size >> 20} MiB container -> peer, via hook",
        "Mbit/s",
        Stats.of(hooked),
        Stats.of(plain),
        "wg-quick",
    )
    row2 = Row(
        "throughput",
        f"TCP {size >> 20} MiB, hook's tunnel, sender nsenter'd (host cgroup)",
        "Mbit/s",
        Stats.of(entered),
        Stats.of(plain),
        "wg-quick",
    )
    return Result([row, row2])


def _sink_lines(lab: Lab) -> list[tuple[int, float]]:
    found = []
    for line in lab.log_of("sink").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            found.append((int(parts[0]), float(parts[1])))
    return found
