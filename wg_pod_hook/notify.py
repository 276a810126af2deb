"""Telling the daemon, if one runs, that a tunnel came or went.

One datagram on a root-only Unix socket, sent without waiting: the hook
never depends on the daemon (the daemon also scans the records now and
then, so a message lost costs only a delay).  Light: the poststop path
imports it.
"""

from __future__ import annotations

import logging
import re
import socket

from .records import RECORD_DIR

log = logging.getLogger(__name__)

SOCKET = RECORD_DIR / "daemon.sock"
EVENTS = ("up", "down")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def tell(event: str, container_id: str) -> None:
    """Send ``EVENT CONTAINER-ID``; nothing happens when no daemon listens."""
    assert event in EVENTS
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(f"{event} {container_id}".encode(), str(SOCKET))
    except OSError as exc:  # no daemon, or its queue is full: it will scan
        log.debug("daemon not told (%s): %s", event, exc)


def parse(message: bytes) -> tuple[str, str] | None:
    """(event, container id) of a datagram, or None for anything else."""
    try:
        event, container_id = message.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return None
    if event not in EVENTS or not _ID.fullmatch(container_id):
        return None
    return event, container_id
