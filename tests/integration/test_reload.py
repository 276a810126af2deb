"""``wg-pod reload``, and the daemon's reload_on_change: a running tunnel
takes its changed config in place, as ``wg syncconf`` does.  Its
interface is not rebuilt, and a TCP connection through a peer that stays
goes on without a new handshake with that peer.  Routes and guards follow
AllowedIPs.  A change only a restart can make is refused; so is a config
that is now invalid; neither changes a thing."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

import pytest

from tests.integration.support import fetch_in, write_config
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from tests.lab.peer import Client
from wg_pod_hook.state import records

pytestmark = pytest.mark.root

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
ECHO_PORT = 7000

# One TCP connection, a line echoed at each step: the steps wait for a file
# each (argv: address, port, then the files).
_ECHO_SERVER = """
import socket
server = socket.create_server(("::", int(__import__("sys").argv[1])), family=socket.AF_INET6,
                              dualstack_ipv6=True)
connection, _ = server.accept()
while data := connection.recv(4096):
    connection.sendall(data)
"""
_ECHO_CLIENT = """
import os, socket, sys, time
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
for step, flag in enumerate(["start", *sys.argv[3:]]):
    while flag != "start" and not os.path.exists(flag):
        time.sleep(0.05)
    connection.sendall(f"step {step}\\n".encode())
    assert connection.recv(64) == f"step {step}\\n".encode()
    print(f"echoed step {step}", flush=True)
"""


def second_peer(lab: Lab, client: Client) -> tuple[Peer, str]:
    """Another peer that knows ``client`` (by its key and its addresses on
    the first peer's subnets), and the [Peer] section that reaches it."""
    other = lab.peer()
    addresses = [f"{a.ip}/{a.max_prefixlen}" for a in client.addresses]
    other.wg(["set", other.ifname, "peer", client.public_key, "allowed-ips", ",".join(addresses)])
    for address in addresses:  # its replies go back through its tunnel
        other.run(["ip", "route", "add", address, "dev", other.ifname])
    allowed = ", ".join(str(n) for n in other.tunnel_networks)
    section = (
        f"\n[Peer]\nPublicKey = {other.public_key}\nAllowedIPs = {allowed}\n"
        f"Endpoint = {other.endpoint_v4}\n"
    )
    return other, section


def reload(hook: HookRunner, *args: str) -> tuple[int, str, str]:
    done = run([*WG_POD, "reload", *args], env={**os.environ, **hook.env}, check=False)
    return done.returncode, done.stdout, done.stderr


def routes_of(standin: ContainerStandIn) -> set[tuple[str, str]]:
    """(destination, dev or type) of every IPv4 route of the main table."""
    return {
        (r["dst"], r.get("dev") or r.get("type", "")) for r in standin.routes(4) if "table" not in r
    }


def ifindex(standin: ContainerStandIn, name: str = "wg0") -> int:
    return int(json.loads(standin.run(["ip", "-j", "link", "show", name]).stdout)[0]["ifindex"])


def test_a_reload_adds_and_removes_a_peer_and_keeps_the_connection_through_one_that_stays(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    client = peer.add_client()
    config = write_config(config_dir, client.config)
    hook.up(standin, {"wg-pod.config": config})
    index = ifindex(standin)
    lab.popen([sys.executable, "-c", _ECHO_SERVER, str(ECHO_PORT)], netns=peer.ns.name, name="echo")
    wait_for(
        lambda: bool(peer.run(["ss", "-Hltn", f"sport = :{ECHO_PORT}"]).stdout.strip()),
        timeout=10,
        what="the echo server",
    )
    flags = [lab.tmp / "added", lab.tmp / "removed"]
    connection = lab.popen(
        [
            sys.executable,
            "-c",
            _ECHO_CLIENT,
            str(peer.tunnel_v4.ip),
            str(ECHO_PORT),
            *map(str, flags),
        ],
        netns=standin.ns.name,
        name="echo-client",
    )
    wait_for(lambda: "echoed step 0" in lab.log_of("echo-client"), timeout=15, what="an echo")
    handshake = peer.latest_handshakes()[client.public_key]
    assert handshake
    time.sleep(1.1)  # a new handshake would have another second

    other, section = second_peer(lab, client)
    write_config(config_dir, client.config + section)
    code, out, err = reload(hook, standin.id)
    assert code == 0, err
    assert f"peer added {other.public_key}" in out, out
    # Longest prefix first, as the plan orders them.
    assert f"route added {other.tunnel_v6.network}, {other.tunnel_v4.network}" in out, out
    assert other.page in fetch_in(standin, other.url_v4)
    assert other.page in fetch_in(standin, other.url_v6)
    flags[0].touch()
    wait_for(lambda: "echoed step 1" in lab.log_of("echo-client"), timeout=15, what="an echo")

    write_config(config_dir, client.config)
    code, out, err = reload(hook, standin.id)
    assert code == 0, err
    assert f"peer removed {other.public_key}" in out, out
    subnet = str(other.tunnel_v4.network)
    assert not {(dst, how) for dst, how in routes_of(standin) if dst == subnet}
    flags[1].touch()
    assert connection.wait(timeout=15) == 0, lab.log_of("echo-client")
    assert "echoed step 2" in lab.log_of("echo-client")
    # The same interface, the same session with the peer that stayed.
    assert ifindex(standin) == index
    assert peer.latest_handshakes()[client.public_key] == handshake
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_routes_and_guards_follow_allowed_ips(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    first, second = (f"10.250.{lab.tunnel_index()}.0/24" for _ in range(2))
    networks = ", ".join(str(n) for n in peer.tunnel_networks)
    client = peer.add_client(allowed_ips=[*map(str, peer.tunnel_networks), first])
    config = write_config(config_dir, client.config)
    hook.up(standin, {"wg-pod.config": config})
    assert {(first, "wg0"), (first, "unreachable")} <= routes_of(standin)

    write_config(config_dir, client.config.replace(f"{networks}, {first}", f"{networks}, {second}"))
    code, out, err = reload(hook, standin.id)
    assert code == 0, err
    assert out.strip().endswith(f"route added {second}; route removed {first}"), out
    routes = routes_of(standin)
    assert {(second, "wg0"), (second, "unreachable")} <= routes
    assert not {r for r in routes if r[0] == first}
    record = records.load(the_runtime(), standin.id)
    assert record is not None and second in record.guarded and first not in record.guarded
    # The peer's AllowedIPs, as the backend reports them.
    status = run([*WG_POD, "status", standin.id, "--json"], env={**os.environ, **hook.env})
    (tunnel,) = json.loads(status.stdout)["tunnels"]
    assert set(tunnel["peers"][0]["allowed_ips"]) == {*networks.split(", "), second}
    assert peer.page in fetch_in(standin, peer.url_v4)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("Address", "Address ("),
        ("MTU", "MTU (automatic -> 1300)"),
        ("full tunnel", "kill switch (off -> on); full tunnel (none -> IPv4)"),
        ("invalid", "wg0.conf:2: "),
    ],
)
def test_a_reload_that_cannot_be_applied_changes_nothing(
    change: str,
    said: str,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    client = peer.add_client()
    config = write_config(config_dir, client.config)
    hook.up(standin, {"wg-pod.config": config})
    record_file = records.path_for(the_runtime(), standin.id)
    before = (record_file.read_bytes(), routes_of(standin), standin.links())
    _other, section = second_peer(lab, client)  # would be added, were the rest allowed
    text = client.config + section
    if change == "Address":
        text = text.replace(str(client.address_v4), "10.250.254.9/32")
    elif change == "MTU":
        text = text.replace("[Interface]\n", "[Interface]\nMTU = 1300\n", 1)
    elif change == "full tunnel":
        text = text.replace("AllowedIPs = ", "AllowedIPs = 0.0.0.0/0, ", 1)
    else:
        text = text.replace("[Interface]\n", "[Interface]\nAddress 10.0.0.1\n", 1)
    write_config(config_dir, text)
    code, out, err = reload(hook, standin.id)
    assert code == 1
    assert len(err.splitlines()) == 1 and said in err, err
    if change != "invalid":
        assert "restart the container (nothing was changed)" in err
    assert client.private_key not in err + out
    assert (record_file.read_bytes(), routes_of(standin), standin.links()) == before
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_the_daemon_reloads_a_changed_config_with_reload_on_change(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    """Within a tick or two of the daemon (10 s each) of the change."""
    served = hook.with_settings(reload_on_change=True)
    client = peer.add_client()
    config = write_config(config_dir, client.config)
    served.up(standin, {"wg-pod.config": config})
    running = daemon(served)
    index = ifindex(standin)
    other, section = second_peer(lab, client)
    write_config(config_dir, client.config + section)
    assert other.page in fetch_in(standin, other.url_v4, timeout=40)
    assert ifindex(standin) == index
    assert "reloaded: peer added" in running.path.read_text()
