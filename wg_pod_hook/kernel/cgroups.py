"""Putting a process into another process's cgroups.

A wireguard-go belongs where the container's runtime and hooks live: the
cgroups of the container's parent process (podman's or CRI-O's conmon).
A hook starts it there anyway; the daemon and ``wg-pod join`` start it
from their own cgroups (a systemd service, a login session) and move it,
so that stopping or restarting them never stops a tunnel, podman's
cleanup and cgroup limits treat it like the hook's, and ``systemctl``
shows it under its container.

Both cgroup v2 and v1 (hybrid) hierarchies are handled: the process is
moved in each hierarchy where it is elsewhere than the reference.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def membership(pid: int) -> dict[frozenset[str], str]:
    """The cgroup of ``pid`` in each hierarchy, keyed by the hierarchy's
    controllers (the empty set for cgroup v2, ``{"name=systemd"}`` for
    v1's named one)."""
    found = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        found[frozenset(filter(None, controllers.split(",")))] = path
    return found


def mount_point(controllers: frozenset[str]) -> Path | None:
    """Where the hierarchy with ``controllers`` (as membership() keys them)
    is mounted in this mount namespace, if it is."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mine, _, theirs = line.partition(" - ")
        kind, _source, options = [*theirs.split(" "), "", ""][:3]
        if (kind == "cgroup2" and not controllers) or (
            kind == "cgroup" and controllers and controllers <= set(options.split(","))
        ):
            return Path(mine.split(" ")[4])
    return None


def move_like(pid: int, reference: int) -> list[str]:
    """Move ``pid`` into the cgroups of ``reference``; the cgroups it
    could not be moved to, with the reason (it stays where it was there)."""
    try:
        target, current = membership(reference), membership(pid)
    except OSError as exc:
        return [f"cgroups of process {reference}: {exc.strerror or exc}"]
    failed = []
    for key, path in target.items():
        if current.get(key) == path:
            continue
        mount = mount_point(key)
        if mount is None:
            continue  # a hierarchy this namespace does not mount
        procs = mount / path.lstrip("/") / "cgroup.procs"
        try:
            procs.write_text(str(pid))
        except OSError as exc:
            failed.append(f"{procs}: {exc.strerror or exc}")
        else:
            log.debug("moved process %d to %s", pid, procs.parent)
    return failed


def container_home(container_pid: int) -> int | None:
    """The process whose cgroups a tunnel's wireguard-go shares: the
    container's parent (conmon), or None when that is the machine's init
    (the container's own parent is gone) or cannot be read."""
    try:
        stat = Path(f"/proc/{container_pid}/stat").read_text()
    except OSError:
        return None
    parent = int(stat.rpartition(")")[2].split()[1])
    return parent if parent > 1 else None
