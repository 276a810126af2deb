"""The hooks' requests: the hook socket and the workers that answer it.

Each request runs in a worker of its own: a fork of the warm daemon, so the
work costs no interpreter start and no imports, requests run side by side,
and a worker that dies takes only its request along (its hook then does the
work itself).  The worker is forked ahead of its request (a spare), so the
fork is not on the way either: the request's connection goes to the spare
by ``SCM_RIGHTS``, and the next spare is forked while the first one works.
While it waits, the spare makes the interface a setup would create
(tunnel/pool.py: the warm pool), which its createRuntime then takes.

A poststop is answered as soon as it is taken: its teardown needs nothing
from the runtime, and a poststop's answer is always success (stages.py).
The worker then takes the tunnel down.  Should it or the daemon die before
it is done, the record still says what to take down, and the next start
(its prune), ``gc`` or the next daemon does it (nothing of the tunnel
serves a namespace that is gone).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .. import handoff, stages
from ..errors import SettingsError
from ..model.names import pool_name
from ..model.settings import POSTSTOP_ANSWERED, Settings, load_settings
from ..runtime import Runtime
from ..state import records
from ..tunnel import pool
from .loop import Loop, root_only_socket

log = logging.getLogger(__name__)

# At most this many requests at once (more: the hook does its own work),
# each in a worker with the loop's deadline.
MAX_WORKERS = 64
REQUEST_TIMEOUT = 5.0  # a connection that sends no request in time is dropped
# At the daemon's stop, the spare ends within this (it may be starting its
# wireguard-go), or is killed and its pooled interface removed for it.
SPARE_DEADLINE = 12.0


@dataclass
class Spare:
    """A worker forked ahead of its request, waiting on ``channel`` for the
    hook's connection; ``pooled``: the name of the interface it makes
    meanwhile."""

    pid: int
    pidfd: int
    channel: socket.socket
    pooled: str


class HookRequests:
    def __init__(self, loop: Loop, runtime: Runtime, settings: Settings) -> None:
        self.loop = loop
        self.runtime = runtime
        self.settings = settings
        self.listener = root_only_socket(runtime.hook_socket, socket.SOCK_SEQPACKET)
        loop.watch(self.listener, self._accept)
        self.spare: Spare | None = None
        self.workers: dict[int, tuple[int, str]] = {}  # pid: pidfd, pooled

    def start(self) -> None:
        for name in pool.names(self.runtime):  # a killed daemon's
            log.info("daemon: removing %s, made ahead by an earlier daemon", name)
            pool.clear(self.runtime, name)
        self._fork_spare()

    def close(self) -> None:
        """No new requests.  Workers at work finish theirs (their hooks wait
        for them); the spare sees its channel close, removes what it made
        ahead and ends, which is waited for: a stopped daemon leaves no pool."""
        self.loop.close(self.listener)
        Path(self.runtime.hook_socket).unlink(missing_ok=True)
        spare, self.spare = self.spare, None
        if spare is not None:
            self.loop.close(spare.channel)
            if not select.select([spare.pidfd], [], [], SPARE_DEADLINE)[0]:
                signal.pidfd_send_signal(spare.pidfd, signal.SIGKILL)
            self._ended(spare.pid, spare.pidfd, spare.pooled, taken=False)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
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
                self.loop.close(spare.channel)
            self.workers[spare.pid] = (spare.pidfd, spare.pooled)
            self.loop.kill_after(spare.pidfd, f"worker {spare.pid}")
            self._fork_spare()

    def _fork_spare(self) -> Spare:
        channel, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pooled = pool_name(self.runtime.state_dir)
        pid = self.loop.fork()
        if pid == 0:
            channel.close()
            _work(child_end, self.runtime, self.settings, pooled)  # never returns
        child_end.close()
        pidfd = os.pidfd_open(pid)
        self.loop.hold(channel)
        self.loop.watch(pidfd, lambda: self._reap(pid))
        self.spare = Spare(pid, pidfd, channel, pooled)
        return self.spare

    def _reap(self, pid: int) -> None:
        if self.spare is not None and self.spare.pid == pid:  # ended while it waited
            spare, self.spare = self.spare, None
            self.loop.close(spare.channel)
            self._ended(pid, spare.pidfd, spare.pooled, taken=False)
        else:
            pidfd, pooled = self.workers.pop(pid)
            self._ended(pid, pidfd, pooled, taken=True)

    def _ended(self, pid: int, pidfd: int, pooled: str, *, taken: bool) -> None:
        """A worker ended (``taken``: after taking a request).  One that did
        not end well (killed) may leave the interface it made ahead:
        removed, unless its request's record names it (the record's to
        take down)."""
        self.loop.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0 and not (taken and _named(self.runtime, pooled)):
            pool.clear(self.runtime, pooled)


def _named(runtime: Runtime, name: str) -> bool:
    return any(record.temp_name == name for record in records.read_all(runtime))


def _work(channel: socket.socket, runtime: Runtime, settings: Settings, pooled: str) -> NoReturn:
    """In the worker: make the interface ``pooled`` ahead, wait for a
    request, answer it, then exit; exit at once when the daemon goes (its
    end of ``channel`` closes).  What the request did not take goes."""
    code = 1
    ready = None
    try:
        ready = pool.make(runtime, settings, pooled)
        _, fds, _, _ = socket.recv_fds(channel, 1, 1)
        for fd in fds[:1]:  # none: the daemon is gone or stopping
            with socket.socket(fileno=fd) as conn:
                conn.setblocking(True)
                serve(conn, runtime, ready)
        code = 0
    except BaseException:
        log.exception("daemon: a hook's request failed")
    finally:
        try:
            pool.discard(runtime, ready)
        except BaseException:
            log.exception("daemon: removing %s failed", pooled)
            code = 1  # the daemon tries again
        os._exit(code)


def serve(conn: socket.socket, runtime: Runtime, ready: pool.Ready | None = None) -> None:
    """One hook's request, in a worker: who asks, what, and the answer the
    hook would give itself, sent on ``conn``.  Refused, with the hook's own
    message, unless uid 0 asks (root; for a rootless user's daemon, uid 0
    of their namespace, their hooks); a malformed request is refused too.
    ``ready``: the interface this worker made ahead, for a createRuntime."""
    pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        request = handoff.decode_request(conn.recv(handoff.MAX_MESSAGE))
    except (OSError, ValueError) as exc:
        log.warning("daemon: refused a malformed request (pid %d): %s", pid, exc)
        return _answer(conn, 1, "wg-pod: the daemon got a malformed request")
    stage, settings, started, device, state = request
    if stage not in stages.STAGES:
        return _answer(conn, 1, f"wg-pod: unknown stage {stage[:40]!r}")
    if uid != 0:  # nothing done for it: what the hook could not do, it may not ask
        log.warning("daemon: refused the %s of uid %d (pid %d): not root", stage, uid, pid)
        if stage == "poststop":
            return _answer(conn, 0, None)
        return _answer(conn, 1, f"wg-pod: container ?: {handoff.NOT_ROOT} (journalctl -t wg-pod)")
    conn.settimeout(None)
    context = runtime.with_settings(settings)
    if stage == "poststop":  # answered at once, the teardown after (see above)
        _answer(conn, 0, None)
        _fault_after_answer(context)
        stages.run_stage(stage, state, context, in_daemon=True, device=device)
        return None
    code, line = stages.run_stage(
        stage,
        state,
        context,
        in_daemon=True,
        started=started,
        wanted=lambda: _waiting(conn),
        device=device,
        ready=ready,
    )
    return _answer(conn, code, line)


def _answer(conn: socket.socket, code: int, line: str | None) -> None:
    conn.sendall(handoff.encode_answer(code, line))


def _fault_after_answer(runtime: Runtime) -> None:
    """Tests only (``fault_injection_kill_after: poststop-answered``):
    SIGKILL the daemon and this worker between a poststop's answer and its
    teardown."""
    try:
        fault = load_settings(runtime).in_daemon(True).fault_injection_kill_after
    except SettingsError:  # the teardown reads none: no reason to fail it
        return
    if fault == POSTSTOP_ANSWERED:
        log.warning("fault injection: killing the daemon after a poststop's answer")
        os.kill(os.getppid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


def _waiting(conn: socket.socket) -> bool:
    """Whether the hook still waits for the answer: it sends nothing after
    its request, so anything to read on the connection is its hangup."""
    poll = select.poll()
    poll.register(conn, select.POLLIN | select.POLLHUP | select.POLLRDHUP)
    return not poll.poll(0)
