"""Repairs: a watched tunnel set up again in place, from its record and its
config (lifecycle.repair), without restarting the container; and reloads,
its changed config applied to it in place (lifecycle.reload).

Each runs in a worker of its own (a fork, like the hooks' requests), one
at a time for a tunnel, so a slow one (a DNS lookup, a lock, a backend
taking its time) never holds up the loop or a container's start; its end
comes back to the loop through the worker's pidfd, and how it ended
through a pipe.  A failed repair keeps the namespace closed and the
record, marked failed (lifecycle), and is tried again after 1, 2, 4, ...
MAX_BACKOFF seconds until it succeeds; so is a reload that failed while
it changed things.  A reload refused (a change only a restart applies, a
config now invalid) changed nothing, and is said in the log.
"""

from __future__ import annotations

import logging
import os
import select
from dataclasses import dataclass
from typing import NoReturn

from ..errors import Superseded, WgPodError, describe
from ..model.settings import Settings
from ..runtime import Runtime
from ..state import failures, health, records
from ..state.records import TunnelRecord
from ..tunnel import lifecycle
from . import looks
from .loop import Loop
from .watches import Watch, Watches

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0


@dataclass
class Repair:
    """A repair (or reload) at work in a worker: its pidfd, and the pipe on
    which it says how it ended."""

    pid: int
    pidfd: int
    result: int
    reloading: bool = False


class Repairs:
    def __init__(self, loop: Loop, runtime: Runtime, settings: Settings, watches: Watches) -> None:
        self.loop = loop
        self.runtime = runtime
        self.settings = settings
        self.watches = watches
        self.at_work: dict[str, Repair] = {}  # container id: its worker

    def busy(self, container_id: str) -> bool:
        return container_id in self.at_work

    def schedule(self, container_id: str, delay: float) -> None:
        self.loop.at(delay, _key(container_id), lambda: self._due(container_id))

    def reload(self, watch: Watch) -> None:
        """Apply the tunnel's changed config in place, unless a repair is
        at work on it (which reads the config anew)."""
        if watch.record.container_id not in self.at_work:
            log.info("container %s: its config changed: reloading", watch.record.container_id[:12])
            self._start(watch, reloading=True)

    def _due(self, container_id: str) -> None:
        watch = self.watches.get(container_id)
        if watch is not None and container_id not in self.at_work:
            self._start(watch)

    def _start(self, watch: Watch, reloading: bool = False) -> None:
        container_id = watch.record.container_id
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        pid = self.loop.fork()
        if pid == 0:
            os.close(read_end)
            _work_in_worker(self.runtime, watch.record, self.settings, write_end, reloading)
        os.close(write_end)
        pidfd = os.pidfd_open(pid)
        self.at_work[container_id] = Repair(pid, pidfd, read_end, reloading)
        self.loop.hold(read_end)
        self.loop.watch(pidfd, lambda: self._ended(container_id))
        what = "reload" if reloading else "repair"
        self.loop.kill_after(pidfd, f"{what} of container {container_id[:12]}")
        if not reloading:
            looks.repairing(self.runtime, container_id)

    def _ended(self, container_id: str) -> None:
        """A repair's worker ended: how, from its pipe (nothing: it was
        killed, which counts as a failure; the record says what it did, and
        the next try converges)."""
        repair = self.at_work.pop(container_id)
        self.loop.close(repair.pidfd)
        os.waitpid(repair.pid, 0)
        try:
            outcome = os.read(repair.result, select.PIPE_BUF)
        finally:
            self.loop.close(repair.result)
        kind, _, reason = outcome.decode(errors="replace").partition("\0")
        watch = self.watches.get(container_id)
        if watch is None:  # its container ended meanwhile
            return
        if kind == "superseded":
            self.watches.adopt(container_id)  # a hook set it up anew, or it is gone
        elif kind == "refused":  # a reload that changed nothing
            log.error("container %s: not reloaded: %s", container_id[:12], reason)
        elif kind == "ok" and repair.reloading:
            log.info("container %s: reloaded: %s", container_id[:12], reason)
            self.watches.adopt(container_id)
        elif kind == "ok":
            self._succeeded(watch)
        else:
            what = "reload" if repair.reloading else "repair"
            self._failed(watch, reason or "its worker was killed", what)

    def _succeeded(self, watch: Watch) -> None:
        container_id = watch.record.container_id
        self.loop.cancel(_key(container_id))
        previous = health.read(self.runtime, container_id)
        looks.note(self.runtime, container_id, repairs=(previous.repairs if previous else 0) + 1)
        failures.forget(self.runtime, container_id)
        log.info("container %s: %s repaired", container_id[:12], watch.record.interface)
        self.watches.adopt(container_id)  # its new record: watched anew, and looked at

    def _failed(self, watch: Watch, reason: str, what: str = "repair") -> None:
        """The namespace stays closed (lifecycle kept what closes it, and
        the record, marked failed); repaired after a backoff, with the
        record as it now is, so the next try replaces it.  ``what``
        failed: a repair, or a reload that changed things."""
        container_id = watch.record.container_id
        watch.failures += 1
        delay = min(MAX_BACKOFF, 2.0 ** (watch.failures - 1))
        log.error("container %s: %s failed: %s", container_id[:12], what, reason)
        remembered = reason if what == "repair" else f"{what}: {reason}"
        failures.remember(self.runtime, container_id, "repair", remembered)
        looks.note(self.runtime, container_id, last_failure=f"{what}: {reason}")
        current = records.read(self.runtime, container_id)
        if current is None or current.shared_with:  # taken down meanwhile (leave)
            self.watches.drop(container_id)
            return
        watch.record = current
        self.schedule(container_id, delay)
        log.info("container %s: next try in %.0f s", container_id[:12], delay)


def _key(container_id: str) -> str:
    return f"repair {container_id}"


def _work_in_worker(
    runtime: Runtime, record: TunnelRecord, settings: Settings, result: int, reloading: bool
) -> NoReturn:
    """In the worker: the repair (or the reload), and one line on
    ``result``: ``ok`` (a reload's: and what it changed), ``superseded``,
    ``refused`` and why (a reload that changed nothing), or ``failed`` and
    the reason."""
    outcome = b"failed\0internal error"
    try:
        if reloading:
            outcome = b"ok\0" + str(lifecycle.reload(runtime, record, settings)).encode()
        else:
            lifecycle.repair(runtime, record, settings)
            outcome = b"ok"
    except Superseded:
        outcome = b"superseded"
    except WgPodError as exc:
        # A reload marks the record failed only once it changed something.
        now = records.read(runtime, record.container_id)
        changed = not reloading or (now is not None and now.failed is not None)
        outcome = (b"failed\0" if changed else b"refused\0") + describe(exc).encode()
    except BaseException as exc:
        log.exception("container %s: worker failed", record.container_id[:12])
        outcome = b"failed\0internal error " + type(exc).__name__.encode()
    finally:
        try:
            os.write(result, outcome[: select.PIPE_BUF])
        finally:
            os._exit(0)
