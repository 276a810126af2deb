"""Live state of the tunnels wg-pod manages: records plus what the
interfaces report (read-only).

Each tunnel's backend reports its peers (backends.LivePeer, the same for
every backend, and what the tunnel's health is judged from); rendered like
``wg show`` or as stable JSON.  The hook's last failures
(failures.py) are shown after the tunnels: with crun they are the only
place the reason is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import WgPodError
from ..kernel import backends
from ..kernel.netlink import Netlink, open_netns
from ..runtime import Runtime
from ..state import health, records
from ..state.failures import Failure
from ..state.health import LivePeer, Sample
from ..state.records import RecordError, TunnelRecord

# A daemon's look at a tunnel counts as current for this long (a few ticks).
FRESH = 30.0


@dataclass(frozen=True)
class TunnelStatus:
    container_id: str
    name: str | None
    interface: str
    backend: str | None
    config: str | None
    shared_with: str | None
    addresses: tuple[str, ...]
    peers: tuple[LivePeer, ...]
    problem: str | None = None  # why live data is missing
    # Health (health.py): the daemon's when it looked lately, else from this
    # one look (which cannot tell stale from idle).
    state: str | None = None
    repairs: int = 0
    last_failure: str | None = None
    # A run that replaced the running tunnel failed (records.TunnelRecord):
    # down, the namespace kept closed, the daemon trying again.
    failed: str | None = None
    failed_at: float | None = None


def tunnel_status(runtime: Runtime, record: TunnelRecord, name: str | None = None) -> TunnelStatus:
    base = TunnelStatus(
        container_id=record.container_id,
        name=name,
        interface=record.interface,
        backend=record.backend,
        config=record.config,
        shared_with=record.shared_with,
        addresses=(),
        peers=(),
    )
    if base.shared_with:
        return base
    if not record.netns.alive():
        return _with(base, problem="the container's network namespace is gone")
    if record.failed:
        return _with(
            base,
            problem=f"repair failed: {record.failed}",
            failed=record.failed,
            failed_at=record.failed_at,
        )
    if not record.complete:
        working = record.writer is not None and record.writer.alive()
        return _with(
            base,
            problem="its setup is under way"
            if working
            else "its setup was interrupted (the process doing it was killed); the daemon, "
            "the container's next start or its removal clears it",
        )
    try:
        with open_netns(record.netns.path) as fd, Netlink(fd, "container") as inside:
            if inside.index(record.interface) is None:
                return _with(base, problem=f"{record.interface} is missing from the namespace")
            addresses = inside.addresses(record.interface)
            peers = backends.of(record, runtime).peers(record, fd)
    except WgPodError as exc:
        return _with(base, problem=str(exc))
    return _with(base, addresses=addresses, peers=peers)


def sample(tunnel: TunnelStatus, now: float | None = None) -> Sample:
    """A look at a tunnel for its health: no peers when it has no live data."""
    peers = tunnel.peers if tunnel.problem is None else None
    return Sample(time=time.time() if now is None else now, peers=peers)


def _with(base: TunnelStatus, **changes: Any) -> TunnelStatus:
    return replace(base, **changes)


def collect(
    runtime: Runtime,
    container_ids: list[str] | None = None,
    names: dict[str, str] | None = None,
) -> list[TunnelStatus]:
    """Every tunnel with a record (or those of ``container_ids``); a record
    that does not parse is shown as a problem."""
    names = names or {}
    found = []
    for container_id in records.all_ids(runtime) if container_ids is None else container_ids:
        try:
            record = records.load(runtime, container_id)
        except RecordError as exc:
            found.append(
                TunnelStatus(
                    container_id=container_id,
                    name=names.get(container_id),
                    interface="?",
                    backend=None,
                    config=None,
                    shared_with=None,
                    addresses=(),
                    peers=(),
                    problem=f"{exc} (wg-pod gc removes it)",
                )
            )
            continue
        if record is not None:
            found.append(
                with_health(runtime, tunnel_status(runtime, record, names.get(container_id)))
            )
    return found


def with_health(runtime: Runtime, tunnel: TunnelStatus, now: float | None = None) -> TunnelStatus:
    """``tunnel`` with its state, repairs and last failure."""
    if tunnel.shared_with:
        return tunnel
    now = time.time() if now is None else now
    kept = health.read(runtime, tunnel.container_id)
    if kept is not None and now - kept.checked <= FRESH:
        state = kept.state
    else:
        state = health.classify(sample(tunnel, now), None)
    return _with(
        tunnel,
        state=state.value,
        repairs=kept.repairs if kept else 0,
        last_failure=kept.last_failure if kept else None,
    )


class CannotKnow(WgPodError):
    """``wg-pod health`` cannot tell whether a tunnel is healthy, or
    ``status`` what there is: what it must read cannot be read, or changed
    while it read (health's exit status 2, status's 1)."""


# Whose state a process that cannot read it may read instead.
WHO_CAN_READ = "needs root, or run as the rootless podman user whose tunnels these are"


def cannot_read(path: str, exc: OSError) -> CannotKnow:
    """The state at ``path`` cannot be read (``exc``): who can, when it
    is a matter of who runs wg-pod."""
    who = f" ({WHO_CAN_READ})" if isinstance(exc, PermissionError | FileNotFoundError) else ""
    return CannotKnow(f"cannot read wg-pod's state {path}: {exc.strerror}{who}")


def recorded_ids(runtime: Runtime) -> list[str]:
    """Every container with a record, for ``wg-pod status`` and ``health``:
    CannotKnow when the state directory cannot be read (an absent one holds
    none)."""
    try:
        return records.list_ids(runtime)
    except OSError as exc:
        raise cannot_read(runtime.records, exc) from None


def own_state(runtime: Runtime) -> None:
    """CannotKnow unless this user's state directory can be read, before
    their command goes into their user namespace.  Not there yet is "no
    tunnels" for a user whose runtime directory (``/run/user/UID``, where
    rootless podman keeps its own) is there: they have run no tunnel yet.
    Without one, an ordinary user (one without a session, without podman)
    is told who can read wg-pod's state; root's is root's."""
    try:
        os.scandir(runtime.records).close()
    except FileNotFoundError as exc:
        if not os.path.isdir(os.path.dirname(runtime.records.rstrip("/"))):
            raise cannot_read(runtime.records, exc) from None
    except OSError as exc:
        raise cannot_read(runtime.records, exc) from None


def _examined_record(runtime: Runtime, container_id: str) -> TunnelRecord:
    try:
        record = records.load(runtime, container_id)
    except RecordError as exc:
        raise CannotKnow(str(exc)) from None
    if record is None:
        raise CannotKnow(f"the record of {container_id[:12]} vanished while it was read")
    return record


def _kept_health(runtime: Runtime, container_id: str) -> health.Health | None:
    try:
        return health.load(runtime, container_id)
    except health.HealthError as exc:
        raise CannotKnow(str(exc)) from None


def health_tunnels(
    runtime: Runtime, container_ids: Sequence[str], names: dict[str, str] | None = None
) -> list[TunnelStatus]:
    """The tunnels of ``container_ids`` for ``wg-pod health``, and those their
    pod members share; CannotKnow when a record cannot be read or is gone."""
    names = names or {}
    found: dict[str, TunnelStatus] = {}
    wanted = list(container_ids)
    while wanted:
        container_id = wanted.pop(0)
        if container_id not in found:
            record = _examined_record(runtime, container_id)
            found[container_id] = tunnel_status(runtime, record, names.get(container_id))
            if record.shared_with:
                wanted.append(record.shared_with)
    return list(found.values())


def health_states(runtime: Runtime, tunnels: list[TunnelStatus]) -> dict[str, health.State]:
    """The state of each tunnel, for ``wg-pod health``: the daemon's when it
    looked lately; else this command looks twice, SEND_WINDOW apart, at the
    tunnels that seem idle (to tell those that are sending: stale).
    CannotKnow when a health file or a record cannot be read, or a record
    is gone by the second look."""
    now = time.time()
    states: dict[str, health.State] = {}
    first: dict[str, Sample] = {}
    for tunnel in tunnels:
        if tunnel.shared_with:
            continue
        kept = _kept_health(runtime, tunnel.container_id)
        if kept is not None and now - kept.checked <= FRESH:
            states[tunnel.container_id] = kept.state
            continue
        first[tunnel.container_id] = sample(tunnel, now)
        states[tunnel.container_id] = health.classify(first[tunnel.container_id], None)
    idle = [cid for cid, state in states.items() if state is health.State.IDLE and cid in first]
    if idle:
        time.sleep(health.SEND_WINDOW)
        for container_id in idle:
            again = sample(tunnel_status(runtime, _examined_record(runtime, container_id)))
            states[container_id] = health.classify(again, first[container_id])
    for tunnel in tunnels:  # a pod member's health is that of the tunnel it shares
        if tunnel.shared_with and tunnel.shared_with in states:
            states[tunnel.container_id] = states[tunnel.shared_with]
    return states


def _age(seconds: int | None, now: float) -> str:
    if not seconds:
        return "(none)"
    age = max(0, int(now - seconds))
    parts = [(age // 3600, "hour"), (age % 3600 // 60, "minute"), (age % 60, "second")]
    words = [f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n]
    return (", ".join(words) or "0 seconds") + " ago"


def _bytes(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def with_names(failed: Sequence[Failure], names: dict[str, str]) -> list[Failure]:
    """Failures whose hook did not learn the name, named from podman's list."""
    return [
        f if f.name or f.container_id not in names else replace(f, name=names[f.container_id])
        for f in failed
    ]


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def render_failure(failure: Failure) -> str:
    short = failure.container_id[:12]
    return "\n".join(
        [
            f"container: {failure.name or short} ({short})",
            f"  {'repair failed' if failure.stage == 'repair' else 'failed to start'}: "
            f"{failure.message}",
            f"    at {_when(failure.time)} ({failure.stage}); more: journalctl -t wg-pod",
        ]
    )


def render(
    tunnels: list[TunnelStatus], now: float | None = None, failed: Sequence[Failure] = ()
) -> str:
    """Human output, shaped like ``wg show``; the hook's last failures after
    the tunnels, newest first."""
    now = time.time() if now is None else now
    blocks = []
    for t in tunnels:
        lines = [f"container: {t.name or t.container_id[:12]} ({t.container_id[:12]})"]
        if t.shared_with:
            lines.append(f"  shares the tunnel of container {t.shared_with[:12]}")
            blocks.append("\n".join(lines))
            continue
        # No backend: a record of a setup that stopped before it made the
        # interface (or one that does not parse).
        backend = f"{t.backend} backend" if t.backend else "backend unknown"
        lines.append(f"  interface: {t.interface} ({backend})")
        lines.append(f"  config: {t.config}")
        repairs = f", {t.repairs} repair{'s' if t.repairs != 1 else ''}" if t.repairs else ""
        if t.failed:
            since = f" (since {_when(t.failed_at)})" if t.failed_at is not None else ""
            lines.append(f"  state: {t.state or 'down'}: repair failed: {t.failed}{since}{repairs}")
            lines.append("  the namespace stays closed (no traffic past the tunnel); retried")
        elif t.state:
            lines.append(f"  state: {t.state}{repairs}")
        if t.last_failure and not t.failed:
            lines.append(f"  last failure: {t.last_failure}")
        if t.problem and not t.failed:
            lines.append(f"  problem: {t.problem}")
        if t.addresses:
            lines.append("  addresses: " + ", ".join(t.addresses))
        for peer in t.peers:
            lines += [
                "",
                f"  peer: {peer.public_key}",
                f"    endpoint: {peer.endpoint or '(none)'}",
                "    allowed ips: " + (", ".join(peer.allowed_ips) or "(none)"),
                f"    latest handshake: {_age(peer.latest_handshake, now)}",
                f"    transfer: {_bytes(peer.rx_bytes)} received, {_bytes(peer.tx_bytes)} sent",
            ]
        blocks.append("\n".join(lines))
    if not blocks:
        blocks.append("no tunnels")
    blocks += [render_failure(f) for f in failed]
    return "\n\n".join(blocks)


def as_json(
    tunnels: list[TunnelStatus], now: float | None = None, failed: Sequence[Failure] = ()
) -> dict[str, Any]:
    """The documented ``wg-pod status --json`` shape (version 1; ``failures``
    was added within it)."""
    now = time.time() if now is None else now
    out = []
    for t in tunnels:
        item = asdict(t)
        for peer in item["peers"]:
            seconds = peer["latest_handshake"]
            peer["latest_handshake_age"] = None if not seconds else max(0, int(now - seconds))
        out.append(item)
    return {"version": 1, "tunnels": out, "failures": [asdict(f) for f in failed]}


# ``wg-pod health``'s exit status, as its verdict.
VERDICTS = {0: "healthy", 1: "unhealthy", 2: "unknown"}


def health_json(
    tunnels: Sequence[TunnelStatus],
    states: dict[str, health.State],
    exit_status: int,
    reason: str | None = None,
) -> dict[str, Any]:
    """``wg-pod health --json`` (version 1): the state of each tunnel
    examined and the verdict, which the exit status also gives; ``reason``
    says why when there is no tunnel to judge (none named, cannot know)."""
    return {
        "version": 1,
        "verdict": VERDICTS[exit_status],
        "exit_status": exit_status,
        "reason": reason,
        "tunnels": [
            {
                "container_id": t.container_id,
                "name": t.name,
                "state": states[t.container_id].value,
                "healthy": states[t.container_id].healthy,
                "shared_with": t.shared_with,
            }
            for t in tunnels
        ],
    }
