"""The backends' registry: every name settings and records use leads to
its backend, and teardown reaches the record's own backend (and pyroute2
only when a call needs it)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from wg_pod_hook.errors import BackendUnavailable
from wg_pod_hook.kernel import backends
from wg_pod_hook.model.settings import parse_settings
from wg_pod_hook.runtime import Runtime
from wg_pod_hook.state.records import NetnsId, TunnelRecord

RUNTIME = Runtime("/nonexistent/wg-pod", root=True)


@pytest.mark.parametrize("name", backends.NAMES)
def test_every_backend_is_registered_under_its_own_name(name: str) -> None:
    assert backends.get(name, RUNTIME).name == name
    assert parse_settings(f"backend: {name}", "s.yaml").backend == name


def test_an_unknown_backend_says_which_are_known() -> None:
    with pytest.raises(BackendUnavailable, match=r"'boringtun' \(known: kernel, userspace\)"):
        backends.get("boringtun", RUNTIME)
    record = TunnelRecord("c" * 64, "wg0", "/etc/wg/wg0.conf", NetnsId("/x", 1, 2), 0.0)
    with pytest.raises(BackendUnavailable, match="names no backend"):
        backends.of(record, RUNTIME)


def test_a_record_is_stopped_by_its_own_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from wg_pod_hook.tunnel import teardown

    record = TunnelRecord(
        "c" * 64, "wg0", "/etc/wg/wg0.conf", NetnsId("/x", 1, 2), 0.0, backend="kernel"
    )
    assert [b.name for b in teardown._backends(RUNTIME, record)] == ["kernel"]
    # Killed before it noted one (or a name this wg-pod does not know): all.
    for unnoted in (None, "boringtun"):
        chosen = teardown._backends(RUNTIME, replace(record, backend=unnoted))
        assert [b.name for b in chosen] == list(backends.NAMES)


def test_stopping_a_kernel_tunnel_loads_no_pyroute2() -> None:
    """poststop stops a kernel tunnel (nothing to stop) without netlink."""
    code = (
        "import sys\n"
        "from wg_pod_hook.kernel import backends\n"
        "from wg_pod_hook.runtime import Runtime\n"
        "from wg_pod_hook.state.records import NetnsId, TunnelRecord\n"
        "r = TunnelRecord('c' * 64, 'wg0', '/c', NetnsId('/x', 1, 2), 0.0, backend='kernel')\n"
        "backends.of(r, Runtime('/nonexistent', True)).stop(r)\n"
        "print(sorted(m for m in sys.modules if 'pyroute2' in m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_settings_name_every_backend_and_auto() -> None:
    from wg_pod_hook.kernel import backends
    from wg_pod_hook.model.settings import BACKENDS

    assert ("auto", *backends.NAMES) == BACKENDS


def test_the_greeting_gives_a_keepalive_only_to_peers_with_an_endpoint_and_none() -> None:
    """DeviceSetup.greeters: the peers that would stay silent until the
    container's first packet; a peer's own keepalive and a peer without an
    endpoint (it cannot be greeted) stay as configured."""
    from ipaddress import ip_address

    from wg_pod_hook.model.config import Key, parse_config

    keys = [Key(bytes([n]) * 32) for n in (1, 2, 3, 4)]
    text = "\n".join(
        [
            f"[Interface]\nPrivateKey = {keys[0].base64}\nAddress = 10.250.9.2/24",
            f"[Peer]\nPublicKey = {keys[1].base64}\nAllowedIPs = 10.250.1.0/24",
            "Endpoint = 198.18.0.1:51820",
            f"[Peer]\nPublicKey = {keys[2].base64}\nAllowedIPs = 10.250.2.0/24",
            "Endpoint = 198.18.0.1:51821\nPersistentKeepalive = 7",
            f"[Peer]\nPublicKey = {keys[3].base64}\nAllowedIPs = 10.250.3.0/24\n",
        ]
    )
    config = parse_config(text, "/etc/wg/wg0.conf")
    device = backends.DeviceSetup(
        config.interface.private_key,
        None,
        None,
        tuple(
            backends.PeerSetup(peer, (ip_address("198.18.0.1"), 51820) if peer.endpoint else None)
            for peer in config.peers
        ),
    )
    assert device.greeters() == (keys[1],)
