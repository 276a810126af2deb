"""Namespaces by fd: entering a network namespace (setns(2) for the
calling thread, the one way wg-pod moves a thread into a namespace:
``made_in``'s thread for one call, nft's worker thread for the rest of its
life), a bind mount made in a container's mount namespace, and what tells
one network namespace from another (its cookie, its inode).

No thread ever comes back from a namespace it entered: a rootless user's
hook (uid 0 of their user namespace) may enter the container's namespace,
which their user namespace owns, but not the host's again, which is root's.
So work in another namespace runs in a thread of its own that ends with it.

os.setns is Python 3.12's; on Debian 12's 3.11 libc's own does it, loaded
when first needed (``wg-pod check`` imports nft.py and never gets here).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
CLONE_FS = 0x00000200
# mount(2) flags.
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
_OS_SETNS = getattr(os, "setns", None)
# getsockopt(2): the cookie of the socket's network namespace (Linux 5.14;
# asm-generic's number, which Python 3.11's socket module does not name).
SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)


def enter(fd: int, kind: int = CLONE_NEWNET) -> None:
    """Move the calling thread, only it, into the namespace open as ``fd``
    (a network namespace unless ``kind`` says otherwise); OSError (as
    os.setns raises it) when the kernel refuses."""
    if _OS_SETNS is not None:
        _OS_SETNS(fd, kind)
        return
    _checked(libc().setns(fd, kind))


def _checked(result: int) -> None:
    """OSError for a libc call that returned -1."""
    if result != 0:
        import ctypes  # loaded already by then: libc()'s

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@cache
def libc() -> Any:
    """libc's own functions, for what ``os`` lacks (setns before Python
    3.12, mount, unshare before 3.12)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def made_in(netns_fd: int | None, make: Callable[[], T]) -> T:
    """``make()``, called in the namespace ``netns_fd`` (None: here, in this
    thread): in a thread that enters it and ends there.  Sockets, /proc/sys
    files and child processes made there keep belonging to it; what
    ``make`` raises is raised here."""
    if netns_fd is None:
        return make()
    return _in_thread(lambda: enter(netns_fd), make)


def bind_mount_in(mnt_fd: int, source: str, target: str) -> None:
    """Bind ``source`` over ``target`` in the mount namespace open as
    ``mnt_fd``, both paths as that namespace sees them.  setns(2) into a
    mount namespace is refused to a thread that shares its root and working
    directory with others (CLONE_FS), as Python's threads do: the thread
    that does it first takes its own copy of them, then ends there."""

    def leave() -> None:
        _checked(libc().unshare(CLONE_FS))
        enter(mnt_fd, CLONE_NEWNS)

    def mount() -> None:
        _checked(libc().mount(source.encode(), target.encode(), None, MS_BIND, None))

    _in_thread(leave, mount)


def _in_thread(enter_there: Callable[[], None], make: Callable[[], T]) -> T:
    """``make()`` in a thread that first calls ``enter_there`` and ends with
    the namespaces it entered; what either raises is raised here."""
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            enter_there()
            outcome.append((True, make()))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=work, name="namespace")
    thread.start()
    thread.join()
    made, value = outcome[0]
    if not made:
        raise value
    return value  # type: ignore[no-any-return]


def netns_cookie(netns_fd: int) -> int | None:
    """The cookie of the namespace ``netns_fd`` (SO_NETNS_COOKIE, read from
    a socket made there): a number no other namespace gets until the
    machine reboots, unlike its inode number.  None before Linux 5.14."""
    here = _same_inode(netns_fd, "/proc/thread-self/ns/net")
    sock = made_in(
        None if here else netns_fd,
        lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC),
    )
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
