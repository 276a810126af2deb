"""The hook writes DNS only into the resolv.conf podman made for the
container, never into a file of the host mounted over /etc/resolv.conf,
whatever way it is reached (a plain mount, a symlink or a hard link in
podman's directory)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests import hostfile
from tests.integration.support import fails_cleanly, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Lab, Peer

pytestmark = pytest.mark.root


@pytest.fixture
def host_file(lab: Lab) -> Path:
    return hostfile.host_file(lab.tmp)


def dns_config(peer: Peer, config_dir: ConfigDir) -> str:
    text = peer.client_config(extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    return write_config(config_dir, text)


def test_a_mounted_host_file_is_refused_and_untouched(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, host_file: Path
) -> None:
    standin.resolv_conf_mount = host_file
    message = fails_cleanly(hook, standin, {"wg-pod.config": dns_config(peer, config_dir)})
    assert f"write DNS {host_file}: mounted over the container's /etc/resolv.conf" in message
    assert "its engine did not make it" in message and "wg-pod.dns=off" in message
    hostfile.assert_untouched(host_file)


def test_with_dns_off_the_container_starts_and_the_file_is_untouched(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, host_file: Path
) -> None:
    standin.resolv_conf_mount = host_file
    conf = dns_config(peer, config_dir)
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.dns": "off"})
    assert "wg0" in standin.links()
    hook.down(standin, {"wg-pod.config": conf, "wg-pod.dns": "off"})
    hostfile.assert_untouched(host_file)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_in_podmans_directory_is_refused(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    host_file: Path,
    link: str,
) -> None:
    """podman's own path, but the file is the host's: never followed."""
    podmans = standin.resolv_conf.read_text()
    standin.resolv_conf.unlink()
    if link == "symlink":
        standin.resolv_conf.symlink_to(host_file)
    else:
        os.link(host_file, standin.resolv_conf)
    try:
        done = hook.up(standin, {"wg-pod.config": dns_config(peer, config_dir)}, ok=False)
        assert done.returncode == 1
        assert f"write DNS {standin.resolv_conf}:" in done.stderr
        hostfile.assert_untouched(host_file)
        assert "wg0" not in standin.links()
    finally:
        standin.resolv_conf.unlink()
        standin.resolv_conf.write_text(podmans)


def test_a_pod_member_writes_the_resolv_conf_of_the_namespace_owner(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """Pod members (and ``--network container:X``) get the resolv.conf podman
    made for the infra container; it lies in the same storage, under an id
    that has a bundle there."""
    infra = secrets.token_hex(32)
    static = standin.bundle.parent.parent / infra / "userdata"
    static.mkdir(parents=True)
    (static / "config.json").write_text("{}")
    shared = standin.run_dir.parent.parent / infra / "userdata" / "resolv.conf"
    shared.parent.mkdir(parents=True)
    shared.write_text(ContainerStandIn.RESOLV_CONF_TEXT.format(ns="198.18.0.1"))
    standin.resolv_conf_mount = shared

    hook.up(standin, {"wg-pod.config": dns_config(peer, config_dir)})
    assert f"nameserver {peer.tunnel_v4.ip}" in shared.read_text()


def test_a_resolv_conf_under_an_unknown_container_id_is_refused(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """The shape of podman's path is not enough: the id must be a container
    of this storage."""
    stranger = standin.run_dir.parent.parent / secrets.token_hex(32) / "userdata" / "resolv.conf"
    stranger.parent.mkdir(parents=True)
    stranger.write_text(hostfile.TEXT)
    standin.resolv_conf_mount = stranger
    message = fails_cleanly(hook, standin, {"wg-pod.config": dns_config(peer, config_dir)})
    assert f"write DNS {stranger}: mounted over" in message
    assert stranger.read_text() == hostfile.TEXT
