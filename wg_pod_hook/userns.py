"""A rootless user's daemon joins the namespaces of their podman.

The hook of a rootless container runs as uid 0 of the user's user
namespace, in rootless podman's mount namespace: there the containers'
namespaces are the user's to enter.  The user's daemon (a systemd user
unit, started as the user on the host) joins the same two namespaces
before it does anything else, from the process that holds them open:
podman's pause process, whose pid podman keeps in
``/run/user/UID/libpod/tmp/pause.pid``.  Without one (podman has not run
since boot), ``podman unshare true`` starts it.

setns(2) into a user namespace is refused to a process with more than one
thread: this runs first, before the daemon starts any.
"""

from __future__ import annotations

import logging
import os
import subprocess

from .errors import SetupError
from .namespaces import CLONE_NEWNS, enter

log = logging.getLogger(__name__)

CLONE_NEWUSER = 0x10000000
PAUSE_PID = "/run/user/{uid}/libpod/tmp/pause.pid"


def join_podmans(uid: int) -> None:
    """Make this process uid 0 of the user's rootless namespaces; SetupError
    (one line) when podman's cannot be found or entered."""
    pid = pause_process(uid)
    if pid is None:
        _start_pause_process()
        pid = pause_process(uid)
    if pid is None:
        raise SetupError(
            "join rootless podman",
            PAUSE_PID.format(uid=uid),
            "no pause process of podman's: run podman as this user once",
        )
    fds = []
    try:
        for kind in ("user", "mnt"):
            fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
        enter(fds[0], CLONE_NEWUSER)
        enter(fds[1], CLONE_NEWNS)
    except OSError as exc:
        raise SetupError(
            "join rootless podman", f"process {pid}", exc.strerror or str(exc)
        ) from None
    finally:
        for fd in fds:
            os.close(fd)
    log.debug("joined the user and mount namespaces of podman's pause process %d", pid)


def pause_process(uid: int) -> int | None:
    """The pid of the user's podman pause process, when it runs as them."""
    try:
        with open(PAUSE_PID.format(uid=uid), encoding="ascii") as f:
            pid = int(f.read().strip())
        owner = os.stat(f"/proc/{pid}").st_uid
    except (OSError, ValueError):
        return None
    return pid if owner == uid else None


def _start_pause_process() -> None:
    try:
        subprocess.run(
            ["podman", "unshare", "true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("podman unshare true: %s", exc)
