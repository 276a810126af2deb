"""MTU from the underlay, host-name and IPv6 endpoints, IPv6-only tunnels."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Callable

import pytest

from tests.integration.support import fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Lab, Peer, run

pytestmark = pytest.mark.root

DOWNLOAD = """
import hashlib, sys, urllib.request
data = urllib.request.urlopen(sys.argv[1], timeout=30).read()
print(len(data), hashlib.sha256(data).hexdigest())
"""


def tunnel_mtu(standin: ContainerStandIn, name: str = "wg0") -> int:
    (link,) = json.loads(standin.run(["ip", "-j", "link", "show", name]).stdout)
    return int(link["mtu"])


def test_mtu_follows_the_underlay_and_large_transfers_complete(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    run(["ip", "link", "set", peer.host_ifname, "mtu", "1400"])
    peer.ns.run(["ip", "link", "set", "eth0", "mtu", "1400"])
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert tunnel_mtu(standin) == 1320

    blob = os.urandom(4 << 20)
    (lab.tmp / f"www-{peer.ifname}" / "big.bin").write_bytes(blob)
    expected = f"{len(blob)} {hashlib.sha256(blob).hexdigest()}"
    fetch_in(standin, peer.url_v4)
    for url in (peer.url_v4, peer.url_v6):
        got = standin.run([sys.executable, "-c", DOWNLOAD, url + "big.bin"], timeout=60)
        assert got.stdout.strip() == expected


def test_explicit_mtu_wins(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    run(["ip", "link", "set", peer.host_ifname, "mtu", "1400"])
    text = peer.client_config(extra_interface_lines=["MTU = 1280"])
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text)})
    assert tunnel_mtu(standin) == 1280
    assert peer.page in fetch_in(standin, peer.url_v6)


def test_host_name_endpoint(
    make_peer: Callable[..., Peer],
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    """``localhost`` resolves without touching /etc/hosts; the peer listens on
    the host's loopback because its socket was born in the host namespace."""
    port = random.randrange(40000, 60000)
    peer = make_peer(listen_port=port, socket_in_host=True)
    text = peer.client_config(endpoint=f"localhost:{port}")
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text)})
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_ipv6_only_tunnel_over_an_ipv6_endpoint(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    text = peer.client_config(
        address_v4=None, allowed_ips=[str(peer.tunnel_v6.network)], endpoint_family=6
    )
    assert "Endpoint = [" in text
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text)})
    assert peer.page in fetch_in(standin, peer.url_v6)
    addresses = standin.run(["ip", "-j", "addr", "show", "wg0"]).stdout
    assert '"family":"inet"' not in addresses.replace(" ", "")
