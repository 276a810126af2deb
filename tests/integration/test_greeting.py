"""The first handshake starts while the hook runs (DeviceSetup.greeters):
a peer with an endpoint and no keepalive of its own is given one for a
moment once the setup is complete, which sends the handshake then, and none
again; the container's first packet finds a session. A handshake that never
completes holds no start, and health says so. (A start refused at its last
key check greets nobody: test_key_conflict.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import write_config
from tests.integration.test_daemon import wg_pod_health
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Peer, the_runtime, wait_for
from wg_pod_hook.kernel.backends.userspace import uapi_request
from wg_pod_hook.state import records

pytestmark = pytest.mark.root


def keepalives(standin: ContainerStandIn, backend: str) -> str:
    """The interface's peers' persistent keepalives, as its backend says them."""
    if backend == "kernel":
        return standin.run(["wg", "show", "wg0", "persistent-keepalive"]).stdout
    record = records.load(the_runtime(), standin.id)
    assert record is not None
    socket = Path(the_runtime().wireguard_sockets) / f"{record.temp_name}.sock"
    reply = uapi_request(socket, b"get=1\n\n")
    return "\n".join(line for line in reply.splitlines() if "keepalive" in line)


def test_the_handshake_starts_before_the_first_packet_and_the_keepalive_goes(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    backend: str,
) -> None:
    conf = write_config(config_dir, peer.client_config())  # no PersistentKeepalive
    client = peer.clients[-1]
    hook.up(standin, {"wg-pod.config": conf})
    # Nothing sent from the container: only the greeting can start it.
    wait_for(
        lambda: peer.latest_handshakes().get(client.public_key, 0) > 0,
        timeout=10,
        what="a handshake without a packet from the container",
    )
    said = keepalives(standin, backend)
    assert said.split() in (
        [peer.public_key, "off"],  # wg show
        ["persistent_keepalive_interval=0"],  # UAPI get
    ), said


def test_a_configured_keepalive_is_kept(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner, backend: str
) -> None:
    conf = write_config(config_dir, peer.client_config(keepalive=7))
    hook.up(standin, {"wg-pod.config": conf})
    said = keepalives(standin, backend)
    assert said.split() in (
        [peer.public_key, "7"],
        ["persistent_keepalive_interval=7"],
    ), said


def test_a_handshake_that_never_completes_holds_no_start_and_health_says_stale(
    make_peer: Callable[..., Peer],
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    backend: str,
) -> None:
    gone = make_peer(http=False)
    conf = write_config(config_dir, gone.client_config())
    gone.run(["ip", "link", "del", gone.ifname])  # the peer is gone for good
    hook.up(standin, {"wg-pod.config": conf})
    assert "wg0" in standin.links()
    # The greeting's handshake is retried, and nothing answers: stale, with
    # no packet from the container (without the greeting: idle).
    assert wg_pod_health(hook, standin.id) == (1, f"{standin.id[:12]}: stale")
