"""What outlives a container, and its removal: the poststop path.

poststop runs on every container stop (and ``podman run --rm``), usually
to find nothing left to do, so this module stays light: it reaches for
netlink only when a host-side interface is actually there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import records
from .backends.userspace import socket_path, stop_process
from .plan import is_temp_name, temp_name

log = logging.getLogger(__name__)


def netns_alive(record: dict[str, Any]) -> bool:
    """Whether the namespace a record was made for still exists."""
    netns = record.get("netns")
    if not isinstance(netns, dict) or not isinstance(netns.get("path"), str):
        return False
    try:
        info = os.stat(netns["path"])
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == (netns.get("dev"), netns.get("ino"))


def stop_userspace(record: dict[str, Any]) -> None:
    pid, start = record.get("process_pid"), record.get("process_start")
    if isinstance(pid, int) and isinstance(start, int):
        stop_process(pid, start)
    temp = record.get("temp_name")
    if isinstance(temp, str):
        socket_path(temp).unlink(missing_ok=True)


def down(container_id: str) -> None:
    """Remove what outlives the container: userspace process, host-side
    interface, record.  Never raises for what is already gone.

    podman runs poststop also when a restart policy is about to restart the
    container in the same namespace; the tunnel stays there, and the
    createRuntime of the next run replaces it.  When no run follows, it goes
    with the namespace, and its record with the next start's prune.
    """
    record = records.read(container_id)
    if record is not None and not record.get("shared_with") and netns_alive(record):
        log.info("container %s: namespace still in use, tunnel kept", container_id[:12])
        return
    remove(container_id, record or {})


def remove(container_id: str, record: dict[str, Any]) -> None:
    stop_userspace(record)
    delete_host_link(temp_name(container_id))
    records.remove(container_id)
    log.info("container %s: cleaned up", container_id[:12])


def delete_host_link(name: str) -> bool:
    """Delete a leftover host-side interface; False when there is none."""
    if not Path(f"/sys/class/net/{name}").exists():
        return False
    from .netns import Netlink  # pyroute2 only when there is work for it

    with Netlink() as host:
        return host.delete_link(name)


def prune_stale() -> list[str]:
    """Clean up after containers whose namespace is gone without a poststop
    that saw it go (podman rm after a restart-policy restart); returns their ids."""
    pruned = []
    for container_id in records.all_ids():
        record = records.read(container_id)
        if record is not None and not netns_alive(record):
            remove(container_id, record)
            pruned.append(container_id)
    return pruned


def userspace_processes() -> dict[int, str]:
    """pid -> temp name of every running process started the way the
    userspace backend starts one: ``... -f <temporary name>``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        args = argv.rstrip("\0").split("\0")
        if len(args) > 2 and args[-2] == "-f" and is_temp_name(args[-1]):
            found[int(entry)] = args[-1]
    return found
