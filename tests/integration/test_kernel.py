"""What only the kernel backend can show, and interop between the two implementations.

Every test here needs a kernel with WireGuard and is skipped elsewhere, the
same way as test_hook's ``[kernel]`` variants; the VM suite (tests/vm) runs
them under Debian's kernel.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest

from tests.integration.support import fetch_in, kernel_has_wireguard, serve_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Lab, Peer, run, the_runtime, wait_for
from wg_pod_hook.model.names import temp_name
from wg_pod_hook.state.records import path_for

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True)
def kernel_wireguard() -> None:
    if not kernel_has_wireguard():
        pytest.skip("this kernel has no WireGuard module; tests/vm runs the kernel backend")


@pytest.fixture
def backend() -> str:
    return "kernel"


def udp_listeners(port: int, netns: str | None = None) -> str:
    return run(["ss", "-Hlun", f"sport = :{port}"], netns=netns).stdout.strip()


def free_udp_port() -> int:
    for _ in range(100):
        port = 20000 + secrets.randbelow(30000)
        if not udp_listeners(port):
            return port
    raise AssertionError("no free UDP port")


def test_the_interface_is_kernel_wireguard_inside_the_container(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    details = standin.run(["ip", "-d", "link", "show", "wg0"]).stdout
    assert "wireguard" in details.split(), details
    assert temp_name(standin.id) not in run(["ip", "-o", "link", "show"]).stdout
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_the_udp_socket_stays_in_the_host_namespace(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    port = free_udp_port()
    conf = write_config(config_dir, peer.client_config(listen_port=port))
    hook.up(standin, {"wg-pod.config": conf})
    assert peer.page in fetch_in(standin, peer.url_v4)
    assert udp_listeners(port), "the kernel's socket is not in the host namespace"
    assert not udp_listeners(port, netns=standin.name)
    endpoints = peer.wg(["show", peer.ifname, "endpoints"]).stdout
    assert f"{peer.underlay.host_v4.ip}:{port}" in endpoints


def test_the_interface_goes_with_the_container_namespace(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    port = free_udp_port()
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config(listen_port=port))}
    hook.up(standin, annotations)
    assert udp_listeners(port)

    standin.stop()  # the process ends and the namespace is deleted, as podman does
    # Namespaces are torn down asynchronously; the link's socket goes with it.
    wait_for(lambda: not udp_listeners(port), timeout=10, what=f"UDP port {port} to close")
    wireguard_links = run(["ip", "-o", "link", "show", "type", "wireguard"]).stdout
    assert temp_name(standin.id) not in wireguard_links

    done = hook.down(standin, annotations)
    assert done.returncode == 0, done.stderr
    assert not path_for(the_runtime(), standin.id).exists()


def test_auto_picks_the_kernel(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    hook = hook.with_settings(backend="auto")
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert json.loads(path_for(the_runtime(), standin.id).read_text())["backend"] == "kernel"
    assert "wireguard" in standin.run(["ip", "-d", "link", "show", "wg0"]).stdout.split()
    assert peer.page in fetch_in(standin, peer.url_v4)


@pytest.mark.parametrize(
    ("client", "peer_kind"),
    [("userspace", "kernel"), ("kernel", "userspace"), ("kernel", "kernel")],
    ids=["wireguard-go-client-kernel-peer", "kernel-client-wireguard-go-peer", "kernel-both"],
)
def test_interop(
    lab: Lab,
    make_peer: Callable[..., Peer],
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    client: str,
    peer_kind: str,
) -> None:
    peer = make_peer(kernel=peer_kind == "kernel")
    hook = hook.with_settings(backend=client)
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert peer.page in fetch_in(standin, peer.url_v4)
    assert peer.page in fetch_in(standin, peer.url_v6)
    serve_in(lab, standin, 8080, "served-from-the-container")
    address = peer.clients[-1].address_v6
    assert address is not None
    assert "served-from-the-container" in peer.fetch(f"http://[{address.ip}]:8080/")
    kind = "wireguard" if client == "kernel" else "tun"
    assert kind in standin.run(["ip", "-d", "link", "show", "wg0"]).stdout.split()
    assert json.loads(path_for(the_runtime(), standin.id).read_text())["backend"] == client
