"""The daemon's loop: one thread waiting on its handles, its timers and its
tick.

Every handle the daemon holds (sockets, pidfds, pipes, the lock) is the
loop's: waited on (``watch``) or only held (``hold``), and let go with
``close``.  So what a forked worker must close before it waits is the
loop's list, not one kept by hand: ``fork`` closes all of it in the child
(a socket inside a container's namespace, kept open by a worker that waits
long, would keep that namespace alive).

Timers are keyed: one per key at a time (a tunnel's next repair, a
worker's deadline), dropped with ``cancel``; closing a worker's pidfd drops
its deadline.  The tick runs every TICK seconds: the daemon's periodic
work (a scan of the records, a look at each tunnel) is one ``every_tick``.
"""

from __future__ import annotations

import gc
import heapq
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

TICK = 10.0  # seconds between ticks
# A forked worker at work is killed after this long (a hook's has done the
# work itself long before: handoff.DEADLINE; a repair is tried again).
WORKER_DEADLINE = 60.0

Handle = socket.socket | int
Work = Callable[[], object]


class Loop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.handles: dict[int, Handle] = {}  # fd: every handle the daemon holds
        self.timers: list[tuple[float, str]] = []  # (when, key), a heap; stale entries skipped
        self.due: dict[str, tuple[float, Work]] = {}  # key: (when, work), the live timers
        self.ticks: list[Work] = []
        self.stopping = False

    # -- handles -----------------------------------------------------------

    def hold(self, handle: Handle) -> None:
        self.handles[_fd(handle)] = handle

    def watch(self, handle: Handle, work: Work) -> None:
        """Hold ``handle`` and run ``work`` whenever it is readable."""
        self.hold(handle)
        self.selector.register(handle, selectors.EVENT_READ, work)

    def close(self, handle: Handle) -> None:
        fd = _fd(handle)
        self.cancel(_deadline(fd))
        if fd in self.selector.get_map():
            self.selector.unregister(fd)
        del self.handles[fd]
        _close(handle)

    def fork(self) -> int:
        """Fork a worker; in it (0 returned), none of the loop's handles is
        open and the signals are the default ones again."""
        # The collector kept out of the worker's way: walking the daemon's
        # objects would copy each page it touches (copy-on-write).  A
        # request's work, measured in the worker: ~93 ms with it, ~79
        # frozen and off.  The daemon's own objects thaw at once.
        gc.freeze()
        pid = os.fork()
        if pid:
            gc.unfreeze()
            return pid
        try:
            gc.disable()
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # Closed, never changed: its epoll instance is the daemon's too.
            self.selector.close()
            for handle in self.handles.values():
                _close(handle)
            self.handles.clear()
        except BaseException:
            log.exception("daemon: a worker could not let go of the daemon's handles")
            os._exit(1)
        return 0

    # -- time --------------------------------------------------------------

    def at(self, delay: float, key: str, work: Work) -> None:
        """Run ``work`` in ``delay`` seconds, unless ``key`` is due already."""
        if key not in self.due:
            when = time.monotonic() + delay
            self.due[key] = (when, work)
            heapq.heappush(self.timers, (when, key))

    def cancel(self, key: str) -> None:
        self.due.pop(key, None)

    def kill_after(self, pidfd: int, what: str, delay: float = WORKER_DEADLINE) -> None:
        """SIGKILL the worker of ``pidfd`` (``what``, in the log) unless it
        ends first: ``close(pidfd)``, when it is reaped, cancels this."""

        def overdue() -> None:
            log.error("daemon: %s overdue, killed", what)
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)

        self.at(delay, _deadline(pidfd), overdue)

    def every_tick(self, work: Work) -> None:
        self.ticks.append(work)

    # -- running -----------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> None:
        """Until ``stop`` (SIGTERM, SIGINT): the tick, due timers, and the
        work of each readable handle."""
        # A signal wakes the loop at once: its handler only sets a flag, and
        # select() would otherwise sleep on until its timeout.
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.hold(wake_write)
        self.watch(wake_read, lambda: _drain(wake_read))
        signal.set_wakeup_fd(wake_write)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: self.stop())
        next_tick = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_tick:
                for work in self.ticks:
                    guarded(work)
                # Each fork freezes the heap and thaws it into the oldest
                # generation, whose collections then rarely come: the
                # looks' garbage (pyroute2's messages are cycles) would
                # pile up there, some 30 KiB a container.
                gc.collect()
                next_tick = now + TICK
            self._run_due()
            if self.stopping:
                break
            timeout = max(0.0, min(next_tick, self._next_due()) - time.monotonic())
            for key, _ in self.selector.select(timeout):
                guarded(key.data)
        signal.set_wakeup_fd(-1)
        self.close(wake_read)
        self.close(wake_write)

    def _run_due(self) -> None:
        while self.timers and self.timers[0][0] <= time.monotonic() and not self.stopping:
            when, key = heapq.heappop(self.timers)
            if self.due.get(key, (None,))[0] == when:
                _, work = self.due.pop(key)
                guarded(work)

    def _next_due(self) -> float:
        while self.timers and self.due.get(self.timers[0][1], (None,))[0] != self.timers[0][0]:
            heapq.heappop(self.timers)  # cancelled, or set anew
        return self.timers[0][0] if self.timers else float("inf")


def root_only_socket(path: str, kind: int) -> socket.socket:
    """A Unix socket bound at ``path`` (replacing what is there), that only
    root may use from the moment it exists; not blocking, and listening
    when it is a stream or packet socket."""
    Path(path).unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if kind != socket.SOCK_DGRAM:
        sock.listen(128)
    sock.setblocking(False)
    return sock


def guarded(work: Work) -> None:
    """Run one piece of the loop's work; a bug in it is logged with its
    traceback, and the daemon goes on keeping the other tunnels up."""
    try:
        work()
    except Exception:
        log.exception("daemon: unexpected error")


def _deadline(pidfd: int) -> str:
    return f"deadline {pidfd}"


def _fd(handle: Handle) -> int:
    return handle if isinstance(handle, int) else handle.fileno()


def _close(handle: Handle) -> None:
    if isinstance(handle, int):
        os.close(handle)
    else:
        handle.close()


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return
