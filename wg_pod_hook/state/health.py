"""The health of a tunnel: one state from what its interface reports of
its peers (LivePeer, as every backend reads it), and what the daemon keeps
about it between looks.

States (docs/daemon.md defines them for users):

- ``down``: the interface is missing from the container's namespace, or the
  tunnel's setup never finished;
- ``repairing``: down, and the daemon is setting it up again;
- ``up``: every peer with an endpoint had a handshake within the last
  180 seconds (WireGuard's REJECT_AFTER_TIME: a session older than that
  carries nothing);
- ``stale``: a peer with an endpoint has had no handshake for longer than
  that (or never) while the tunnel keeps sending to it: its transmitted
  bytes grew since the last look (WireGuard retries a handshake every
  5 seconds while it has something to send);
- ``idle``: neither: no recent handshake, and nothing is being sent.  An
  idle tunnel is healthy; it has simply had nothing to carry.

``stale`` needs two looks at least 6 seconds apart: the daemon takes one
every few seconds and keeps the last in ``health/<id>.json`` of the state directory
(with its repairs count and last failure); without it, ``wg-pod health``
looks twice.  Pure but for the small file functions at the end.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import WgPodError
from ..runtime import Runtime, write_file

log = logging.getLogger(__name__)

REJECT_AFTER_TIME = 180  # seconds: WireGuard's limit on a session's age
# The shortest window in which a tunnel that is sending must show it: one
# handshake retry (REKEY_TIMEOUT, 5 s, plus jitter).
SEND_WINDOW = 6.0


class State(Enum):
    UP = "up"
    IDLE = "idle"
    STALE = "stale"
    DOWN = "down"
    REPAIRING = "repairing"

    @property
    def healthy(self) -> bool:
        return self in (State.UP, State.IDLE)


@dataclass(frozen=True)
class LivePeer:
    """What an interface reports of one peer (each backend reads it its
    way): for ``wg-pod status``, the health of a tunnel and the endpoints
    the daemon follows."""

    public_key: str  # base64
    endpoint: str | None  # ADDRESS:PORT, [ADDRESS]:PORT for IPv6
    allowed_ips: tuple[str, ...]
    latest_handshake: int | None  # seconds since the epoch
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class Sample:
    """One look at a tunnel: None for peers when its interface is missing."""

    time: float
    peers: tuple[LivePeer, ...] | None


def classify(now: Sample, before: Sample | None) -> State:
    """The state of a tunnel from a look at it and, for ``stale``, an earlier
    one (at least SEND_WINDOW seconds before)."""
    if now.peers is None:
        return State.DOWN
    watched = [p for p in now.peers if p.endpoint is not None]
    old = [
        p
        for p in watched
        if not p.latest_handshake or now.time - p.latest_handshake > REJECT_AFTER_TIME
    ]
    if not old:
        return State.UP
    earlier = {p.public_key: p for p in (before.peers or ())} if before else {}
    for peer in old:
        previous = earlier.get(peer.public_key)
        if previous is None:
            continue
        sent = peer.tx_bytes > previous.tx_bytes
        if sent and peer.latest_handshake == previous.latest_handshake:
            return State.STALE
    return State.IDLE


@dataclass(frozen=True)
class Health:
    """What the daemon keeps about one tunnel between looks."""

    container_id: str
    state: State
    since: float  # when it entered this state
    checked: float  # the last look
    repairs: int = 0
    last_failure: str | None = None
    sample: Sample | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


def from_json(data: Mapping[str, Any]) -> Health:
    sample = data.get("sample")
    peers = sample.get("peers") if isinstance(sample, dict) else None
    return Health(
        container_id=str(data["container_id"]),
        state=State(data["state"]),
        since=float(data["since"]),
        checked=float(data["checked"]),
        repairs=int(data.get("repairs", 0)),
        last_failure=data.get("last_failure"),
        sample=(
            Sample(
                time=float(sample["time"]),
                peers=None if peers is None else tuple(_peer(p) for p in peers),
            )
            if isinstance(sample, dict)
            else None
        ),
    )


def _peer(data: Mapping[str, Any]) -> LivePeer:
    return LivePeer(**{**data, "allowed_ips": tuple(data["allowed_ips"])})


def next_health(
    previous: Health | None, container_id: str, sample: Sample, *, repairing: bool = False
) -> Health:
    """The health after a new look.  The look kept for the next one is the
    last that is at least SEND_WINDOW old: looks closer together than that
    cannot tell a tunnel that sends from one that does not."""
    reference = previous.sample if previous else None
    too_soon = reference is not None and sample.time - reference.time < SEND_WINDOW
    if previous is not None and too_soon:
        state = classify(sample, None)
        if state is State.IDLE and previous.state is State.STALE:
            state = State.STALE  # too soon to tell that it stopped sending
        kept = reference
    else:
        state = classify(sample, reference)
        kept = sample
    if repairing and state is State.DOWN:
        state = State.REPAIRING
    since = previous.since if previous is not None and previous.state is state else sample.time
    return Health(
        container_id=container_id,
        state=state,
        since=since,
        checked=sample.time,
        repairs=previous.repairs if previous else 0,
        last_failure=previous.last_failure if previous else None,
        sample=kept,
    )


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def path_for(runtime: Runtime, container_id: str) -> Path:
    return Path(runtime.health, f"{container_id}.json")


class HealthError(WgPodError):
    """A health file that cannot be read or does not parse."""


def load(runtime: Runtime, container_id: str) -> Health | None:
    """What the daemon keeps about ``container_id``; None when it keeps
    nothing, HealthError when its file is unreadable or does not parse."""
    path = path_for(runtime, container_id)
    try:
        return from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HealthError(f"health {path}: {exc}") from None


def read(runtime: Runtime, container_id: str) -> Health | None:
    """Like :func:`load`, but an unreadable file is logged and reads as none."""
    try:
        return load(runtime, container_id)
    except HealthError as exc:
        log.warning("%s", exc)
        return None


def write(runtime: Runtime, health: Health) -> None:
    data = json.dumps(health.to_json()).encode()
    write_file(runtime.make(runtime.health), f"{health.container_id}.json", data)


def forget(runtime: Runtime, container_id: str) -> None:
    path_for(runtime, container_id).unlink(missing_ok=True)


def forget_all_but(runtime: Runtime, container_ids: Iterable[str]) -> None:
    keep = set(container_ids)
    try:
        paths = list(Path(runtime.health).glob("*.json"))
    except OSError:
        return
    for path in paths:
        if path.stem not in keep:
            path.unlink(missing_ok=True)
