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

from .runtime import Runtime

log = logging.getLogger(__name__)

EVENTS = ("up", "down")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def tell(runtime: Runtime, event: str, container_id: str, seconds: float | None = None) -> None:
    """Send ``EVENT CONTAINER-ID [SECONDS]`` (how long the hook took, for the
    metrics) to the runtime's daemon; nothing happens when none listens."""
    assert event in EVENTS
    message = f"{event} {container_id}" + (f" {seconds:.3f}" if seconds is not None else "")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(message.encode(), runtime.daemon_socket)
    except OSError as exc:  # no daemon, or its queue is full: it will scan
        log.debug("daemon not told (%s): %s", event, exc)


def parse(message: bytes) -> tuple[str, str, float | None] | None:
    """(event, container id, seconds) of a datagram, or None for anything else."""
    try:
        event, container_id, *rest = message.decode("ascii").split(" ")
        seconds = float(rest[0]) if len(rest) == 1 else None
    except (UnicodeDecodeError, ValueError):
        return None
    if event not in EVENTS or not _ID.fullmatch(container_id) or len(rest) > 1:
        return None
    if seconds is not None and not 0 <= seconds < 3600:
        return None
    return event, container_id, seconds
