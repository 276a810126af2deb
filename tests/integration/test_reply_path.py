"""Connections that arrive outside the tunnel (podman's published ports, from
another machine) get their replies back through eth0, also when the tunnel
carries the container's default route and the kill switch is on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.support import fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Lab, Peer, run, the_runtime, wait_for
from wg_pod_hook.model.names import REPLY_MARK
from wg_pod_hook.tunnel import teardown

pytestmark = pytest.mark.root

ECHOD = str(Path(__file__).resolve().parents[1] / "echod.py")
ECHO_PORT = 7777


def probe(proto: str, address: str, source: str | None = None) -> bool:
    """An echo from ``address`` in the stand-in, asked from the host."""
    argv = [sys.executable, ECHOD, "probe", proto, address, str(ECHO_PORT)]
    return run([*argv, *(["--source", source] if source else [])], check=False).returncode == 0


def route_get(standin: ContainerStandIn, version: int, address: str, *extra: str) -> str:
    return standin.run(["ip", f"-{version}", "route", "get", address, *extra]).stdout


@pytest.mark.parametrize("delete_default", ["false", "true"])
@pytest.mark.parametrize("version", [4, 6])
def test_replies_to_connections_from_outside_leave_through_eth0(
    version: int,
    delete_default: str,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    # Strict reverse-path filtering (RHEL's default, inherited by new
    # namespaces) would drop what arrives from a source routed elsewhere.
    standin.run(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
    standin.run(["sysctl", "-qw", "net.ipv4.conf.eth0.rp_filter=1"])
    conf = write_config(config_dir, peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.delete-default": delete_default})
    server = str((standin.underlay.inner_v4 if version == 4 else standin.underlay.inner_v6).ip)
    lab.popen(
        [sys.executable, ECHOD, "serve", server, str(ECHO_PORT)],
        netns=standin.name,
        name=f"echo-{standin.name}-{version}",
    )
    wait_for(lambda: probe("tcp", server), timeout=10, what=f"echo server on {server}")
    # A client on another network: the host, speaking from its address on
    # the peer's link, which is none of the stand-in's own subnets.
    client = str((peer.underlay.host_v4 if version == 4 else peer.underlay.host_v6).ip)

    # Without the mark the way back to that client is the tunnel: the mark
    # is what the replies' way out depends on.
    assert " dev wg0 " in route_get(standin, version, client)
    assert " dev eth0 " in route_get(standin, version, client, "mark", str(REPLY_MARK))
    assert probe("tcp", server, client)
    assert probe("udp", server, client)
    # The container's own traffic still goes through the tunnel.
    assert peer.page in fetch_in(standin, peer.url_v4)

    teardown.leave(the_runtime(), standin.id)
    rules = standin.run(["ip", f"-{version}", "rule", "show"]).stdout
    assert f"{REPLY_MARK:#x}" not in rules
    assert (
        standin.run(["ip", f"-{version}", "route", "show", "table", str(REPLY_MARK)]).stdout == ""
    )


@pytest.mark.parametrize("version", [4, 6])
def test_a_marked_packet_sent_out_of_eth0_by_name_goes_by_podmans_gateway(
    version: int, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """wireguard-go answers a peer out of the interface the peer's packet
    came in on (IP_PKTINFO): marked, and bound to eth0.  In the main table
    that skips the tunnel's default route and meets its unreachable guard,
    and the kernel would send it as if the peer were on eth0's link
    (slirp4netns answers ARP for its own addresses only): it must go by
    podman's gateway."""
    conf = write_config(config_dir, peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.delete-default": "true"})
    far, gateway = (
        ("192.0.2.1", standin.underlay.host_v4)
        if version == 4
        else (
            "2001:db8::1",
            standin.underlay.host_v6,
        )
    )
    marked = route_get(standin, version, far, "mark", hex(REPLY_MARK), "oif", "eth0")
    assert f"via {gateway.ip} dev eth0" in marked, marked
    assert "dev wg0" in route_get(standin, version, far)
