"""Netlink in one namespace: links, moves, addresses, MTUs, sysctls, and
the namespace fd they work through (routes.py adds the routes and rules
on top of it).  The setup's own requests go through rtnl.py's lean socket;
the rest through pyroute2's IPRoute, opened when first needed (pyroute2
is loaded through _pyroute2.py, here, in routes.py, rtnl.py and the
kernel backend).

The hook itself stays in the host network namespace; it reaches a
container's namespace through sockets opened inside it (netlink, and one
for the interface ioctls), so both sides can be handled from one process
without forking.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import BackendUnavailable, SetupError
from ..model.config import IPInterface, IPNetwork
from ..namespaces import made_in
from ..state import records
from ..state.records import NetnsId
from . import rtnl
from ._pyroute2 import NetlinkError, ifaddrmsg, rtmsg

if TYPE_CHECKING:
    from ._pyroute2 import IPRoute

log = logging.getLogger(__name__)
T = TypeVar("T")

AF_BY_VERSION = {4: 2, 6: 10}  # socket.AF_INET, socket.AF_INET6
VERSION_BY_AF = {af: version for version, af in AF_BY_VERSION.items()}
PYROUTE2_BUFFER = 1 << 20  # its own sockets' send and receive buffers
SIOCGIFNAME = 0x8910
SIOCGIFINDEX = 0x8933
SIOCGIFMTU = 0x8921
GONE = (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


def netlink_step(step: str, obj: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except NetlinkError as exc:
        raise SetupError(step, obj, os.strerror(exc.code) or str(exc)) from None


@contextmanager
def open_netns(path: str, expected: NetnsId | None = None) -> Iterator[int]:
    """An fd on the namespace at ``path`` (e.g. ``/proc/PID/ns/net``).
    With ``expected`` (a record's), only if it is that namespace: a path
    that now names another one (a later process with the pid, a namespace
    with the inode number of a freed one) is refused, before anything is
    done in it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError("open network namespace", path, exc.strerror or str(exc)) from None
    try:
        if expected is not None and not expected.same(NetnsId.of(path, fd)):
            raise SetupError(
                "open network namespace", path, "it is no longer the tunnel's namespace"
            )
        yield fd
    finally:
        os.close(fd)


def process_start_in(pid: int, netns: NetnsId) -> int | None:
    """The start time of process ``pid`` if it is in the namespace
    ``netns``, which the caller holds open (so its inode number is its
    own); None when it is not, or gone.  The start time, the same before
    and after, tells that one process was there throughout, not a later one
    that got its pid."""
    start = records.process_start_time(pid)
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    if start is None or (theirs.st_dev, theirs.st_ino) != (netns.dev, netns.ino):
        return None
    return start if records.process_start_time(pid) == start else None


def _sockets() -> tuple[rtnl.Rtnl, socket.socket]:
    """A netlink socket, and one for the interface ioctls, of this thread's namespace."""
    ioctls = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        return rtnl.Rtnl(), ioctls
    except BaseException:
        ioctls.close()
        raise


def _route_socket() -> socket.socket:
    """A route netlink socket of this thread's namespace, as pyroute2 makes one."""
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
    )
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, PYROUTE2_BUFFER)
    return sock


class Netlink:
    """rtnetlink sockets bound to one namespace, with the few calls we need."""

    def __init__(self, netns_fd: int | None = None, label: str = "host") -> None:
        self.label = label
        self.netns_fd = netns_fd
        self._ipr: IPRoute | None = None
        # A socket belongs to the namespace it was created in.
        self.rtnl, self._ioctls = made_in(netns_fd, _sockets)

    @property
    def ipr(self) -> IPRoute:
        """pyroute2's IPRoute here, for what rtnl.py does not do (some
        milliseconds to open: only when needed)."""
        if self._ipr is None:
            from ._pyroute2 import IPRoute  # its import alone costs some 50 ms

            # pyroute2 makes a socket per thread, where the thread is when it
            # first asks: it gets one of this namespace instead.
            sock = made_in(self.netns_fd, _route_socket)
            try:
                self._ipr = IPRoute(use_socket=sock)  # closes it when closed
            except BaseException:
                sock.close()
                raise
        return self._ipr

    def close(self) -> None:
        self.rtnl.close()
        self._ioctls.close()
        if self._ipr is not None:
            self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def index(self, name: str) -> int | None:
        """The index of ``name`` in this namespace; None when there is none.
        One ioctl, not a dump of every link (pyroute2's link_lookup), which
        on a busy host costs milliseconds per call."""
        encoded = name.encode()
        if len(encoded) >= 16:  # IFNAMSIZ: no interface has such a name
            return None
        try:
            reply = fcntl.ioctl(self._ioctls, SIOCGIFINDEX, struct.pack("16si", encoded, 0))
        except OSError:
            return None
        return int(struct.unpack_from("i", reply, 16)[0])

    def require(self, name: str) -> int:
        index = self.index(name)
        if index is None:
            raise SetupError("find interface", f"{name} ({self.label})", "no such interface")
        return index

    def add_link(self, name: str, kind: str) -> None:
        """Create ``name`` of ``kind``; BackendUnavailable when the kernel
        has no such kind (no module for it)."""
        log.debug("%s: add link %s kind %s", self.label, name, kind)
        try:
            self.rtnl.change(rtnl.new_link(name, kind), rtnl.RTM_NEWLINK, rtnl.CREATE)
        except NetlinkError as exc:
            if exc.code in (errno.EOPNOTSUPP, errno.ENODEV, errno.ENOENT):
                raise BackendUnavailable(
                    f"the kernel has no {kind} support (module {kind})"
                ) from None
            raise SetupError("create interface", name, os.strerror(exc.code)) from None

    def link_names(self) -> list[str]:
        names = (link.get("IFLA_IFNAME") for link in self.ipr.get_links())
        return [name for name in names if isinstance(name, str)]

    def addresses(self, name: str) -> tuple[str, ...]:
        """``ADDRESS/PREFIXLEN`` of ``name``, link-local ones left out."""
        index = self.require(name)
        return tuple(
            f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in self._addresses()
            if a["index"] == index and not str(a.get("IFA_ADDRESS", "")).startswith("fe80:")
        )

    def _addresses(self) -> list[Any]:
        """Every address of this namespace (one dump)."""
        request = rtnl.dump_request(ifaddrmsg, socket.AF_UNSPEC)
        return [rtnl.decoded(ifaddrmsg, data) for data in self.rtnl.dump(request, rtnl.RTM_GETADDR)]

    def delete_link(self, name: str) -> bool:
        """Delete ``name``; False when it was already gone."""
        index = self.index(name)
        if index is None:
            return False
        log.debug("%s: delete link %s", self.label, name)
        try:
            self.rtnl.change(rtnl.link(index), rtnl.RTM_DELLINK)
        except NetlinkError as exc:
            if exc.code in GONE:
                return False
            raise SetupError("delete interface", name, os.strerror(exc.code)) from None
        return True

    def set_mtu(self, name: str, mtu: int) -> None:
        index = self.require(name)
        log.debug("%s: %s mtu %d", self.label, name, mtu)
        netlink_step("set MTU", name, lambda: self._change_link(rtnl.link(index, IFLA_MTU=mtu)))

    def move(self, name: str, netns_fd: int, new_name: str) -> None:
        """Move ``name`` into another namespace and rename it in the same request."""
        index = self.require(name)
        log.debug("%s: move %s into netns fd %d as %s", self.label, name, netns_fd, new_name)
        message = rtnl.link(index, IFLA_NET_NS_FD=netns_fd, IFLA_IFNAME=new_name)
        netlink_step("move interface", f"{name} -> {new_name}", lambda: self._change_link(message))

    def rename(self, name: str, new_name: str) -> None:
        index = self.require(name)
        log.debug("%s: rename %s to %s", self.label, name, new_name)
        message = rtnl.link(index, IFLA_IFNAME=new_name)
        netlink_step(
            "rename interface", f"{name} -> {new_name}", lambda: self._change_link(message)
        )

    def set_up(self, name: str) -> None:
        index = self.require(name)
        netlink_step("bring up", name, lambda: self._change_link(rtnl.link(index, up=True)))

    def _change_link(self, message: Any) -> None:
        self.rtnl.change(message, rtnl.RTM_NEWLINK)

    def route_mtu(self, destination: str) -> int | None:
        """The MTU of the route towards ``destination``: the route's own
        ``mtu`` metric, else its device's; None when there is no route."""
        family = socket.AF_INET6 if ":" in destination else socket.AF_INET
        try:
            answer = self.rtnl.ask(rtnl.lookup(family, destination), rtnl.RTM_GETROUTE)
        except NetlinkError:
            return None
        route = rtnl.decoded(rtmsg, answer)
        metrics = route.get("RTA_METRICS")
        mtu = metrics.get("RTAX_MTU") if metrics else None
        if mtu:
            return int(mtu)
        oif = route.get("RTA_OIF")
        return None if oif is None else self.link_mtu(oif)

    def link_mtu(self, index: int) -> int:
        """Two ioctls, not a netlink request: pyroute2 decodes every
        attribute of the link (statistics and all), some 1.5 ms."""
        try:
            named = fcntl.ioctl(self._ioctls, SIOCGIFNAME, struct.pack("16si", b"", index))
            reply = fcntl.ioctl(self._ioctls, SIOCGIFMTU, struct.pack("16si", named[:16], 0))
        except OSError as exc:
            raise SetupError("read MTU", f"interface {index}", exc.strerror or str(exc)) from None
        return int(struct.unpack_from("i", reply, 16)[0])

    def link_name(self, index: int) -> str:
        """The name of interface ``index`` (one ioctl)."""
        try:
            named = fcntl.ioctl(self._ioctls, SIOCGIFNAME, struct.pack("16si", b"", index))
        except OSError as exc:
            raise SetupError("find interface", f"index {index}", exc.strerror or str(exc)) from None
        return named[:16].split(b"\0", 1)[0].decode()

    def enable_ipv6(self, name: str) -> None:
        """Let ``name`` carry IPv6 even where the namespace disables it for new
        interfaces (``default.disable_ipv6``), as a tunnel with IPv6 needs."""
        self.write_sysctl(
            f"net/ipv6/conf/{name}/disable_ipv6",
            "0",
            ("enable IPv6", name),
            missing="the kernel has IPv6 disabled (ipv6.disable=1)",
        )

    def write_sysctl(self, key: str, value: str, what: tuple[str, str], missing: str) -> None:
        """Set ``/proc/sys/KEY`` as this namespace sees it; ``what`` is the
        step and object an error names, ``missing`` its cause when there is
        no such setting."""
        # /proc/sys/net shows the namespace of whoever opens it.
        try:
            handle = made_in(self.netns_fd, lambda: open(f"/proc/sys/{key}", "w"))  # noqa: SIM115
        except FileNotFoundError:
            raise SetupError(*what, missing) from None
        except OSError as exc:
            raise SetupError(*what, exc.strerror or str(exc)) from None
        log.debug("%s: %s = %s", self.label, key, value)
        with handle:
            handle.write(value)

    def add_address(self, name: str, address: IPInterface) -> None:
        index = self.require(name)
        log.debug("%s: %s address %s", self.label, name, address)
        message = rtnl.address(
            index, AF_BY_VERSION[address.version], str(address.ip), address.network.prefixlen
        )
        netlink_step(
            "add address",
            f"{address} on {name}",
            lambda: self.rtnl.change(message, rtnl.RTM_NEWADDR, rtnl.REPLACE),
        )

    def local_networks(self, skip: str) -> tuple[IPNetwork, ...]:
        """Connected subnets of every interface but loopback and ``skip``."""
        skip_index = self.index(skip)
        nets: set[IPNetwork] = set()
        for addr in self._addresses():
            if addr["index"] == skip_index or addr.get("IFA_ADDRESS") is None:
                continue
            net = ip_network(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False)
            if not (net.is_loopback or net.is_link_local):
                nets.add(net)
        return tuple(sorted(nets, key=lambda n: (n.version, str(n))))
