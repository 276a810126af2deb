"""WireGuard backends behind one small Protocol, chosen by a capability probe.

A backend creates the WireGuard interface in the host namespace under a
temporary name and configures keys and peers there; moving it into the
container is the lifecycle's job and the same for every backend, and so is
taking it down (teardown.py), from what the record says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: poststop stops wireguard-go without a config
    from ..config import IPAddress, Key, Peer
    from ..records import ProcessId


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

    def create(self, ifname: str) -> ProcessId | None:
        """Create ``ifname`` in the host namespace; the process that serves
        it, if any, for the record.  BackendUnavailable if this machine
        cannot run the backend."""

    def wait_ready(self, ifname: str) -> None:
        """Return once ``ifname`` can be configured."""

    def configure(self, ifname: str, device: DeviceSetup) -> None: ...
