"""WireGuard backends behind one small Protocol, chosen by a capability probe.

A backend creates the WireGuard interface in the host namespace under a
temporary name and configures keys and peers there; moving it into the
container is the lifecycle's job and the same for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..config import IPAddress, Key, Peer


@dataclass(frozen=True)
class PeerSetup:
    """A peer with its endpoint resolved to an address."""

    peer: Peer
    endpoint: tuple[IPAddress, int] | None


@dataclass(frozen=True)
class DeviceSetup:
    private_key: Key = field(repr=False)
    listen_port: int | None
    fwmark: int | None
    peers: tuple[PeerSetup, ...]


class Backend(Protocol):
    name: str

    def create(self, ifname: str) -> None:
        """Create ``ifname`` in the host namespace; BackendUnavailable if this
        machine cannot run the backend."""

    def configure(self, ifname: str, device: DeviceSetup) -> None: ...

    def destroy(self, ifname: str) -> None:
        """Undo ``create``; an interface or process already gone is success."""

    def record(self) -> dict[str, Any]:
        """What a later cleanup needs to find this backend's leftovers."""
