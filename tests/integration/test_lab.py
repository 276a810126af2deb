"""Sanity tests of the network lab itself (tests/lab), independent of wg-pod.

They prove the peer, the stand-in and a hand-made userspace WireGuard client
work, and that nothing is left behind, before the hook is tested with them.
"""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Lab,
    LabError,
    Peer,
    free_udp_port,
    link_names,
    netns_names,
    run,
)


def test_peer_comes_up(peer: Peer) -> None:
    assert peer.ns.name.startswith("wgpt-")
    assert peer.ifname in peer.ns.links()
    dump = peer.wg(["show", peer.ifname, "listen-port"]).stdout.strip()
    assert dump == str(peer.listen_port)
    # The page is served on the tunnel addresses, both families.
    assert peer.fetch(peer.url_v4).strip() == peer.page
    assert peer.fetch(peer.url_v6).strip() == peer.page
    # The host reaches the peer's underlay on both families.
    run(["busybox", "ping", "-c1", "-W2", str(peer.underlay.inner_v4.ip)])
    run(["busybox", "ping", "-6", "-c1", "-W2", str(peer.underlay.inner_v6.ip)])


def test_standin_looks_like_a_podman_container(standin: ContainerStandIn) -> None:
    assert os.stat(standin.netns_path).st_ino == os.stat(standin.ns.path).st_ino
    assert [r["gateway"] for r in standin.default_routes(4)] == [str(standin.underlay.host_v4.ip)]
    assert [r["gateway"] for r in standin.default_routes(6)] == [str(standin.underlay.host_v6.ip)]
    state = standin.oci_state({"wg-pod.config": "/etc/wg/wg0.conf"})
    parsed = json.loads(state)
    assert parsed["pid"] == standin.pid
    assert len(parsed["id"]) == 64
    assert parsed["status"] == "creating"
    config = json.loads((standin.bundle / "config.json").read_text())
    mounts = {m["destination"]: m["source"] for m in config["mounts"]}
    assert mounts["/etc/resolv.conf"] == str(standin.resolv_conf)
    assert config["annotations"] == {"wg-pod.config": "/etc/wg/wg0.conf"}


def test_userspace_client_reaches_peer_over_the_tunnel(
    lab: Lab, peer: Peer, standin: ContainerStandIn
) -> None:
    client = peer.add_client()
    lab.userspace_client(standin, client)
    assert "wg0" in standin.links()
    for url in (peer.url_v4, peer.url_v6):
        body = standin.run(["busybox", "timeout", "10", "busybox", "wget", "-qO-", url]).stdout
        assert body.strip() == peer.page
    assert peer.latest_handshakes()[client.public_key] > 0


def test_peer_reaches_client_when_it_knows_the_endpoint(
    lab: Lab, peer: Peer, standin: ContainerStandIn
) -> None:
    # With a ListenPort the peer knows the client's endpoint before any handshake,
    # as port-remapping tests need (traffic starts on the peer side).
    client = peer.add_client(listen_port=free_udp_port())
    lab.userspace_client(standin, client)
    www = lab.tmp / "client-www"
    www.mkdir()
    (www / "index.html").write_text("from the client\n")
    lab.popen(
        ["busybox", "httpd", "-f", "-p", "8080", "-h", str(www)],
        netns=standin.ns.name,
        name="client-httpd",
    )
    assert client.address_v4 is not None
    url = f"http://{client.address_v4.ip}:8080/"
    assert peer.fetch(url, timeout=10).strip() == "from the client"


def test_a_free_udp_port_is_free_for_both_families() -> None:
    """What wireguard-go binds for a ListenPort: IPv4 and IPv6 (v6-only)."""
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
        v4.bind(("0.0.0.0", port))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::", port))
        assert free_udp_port() != port  # held now: never handed out


def test_client_config_is_wg_quick_text(peer: Peer, config_dir: ConfigDir) -> None:
    text = peer.client_config(
        "10.250.1.9/24",
        None,
        allowed_ips=["0.0.0.0/0"],
        extra_interface_lines=["DNS = 10.250.1.1"],
        preshared=True,
    )
    assert "Address = 10.250.1.9/24\n" in text
    assert "AllowedIPs = 0.0.0.0/0\n" in text
    assert f"Endpoint = {peer.endpoint_v4}\n" in text
    assert "PresharedKey = " in text
    assert "DNS = 10.250.1.1\n" in text
    path = config_dir.write("wg0.conf", text)
    assert stat.S_IMODE(os.stat(config_dir.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.stat(path).st_uid == 0


def test_failed_fetch_is_an_error(peer: Peer) -> None:
    assert peer.try_fetch("http://10.250.255.254/", timeout=1) is None
    with pytest.raises(LabError):
        peer.fetch("http://10.250.255.254/", timeout=1)


def test_teardown_removes_everything() -> None:
    with Lab() as lab:
        peer = lab.peer()
        standin = lab.standin()
        client = peer.add_client()
        tmp_name = lab.userspace_client(standin, client)
        names = [peer.ns.name, standin.ns.name]
        host_links = [peer.host_ifname, standin.host_ifname]
        processes = [peer.process, peer.http, standin.process]
        sockets = [f"/var/run/wireguard/{peer.ifname}.sock", f"/var/run/wireguard/{tmp_name}.sock"]
        tmp = lab.tmp
        assert all(n in netns_names() for n in names)
    assert not set(names) & set(netns_names())
    assert not set(host_links) & set(link_names())
    assert tmp_name not in link_names()
    for proc in processes:
        assert proc is not None and proc.poll() is not None
    assert not any(os.path.exists(s) for s in sockets)
    assert not tmp.exists()
