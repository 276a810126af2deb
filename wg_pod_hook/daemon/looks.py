"""Looks at the watched tunnels: every tick, each tunnel's status is read
once (status.tunnel_status: its interface and its peers, from its backend)
and handed to each per-tunnel task in turn.

The tasks today: its health (health.py: up, idle, stale, down, repairing;
a tunnel found down is repaired), following its peers' host-name
endpoints (endpoints.py) and, with ``reload_on_change``, reloading it when
its config or key files change (lifecycle.reload).  A new periodic task
for a tunnel (renewing a port mapping, say) is one more entry in the
daemon's list of tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..errors import WgPodError
from ..model.configfile import stamps_now
from ..model.settings import Settings
from ..runtime import Runtime
from ..state import health
from ..tunnel import endpoints, status
from ..tunnel.status import TunnelStatus
from .watches import Watch

log = logging.getLogger(__name__)

TunnelTask = Callable[[Watch, TunnelStatus], None]


def look(runtime: Runtime, watch: Watch, tasks: Sequence[TunnelTask]) -> None:
    tunnel = status.tunnel_status(runtime, watch.record)
    for task in tasks:
        task(watch, tunnel)


def health_task(
    runtime: Runtime, busy: Callable[[str], bool], broken: Callable[[str], None]
) -> TunnelTask:
    """The tunnel's health, from the look; ``broken`` when it is down and
    no repair (``busy``) is at work on it already."""

    def task(watch: Watch, tunnel: TunnelStatus) -> None:
        container_id = watch.record.container_id
        repairing = busy(container_id)
        now = _write(runtime, container_id, status.sample(tunnel), repairing=repairing)
        if now.state is health.State.DOWN and not repairing:
            broken(container_id)

    return task


def endpoints_task(runtime: Runtime, settings: Settings) -> TunnelTask:
    """Peers whose host-name endpoint moved: pointed at its new address."""

    def task(watch: Watch, tunnel: TunnelStatus) -> None:
        if not watch.followed or tunnel.problem is not None:
            return
        try:
            moved = endpoints.follow(
                runtime,
                watch.record,
                watch.followed,
                tunnel.peers,
                time.time(),
                settings.endpoint_refresh_after,
            )
        except WgPodError as exc:
            log.warning("container %s: %s", watch.record.container_id[:12], exc)
            return
        for change in moved:
            log.info("container %s: endpoint of %s", watch.record.container_id[:12], change)

    return task


def sources_task(changed: Callable[[Watch], None]) -> TunnelTask:
    """A tunnel whose config or key files changed since it was set up or
    last reloaded, and that is up (else its repair reads them anew):
    ``changed``, once for each new version of them (reload_on_change)."""

    def task(watch: Watch, tunnel: TunnelStatus) -> None:
        record = watch.record
        if not record.sources or record.failed or tunnel.problem is not None:
            return
        now = stamps_now(record.sources)
        if now != record.sources and now != watch.reload_tried:
            watch.reload_tried = now
            changed(watch)

    return task


def repairing(runtime: Runtime, container_id: str) -> None:
    """Said without a look, as a repair starts: the tunnel's interface is
    missing, or its setup was cut short."""
    _write(runtime, container_id, health.Sample(time.time(), None), repairing=True)


def note(runtime: Runtime, container_id: str, **changes: object) -> None:
    """``changes`` into the tunnel's health, when it has one."""
    current = health.read(runtime, container_id)
    if current is not None:
        health.write(runtime, replace(current, **changes))  # type: ignore[arg-type]


def _write(
    runtime: Runtime, container_id: str, sample: health.Sample, *, repairing: bool
) -> health.Health:
    previous = health.read(runtime, container_id)
    now = health.next_health(previous, container_id, sample, repairing=repairing)
    health.write(runtime, now)
    if previous is None or previous.state is not now.state:
        log.info("container %s: %s", container_id[:12], now.state.value)
    return now
