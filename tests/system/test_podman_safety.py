"""Ordinary podman habits that must never turn wg-pod against the user:
a host file mounted over /etc/resolv.conf is never written, and one
private key never serves two containers towards one peer."""

from __future__ import annotations

import pytest

from tests.hostfile import TEXT, assert_untouched, host_file
from tests.lab import RETRYING_WGET, ConfigDir, Lab, Peer, Podman, assert_host_clean, token
from tests.system.test_podman_leaks import dns_servers, nameservers

pytestmark = pytest.mark.podman


def dns_config(peer: Peer, config_dir: ConfigDir) -> str:
    text = peer.client_config(extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    return str(config_dir.write("wg0.conf", text))


@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_a_host_resolv_conf_mounted_into_the_container_is_never_written(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman, mode: str
) -> None:
    mounted = host_file(lab.tmp)
    name, done = hooked_podman.run(
        "true",
        annotations={"wg-pod.config": dns_config(peer, config_dir)},
        options=["-v", f"{mounted}:/etc/resolv.conf:{mode}"],
        check=False,
    )
    assert done.returncode != 0
    message = hooked_podman.hook_error(name, done)  # crun keeps it only for wg-pod status
    assert f"write DNS {mounted}: mounted over the container's /etc/resolv.conf" in message
    assert "wg-pod.dns=off" in message
    assert_untouched(mounted)
    assert_host_clean()


def test_with_dns_off_it_starts_and_the_host_file_is_untouched(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    mounted = host_file(lab.tmp)
    _, done = hooked_podman.run(
        "sh",
        "-c",
        "cat /etc/resolv.conf; " + RETRYING_WGET.format(url=peer.url_v4),
        annotations={"wg-pod.config": dns_config(peer, config_dir), "wg-pod.dns": "off"},
        options=["-v", f"{mounted}:/etc/resolv.conf:ro"],
    )
    assert TEXT in done.stdout and peer.page in done.stdout
    assert_untouched(mounted)


def test_network_none_makes_the_tunnel_the_only_network(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    """``--network none``: no podman network and no resolv.conf from podman;
    the tunnel is all the container has.  DNS is refused there, saying how
    to start without it."""
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    _, done = hooked_podman.run(
        "sh",
        "-c",
        "ip -o link; ip route; " + RETRYING_WGET.format(url=peer.url_v4),
        annotations={"wg-pod.config": conf},
        options=["--network", "none"],
    )
    assert peer.page in done.stdout
    assert "eth0" not in done.stdout and " wg0" in done.stdout
    assert all("dev wg0" in line for line in done.stdout.splitlines() if "proto" in line)

    name, refused = hooked_podman.run(
        "true",
        annotations={"wg-pod.config": dns_config(peer, config_dir)},
        options=["--network", "none"],
        check=False,
    )
    assert refused.returncode != 0
    assert "the container has no resolv.conf from its engine" in hooked_podman.hook_error(
        name, refused
    )
    assert_host_clean()


def test_podman_dns_option_keeps_podmans_file_and_the_tunnel_dns_wins(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    """``--dns`` only changes what podman writes into its own file: the
    container's resolver asks the tunnel's server, never the one given to
    podman (seen answering from the host), and the resolv.conf the container
    sees names only the tunnel's (podman 5 writes its file after the hook)."""
    tunnel, other = dns_servers(lab, peer)
    _, done = hooked_podman.run(
        "sh",
        "-c",
        "cat /etc/resolv.conf; echo DEFAULT; nslookup example.org; true",
        annotations={"wg-pod.config": dns_config(peer, config_dir)},
        options=["--dns", other],
    )
    resolv, _, answer = done.stdout.partition("DEFAULT")
    # No leak: the query for podman's server was answered by the tunnel's.
    assert "198.18.0.53" not in answer, answer
    assert "10.250.0.53" in answer, answer
    assert nameservers(resolv) == [tunnel], "resolv.conf names only the tunnel's resolvers"


def test_pod_members_share_the_pod_resolv_conf(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    """Members get the resolv.conf podman made for the pod's infra container."""
    pod = f"wgpt-pod-{token()}"
    hooked_podman("pod", "create", "--name", pod)
    lab.defer(f"podman pod rm {pod}", lambda: hooked_podman("pod", "rm", "-f", "-t", "0", pod))
    annotations = {"wg-pod.config": dns_config(peer, config_dir)}
    hooked_podman.run("sleep", "600", annotations=annotations, options=["--pod", pod], detach=True)
    _, done = hooked_podman.run(
        "cat", "/etc/resolv.conf", annotations=annotations, options=["--pod", pod]
    )
    assert f"nameserver {peer.tunnel_v4.ip}" in done.stdout


def test_a_second_container_with_the_same_key_waits_for_the_first(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    annotations = {"wg-pod.config": str(config_dir.write("wg0.conf", peer.client_config()))}
    first, _ = hooked_podman.run("sleep", "600", annotations=annotations, detach=True)
    first_id = hooked_podman("inspect", "--format", "{{.Id}}", first).stdout.strip()
    name, refused = hooked_podman.run("true", annotations=annotations, check=False)
    assert refused.returncode != 0
    message = hooked_podman.hook_error(name, refused)
    assert f"its private key is already in use by container {first_id[:12]}" in message
    assert f"towards peer {peer.public_key}" in message

    hooked_podman.remove(first)
    _, done = hooked_podman.run(
        "sh", "-c", RETRYING_WGET.format(url=peer.url_v4), annotations=annotations
    )
    assert peer.page in done.stdout
    assert_host_clean()
