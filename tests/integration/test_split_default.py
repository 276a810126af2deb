"""A default route split in halves (``0.0.0.0/1, 128.0.0.0/1, ::/1,
8000::/1``), as many generators write it to win over an existing default
route, is a full tunnel, as ``0.0.0.0/0`` is: ``kill-switch=auto`` turns
the kill switch on, published ports get the reply path, and
``wg-pod.delete-default`` makes the tunnel the default route.

The kill switch is tried with the tunnel's interface deleted from outside and no daemon to
bring it back: a control with the kill switch off shows what then leaves
through eth0, so the test can fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.support import Sniffer, fetch_in, write_config
from tests.integration.test_leaks import Outside, ways_out
from tests.integration.test_leaks import outside as outside  # the fixture
from tests.integration.test_reply_path import ECHO_PORT, ECHOD, probe, route_get
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    HookRunner,
    Lab,
    Peer,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from wg_pod_hook.model.names import REPLY_MARK
from wg_pod_hook.tunnel import teardown

pytestmark = pytest.mark.root

SPLIT_DEFAULT = ["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]


def check(conf: str, settings: str) -> str:
    """What ``wg-pod check CONFIG`` prints (it must succeed)."""
    done = run(
        [*venv_command("wg-pod", "wg_pod_hook.cli"), "check", conf],
        env={**os.environ, "WG_POD_SETTINGS": settings},
    )
    return done.stdout


def leaks_without_interface(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
    annotations: dict[str, str],
) -> tuple[int, dict[str, bool]]:
    """Up with the split default route, the interface deleted, then every
    way towards the outside echo servers tried (bound to eth0, from eth0's
    address, routed): the packets seen on the host side of eth0 and what
    got an answer."""
    assert not Path(the_runtime().hook_socket).exists(), "a daemon would repair the tunnel"
    conf = write_config(config_dir, peer.client_config(allowed_ips=SPLIT_DEFAULT))
    hook.up(standin, {"wg-pod.config": conf, **annotations})
    assert peer.page in fetch_in(standin, peer.url_v4)
    standin.run(["ip", "link", "del", "wg0"])
    destinations = list(outside.addresses.values())
    reached = {}
    with Sniffer(standin.host_ifname, destinations) as sniffer:
        for address in destinations:
            for bound in (True, False):
                for how, ok in ways_out(standin, address, bound=bound).items():
                    reached[f"{how} {address}"] = ok
    return sniffer.count, reached


def test_a_split_default_route_gets_the_kill_switch(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
) -> None:
    conf = write_config(config_dir, peer.client_config(allowed_ips=SPLIT_DEFAULT), "split.conf")
    assert "kill switch: on" in check(conf, str(hook.settings)).splitlines()
    count, reached = leaks_without_interface(peer, standin, config_dir, hook, outside, {})
    assert count == 0
    assert not any(reached.values()), reached


def test_without_the_kill_switch_a_split_default_route_leaks_through_eth0(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
) -> None:
    """The control: the same sends, the kill switch turned off."""
    count, reached = leaks_without_interface(
        peer, standin, config_dir, hook, outside, {"wg-pod.kill-switch": "off"}
    )
    assert count > 0
    assert {how: ok for how, ok in reached.items() if "dev eth0" in how} == {
        f"{proto} dev eth0 {address}": True
        for address in outside.addresses.values()
        for proto in ("tcp", "udp", "icmp")
    }


@pytest.mark.parametrize("version", [4, 6])
def test_a_split_default_route_gets_the_reply_path(
    version: int,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    """Replies to connections from outside the tunnel (published ports)
    leave through eth0, as with 0.0.0.0/0 (test_reply_path.py)."""
    conf = write_config(config_dir, peer.client_config(allowed_ips=SPLIT_DEFAULT))
    hook.up(standin, {"wg-pod.config": conf})
    server = str((standin.underlay.inner_v4 if version == 4 else standin.underlay.inner_v6).ip)
    lab.popen(
        [sys.executable, ECHOD, "serve", server, str(ECHO_PORT)],
        netns=standin.name,
        name=f"echo-{standin.name}-{version}",
    )
    wait_for(lambda: probe("tcp", server), timeout=10, what=f"echo server on {server}")
    client = str((peer.underlay.host_v4 if version == 4 else peer.underlay.host_v6).ip)
    assert " dev wg0 " in route_get(standin, version, client)
    assert " dev eth0 " in route_get(standin, version, client, "mark", str(REPLY_MARK))
    assert probe("tcp", server, client)
    assert probe("udp", server, client)


def test_a_split_default_route_with_delete_default_is_the_default_route(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """Podman's default routes go and the tunnel's take their place, as
    for 0.0.0.0/0; they come back when it leaves the tunnel."""
    before = {version: standin.default_routes(version) for version in (4, 6)}
    assert before[4] and before[6]
    conf = write_config(config_dir, peer.client_config(allowed_ips=SPLIT_DEFAULT))
    annotations = {"wg-pod.config": conf, "wg-pod.delete-default": "true"}
    hook.up(standin, annotations)
    for version in (4, 6):
        assert [r.get("dev") for r in standin.default_routes(version)] == ["wg0"]
    assert peer.page in fetch_in(standin, peer.url_v4)
    teardown.leave(the_runtime(), standin.id)
    assert {version: standin.default_routes(version) for version in (4, 6)} == before
