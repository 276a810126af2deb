"""WireGuard backends behind one small Protocol, chosen by a capability probe.

Everything that differs between backends lives behind ``Backend``: where
and how the link is made, its configuration, what it reports of its peers
(as state.health.LivePeer), pointing a peer elsewhere, and stopping what
serves it; no caller asks which backend a tunnel uses.  A backend serves
one runtime (runtime.py): root's, or a rootless user's, whose links are
born in the container's namespace (the only one that is theirs) and whose
wireguard-go sockets are in their own state directory.  A backend is a
module of this package named in ``NAMES``, whose ``BACKEND`` class is
loaded only when asked for (the kernel's pulls in pyroute2, which poststop
mostly does without).  Moving the link into the container and deleting it
are the same for every backend: the lifecycle's and teardown's jobs, from
what the record says.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Protocol, cast

from ...errors import BackendUnavailable

if TYPE_CHECKING:  # annotations only: poststop stops wireguard-go without a config
    from ...model.config import IPAddress, Key, Peer
    from ...model.plan import Plan
    from ...runtime import Runtime
    from ...state.health import LivePeer
    from ...state.records import ProcessId, TunnelRecord

# Every backend, by the name settings and records use (its module here),
# in the order "auto" tries them.
NAMES = ("kernel", "userspace")
# The keepalive a greeted peer is given for a moment at the end of the
# setup (DeviceSetup.greeters): wg-quick users' usual one, should it ever
# stay.
GREETING_KEEPALIVE = 25


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

    def greeters(self) -> tuple[Key, ...]:
        """The peers the setup greets once the tunnel is complete: those
        with an endpoint and no keepalive of their own.  Both backends send
        a keepalive at once to a peer of an interface that is up when it is
        given one (the kernel's set_peer, wireguard-go's UAPI), which
        starts the handshake then, not at the container's first packet;
        the keepalive is taken away again at once, the handshake goes on."""
        return tuple(
            setup.peer.public_key
            for setup in self.peers
            if setup.endpoint is not None and not setup.peer.persistent_keepalive
        )


class Backend(Protocol):
    name: str

    def available(self) -> str:
        """What this backend would run on here (a phrase: the module, the
        program), found without making anything; BackendUnavailable saying
        what is missing when it cannot run on this machine."""

    def create(self, ifname: str, netns_fd: int | None) -> ProcessId | None:
        """Create ``ifname`` in the namespace ``netns_fd`` (None: the
        host's, where the lifecycle moves it into the container later),
        where its UDP socket stays; the process that serves it, if any,
        for the record.  BackendUnavailable if this machine cannot run the
        backend."""

    def wait_ready(self, ifname: str) -> None:
        """Return once ``ifname`` can be configured."""

    def adopt(self, ifname: str, plan: Plan) -> bool:
        """Whether ``ifname``, which this backend made ahead of any plan
        (tunnel/pool.py), still serves and is what ``plan``'s setup would
        make; if so, it is ``plan``'s from now on (accounted as one this
        backend made for it would be)."""

    def configure(self, ifname: str, device: DeviceSetup, netns_fd: int | None) -> None:
        """Configure ``ifname``, in the namespace it was created in."""

    def sync(self, record: TunnelRecord, device: DeviceSetup, netns_fd: int) -> None:
        """Bring the record's running interface to ``device`` in place, as
        ``wg syncconf`` does: its own key, port and mark, every peer of
        ``device`` set whole (keys, endpoint, keepalive, AllowedIPs), the
        peers it does not have removed.  The session of a peer that stays
        is kept (``netns_fd``: the container's namespace)."""

    def peers(self, record: TunnelRecord, netns_fd: int) -> tuple[LivePeer, ...]:
        """The peers of the record's interface, as it reports them now
        (``netns_fd``: the container's namespace, where it lives)."""

    def set_endpoint(
        self, record: TunnelRecord, public_key: Key, endpoint: tuple[IPAddress, int]
    ) -> None:
        """Point an existing peer of the record's interface at another endpoint."""

    def set_keepalives(self, record: TunnelRecord, keepalives: Mapping[Key, int]) -> None:
        """Give existing peers of the record's interface these persistent
        keepalives (seconds, 0 for none), nothing else changed."""

    def stop(self, record: TunnelRecord) -> None:
        """Stop what serves the record's interface; "already gone" is success."""

    def left_behind(self, ifname: str) -> bool:
        """Whether a hook killed before its record said so may have left
        something of this backend serving ``ifname`` (a cheap test)."""

    def clear(self, ifname: str) -> None:
        """Stop what this backend left serving ``ifname`` without a record."""

    def sweep(self, known: Collection[str]) -> list[str]:
        """Stop what this backend runs for a temporary name outside
        ``known`` (no record accounts for it); what it stopped, one phrase
        each."""


def get(name: str, runtime: Runtime, plan: Plan | None = None) -> Backend:
    """The backend called ``name`` of ``runtime``: for a setup, of
    ``plan``; else to work on a record.  BackendUnavailable for a name this
    wg-pod does not know."""
    if name not in NAMES:
        raise BackendUnavailable(f"unknown backend {name!r} (known: {', '.join(NAMES)})")
    make = cast(
        "Callable[[Runtime, Plan | None], Backend]", import_module(f"{__name__}.{name}").BACKEND
    )
    return make(runtime, plan)


def candidates(plan: Plan, runtime: Runtime) -> list[Backend]:
    """The backends a setup tries, in order: the chosen one, or all for ``auto``."""
    names = NAMES if plan.backend == "auto" else (plan.backend,)
    return [get(name, runtime, plan) for name in names]


@dataclass(frozen=True)
class Probe:
    """Which backend a setup of a plan would take on this machine (``wg-pod
    check``)."""

    name: str | None  # None: none of the plan's backends can run here
    runs_on: str  # what it would run on (Backend.available)
    passed_over: tuple[str, ...]  # "NAME: why", each tried before it (all, when none)


def probe(plan: Plan, runtime: Runtime) -> Probe:
    """The backend ``plan``'s setup would take here, asking each of
    ``candidates`` in the order the setup tries them; nothing is made."""
    passed_over: list[str] = []
    for backend in candidates(plan, runtime):
        try:
            return Probe(backend.name, backend.available(), tuple(passed_over))
        except BackendUnavailable as exc:
            passed_over.append(f"{backend.name}: {exc}")
    return Probe(None, "", tuple(passed_over))


def of(record: TunnelRecord, runtime: Runtime) -> Backend:
    """The backend that made the record's interface (one that completed has one)."""
    if record.backend is None:
        raise BackendUnavailable(f"the record of {record.container_id[:12]} names no backend")
    return get(record.backend, runtime)


def every(runtime: Runtime) -> list[Backend]:
    """Every backend, to clear what a hook left behind without a record."""
    return [get(name, runtime) for name in NAMES]


def preload() -> None:
    """Load every backend now (the daemon, for the workers it forks)."""
    for name in NAMES:
        import_module(f"{__name__}.{name}")
