"""wg-pod under real podman: definitions written by ``wg-pod install``,
podman run with the annotation, runc running the hook at createRuntime."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest

from tests.lab import RETRYING_WGET, ConfigDir, Lab, Peer, Podman, assert_host_clean, free_udp_port

pytestmark = pytest.mark.podman


def test_container_fetches_the_peer_page_through_the_tunnel(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    conf = config_dir.write("wg0.conf", peer.client_config())
    script = " && ".join(RETRYING_WGET.format(url=url) for url in (peer.url_v4, peer.url_v6))
    _, done = hooked_podman.run("sh", "-c", script, annotations={"wg-pod.config": str(conf)})
    assert done.stdout.count(peer.page) == 2, done.stdout
    assert_host_clean()


def test_port_remapping_in_a_real_container(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    client = peer.add_client(listen_port=free_udp_port())
    conf = config_dir.write("wg0.conf", client.config)
    name, _ = hooked_podman.run(
        "sh",
        "-c",
        "mkdir -p /www && echo remapped-in-podman > /www/index.html && httpd -f -p 8080 -h /www",
        annotations={"wg-pod.config": str(conf), "wg-pod.port-remapping": "80:8080"},
        detach=True,
    )
    assert client.address_v4 is not None
    deadline = time.monotonic() + 20
    body = None
    while body is None and time.monotonic() < deadline:
        body = peer.try_fetch(f"http://{client.address_v4.ip}/")
    assert body is not None and "remapped-in-podman" in body
    hooked_podman.remove(name)
    assert_host_clean()


def test_delete_default_in_a_real_container(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    text = peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"])
    conf = config_dir.write("wg0.conf", text)
    _, done = hooked_podman.run(
        "sh",
        "-c",
        "ip -4 route; ip -6 route; " + RETRYING_WGET.format(url=peer.url_v4),
        annotations={
            "wg-pod.config": str(conf),
            "wg-pod.delete-default": "true",
            "wg-pod.kill-switch": "off",
        },
    )
    defaults = [line for line in done.stdout.splitlines() if line.startswith("default")]
    assert defaults and all(" dev wg0" in line for line in defaults), done.stdout
    assert "via 10.88.0.1" not in done.stdout
    assert peer.page in done.stdout


@pytest.mark.parametrize("delete_default", ["false", "true"])
def test_published_port_answers_other_networks_with_a_full_tunnel(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman, delete_default: str
) -> None:
    """`podman run -p` beside a full tunnel with the kill switch: a client on
    another network (the host, from its address on the peer's link, which is
    not on the podman network) gets its answer back through podman's network."""
    conf = config_dir.write("wg0.conf", peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    name, _ = hooked_podman.run(
        "sh",
        "-c",
        "mkdir -p /www && echo published-in-podman > /www/index.html && httpd -f -p 80 -h /www",
        annotations={"wg-pod.config": str(conf), "wg-pod.delete-default": delete_default},
        detach=True,
        options=["-p", f"{port}:80"],
    )
    url = f"http://{peer.underlay.host_v4.ip}:{port}/"
    deadline = time.monotonic() + 20
    body = None
    while body is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read().decode()
        except OSError:
            time.sleep(0.2)
    assert body is not None and "published-in-podman" in body, f"no answer from {url}"
    hooked_podman.remove(name)
    assert_host_clean()


def test_broken_config_does_not_start_and_leaves_nothing(
    lab: Lab, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    marker = lab.tmp / "started"
    conf = config_dir.write("broken.conf", "[Interface]\nPrivateKey = x\nListenPort = 70000\n")
    name, done = hooked_podman.run(
        "sh",
        "-c",
        f"touch {marker}",
        annotations={"wg-pod.config": str(conf)},
        check=False,
    )
    assert done.returncode != 0
    said = hooked_podman.hook_error(name, done)
    assert "wg-pod: container " in said
    assert f"{conf}:2" in said
    assert not marker.exists()
    assert_host_clean()
    listed = hooked_podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert name not in listed
