"""No leaks: the kill switch and the DNS restriction, tried from inside.

Every blocked way out has a control test showing the same way works when
wg-pod is told not to block it, so these tests can fail.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.support import Sniffer, fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Lab, Peer, run, wait_for

pytestmark = pytest.mark.root

TESTS = Path(__file__).resolve().parents[1]
ECHOD = str(TESTS / "echod.py")
DNSD = str(TESTS / "dnsd.py")
ECHO_PORT = 7777
FULL_TUNNEL = ["0.0.0.0/0", "::/0"]
MASQUERADE = """table inet wgpt-nat {
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "eth0" masquerade
    }
}
"""


@dataclass(frozen=True)
class Outside:
    """Echo servers at host addresses outside the container's networks."""

    addresses: dict[int, str]


@pytest.fixture
def outside(lab: Lab, peer: Peer) -> Outside:
    """Echo servers on the host's side of the peer's underlay.

    The stand-in reaches them through its eth0 (the host is its gateway);
    the peer forwards and masquerades, so the same addresses are reachable
    through the tunnel too.
    """
    peer.ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    peer.ns.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    peer.ns.run(
        ["nft", "-f", "-"],
        input=MASQUERADE,
    )
    addresses = {4: str(peer.underlay.host_v4.ip), 6: str(peer.underlay.host_v6.ip)}
    for address in addresses.values():
        lab.popen([sys.executable, ECHOD, "serve", address, str(ECHO_PORT)], name=f"echo-{address}")
        wait_for(
            lambda a=address: probe_from_host("tcp", a),  # type: ignore[misc]
            timeout=10,
            what=f"echo server on {address}",
        )
    return Outside(addresses)


def probe_from_host(proto: str, address: str) -> bool:
    probe = [sys.executable, ECHOD, "probe", proto, address, str(ECHO_PORT)]
    return run(probe, check=False).returncode == 0


def ways_out(standin: ContainerStandIn, address: str, *, bound: bool) -> dict[str, bool]:
    """Which of TCP, UDP and ICMP reach ``address``: through eth0 by interface
    and by source address when ``bound``, else wherever the routes send them."""
    version = 6 if ":" in address else 4
    source = str((standin.underlay.inner_v6 if version == 6 else standin.underlay.inner_v4).ip)
    binds = {"dev eth0": ["--dev", "eth0"], f"source {source}": ["--source", source]}
    pings = {"dev eth0": ["-I", "eth0"], f"source {source}": ["-I", source]}
    if not bound:
        binds, pings = {"routed": []}, {"routed": []}
    results = {}
    for how, extra in binds.items():
        for proto in ("tcp", "udp"):
            argv = [sys.executable, ECHOD, "probe", proto, address, str(ECHO_PORT), *extra]
            results[f"{proto} {how}"] = standin.run(argv, check=False).returncode == 0
    for how, extra in pings.items():
        argv = ["busybox", "ping", f"-{version}", "-c", "1", "-W", "2", *extra, address]
        results[f"icmp {how}"] = standin.run(argv, check=False).returncode == 0
    return results


def full_tunnel(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, switch: str
) -> None:
    conf = write_config(config_dir, peer.client_config(allowed_ips=FULL_TUNNEL))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.kill-switch": switch})
    assert peer.page in fetch_in(standin, peer.url_v4)


@pytest.mark.parametrize("version", [4, 6])
def test_without_the_kill_switch_eth0_is_a_way_out(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    version: int,
) -> None:
    """The control: what the kill switch blocks does leave when it is off."""
    full_tunnel(peer, standin, config_dir, hook, "off")
    results = ways_out(standin, outside.addresses[version], bound=True)
    assert {k: v for k, v in results.items() if "dev eth0" in k} == {
        "tcp dev eth0": True,
        "udp dev eth0": True,
        "icmp dev eth0": True,
    }


@pytest.mark.parametrize("version", [4, 6])
def test_kill_switch_blocks_every_way_out_beside_the_tunnel(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    version: int,
) -> None:
    full_tunnel(peer, standin, config_dir, hook, "auto")  # auto: on for a full tunnel
    address = outside.addresses[version]
    leaks = {how: ok for how, ok in ways_out(standin, address, bound=True).items() if ok}
    assert leaks == {}
    through_tunnel = ways_out(standin, address, bound=False)
    assert through_tunnel == {"tcp routed": True, "udp routed": True, "icmp routed": True}


@pytest.mark.parametrize("version", [4, 6])
def test_a_lan_routed_with_add_route_stays_reachable_with_the_kill_switch_on(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    version: int,
) -> None:
    """``wg-pod.add-route``: a LAN the user routes outside the tunnel on
    purpose (here one outside address, by the stand-in's gateway) passes the
    kill switch through eth0; the rest beside the tunnel stays shut."""
    address, elsewhere = outside.addresses[version], outside.addresses[10 - version]
    if version == 4:
        route = f"{address}/32:{standin.underlay.host_v4.ip}"
    else:
        route = f"[{address}/128]:[{standin.underlay.host_v6.ip}]"
    conf = write_config(config_dir, peer.client_config(allowed_ips=FULL_TUNNEL))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.add-route": route})  # kill switch: on
    assert peer.page in fetch_in(standin, peer.url_v4)
    assert all(ways_out(standin, address, bound=True).values()), ways_out(
        standin, address, bound=True
    )
    leaks = {how: ok for how, ok in ways_out(standin, elsewhere, bound=True).items() if ok}
    assert leaks == {}


def dns_servers(lab: Lab, peer: Peer, standin: ContainerStandIn) -> tuple[list[str], list[str]]:
    """Responders on the tunnel's side (peer) and outside it (on the host, at
    the stand-in's gateway, as podman's resolver would be)."""
    tunnel = [str(peer.tunnel_v4.ip), str(peer.tunnel_v6.ip)]
    other = [str(standin.underlay.host_v4.ip), str(standin.underlay.host_v6.ip)]
    for address in tunnel:
        lab.popen(
            [sys.executable, DNSD, "serve", address, "10.250.0.53"],
            netns=peer.ns.name,
            name=f"dns-{address}",
        )
    for address in other:
        lab.popen([sys.executable, DNSD, "serve", address, "198.18.0.53"], name=f"dns-{address}")
    for address in tunnel:
        wait_for(
            lambda a=address: dns(peer.ns.run, a) is not None,  # type: ignore[misc]
            timeout=10,
            what=f"DNS on {address}",
        )
    for address in other:
        wait_for(
            lambda a=address: dns(run, a) is not None,  # type: ignore[misc]
            timeout=10,
            what=f"DNS on {address}",
        )
    return tunnel, other


def dns(runner, server: str, *, tcp: bool = False) -> str | None:  # type: ignore[no-untyped-def]
    argv = [sys.executable, DNSD, "query", server, "example.org", *(["--tcp"] if tcp else [])]
    done = runner(argv, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_dns_goes_only_to_the_tunnel_servers(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    tunnel, other = dns_servers(lab, peer, standin)
    text = peer.client_config(extra_interface_lines=[f"DNS = {', '.join(tunnel)}, corp.example"])
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text)})
    fetch_in(standin, peer.url_v4)

    resolv = standin.seen_resolv_conf()
    assert resolv == standin.resolv_conf.read_text()
    assert [line for line in resolv.splitlines() if not line.startswith("#")] == [
        f"nameserver {tunnel[0]}",
        f"nameserver {tunnel[1]}",
        "search corp.example",
    ]
    for server in tunnel:
        assert dns(standin.run, server) == "10.250.0.53"
        assert dns(standin.run, server, tcp=True) == "10.250.0.53"
    # Any other server: the query goes to the tunnel's resolver instead, as
    # when something rewrites resolv.conf after the hook (podman 5 does).
    for server in other:
        assert dns(standin.run, server) == "10.250.0.53"
        assert dns(standin.run, server, tcp=True) == "10.250.0.53"


def test_dns_to_a_family_without_a_tunnel_resolver_is_dropped(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    tunnel, other = dns_servers(lab, peer, standin)
    text = peer.client_config(extra_interface_lines=[f"DNS = {tunnel[0]}"])  # IPv4 only
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text)})
    assert dns(standin.run, other[0]) == "10.250.0.53"  # redirected to the IPv4 resolver
    assert dns(standin.run, other[1]) is None  # IPv6: nowhere to send it
    assert dns(standin.run, other[1], tcp=True) is None


def test_dns_off_leaves_dns_alone(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """The control: the non-tunnel resolvers answer when wg-pod leaves DNS alone."""
    tunnel, other = dns_servers(lab, peer, standin)
    before = standin.resolv_conf.read_text()
    text = peer.client_config(extra_interface_lines=[f"DNS = {tunnel[0]}"])
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text), "wg-pod.dns": "off"})
    assert standin.resolv_conf.read_text() == standin.seen_resolv_conf() == before
    for server in other:
        assert dns(standin.run, server) == "198.18.0.53"
        assert dns(standin.run, server, tcp=True) == "198.18.0.53"


PARTIAL = "partial"
FULL = "full"


def tunnel_without_interface(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    kind: str,
    switch: str,
) -> list[str]:
    """Up, then the interface gone (as when wireguard-go dies or someone
    deletes the link); returns destinations the tunnel carried."""
    allowed = FULL_TUNNEL if kind == FULL else None
    conf = write_config(config_dir, peer.client_config(allowed_ips=allowed))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.kill-switch": switch})
    assert peer.page in fetch_in(standin, peer.url_v4)
    standin.run(["ip", "link", "del", "wg0"])
    carried = [str(peer.tunnel_v4.ip), str(peer.tunnel_v6.ip)]
    return carried + list(outside.addresses.values()) if kind == FULL else carried


def send_everywhere(standin: ContainerStandIn, destinations: list[str]) -> dict[str, bool]:
    results = {}
    for destination in destinations:
        for how, ok in ways_out(standin, destination, bound=False).items():
            results[f"{how} {destination}"] = ok
    return results


@pytest.mark.parametrize("switch", ["off", "on"])
@pytest.mark.parametrize("kind", [PARTIAL, FULL])
def test_nothing_falls_back_to_eth0_while_the_interface_is_missing(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    kind: str,
    switch: str,
) -> None:
    """Unreachable routes below the tunnel's own guard every prefix it
    carried: counted on the host side of the container's eth0, nothing for
    them leaves; podman's own network still answers."""
    destinations = tunnel_without_interface(peer, standin, config_dir, hook, outside, kind, switch)
    with Sniffer(standin.host_ifname, destinations) as sniffer:
        reached = send_everywhere(standin, destinations)
    assert sniffer.count == 0
    assert not any(reached.values()), reached
    gateway = str(standin.underlay.host_v4.ip)
    ping = standin.run(["busybox", "ping", "-c", "1", "-W", "2", gateway], check=False)
    assert ping.returncode == 0, "podman's own network must keep working"


@pytest.mark.parametrize("kind", [PARTIAL, FULL])
def test_without_the_guards_the_tunnel_traffic_would_leave_through_eth0(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    kind: str,
) -> None:
    """The control: remove the unreachable routes by hand and the same
    sends are seen on the host side (so the count above can fail)."""
    destinations = tunnel_without_interface(peer, standin, config_dir, hook, outside, kind, "off")
    for version in ("-4", "-6"):
        standin.run(["ip", version, "route", "flush", "type", "unreachable"])
    with Sniffer(standin.host_ifname, destinations) as sniffer:
        send_everywhere(standin, destinations)
    assert sniffer.count > 0
