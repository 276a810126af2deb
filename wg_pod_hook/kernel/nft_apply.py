"""Applying an nftables ruleset (nft.py renders it) in a network namespace,
as one transaction.

It is applied in-process through libnftables (its Python binding,
python3-nftables), from a short-lived thread that enters the container's
network namespace: on Linux a thread's namespace is its own, so the hook's
main thread never moves, and no nsenter and nft are forked.  Without the
binding or the library, ``nsenter --net=/proc/self/fd/N -- nft -f -`` (N:
the namespace's fd, passed on) applies the same text: the only external
command wg-pod runs to completion, with a deadline, its argv logged (never
a secret) and named by its failure.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from .. import namespaces
from ..errors import SetupError

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLY_TIMEOUT = 10.0
LIBNFTABLES = "libnftables.so.1"
NETLINK_NETFILTER = 12
ERROR_MAX = 300
# libnftables keeps state between contexts (its interface cache), and a
# thread left behind by the deadline may still be inside it.
_LIBNFTABLES_LOCK = threading.Lock()


def apply(netns_fd: int, ruleset: str) -> None:
    """Apply ``ruleset`` in the network namespace open as ``netns_fd``, as
    one transaction: in-process through libnftables, else with nsenter and
    nft.  The fd the caller opened (and proved to be the container's), never
    a path opened again, which could by now name another namespace."""
    new_context = _libnftables()
    if new_context is None:
        _apply_with_nft(netns_fd, ruleset)
    else:
        log.debug("apply nftables in netns fd %d in-process (libnftables)", netns_fd)
        _apply_in_process(new_context, netns_fd, ruleset)


def preload() -> None:
    """Load libnftables and its binding now (~5 ms), for a process whose
    forks apply rulesets: the daemon, for its workers."""
    _libnftables()


def one_line(text: str) -> str:
    """nft's error text (message, the offending line, a line of carets) as
    one line of at most ERROR_MAX characters."""
    return " ".join(text.split())[:ERROR_MAX]


def _libnftables() -> Callable[[], Any] | None:
    """What makes a libnftables context, or None (logged, with the path
    taken instead) when python3-nftables or libnftables.so.1 is missing.

    Imported here, not with the module: the hook's start time counts, and
    ``wg-pod check`` renders rulesets without ever applying one.
    """
    try:
        binding = importlib.import_module("nftables")
        import ctypes  # loaded by the binding already

        ctypes.CDLL(LIBNFTABLES)  # once per process; each context finds it loaded
    except ImportError as exc:
        missing = f"no Python module nftables ({exc})"
    except OSError as exc:
        missing = f"cannot load {LIBNFTABLES} ({exc})"
    else:
        if hasattr(binding.Nftables, "cmd_from_file"):
            return partial(binding.Nftables, sofile=LIBNFTABLES)
        missing = "Python module nftables without cmd_from_file (too old)"
    log.debug("apply nftables with nsenter and nft: %s", missing)
    return None


def _apply_in_process(new_context: Callable[[], Any], netns_fd: int, ruleset: str) -> None:
    """The whole text as one file, as ``nft -f`` reads it: parsed and
    evaluated first, then sent as one netlink batch.  A file (in memory), not
    a buffer: from a buffer libnftables shows an error with the text's first
    line instead of the failing one, and without a line number.

    The deadline bounds the wait, not the work: a thread cannot be killed.
    libnftables itself never waits (once the batch is sent, which the kernel
    handles within the send, it reads the answers from a non-blocking
    socket), so only a kernel stuck on the namespace's nftables lock could
    hold the thread.  It is a daemon thread, never holding up the hook's
    exit, and the lock keeps a later call out of libnftables until it is done.
    """

    def run(report: Callable[[tuple[int, str]], None]) -> None:
        if not _LIBNFTABLES_LOCK.acquire(timeout=APPLY_TIMEOUT):
            raise SetupError("apply nftables", "nft", "an earlier call is still running")
        try:
            _check_netfilter_socket()
            # Its netlink socket is opened here (nft_ctx_new), so it is this
            # namespace's.
            nft = new_context()
            fd = _in_memory(ruleset)
            try:
                source = f"/proc/self/fd/{fd}"
                rc, _output, error = nft.cmd_from_file(source)
            finally:
                os.close(fd)
            # Named as nft -f - names its input: the message is the one the
            # nsenter path gives.
            report((int(rc), str(error).replace(f"{source}:", "/dev/stdin:")))
            # Freeing the context closes the socket, and that close waits
            # for the kernel to free what the transaction replaced (an RCU
            # grace period, about 10 ms): the caller has its answer already.
            del nft
        finally:
            _LIBNFTABLES_LOCK.release()

    rc, error = in_netns(netns_fd, run, APPLY_TIMEOUT)
    if rc != 0:
        raise SetupError("apply nftables", "nft", one_line(error) or f"libnftables error {rc}")


def _in_memory(ruleset: str) -> int:
    """A close-on-exec memfd holding ``ruleset``, read from its start."""
    try:
        fd = os.memfd_create("wg-pod-ruleset")
    except OSError as exc:
        raise SetupError("apply nftables", "nft", f"memfd: {exc.strerror or exc}") from None
    try:
        with open(fd, "wb", closefd=False) as text:
            text.write(ruleset.encode())
    except OSError as exc:
        os.close(fd)
        raise SetupError("apply nftables", "nft", f"memfd: {exc.strerror or exc}") from None
    return fd


def _check_netfilter_socket() -> None:
    """libnftables ends the whole process (exit(1)) when it cannot open its
    netlink socket, which would leave the rollback undone: try one first."""
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER).close()
    except OSError as exc:
        detail = f"no netfilter netlink socket: {exc.strerror or exc}"
        raise SetupError("apply nftables", "nft", detail) from None


def in_netns(netns_fd: int, work: Callable[[Callable[[T], None]], None], timeout: float) -> T:
    """Run ``work(report)`` in a thread of its own that first enters the
    network namespace open as ``netns_fd``; return what it reports, or raise
    here what it raised before reporting.  The thread may go on tidying up
    after its report; nobody waits for that.

    setns(2) moves only the calling thread, and this one ends with its work:
    the caller's namespace never changes.  The thread enters through a
    duplicate of the fd, its own: the caller may close its fd once the
    deadline passed, and that number may by then be another file's.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    answered = threading.Event()
    try:
        own = os.dup(netns_fd)
    except OSError as exc:
        cause = f"enter network namespace: {exc.strerror or exc}"
        raise SetupError("apply nftables", "network namespace", cause) from None

    def report(value: T) -> None:
        outcome.append(value)
        answered.set()

    def run() -> None:
        try:
            _enter_netns(own)
            work(report)
        except BaseException as exc:  # raised again in the caller's thread
            if answered.is_set():
                log.debug("after applying nftables in netns fd %d: %s", netns_fd, exc)
            failure.append(exc)
        finally:
            answered.set()

    try:
        threading.Thread(target=run, name="wg-pod-nft", daemon=True).start()
    except BaseException:
        os.close(own)
        raise
    if not answered.wait(timeout):
        raise SetupError("apply nftables", "nft", f"no answer within {timeout:g}s")
    if outcome:
        return outcome[0]
    if failure:
        raise failure[0]
    raise SetupError("apply nftables", "network namespace", "the worker thread gave no answer")


def _enter_netns(fd: int) -> None:
    """Move this thread into the namespace open as ``fd``, and close it."""
    try:
        namespaces.enter(fd)
    except OSError as exc:
        cause = f"enter network namespace: {exc.strerror or exc}"
        raise SetupError("apply nftables", "network namespace", cause) from None
    finally:
        os.close(fd)


def _apply_with_nft(netns_fd: int, ruleset: str) -> None:
    # nsenter opens the fd it inherits as its own /proc/self/fd/N: the same
    # namespace, not one a path names by now.
    argv = ["nsenter", f"--net=/proc/self/fd/{netns_fd}", "--", "nft", "-f", "-"]
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(
            argv,
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=APPLY_TIMEOUT,
            check=False,
            pass_fds=(netns_fd,),
        )
    except FileNotFoundError:
        raise SetupError("apply nftables", argv[0], "not installed") from None
    except subprocess.TimeoutExpired:
        raise SetupError("apply nftables", "nft", f"no answer within {APPLY_TIMEOUT:g}s") from None
    if done.returncode != 0:
        detail = one_line(done.stderr) or f"exit status {done.returncode}"
        raise SetupError("apply nftables", "nft", detail)
