"""Following peers whose host-name endpoint moves to another address.

The hook resolves a host-name endpoint once, at start.  Like
wireguard-tools' reresolve-dns, the daemon resolves it again when the peer
has had no handshake for ``endpoint_refresh_after`` seconds (135 by
default), in the host namespace where the tunnel's socket lives, and points
the peer at the new address when it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import StateError, WgPodError
from ..kernel import backends
from ..model.config import Endpoint, IPAddress, Key
from ..model.configfile import read_config
from ..model.settings import Settings
from ..runtime import Runtime
from ..state.health import LivePeer
from ..state.records import TunnelRecord
from .resolve import resolve_endpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Followed:
    """A peer whose endpoint is a host name."""

    public_key: Key
    endpoint: Endpoint


def host_name_peers(record: TunnelRecord, settings: Settings) -> dict[str, Followed]:
    """The peers of the tunnel whose endpoint is a host name, by public key:
    as its record says, or (an older wg-pod's record) as its config, read
    now with the hook's checks, says."""
    if record.followed is None:
        named = read_config(PurePosixPath(record.config), settings).host_name_endpoints
    else:
        named = {key: Endpoint(host, port) for key, (host, port) in record.followed.items()}
    try:
        return {key: Followed(Key.from_base64(key), endpoint) for key, endpoint in named.items()}
    except ValueError as exc:
        raise StateError(f"its record's followed peers: {exc}") from None


def follow(
    runtime: Runtime,
    record: TunnelRecord,
    followed: Mapping[str, Followed],
    peers: Sequence[LivePeer],
    now: float,
    after: int,
) -> list[str]:
    """Resolve the host names of peers without a handshake for ``after``
    seconds; point each at its new address.  Returns what changed, as
    ``PUBLIC-KEY: OLD -> NEW``; a name that does not resolve now is tried
    again at the next look."""
    changed = []
    for peer in peers:
        wanted = followed.get(peer.public_key)
        if wanted is None:
            continue
        if peer.latest_handshake and now - peer.latest_handshake <= after:
            continue
        try:
            endpoint = resolve_endpoint(wanted.endpoint, attempts=1)
        except WgPodError as exc:
            log.info("container %s: %s", record.container_id[:12], exc)
            continue
        now_at = str(Endpoint.of(*endpoint))
        if peer.endpoint == now_at:
            continue
        _set_endpoint(runtime, record, wanted.public_key, endpoint)
        changed.append(f"{peer.public_key}: {peer.endpoint} -> {now_at}")
    return changed


def _set_endpoint(
    runtime: Runtime, record: TunnelRecord, key: Key, endpoint: tuple[IPAddress, int]
) -> None:
    backends.of(record, runtime).set_endpoint(record, key, endpoint)
