"""The daemon's loop: keyed timers, the tick, and a fork that lets go of
every handle the daemon holds (no hand-kept list)."""

from __future__ import annotations

import os
import signal
import socket
import time

from wg_pod_hook.daemon.loop import Loop


def test_a_worker_holds_none_of_the_loops_handles() -> None:
    loop = Loop()
    read_end, write_end = os.pipe()
    watched, _peer = socket.socketpair()
    loop.watch(watched, lambda: None)
    loop.hold(read_end)
    report_read, report_write = os.pipe()  # the test's own: not the loop's
    pid = loop.fork()
    if pid == 0:
        still_open = []
        for fd in (read_end, watched.fileno()):
            try:
                os.fstat(fd)
                still_open.append(fd)
            except OSError:
                pass
        os.write(report_write, repr(still_open).encode())
        os._exit(0)
    os.close(report_write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.read(report_read, 100) == b"[]"
    os.fstat(read_end)  # the daemon's own stay open
    for fd in (report_read, write_end):
        os.close(fd)
    loop.close(watched)
    loop.close(read_end)
    assert loop.handles == {}


def test_a_key_has_one_timer_and_a_cancelled_one_does_not_run() -> None:
    loop = Loop()
    ran: list[str] = []
    loop.at(0.0, "a", lambda: ran.append("a first"))
    loop.at(0.0, "a", lambda: ran.append("a again"))  # due already: kept as it was
    loop.at(0.0, "b", lambda: ran.append("b"))
    loop.cancel("b")
    loop.at(3600.0, "c", lambda: ran.append("c"))
    loop._run_due()
    assert ran == ["a first"]
    assert time.monotonic() + 3000 < loop._next_due()  # "b" skipped, "c" next
    loop.at(0.0, "b", lambda: ran.append("b anew"))  # cancelled: may be set again
    loop._run_due()
    assert ran == ["a first", "b anew"]


def test_the_tick_runs_each_registered_work_and_a_bug_in_one_stops_none() -> None:
    loop = Loop()
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("a bug")

    loop.every_tick(broken)
    loop.every_tick(lambda: ran.append("looked"))
    loop.every_tick(loop.stop)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        loop.run()
    finally:  # the loop's handlers are the daemon's: pytest's back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert ran == ["looked"]
    assert loop.handles == {}  # its wake-up pipe closed


def test_a_worker_past_its_deadline_is_killed_and_a_reaped_one_is_not() -> None:
    loop = Loop()
    pids = []
    for _ in range(2):
        pid = loop.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        pids.append(pid)
    overdue, reaped = (os.pidfd_open(pid) for pid in pids)
    loop.watch(overdue, lambda: None)
    loop.watch(reaped, lambda: None)
    loop.kill_after(overdue, "worker a", delay=0.0)
    loop.kill_after(reaped, "worker b", delay=0.0)
    loop.close(reaped)  # as when its end is seen: its deadline goes with it
    # (Left due, it would signal whatever later gets the fd number.)
    assert list(loop.due) == [f"deadline {overdue}"]
    loop._run_due()
    _, status = os.waitpid(pids[0], 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert os.waitpid(pids[1], os.WNOHANG) == (0, 0)  # still sleeping
    os.kill(pids[1], signal.SIGKILL)
    os.waitpid(pids[1], 0)
    loop.close(overdue)
