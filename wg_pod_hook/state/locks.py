"""Locks under the state directory: files of root's alone, so that no
other user can hold one and keep a hook waiting.  One per network
namespace (the hooks working on it, a pod's members, the daemon's repairs
take turns) and one for the last key check of every hook.  The daemon
holds one on the state directory itself while it runs (daemon_running)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import SetupError
from ..runtime import Runtime

LOCK_DEADLINE = 10.0


@contextmanager
def namespace_lock(
    runtime: Runtime, netns_fd: int, deadline: float = LOCK_DEADLINE
) -> Iterator[None]:
    """Serialise the hooks working on one namespace (pod members share one).

    The lock is ``locks/netns-DEV-INO`` in the state directory (see root_lock), named
    after the namespace: the namespace's own file is world-readable, so any
    user could flock it and keep a hook waiting.  The inode number names
    one namespace while it lives, and the caller holds it open throughout.
    """
    info = os.fstat(netns_fd)
    with root_lock(runtime, f"netns-{info.st_dev}-{info.st_ino}", "network namespace", deadline):
        yield


@contextmanager
def keys_lock(runtime: Runtime, deadline: float = LOCK_DEADLINE) -> Iterator[None]:
    """Serialise the last key check of every hook with the record it
    completes: of two hooks starting with one key at once, the first to
    take it completes, and the second sees that record."""
    with root_lock(runtime, "keys", "private keys", deadline):
        yield


@contextmanager
def root_lock(
    runtime: Runtime, name: str, what: str, deadline: float = LOCK_DEADLINE
) -> Iterator[None]:
    """Hold the lock ``locks/NAME`` in the state directory, a file of root's alone
    (0600, in a 0700 directory): nobody else can open it, so nobody else
    can hold it and keep a hook waiting.  ``what`` names it in errors.

    The holder removes the file before it lets go, so none is left behind;
    a hook that was waiting on the removed file then finds that its name is
    gone, and starts again on the new one (every removal happens under the
    lock, and every holder checks after locking that the name is still its
    file's).  A killed holder's file stays, to be used by the next hook or
    removed by ``wg-pod gc`` (sweep_locks).
    """
    directory = _lock_directory(runtime)
    try:
        fd = _lock_file(directory, name, what, time.monotonic() + deadline)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=directory)
            os.close(fd)  # and with it the lock
    finally:
        os.close(directory)


def _lock_directory(runtime: Runtime) -> int:
    """An fd on the locks' directory, made if needed; root's alone."""
    path = runtime.locks
    try:
        fd = os.open(
            runtime.make(path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
    except OSError as exc:
        raise SetupError("lock", path, exc.strerror or str(exc)) from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        os.close(fd)
        raise SetupError("lock", path, f"owned by uid {info.st_uid}, not by root")
    if info.st_mode & 0o077:
        os.fchmod(fd, 0o700)
    return fd


def _lock_file(directory: int, name: str, what: str, until: float) -> int:
    """Open ``name`` (made if needed) and lock it, waiting until ``until``;
    again while the file locked is no longer the one the name gives."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        try:
            fd = os.open(name, flags, 0o600, dir_fd=directory)
        except OSError as exc:
            raise SetupError("lock", f"{what} ({name})", str(exc)) from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > until:
                        raise SetupError("lock", what, "another hook holds it") from None
                    time.sleep(0.02)
            if _names(directory, name, fd):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it meanwhile: the name has a new file


def _names(directory: int, name: str, fd: int) -> bool:
    """Whether ``name`` in ``directory`` is still the file open as ``fd``."""
    try:
        theirs = os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def sweep_locks(runtime: Runtime) -> list[str]:
    """Remove the lock files killed holders left (those nobody holds now),
    the way a holder removes its own: under the lock.  Their names."""
    if not os.path.isdir(runtime.locks):
        return []
    removed = []
    directory = _lock_directory(runtime)
    try:
        for name in os.listdir(directory):
            try:
                fd = _lock_file(directory, name, name, until=0.0)
            except SetupError:  # held: its hook removes it
                continue
            try:
                os.unlink(name, dir_fd=directory)
                removed.append(name)
            finally:
                os.close(fd)
    finally:
        os.close(directory)
    return removed


def daemon_running(runtime: Runtime) -> bool:
    """Whether a daemon holds its lock on the runtime's state directory
    (daemon/main.py takes it, and the kernel drops it however the daemon
    ends)."""
    try:
        fd = os.open(runtime.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # a lock it got goes with it
    return False
