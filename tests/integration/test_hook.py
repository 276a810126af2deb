"""The hook against real netlink, nftables and a real WireGuard peer.

A throwaway namespace with a sleeping process stands in for the container;
the hook gets the OCI state JSON podman's runtime would pass.  Each test
runs once per backend; the kernel one needs a kernel with WireGuard (the
VM suite in tests/vm provides one).
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Callable

import pytest

from tests.integration.support import (
    WIREGUARD_GO,
    fails_cleanly,
    fetch_in,
    serve_in,
    wireguard_processes,
    write_config,
)
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    HookRunner,
    Lab,
    Peer,
    run,
    the_runtime,
    venv_command,
)
from wg_pod_hook.model.names import REPLY_MARK, temp_name
from wg_pod_hook.state.records import path_for
from wg_pod_hook.tunnel import teardown

pytestmark = pytest.mark.root


def test_tunnel_carries_traffic_both_ways_v4_and_v6(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    backend: str,
) -> None:
    conf = write_config(config_dir, peer.client_config())
    hook.up(standin, {"wg-pod.config": conf})

    assert "wg0" in standin.links()
    assert peer.page in fetch_in(standin, peer.url_v4)
    assert peer.page in fetch_in(standin, peer.url_v6)

    client = peer.clients[-1]
    serve_in(lab, standin, 8080, "served-from-the-container")
    assert client.address_v4 is not None and client.address_v6 is not None
    assert "served-from-the-container" in peer.fetch(f"http://{client.address_v4.ip}:8080/")
    assert "served-from-the-container" in peer.fetch(f"http://[{client.address_v6.ip}]:8080/")

    record = json.loads(path_for(the_runtime(), standin.id).read_text())
    assert record["interface"] == "wg0"
    assert record["backend"] == backend
    assert client.private_key not in path_for(the_runtime(), standin.id).read_text()


def test_endpoint_sees_the_host_side_address(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """The WireGuard socket stays in the host namespace."""
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    fetch_in(standin, peer.url_v4)
    endpoints = peer.wg(["show", peer.ifname, "endpoints"]).stdout
    assert str(peer.underlay.host_v4.ip) in endpoints


def test_port_remapping_reached_from_the_peer(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, peer.client_config())
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.port-remapping": "80:8080"})
    serve_in(lab, standin, 8080, "remapped-page")
    fetch_in(standin, peer.url_v4)  # the tunnel is up
    client = peer.clients[-1]
    assert client.address_v4 is not None and client.address_v6 is not None
    assert "remapped-page" in peer.fetch(f"http://{client.address_v4.ip}/")
    assert "remapped-page" in peer.fetch(f"http://[{client.address_v6.ip}]/")
    assert "redirect to :8080" in standin.run(["nft", "list", "table", "inet", "wg-pod"]).stdout


def test_delete_default_leaves_only_tunnel_routes(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    hook.up(
        standin,
        {"wg-pod.config": conf, "wg-pod.delete-default": "true", "wg-pod.kill-switch": "off"},
    )
    for version in (4, 6):
        defaults = standin.default_routes(version)
        assert [r.get("dev") for r in defaults] == ["wg0"], defaults
        # and below it, for when wg0 is gone, no way out at all
        guards = ["ip", f"-{version}", "route", "show", "default", "type", "unreachable"]
        assert "metric 2147483647" in standin.run(guards).stdout
    assert peer.page in fetch_in(standin, peer.url_v4)
    assert peer.page in fetch_in(standin, peer.url_v6)


def test_full_tunnel_beside_podman_default_route(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.kill-switch": "off"})
    routes = standin.run(["ip", "-4", "route", "get", "198.51.100.7"]).stdout
    assert "dev wg0" in routes
    routes = standin.run(["ip", "-6", "route", "get", "2001:db8::7"]).stdout
    assert "dev wg0" in routes
    assert [r.get("dev") for r in standin.default_routes(4)] == ["eth0"]


@pytest.mark.parametrize("kill_switch", ["off", "on"])
def test_kill_switch_blocks_traffic_beside_the_tunnel(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, kill_switch: str
) -> None:
    conf = write_config(config_dir, peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    hook.up(standin, {"wg-pod.config": conf, "wg-pod.kill-switch": kill_switch})
    # An address of the host outside the podman-like subnet, forced out of eth0.
    outside = str(peer.underlay.host_v4.ip)
    ping = standin.run(
        ["busybox", "ping", "-c", "1", "-W", "2", "-I", "eth0", outside], check=False
    )
    assert (ping.returncode == 0) is (kill_switch == "off"), ping.stdout + ping.stderr
    # The podman network's own subnet stays reachable, and the tunnel works.
    gateway = standin.run(
        ["busybox", "ping", "-c", "1", "-W", "2", str(standin.underlay.host_v4.ip)], check=False
    )
    assert gateway.returncode == 0
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_add_route_present(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    client_conf = peer.client_config(allowed_ips=["10.250.0.0/16", "fd77::/16"])
    conf = write_config(config_dir, client_conf)
    hook.up(
        standin,
        {
            "wg-pod.config": conf,
            "wg-pod.add-route": f"10.251.0.0/16:{standin.underlay.host_v4.ip},"
            f"[fd78::/16]:[{standin.underlay.host_v6.ip}]",
        },
    )
    v4 = standin.run(["ip", "-4", "route", "show", "10.251.0.0/16"]).stdout
    v6 = standin.run(["ip", "-6", "route", "show", "fd78::/16"]).stdout
    assert f"via {standin.underlay.host_v4.ip} dev eth0" in v4
    assert f"via {standin.underlay.host_v6.ip} dev eth0" in v6


def test_poststop_keeps_a_live_namespace_tunnel_and_cleans_up_after_it(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """Restart policies: podman runs poststop, keeps the namespace and restarts
    the container in it without createRuntime; the tunnel must still be there."""
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, annotations)
    assert hook.down(standin, annotations).returncode == 0
    assert path_for(the_runtime(), standin.id).exists()
    assert peer.page in fetch_in(standin, peer.url_v4)

    standin.stop()
    done = hook.down(standin, annotations)
    assert done.returncode == 0
    assert not path_for(the_runtime(), standin.id).exists()
    assert wireguard_processes(temp_name(standin.id)) == []
    assert temp_name(standin.id) not in run(["ip", "-o", "link", "show"]).stdout


def test_stale_records_are_pruned_by_the_next_start(
    peer: Peer,
    standin: ContainerStandIn,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    """podman rm after a policy restart runs no poststop: the next start cleans up."""
    conf = write_config(config_dir, peer.client_config())
    hook.up(standin, {"wg-pod.config": conf})
    standin.stop()
    assert path_for(the_runtime(), standin.id).exists()
    other = make_standin()
    hook.up(other, {"wg-pod.config": write_config(config_dir, peer.client_config(), "b.conf")})
    assert not path_for(the_runtime(), standin.id).exists()
    assert wireguard_processes(temp_name(standin.id)) == []


def test_pod_members_share_the_namespace_tunnel(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, annotations)
    member = copy.copy(standin)
    member.id = secrets.token_hex(32)
    hook.up(member, annotations)
    assert sorted(standin.links()) == ["eth0", "lo", "wg0"]
    assert json.loads(path_for(the_runtime(), member.id).read_text())["shared_with"] == standin.id
    assert peer.page in fetch_in(standin, peer.url_v4)

    other_conf = write_config(config_dir, peer.client_config(), "other.conf")
    intruder = copy.copy(standin)
    intruder.id = secrets.token_hex(32)
    done = hook.up(intruder, {"wg-pod.config": other_conf}, ok=False)
    assert done.returncode == 1
    assert f"already carries container {standin.id[:12]}'s tunnel wg0" in done.stderr


def test_rerun_on_the_same_namespace_converges(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, backend: str
) -> None:
    conf = write_config(config_dir, peer.client_config())
    annotations = {"wg-pod.config": conf, "wg-pod.port-remapping": "80:8080"}
    hook.up(standin, annotations)
    hook.up(standin, annotations)
    assert sorted(standin.links()) == ["eth0", "lo", "wg0"]
    assert len(wireguard_processes(temp_name(standin.id))) == WIREGUARD_GO[backend]
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_leave_after_a_rerun_puts_back_what_the_first_run_replaced(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """A restart policy reruns createRuntime in a namespace that kept the
    tunnel, after podman's default routes and resolv.conf were replaced:
    `wg-pod leave` must still put back podman's, not the first run's."""
    routes_before = standin.default_routes(4) + standin.default_routes(6)
    resolv_before = standin.resolv_conf.read_text()
    full_tunnel = peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"])
    annotations = {
        "wg-pod.config": write_config(config_dir, full_tunnel),
        "wg-pod.delete-default": "true",
        "wg-pod.dns": "10.250.0.53",
    }
    hook.up(standin, annotations)
    assert hook.down(standin, annotations).returncode == 0  # the namespace lives on
    hook.up(standin, annotations)
    assert [r.get("dev") for r in standin.default_routes(4)] == ["wg0"]
    assert standin.resolv_conf.read_text() != resolv_before
    # The reply path (see test_reply_path.py) is set up once, from podman's routes.
    for version in (4, 6):
        rules = standin.run(["ip", f"-{version}", "rule", "show"]).stdout
        # Once: by its interface (oif eth0), then the main table's more
        # specific routes, then podman's default routes.
        assert rules.count(f"oif eth0 lookup {REPLY_MARK}") == 1, rules
        assert rules.count(f"lookup {REPLY_MARK}") == 2, rules
        reply_table = ["ip", f"-{version}", "route", "show", "table", str(REPLY_MARK)]
        assert "dev eth0" in standin.run(reply_table).stdout

    teardown.leave(the_runtime(), standin.id)
    assert sorted(standin.links()) == ["eth0", "lo"]
    assert standin.default_routes(4) + standin.default_routes(6) == routes_before
    assert standin.resolv_conf.read_text() == resolv_before
    assert "fwmark" not in standin.run(["ip", "rule", "show"]).stdout


# Failures at each stage: the hook exits non-zero with one line on stderr and
# leaves nothing behind.


def test_fails_cleanly_on_a_broken_config(
    standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, "[Interface]\nPrivateKey = nope\n")
    message = fails_cleanly(hook, standin, {"wg-pod.config": conf})
    assert f"{conf}:2" in message and "PrivateKey" in message


def test_fails_cleanly_on_a_bad_annotation(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, peer.client_config())
    message = fails_cleanly(
        hook, standin, {"wg-pod.config": conf, "wg-pod.port-remapping": "80;reboot"}
    )
    assert "wg-pod.port-remapping" in message


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_fails_cleanly_when_the_backend_cannot_start(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    runner = hook.with_settings(userspace_command=["false"])
    conf = write_config(config_dir, peer.client_config())
    message = fails_cleanly(runner, standin, {"wg-pod.config": conf})
    assert "exited with status 1" in message


def test_ipv6_tunnel_in_a_namespace_with_ipv6_disabled(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """podman networks without IPv6 may disable it; the tunnel's IPv6 works."""
    standin.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
    standin.run(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert peer.page in fetch_in(standin, peer.url_v6)


def test_fails_cleanly_when_a_route_cannot_be_added(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, peer.client_config())
    message = fails_cleanly(
        hook,
        standin,
        {
            "wg-pod.config": conf,
            "wg-pod.delete-default": "true",
            "wg-pod.add-route": "10.251.0.0/16:198.51.100.1",
        },
    )
    assert "add route 10.251.0.0/16 via 198.51.100.1" in message


def test_fails_cleanly_when_nftables_fails(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    # libnftables hidden (/dev/null over it, in a mount namespace of the
    # hook's own): neither the in-process way nor nft, which links it, works.
    library = run(["sh", "-c", "readlink -f $(ldconfig -p | grep -m1 -o '/.*libnftables.so.1$')"])
    script = 'mount --bind /dev/null "$1" && shift && exec "$@"'
    hide = ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, "sh"]
    conf = write_config(config_dir, peer.client_config())
    message = fails_cleanly(
        hook.with_prefix([*hide, library.stdout.strip()]),
        standin,
        {"wg-pod.config": conf, "wg-pod.port-remapping": "80:8080"},
    )
    assert "apply nftables nft: nft: error while loading shared libraries" in message


def test_fails_cleanly_without_a_resolv_conf_from_podman(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """As with ``--network none``: podman mounts no resolv.conf."""
    text = peer.client_config(extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    conf = write_config(config_dir, text)
    standin.resolv_conf_mount = None
    message = fails_cleanly(hook, standin, {"wg-pod.config": conf})
    assert "write DNS /etc/resolv.conf: the container has no resolv.conf from its engine" in message
    assert "wg-pod.dns=off" in message


def test_fails_cleanly_on_an_unresolvable_endpoint(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    conf = write_config(config_dir, peer.client_config(endpoint="no-such-host.invalid:51820"))
    message = fails_cleanly(hook, standin, {"wg-pod.config": conf})
    assert "resolve endpoint no-such-host.invalid" in message


def test_status_reports_handshake_and_transfer(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, backend: str
) -> None:
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert peer.page in fetch_in(standin, peer.url_v4)
    done = run([*venv_command("wg-pod", "wg_pod_hook.cli"), "status", standin.id, "--json"])
    (tunnel,) = json.loads(done.stdout)["tunnels"]
    assert tunnel["container_id"] == standin.id
    assert tunnel["backend"] == backend and tunnel["problem"] is None
    client = peer.clients[-1]
    assert {str(a) for a in client.addresses} <= set(tunnel["addresses"])
    (status,) = tunnel["peers"]
    assert status["public_key"] == peer.public_key
    assert status["endpoint"] == peer.endpoint_v4
    assert status["latest_handshake"] and status["rx_bytes"] > 0 and status["tx_bytes"] > 0
    assert client.private_key not in done.stdout
