"""A wireguard-go that fails to start is quoted in the hook's one line:
its own reason (here: no /dev/net/tun, the usual one), not only its exit
status; and the container still does not start, with nothing left behind.

wireguard-go runs in a mount namespace of its own where ``/dev/net`` is an
empty tmpfs (``unshare -m``: private propagation, so the host's ``/dev``
never sees it), through the settings' ``userspace_command``.
"""

from __future__ import annotations

import pytest

from tests.integration.support import fails_cleanly, write_config
from tests.lab import WITHOUT_TUN, ConfigDir, ContainerStandIn, HookRunner, Peer
from wg_pod_hook.model.names import temp_name

pytestmark = pytest.mark.root

# wireguard-go where there is no /dev/net/tun.
NO_TUN_WIREGUARD_GO = [*WITHOUT_TUN, "wireguard-go"]


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_wireguard_go_without_tun_is_quoted(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    runner = hook.with_settings(userspace_command=NO_TUN_WIREGUARD_GO)
    conf = write_config(config_dir, peer.client_config())
    message = fails_cleanly(runner, standin, {"wg-pod.config": conf})
    name = temp_name(standin.id)
    assert message == (
        f"wg-pod: container {standin.id[:12]}: start unshare: exited with status 1: "
        f'Failed to create TUN device: CreateTUN("{name}") failed; /dev/net/tun does not exist '
        "(journalctl -t wg-pod)"
    )
    assert "ERROR:" not in message  # wireguard-go's own prefix (level, name, time) is left out
