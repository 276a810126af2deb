"""The resident supervisor, ``wg-pod daemon``: keeps every tunnel up for
its container's whole life.

One process for the host.  It adopts every tunnel from the records when it
starts, learns of new ones when the hook tells it (notify.py; a scan of the
records every TICK seconds as fallback) and forgets them when their
container's process ends.  For each tunnel it holds:

- a netlink socket inside the container's namespace, subscribed to link
  events: when the tunnel's interface disappears (wireguard-go died, the
  link was deleted), the tunnel is set up again in place, from its record
  and its config (lifecycle.repair), without restarting the container;
  each repair runs in a worker of its own (a fork, like the hooks'
  requests), so a slow one (a DNS lookup, a lock, a backend taking its
  time) never holds up the loop or a container's start; a failed one keeps
  the namespace closed and the record, marked failed (lifecycle), and is
  tried again after 1, 2, 4, ... MAX_BACKOFF seconds until it succeeds;
- a pidfd of the container's process: when it ends, the sockets go (a
  socket inside a namespace would keep the namespace alive);
- its health (health.py), looked at every TICK seconds.

Everything the daemon does to a tunnel goes through the lifecycle and the
one teardown, under the namespace's lock, so it and a hook never work on
one namespace at once.  Stopping, restarting or killing it never takes a
tunnel down: nothing of a tunnel lives in the daemon, and a wireguard-go
it starts runs in its own process group, in its container's cgroups
(cgroups.py), not the daemon's service.  One daemon runs per host (a lock
on the records' directory); under systemd it is wg-pod.service (units.py).
"""

from __future__ import annotations

import fcntl
import gc
import heapq
import logging
import os
import select
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import NoReturn

from . import (
    _pyroute2,
    backends,
    endpoints,
    failures,
    handoff,
    health,
    lifecycle,
    metrics,
    nft,
    notify,
    records,
    rtnl,
    runtime,
    stages,
    status,
    units,
)
from .errors import SettingsError, SetupError, Superseded, WgPodError, describe
from .namespaces import entered
from .netlink import open_netns
from .records import TunnelRecord
from .settings import ENV_VAR, Settings
from .teardown import prune_stale

log = logging.getLogger(__name__)

TICK = 10.0  # seconds between looks at every tunnel (and scans of the records)
# A failed repair is tried again after 1 s, then 2, 4, ... at most this.
MAX_BACKOFF = 60.0
# Hooks' requests: at most this many at once (more: the hook does its own
# work), each in a worker killed after WORKER_DEADLINE (its hook has done
# the work itself long before: handoff.DEADLINE).
MAX_WORKERS = 64
WORKER_DEADLINE = 60.0
REQUEST_TIMEOUT = 5.0  # a connection that sends no request in time is dropped

RTMGRP_LINK = 1
RTM_DELLINK = rtnl.RTM_DELLINK
_IFINFOMSG = struct.Struct("=BxHiII")


def deleted_links(data: bytes) -> list[int]:
    """Interface indexes of the RTM_DELLINK messages in a netlink datagram."""
    indexes = []
    for kind, _sequence, message in rtnl.messages(data):
        if kind == RTM_DELLINK and len(message) >= rtnl.HEADER.size + _IFINFOMSG.size:
            _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(
                message, rtnl.HEADER.size
            )
            indexes.append(index)
    return indexes


@dataclass
class Watch:
    """What the daemon holds for one tunnel."""

    record: TunnelRecord
    link_events: socket.socket
    container: int  # pidfd of the container's process
    ifindex: int | None
    followed: dict[str, endpoints.Followed]  # peers with host-name endpoints
    failures: int = 0


@dataclass
class Repair:
    """A repair at work in a worker: its pidfd, and the pipe on which it
    says how it ended."""

    pid: int
    pidfd: int
    result: int
    started: float


@dataclass
class Spare:
    """A worker forked ahead of its request, waiting on ``channel`` for the
    hook's connection."""

    pid: int
    pidfd: int
    channel: socket.socket


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings.in_daemon(True)
        self.selector = selectors.DefaultSelector()
        self.watches: dict[str, Watch] = {}
        self.repairs: list[tuple[float, str]] = []  # (when, container id), a heap
        self.repairing: dict[str, Repair] = {}  # container id: its worker
        self.workers: dict[int, tuple[int, float]] = {}  # pid: (pidfd, started)
        self.spare: Spare | None = None
        self.stopping = False
        self.state = runtime.current()
        self.claim = _claim(self.state)
        self.control = self._listen()
        self.hooks = self._listen_for_hooks()
        self.metrics = self._serve_metrics()

    def _serve_metrics(self) -> metrics.Metrics | None:
        if self.settings.metrics_listen is None:
            return None
        try:
            served = metrics.Metrics()
        except ImportError:
            raise SettingsError(
                self.settings.source,
                "metrics_listen",
                "needs prometheus-client (apt install python3-prometheus-client)",
            ) from None
        try:
            served.serve(*self.settings.metrics_listen)
        except OSError as exc:
            host, port = self.settings.metrics_listen
            raise SetupError("serve metrics", f"{host}:{port}", str(exc)) from None
        return served

    # -- the loop ----------------------------------------------------------

    def run(self) -> None:
        # A signal wakes the loop at once: its handler only sets a flag, and
        # select() would otherwise sleep on until its timeout.
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        self.selector.register(wake_read, selectors.EVENT_READ, lambda: _drain(wake_read))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        # For the workers: each would load them anew.
        nft.preload()
        _pyroute2.preload()
        backends.preload()
        self._fork_spare()
        log.info("daemon: started (pid %d)", os.getpid())
        units.ready()
        next_tick = 0.0
        try:
            while not self.stopping:
                now = time.monotonic()
                if now >= next_tick:
                    _guarded(self.scan)
                    _guarded(self.look_all)
                    _guarded(self._end_overdue_workers)
                    _guarded(self._end_overdue_repairs)
                    # Each fork freezes the heap and thaws it into the oldest
                    # generation, whose collections then rarely come: the
                    # looks' garbage (pyroute2's messages are cycles) would
                    # pile up there, some 30 KiB a container.
                    gc.collect()
                    next_tick = now + TICK
                _guarded(self._repair_due)
                timeout = max(0.0, min([next_tick, *(t for t, _ in self.repairs[:1])]) - now)
                for key, _ in self.selector.select(timeout):
                    _guarded(key.data)
        finally:
            self.close()
            log.info("daemon: stopped; the tunnels stay up")

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def close(self) -> None:
        for container_id in list(self.watches):
            self.drop(container_id)
        for sock, path in (
            (self.control, self.state.daemon_socket),
            (self.hooks, self.state.hook_socket),
        ):
            self.selector.unregister(sock)
            sock.close()
            Path(path).unlink(missing_ok=True)
        # Workers still at work finish their requests: their hooks wait for
        # them.  The spare sees its channel close, and ends.
        if self.spare is not None:
            self.spare.channel.close()
        os.close(self.claim)

    def _listen(self) -> socket.socket:
        path = Path(self.state.daemon_socket)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o177)  # root only, from the moment it exists
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, self._message)
        return sock

    # -- hooks' requests -------------------------------------------------------

    def _listen_for_hooks(self) -> socket.socket:
        path = Path(self.state.hook_socket)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # root only, from the moment it exists
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.listen(128)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, self._accept)
        return sock

    def _accept(self) -> None:
        """Each request in a worker of its own: a fork of this warm process,
        so the work costs no interpreter start and no imports, requests run
        side by side, and a worker that dies takes only its request along
        (its hook then does the work itself).  The worker is forked ahead
        of its request (a spare), so the fork is not on the way either: the
        request goes to the spare and the next spare is forked while it
        works."""
        while True:
            try:
                conn, _ = self.hooks.accept()
            except BlockingIOError:
                return
            if len(self.workers) >= MAX_WORKERS:
                conn.close()  # the hook does its own work
                continue
            spare = self.spare or self._fork_spare()
            self.spare = None
            try:
                socket.send_fds(spare.channel, [b"r"], [conn.fileno()])
            except OSError as exc:  # it died a moment ago: the hook does its own work
                log.warning("daemon: worker %d took no request: %s", spare.pid, exc)
            finally:
                conn.close()
                spare.channel.close()
            self.workers[spare.pid] = (spare.pidfd, time.monotonic())
            self._fork_spare()

    def _fork_spare(self) -> Spare:
        channel, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # The collector kept out of the worker's way: walking the daemon's
        # objects would copy each page it touches (copy-on-write). A
        # request's work, measured in the worker: ~93 ms with it, ~79
        # frozen and off.  The daemon's own objects thaw at once.
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            gc.disable()
            channel.close()
            self._work(child_end)  # never returns
        gc.unfreeze()
        child_end.close()
        pidfd = os.pidfd_open(pid)
        self.selector.register(pidfd, selectors.EVENT_READ, lambda: self._reap(pid))
        self.spare = Spare(pid, pidfd, channel)
        return self.spare

    def _work(self, channel: socket.socket) -> NoReturn:
        """In the worker: wait for a request, answer it, then exit; exit at
        once when the daemon goes (its end of ``channel`` closes)."""
        code = 1
        try:
            # Not the daemon: the default signals, and none of its handles.
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            self._shed()
            _, fds, _, _ = socket.recv_fds(channel, 1, 1)
            for fd in fds[:1]:  # none: the daemon is gone or stopping
                with socket.socket(fileno=fd) as conn:
                    conn.setblocking(True)
                    conn.sendall(handoff.encode_answer(*serve(conn)))
            code = 0
        except BaseException:
            log.exception("daemon: a hook's request failed")
        finally:
            os._exit(code)

    def _shed(self) -> None:
        """In a worker: close the daemon's handles it inherited (the
        tunnels' sockets and pidfds, the workers' pidfds, the listening
        sockets, the lock).  A spare may wait long, and a tunnel's socket
        inside its container's namespace would keep that namespace alive.
        The selector is closed, never changed: its epoll instance is the
        daemon's too."""
        self.selector.close()
        for watch in self.watches.values():
            watch.link_events.close()
            os.close(watch.container)
        for pidfd, _ in self.workers.values():
            os.close(pidfd)
        for repair in self.repairing.values():
            os.close(repair.pidfd)
            os.close(repair.result)
        if self.spare is not None:  # in a repair's worker: the spare's channel
            self.spare.channel.close()
            os.close(self.spare.pidfd)
        for sock in (self.hooks, self.control):
            sock.close()
        os.close(self.claim)

    def _reap(self, pid: int) -> None:
        if self.spare is not None and self.spare.pid == pid:  # killed while it waited
            pidfd = self.spare.pidfd
            self.spare.channel.close()
            self.spare = None
        else:
            pidfd, _ = self.workers.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        os.waitpid(pid, 0)

    def _end_overdue_workers(self) -> None:
        now = time.monotonic()
        for pid, (pidfd, started) in list(self.workers.items()):
            if now - started > WORKER_DEADLINE:
                log.error("daemon: worker %d overdue, killed", pid)
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)

    def _message(self) -> None:
        while True:
            try:
                data = self.control.recv(512)
            except BlockingIOError:
                return
            message = notify.parse(data)
            if message is None:
                log.warning("daemon: ignored a malformed message")
                continue
            event, container_id, seconds = message
            if event == "up":
                if seconds is not None and self.metrics is not None:
                    self.metrics.hook_took(seconds)
                self.adopt(container_id)
            else:
                self.drop(container_id)

    # -- knowing the tunnels -----------------------------------------------

    def scan(self) -> None:
        """Take down the tunnels whose namespace is gone (as the next hook's
        start would, but without waiting for one: no poststop saw them go),
        adopt every complete tunnel of a record, forget those without one."""
        for container_id in prune_stale():
            log.info("container %s: its namespace is gone: tunnel taken down", container_id[:12])
        ids = set(records.all_ids())
        for container_id in ids:
            self.adopt(container_id)
        for container_id in set(self.watches) - ids:
            self.drop(container_id)
        health.forget_all_but(ids)

    def adopt(self, container_id: str) -> None:
        if container_id in self.repairing:
            return  # its worker writes the record as it goes; its end adopts it anew
        record = records.read(container_id)
        watch = self.watches.get(container_id)
        if watch is not None and record == watch.record:
            return
        self.drop(container_id)
        if record is None or record.shared_with:
            return
        if not record.complete and record.writer is not None and record.writer.alive():
            return  # a hook at work: it tells when it is done
        # Complete, or its setup was interrupted (its writer was killed): watched,
        # and an interrupted one, whose interface may be missing, repaired.
        pid = record.container_pid or 0
        try:
            container = os.pidfd_open(pid)
        except OSError:
            return  # its process is gone: nothing to keep up (its namespace: scan)
        # Checked after the pidfd is open, so that it is the pidfd's process.
        known = record.container()
        if known is not None and not known.alive():
            # A later process got the pid: nothing of the tunnel's is its.
            # Whether the tunnel's namespace lives on (a pod's other members,
            # a restart to come) or is gone (then the scan's prune takes it
            # down), it is not this process's to watch or repair.
            os.close(container)
            log.info("container %s: not watched: process %d is another", container_id[:12], pid)
            return
        try:
            link_events, ifindex = self._link_watch(pid, record)
        except (OSError, WgPodError) as exc:
            os.close(container)
            log.info("container %s: not watched: %s", container_id[:12], exc)
            return
        try:
            followed = endpoints.host_name_peers(record, self.settings)
        except WgPodError as exc:  # the repair will say it too, if it comes to that
            log.warning("container %s: endpoints not followed: %s", container_id[:12], exc)
            followed = {}
        watch = Watch(record, link_events, container, ifindex, followed)
        self.watches[container_id] = watch
        self.selector.register(link_events, selectors.EVENT_READ, lambda: self._links(watch))
        self.selector.register(container, selectors.EVENT_READ, lambda: self.drop(container_id))
        log.info("container %s: watching %s", container_id[:12], record.interface)
        if ifindex is None or not record.complete:
            self.schedule(container_id, 0.0)
        else:
            self.look(watch)

    @staticmethod
    def _link_watch(pid: int, record: TunnelRecord) -> tuple[socket.socket, int | None]:
        """A link-event socket in the namespace of ``pid`` (if it is still
        the record's: its cookie, where the kernel gives one, not only its
        inode number), and the interface's index there (None: missing)."""
        with open_netns(f"/proc/{pid}/ns/net") as fd:
            if not record.netns.same(records.NetnsId.of(record.netns.path, fd)):
                raise WgPodError(f"process {pid} is no longer in the tunnel's namespace")
            with entered(fd):
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
                try:
                    ifindex: int | None = socket.if_nametoindex(record.interface)
                except OSError:
                    ifindex = None
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
        return sock, ifindex

    def drop(self, container_id: str) -> None:
        watch = self.watches.pop(container_id, None)
        if watch is None:
            return
        for handle in (watch.link_events, watch.container):
            self.selector.unregister(handle)
        watch.link_events.close()
        os.close(watch.container)
        log.info("container %s: no longer watched", container_id[:12])

    # -- repairs -------------------------------------------------------------

    def _links(self, watch: Watch) -> None:
        while True:
            try:
                data = watch.link_events.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ENOBUFS: events were lost; look again
                log.debug("link events: %s", exc)
                self.schedule(watch.record.container_id, 0.0)
                return
            if watch.ifindex is not None and watch.ifindex in deleted_links(data):
                log.warning(
                    "container %s: %s disappeared",
                    watch.record.container_id[:12],
                    watch.record.interface,
                )
                self.schedule(watch.record.container_id, 0.0)

    def schedule(self, container_id: str, delay: float) -> None:
        if not any(cid == container_id for _, cid in self.repairs):
            heapq.heappush(self.repairs, (time.monotonic() + delay, container_id))

    def _repair_due(self) -> None:
        while self.repairs and self.repairs[0][0] <= time.monotonic() and not self.stopping:
            _, container_id = heapq.heappop(self.repairs)
            watch = self.watches.get(container_id)
            if watch is not None and container_id not in self.repairing:
                self.repair(watch)

    def repair(self, watch: Watch) -> None:
        """Set ``watch``'s tunnel up again, in a worker: its end
        (_repaired) comes back to the loop through the worker's pidfd."""
        container_id = watch.record.container_id
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        gc.freeze()  # as for the spare: the worker's pages stay shared
        pid = os.fork()
        if pid == 0:
            gc.disable()
            os.close(read_end)
            self._repair_in_worker(watch.record, write_end)  # never returns
        gc.unfreeze()
        os.close(write_end)
        pidfd = os.pidfd_open(pid)
        self.repairing[container_id] = Repair(pid, pidfd, read_end, time.monotonic())
        self.selector.register(pidfd, selectors.EVENT_READ, lambda: self._repaired(container_id))
        self.look(watch)  # repairing, from now on

    def _repair_in_worker(self, record: TunnelRecord, result: int) -> NoReturn:
        """In the worker: the repair, and one line on ``result``: ``ok``,
        ``superseded``, or ``failed`` and the reason."""
        outcome = b"failed\0internal error"
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            self._shed()
            lifecycle.repair(record, self.settings)
            outcome = b"ok"
        except Superseded:
            outcome = b"superseded"
        except WgPodError as exc:
            outcome = b"failed\0" + describe(exc).encode()
        except BaseException as exc:
            log.exception("container %s: repair failed", record.container_id[:12])
            outcome = b"failed\0internal error " + type(exc).__name__.encode()
        finally:
            try:
                os.write(result, outcome[: select.PIPE_BUF])
            finally:
                os._exit(0)

    def _repaired(self, container_id: str) -> None:
        """A repair's worker ended: how, from its pipe (nothing: it was
        killed, which counts as a failure; the record says what it did, and
        the next try converges)."""
        repair = self.repairing.pop(container_id)
        self.selector.unregister(repair.pidfd)
        os.close(repair.pidfd)
        os.waitpid(repair.pid, 0)
        try:
            outcome = os.read(repair.result, select.PIPE_BUF)
        finally:
            os.close(repair.result)
        kind, _, reason = outcome.decode(errors="replace").partition("\0")
        watch = self.watches.get(container_id)
        if watch is None:  # its container ended meanwhile
            return
        if kind == "superseded":
            self.adopt(container_id)  # a hook set it up anew, or it is gone
        elif kind == "ok":
            self._repair_succeeded(watch)
        else:
            self._repair_failed(watch, reason or "its worker was killed")

    def _repair_succeeded(self, watch: Watch) -> None:
        container_id = watch.record.container_id
        self.repairs = [(t, cid) for t, cid in self.repairs if cid != container_id]
        heapq.heapify(self.repairs)
        previous = health.read(container_id)
        self._note(container_id, repairs=(previous.repairs if previous else 0) + 1)
        failures.forget(container_id)
        log.info("container %s: %s repaired", container_id[:12], watch.record.interface)
        self.adopt(container_id)
        if container_id in self.watches:
            self.look(self.watches[container_id])

    def _repair_failed(self, watch: Watch, reason: str) -> None:
        """The namespace stays closed (lifecycle kept what closes it, and
        the record, marked failed); tried again after a backoff, with the
        record as it now is, so the next try replaces it."""
        container_id = watch.record.container_id
        watch.failures += 1
        delay = min(MAX_BACKOFF, 2.0 ** (watch.failures - 1))
        log.error("container %s: repair failed: %s", container_id[:12], reason)
        failures.remember(container_id, "repair", reason)
        self._note(container_id, last_failure=f"repair: {reason}")
        current = records.read(container_id)
        if current is None or current.shared_with:  # taken down meanwhile (leave)
            self.drop(container_id)
            return
        watch.record = current
        self.schedule(container_id, delay)
        log.info("container %s: next try in %.0f s", container_id[:12], delay)

    def _end_overdue_repairs(self) -> None:
        now = time.monotonic()
        for container_id, repair in self.repairing.items():
            if now - repair.started > WORKER_DEADLINE:
                log.error("container %s: repair overdue, its worker killed", container_id[:12])
                signal.pidfd_send_signal(repair.pidfd, signal.SIGKILL)

    def _note(self, container_id: str, **changes: object) -> None:
        current = health.read(container_id)
        if current is not None:
            health.write(replace(current, **changes))  # type: ignore[arg-type]

    # -- health ------------------------------------------------------------------

    def look_all(self) -> None:
        for watch in list(self.watches.values()):
            self.look(watch)

    def look(self, watch: Watch) -> None:
        record = watch.record
        tunnel = status.tunnel_status(record)
        sample = status.sample(tunnel)
        previous = health.read(record.container_id)
        now = health.next_health(
            previous,
            record.container_id,
            sample,
            repairing=record.container_id in self.repairing,
        )
        health.write(now)
        if previous is None or previous.state is not now.state:
            log.info("container %s: %s", record.container_id[:12], now.state.value)
        if now.state is health.State.DOWN and record.container_id not in self.repairing:
            self.schedule(record.container_id, 0.0)
        elif watch.followed and sample.peers is not None:
            self._follow(watch, tunnel.peers, sample.time)

    def _follow(self, watch: Watch, peers: tuple[backends.LivePeer, ...], now: float) -> None:
        try:
            moved = endpoints.follow(
                watch.record, watch.followed, peers, now, self.settings.endpoint_refresh_after
            )
        except WgPodError as exc:
            log.warning("container %s: %s", watch.record.container_id[:12], exc)
            return
        for change in moved:
            log.info("container %s: endpoint of %s", watch.record.container_id[:12], change)


def serve(conn: socket.socket) -> handoff.Answer:
    """One hook's request, in a worker: who asks, what, and the answer the
    hook would give itself.  Refused, with the hook's own message, unless
    root asks; a malformed request is refused too."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        stage, settings, started, state = handoff.decode_request(conn.recv(handoff.MAX_MESSAGE))
    except (OSError, ValueError) as exc:
        log.warning("daemon: refused a malformed request (pid %d): %s", pid, exc)
        return 1, "wg-pod: the daemon got a malformed request"
    if stage not in stages.STAGES:
        return 1, f"wg-pod: unknown stage {stage[:40]!r}"
    if uid != 0:  # nothing done for it: what the hook could not do, it may not ask
        log.warning("daemon: refused the %s of uid %d (pid %d): not root", stage, uid, pid)
        if stage == "poststop":
            return 0, None
        return 1, f"wg-pod: container ?: {handoff.NOT_ROOT} (journalctl -t wg-pod)"
    conn.settimeout(None)
    # The worker is this request's alone: its environment is the hook's.
    if settings is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = settings
    return stages.run_stage(
        stage, state, in_daemon=True, started=started, wanted=lambda: _waiting(conn)
    )


def _waiting(conn: socket.socket) -> bool:
    """Whether the hook still waits for the answer: it sends nothing after
    its request, so anything to read on the connection is its hangup."""
    poll = select.poll()
    poll.register(conn, select.POLLIN | select.POLLHUP | select.POLLRDHUP)
    return not poll.poll(0)


def _claim(state: runtime.Runtime) -> int:
    """One daemon per state directory (per host, but for a test suite's
    own): it holds a lock on the directory while it runs (released by the
    kernel however it ends)."""
    fd = os.open(state.make(state.state_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SetupError(
            "start daemon", state.state_dir, "another wg-pod daemon is running"
        ) from None
    return fd


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 512):
                return
        except BlockingIOError:
            return


def _guarded(work: Callable[[], object]) -> None:
    """Run one piece of the loop's work; a bug in it is logged with its
    traceback, and the daemon goes on keeping the other tunnels up."""
    try:
        work()
    except Exception:
        log.exception("daemon: unexpected error")


def run(settings: Settings) -> None:
    Daemon(settings).run()
