"""The rule of ownership and mode for the files root reads on others'
behalf: a user's WireGuard config (configfile.py) and the settings
(settings.py).  Pure but for the reads and stats it names.

"Root" is uid 0 as this process sees it.  In a rootless user's namespace
(the hook under rootless podman) that is the user, and every uid the
namespace does not map — root's and every other user's — shows as the
overflow uid (65534): root's ``/etc/wg`` and another user's home are
nobody's there, and a file of theirs is refused.  The directories above
the user's home (``/home``, ``/``) are nobody's too; whose they are cannot
be seen from inside, so there a directory only needs to be writable by no
one but its owner (``foreign_dirs``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SIZE = 1 << 20


def _others_may_write(info: os.stat_result) -> bool:
    # Group root is root's own: its write bit gives no one else a hand.
    return bool(info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid != 0))


OVERFLOW_UID = 65534


def trust_problem(info: os.stat_result, what: str, fix: str, owner: str = "root") -> str | None:
    """Why root may not trust the file ``info`` describes (a config, the
    settings), or None: it must be a regular file owned by root (uid 0,
    called ``owner`` in the message) that no one else can write.  ``what``
    names the file in the message, ``fix`` is the chmod that mends it."""
    if not stat.S_ISREG(info.st_mode):
        return f"{what} is not a regular file"
    if info.st_uid != 0:
        return f"{what} is not owned by {owner}"
    if _others_may_write(info):
        return f"{what} is writable by others ({fix})"
    return None


def read_capped(fd: int) -> bytes:
    """What ``fd`` holds, up to one byte more than MAX_SIZE (so that a file
    grown since its fstat still tells that it is too large)."""
    data = b""
    while len(data) <= MAX_SIZE and (chunk := os.read(fd, 65536)):
        data += chunk
    return data


def directory_problem(path: Path, owner: str = "root", foreign_dirs: bool = False) -> str | None:
    """Why a directory above ``path`` (a resolved path) lets someone other
    than root replace what it names, or None.  As sshd's StrictModes: each
    directory up to / is owned by root and not writable by others, but for
    a sticky one (/tmp), where others cannot rename or remove root's files.
    ``foreign_dirs`` (a rootless user's namespace): a directory the
    namespace does not map (shown as the overflow uid) is taken as
    root's, the owner of the directories above a home."""
    for directory in path.parents:
        try:
            info = os.stat(directory)
        except OSError as exc:
            return f"cannot check directory {directory}: {exc.strerror}"
        if info.st_uid != 0 and not (foreign_dirs and info.st_uid == OVERFLOW_UID):
            return f"directory {directory} is not owned by {owner}"
        if _others_may_write(info) and not info.st_mode & stat.S_ISVTX:
            return f"directory {directory} is writable by others"
    return None
