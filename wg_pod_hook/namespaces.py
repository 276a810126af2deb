"""Network namespaces by fd: entering one (setns(2) for the calling
thread, the one way wg-pod moves a thread into a namespace: ``entered``
for a body of work, nft's worker thread for the rest of its life), and
what tells one from another (its cookie, its inode).

os.setns is Python 3.12's; on Debian 12's 3.11 libc's own does it, loaded
when first needed (``wg-pod check`` imports nft.py and never gets here).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

CLONE_NEWNET = 0x40000000
_OS_SETNS = getattr(os, "setns", None)
# getsockopt(2): the cookie of the socket's network namespace (Linux 5.14;
# asm-generic's number, which Python 3.11's socket module does not name).
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)


def enter(fd: int) -> None:
    """Move the calling thread, only it, into the network namespace open
    as ``fd``; OSError (as os.setns raises it) when the kernel refuses."""
    if _OS_SETNS is not None:
        _OS_SETNS(fd, CLONE_NEWNET)
        return
    import ctypes  # loaded already by then: _libc's

    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


@contextmanager
def entered(netns_fd: int | None) -> Iterator[None]:
    """Run the body in the namespace ``netns_fd`` (None: stay where we are),
    in this thread.  Sockets opened and /proc/sys/net files opened there
    keep belonging to it."""
    if netns_fd is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(netns_fd)
        try:
            yield
        finally:
            enter(home)
    finally:
        os.close(home)


def netns_cookie(netns_fd: int) -> int | None:
    """The cookie of the namespace ``netns_fd`` (SO_NETNS_COOKIE, read from
    a socket made there): a number no other namespace gets until the
    machine reboots, unlike its inode number.  None before Linux 5.14."""
    here = _same_inode(netns_fd, "/proc/thread-self/ns/net")
    with entered(None if here else netns_fd):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    with sock:
        try:
            value = sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError as exc:
            if exc.errno == errno.ENOPROTOOPT:
                return None
            raise
    return int(struct.unpack("=Q", value)[0])


def is_host_netns(netns_fd: int) -> bool:
    """True when ``netns_fd`` is the namespace this process runs in."""
    return _same_inode(netns_fd, "/proc/self/ns/net")


def _same_inode(netns_fd: int, path: str) -> bool:
    try:
        theirs = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(netns_fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
