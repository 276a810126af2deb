"""Knowing the tunnels: a watch on each tunnel of a record, for as long as
its container's process lives.

A watch holds a netlink socket inside the container's namespace,
subscribed to link events (the tunnel's interface deleted: wireguard-go
died, or someone deleted the link), and a pidfd of the container's process
(when it ends, the watch goes: a socket inside a namespace would keep the
namespace alive).  What is done about a lost link, and what a look at a
watched tunnel finds, is the daemon's (``Events``).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from ..errors import WgPodError
from ..kernel import rtnl
from ..kernel.netlink import open_netns
from ..model.settings import Settings
from ..namespaces import made_in
from ..runtime import Runtime
from ..state import health, records
from ..state.records import TunnelRecord
from ..tunnel import endpoints
from ..tunnel.teardown import prune_stale
from .loop import Loop

log = logging.getLogger(__name__)

RTMGRP_LINK = 1
RTM_DELLINK = rtnl.RTM_DELLINK
_IFINFOMSG = struct.Struct("=BxHiII")


def deleted_links(data: bytes) -> list[int]:
    """Interface indexes of the RTM_DELLINK messages in a netlink datagram."""
    indexes = []
    for kind, _sequence, message in rtnl.messages(data):
        if kind == RTM_DELLINK and len(message) >= rtnl.HEADER.size + _IFINFOMSG.size:
            _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(
                message, rtnl.HEADER.size
            )
            indexes.append(index)
    return indexes


@dataclass
class Watch:
    """What the daemon holds for one tunnel."""

    record: TunnelRecord
    link_events: socket.socket
    container: int  # pidfd of the container's process
    ifindex: int | None
    followed: dict[str, endpoints.Followed]  # peers with host-name endpoints
    failures: int = 0  # repairs failed in a row
    # The stamps of its files a reload was last tried for (reload_on_change).
    reload_tried: dict[str, str] | None = None


class Events(Protocol):
    """What the watches ask of the daemon."""

    def busy(self, container_id: str) -> bool:
        """Whether a repair of the tunnel is at work (it writes the record
        as it goes; its end adopts the tunnel anew)."""

    def broken(self, container_id: str) -> None:
        """The tunnel's interface is missing (or its setup was interrupted)."""

    def watched(self, watch: Watch) -> None:
        """A complete tunnel, newly watched."""


class Watches:
    def __init__(self, loop: Loop, runtime: Runtime, settings: Settings, events: Events) -> None:
        self.loop = loop
        self.runtime = runtime
        self.settings = settings
        self.events = events
        self.by_id: dict[str, Watch] = {}

    def get(self, container_id: str) -> Watch | None:
        return self.by_id.get(container_id)

    def all(self) -> list[Watch]:
        return list(self.by_id.values())

    def scan(self) -> None:
        """Take down the tunnels whose namespace is gone (as the next hook's
        start would, but without waiting for one: no poststop saw them go),
        adopt every complete tunnel of a record, forget those without one."""
        for container_id in prune_stale(self.runtime):
            log.info("container %s: its namespace is gone: tunnel taken down", container_id[:12])
        ids = set(records.all_ids(self.runtime))
        for container_id in ids:
            self.adopt(container_id)
        for container_id in set(self.by_id) - ids:
            self.drop(container_id)
        health.forget_all_but(self.runtime, ids)

    def adopt(self, container_id: str) -> None:
        """Watch the tunnel as its record now is (anew, if that changed)."""
        if self.events.busy(container_id):
            return
        record = records.read(self.runtime, container_id)
        watch = self.by_id.get(container_id)
        if watch is not None and record == watch.record:
            return
        self.drop(container_id)
        if record is None or record.shared_with:
            return
        if not record.complete and record.writer is not None and record.writer.alive():
            return  # a hook at work: it tells when it is done
        # Complete, or its setup was interrupted (its writer was killed): watched,
        # and an interrupted one, whose interface may be missing, repaired.
        pid = record.container_pid or 0
        try:
            container = os.pidfd_open(pid)
        except OSError:
            return  # its process is gone: nothing to keep up (its namespace: scan)
        # Checked after the pidfd is open, so that it is the pidfd's process.
        known = record.container()
        if known is not None and not known.alive():
            # A later process got the pid: nothing of the tunnel's is its.
            # Whether the tunnel's namespace lives on (a pod's other members,
            # a restart to come) or is gone (then the scan's prune takes it
            # down), it is not this process's to watch or repair.
            os.close(container)
            log.info("container %s: not watched: process %d is another", container_id[:12], pid)
            return
        try:
            link_events, ifindex = _link_watch(pid, record)
        except (OSError, WgPodError) as exc:
            os.close(container)
            log.info("container %s: not watched: %s", container_id[:12], exc)
            return
        try:
            followed = endpoints.host_name_peers(record, self.settings)
        except WgPodError as exc:  # the repair will say it too, if it comes to that
            log.warning("container %s: endpoints not followed: %s", container_id[:12], exc)
            followed = {}
        watch = Watch(record, link_events, container, ifindex, followed)
        self.by_id[container_id] = watch
        self.loop.watch(link_events, lambda: self._links(watch))
        self.loop.watch(container, lambda: self.drop(container_id))
        log.info("container %s: watching %s", container_id[:12], record.interface)
        if ifindex is None or not record.complete:
            self.events.broken(container_id)
        else:
            self.events.watched(watch)

    def drop(self, container_id: str) -> None:
        watch = self.by_id.pop(container_id, None)
        if watch is None:
            return
        self.loop.close(watch.link_events)
        self.loop.close(watch.container)
        log.info("container %s: no longer watched", container_id[:12])

    def close(self) -> None:
        for container_id in list(self.by_id):
            self.drop(container_id)

    def _links(self, watch: Watch) -> None:
        container_id = watch.record.container_id
        while True:
            try:
                data = watch.link_events.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ENOBUFS: events were lost; look again
                log.debug("link events: %s", exc)
                self.events.broken(container_id)
                return
            if watch.ifindex is not None and watch.ifindex in deleted_links(data):
                log.warning(
                    "container %s: %s disappeared", container_id[:12], watch.record.interface
                )
                self.events.broken(container_id)


def _link_watch(pid: int, record: TunnelRecord) -> tuple[socket.socket, int | None]:
    """A link-event socket in the namespace of ``pid`` (if it is still the
    record's: its cookie, where the kernel gives one, not only its inode
    number), and the interface's index there (None: missing)."""
    with open_netns(f"/proc/{pid}/ns/net") as fd:
        if not record.netns.same(records.NetnsId.of(record.netns.path, fd)):
            raise WgPodError(f"process {pid} is no longer in the tunnel's namespace")
        return made_in(fd, partial(_link_socket, record.interface))


def _link_socket(interface: str) -> tuple[socket.socket, int | None]:
    """The link-event socket and the interface's index, of this thread's namespace."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )
    try:
        ifindex: int | None = socket.if_nametoindex(interface)
    except OSError:
        ifindex = None
    sock.bind((0, RTMGRP_LINK))
    sock.setblocking(False)
    return sock, ifindex
