"""Kill switch and DNS in real podman containers, each with its control."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.lab import RETRYING_WGET, ConfigDir, Lab, Peer, Podman, run, wait_for

pytestmark = pytest.mark.podman

DNSD = str(Path(__file__).resolve().parents[1] / "dnsd.py")


@pytest.mark.parametrize("switch", ["off", "on"])
def test_kill_switch_in_a_real_container(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman, switch: str
) -> None:
    conf = config_dir.write("wg0.conf", peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    outside = peer.underlay.host_v4.ip  # a host address, reached through eth0
    script = (
        RETRYING_WGET.format(url=peer.url_v4)
        + f"; if ping -c 1 -W 2 -I eth0 {outside} >/dev/null; "
        "then echo LEAKED; else echo BLOCKED; fi"
    )
    # podman 5 no longer grants CAP_NET_RAW by default, and busybox ping
    # needs it: without it "BLOCKED" would say nothing about the kill switch.
    _, done = hooked_podman.run(
        "sh",
        "-c",
        script,
        annotations={"wg-pod.config": str(conf), "wg-pod.kill-switch": switch},
        options=["--cap-add", "NET_RAW"],
    )
    assert peer.page in done.stdout
    assert ("BLOCKED" if switch == "on" else "LEAKED") in done.stdout, done.stdout


def dns_servers(lab: Lab, peer: Peer) -> tuple[str, str]:
    """Two DNS servers, both seen answering from their side: the tunnel's on
    the peer's tunnel address (answers 10.250.0.53) and another on a host
    address the container reaches through eth0 (answers 198.18.0.53)."""
    tunnel, other = str(peer.tunnel_v4.ip), str(peer.underlay.host_v4.ip)
    lab.popen(
        [sys.executable, DNSD, "serve", tunnel, "10.250.0.53"],
        netns=peer.ns.name,
        name="dns-tunnel",
    )
    lab.popen([sys.executable, DNSD, "serve", other, "198.18.0.53"], name="dns-other")
    for runner, server in ((peer.ns.run, tunnel), (run, other)):
        query = [sys.executable, DNSD, "query", server, "example.org"]
        wait_for(
            lambda r=runner, q=query: r(q, check=False).returncode == 0,  # type: ignore[misc]
            timeout=10,
            what=f"DNS on {server}",
        )
    return tunnel, other


def nameservers(resolv: str) -> list[str]:
    return [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver ")]


@pytest.mark.parametrize("dns", ["auto", "off"])
def test_dns_in_a_real_container(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman, dns: str
) -> None:
    """With DNS set, a query to any other server is answered by the tunnel's
    (``off`` is the control: the other server answers).  The resolv.conf
    the container sees names only the tunnel's, on podman 5 too (which
    writes its own after the hook)."""
    tunnel, other = dns_servers(lab, peer)
    text = peer.client_config(extra_interface_lines=[f"DNS = {tunnel}"])
    conf = config_dir.write("wg0.conf", text)
    script = (
        RETRYING_WGET.format(url=peer.url_v4) + "; cat /etc/resolv.conf; "
        f"echo TUNNEL; nslookup example.org {tunnel}; "
        f"echo OTHER; nslookup example.org {other}; true"
    )
    _, done = hooked_podman.run(
        "sh", "-c", script, annotations={"wg-pod.config": str(conf), "wg-pod.dns": dns}
    )
    resolv, _, answers = done.stdout.partition("TUNNEL")
    via_tunnel, _, via_other = answers.partition("OTHER")
    assert "10.250.0.53" in via_tunnel
    if dns == "off":
        assert "198.18.0.53" in via_other
        assert tunnel not in nameservers(resolv)
        return
    # No leak: the query meant for the other server never reached it, and
    # the tunnel's server answered it instead.
    assert "198.18.0.53" not in via_other, via_other
    assert "10.250.0.53" in via_other, via_other
    assert nameservers(resolv) == [tunnel], "resolv.conf names only the tunnel's resolvers"
