"""Netlink work: links, moves, addresses and routes (with the kernel
backend's WireGuard netlink and status's reads, the only pyroute2 user).
The setup's own requests go through rtnl.py's lean socket; the rest
through pyroute2's IPRoute, opened when first needed.

The hook itself stays in the host network namespace; it reaches a
container's namespace through a netlink socket opened inside it, so both
sides can be handled from one process without forking.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, TypeVar

from . import records, rtnl, runtime
from ._pyroute2 import NetlinkError, ifaddrmsg, rtmsg
from .config import IPInterface, IPNetwork
from .errors import BackendUnavailable, SetupError
from .namespaces import entered
from .records import NetnsId, RouteSpec

if TYPE_CHECKING:
    from ._pyroute2 import IPRoute

log = logging.getLogger(__name__)
T = TypeVar("T")

AF_BY_VERSION = {4: 2, 6: 10}  # socket.AF_INET, socket.AF_INET6
VERSION_BY_AF = {af: version for version, af in AF_BY_VERSION.items()}
LOCK_DEADLINE = 10.0
# Metric of the unreachable routes that guard a tunnel's prefixes: above any
# route of the tunnel's, so they only answer while its interface is gone.
GUARD_METRIC = 2**31 - 1
SIOCGIFMTU = 0x8921
REPLY_RULE_PRIORITY = 32700  # and the next one: before the main table's 32766
_GONE = (errno.ENODEV, errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL)


def _netlink(step: str, obj: str, call: Callable[[], T]) -> T:
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


@contextmanager
def namespace_lock(netns_fd: int, deadline: float = LOCK_DEADLINE) -> Iterator[None]:
    """Serialise the hooks working on one namespace (pod members share one).

    The lock is ``locks/netns-DEV-INO`` in the state directory (see root_lock), named
    after the namespace: the namespace's own file is world-readable, so any
    user could flock it and keep a hook waiting.  The inode number names
    one namespace while it lives, and the caller holds it open throughout.
    """
    info = os.fstat(netns_fd)
    with root_lock(f"netns-{info.st_dev}-{info.st_ino}", "network namespace", deadline):
        yield


@contextmanager
def keys_lock(deadline: float = LOCK_DEADLINE) -> Iterator[None]:
    """Serialise the last key check of every hook with the record it
    completes: of two hooks starting with one key at once, the first to
    take it completes, and the second sees that record."""
    with root_lock("keys", "private keys", deadline):
        yield


@contextmanager
def root_lock(name: str, what: str, deadline: float = LOCK_DEADLINE) -> Iterator[None]:
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
    directory = _lock_directory()
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


def _lock_directory() -> int:
    """An fd on the locks' directory, made if needed; root's alone."""
    state = runtime.current()
    path = state.locks
    try:
        fd = os.open(state.make(path), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
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


def sweep_locks() -> list[str]:
    """Remove the lock files killed holders left (those nobody holds now),
    the way a holder removes its own: under the lock.  Their names."""
    if not os.path.isdir(runtime.current().locks):
        return []
    removed = []
    directory = _lock_directory()
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


class Netlink:
    """rtnetlink sockets bound to one namespace, with the few calls we need."""

    def __init__(self, netns_fd: int | None = None, label: str = "host") -> None:
        self.label = label
        self.netns_fd = netns_fd
        self._ipr: IPRoute | None = None
        # A netlink socket belongs to the namespace it was created in.
        with entered(netns_fd):
            self.rtnl = rtnl.Rtnl()

    @property
    def ipr(self) -> IPRoute:
        """pyroute2's IPRoute here, for what rtnl.py does not do (some
        milliseconds to open: only when needed)."""
        if self._ipr is None:
            from ._pyroute2 import IPRoute  # its import alone costs some 50 ms

            with entered(self.netns_fd):
                self._ipr = IPRoute()
        return self._ipr

    def close(self) -> None:
        self.rtnl.close()
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
        with entered(self.netns_fd):
            try:
                return socket.if_nametoindex(name)
            except OSError:
                return None

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
            if exc.code in _GONE:
                return False
            raise SetupError("delete interface", name, os.strerror(exc.code)) from None
        return True

    def set_mtu(self, name: str, mtu: int) -> None:
        index = self.require(name)
        log.debug("%s: %s mtu %d", self.label, name, mtu)
        _netlink("set MTU", name, lambda: self._change_link(rtnl.link(index, IFLA_MTU=mtu)))

    def move(self, name: str, netns_fd: int, new_name: str) -> None:
        """Move ``name`` into another namespace and rename it in the same request."""
        index = self.require(name)
        log.debug("%s: move %s into netns fd %d as %s", self.label, name, netns_fd, new_name)
        message = rtnl.link(index, IFLA_NET_NS_FD=netns_fd, IFLA_IFNAME=new_name)
        _netlink("move interface", f"{name} -> {new_name}", lambda: self._change_link(message))

    def set_up(self, name: str) -> None:
        index = self.require(name)
        _netlink("bring up", name, lambda: self._change_link(rtnl.link(index, up=True)))

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
        return None if oif is None else self._link_mtu(oif)

    def _link_mtu(self, index: int) -> int:
        """Two ioctls, not a netlink request: pyroute2 decodes every
        attribute of the link (statistics and all), some 1.5 ms."""
        with entered(self.netns_fd), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                name = socket.if_indextoname(index)
                request = struct.pack("16si", name.encode(), 0)
                reply = fcntl.ioctl(sock, SIOCGIFMTU, request)
            except OSError as exc:
                raise SetupError(
                    "read MTU", f"interface {index}", exc.strerror or str(exc)
                ) from None
        return int(struct.unpack_from("i", reply, 16)[0])

    def default_route_mtu(self) -> int | None:
        defaults = self.default_routes((4, 6))
        for version in (4, 6):
            for route in defaults[version]:
                if "oif" in route:
                    return self._link_mtu(int(route["oif"]))
        return None

    def enable_ipv6(self, name: str) -> None:
        """Let ``name`` carry IPv6 even where the namespace disables it for new
        interfaces (``default.disable_ipv6``), as a tunnel with IPv6 needs."""
        self._write_sysctl(
            f"net/ipv6/conf/{name}/disable_ipv6",
            "0",
            ("enable IPv6", name),
            missing="the kernel has IPv6 disabled (ipv6.disable=1)",
        )

    def _write_sysctl(self, key: str, value: str, what: tuple[str, str], missing: str) -> None:
        """Set ``/proc/sys/KEY`` as this namespace sees it; ``what`` is the
        step and object an error names, ``missing`` its cause when there is
        no such setting."""
        # /proc/sys/net shows the namespace of whoever opens it.
        try:
            with entered(self.netns_fd):
                handle = open(f"/proc/sys/{key}", "w")  # noqa: SIM115 - written outside
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
        _netlink(
            "add address",
            f"{address} on {name}",
            lambda: self.rtnl.change(message, rtnl.RTM_NEWADDR, rtnl.REPLACE),
        )

    def replace_route(
        self,
        destination: IPNetwork,
        *,
        device: str | None = None,
        gateway: str | None = None,
        table: int | None = None,
    ) -> None:
        spec: dict[str, Any] = {
            "dst": str(destination),
            "family": AF_BY_VERSION[destination.version],
        }
        if device is not None:
            spec["oif"] = self.require(device)
        if gateway is not None:
            spec["gateway"] = gateway
        if table is not None:
            spec["table"] = table
        log.debug("%s: route %s", self.label, spec)
        via = f" via {gateway}" if gateway else f" dev {device}"
        _netlink("add route", f"{destination}{via}", lambda: self._replace_route(spec))

    def guard(self, destination: IPNetwork, table: int | None) -> None:
        """An unreachable route for ``destination`` below the tunnel's own
        (metric GUARD_METRIC): with the interface gone, its traffic fails
        instead of falling back to another route."""
        log.debug("%s: guard %s (table %s)", self.label, destination, table or "main")
        spec = self._guard_spec(destination, table)
        _netlink("add unreachable route", str(destination), lambda: self._replace_route(spec))

    def unguard(self, destination: IPNetwork, table: int | None) -> None:
        try:
            self._delete_route(self._guard_spec(destination, table))
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise SetupError(
                    "delete unreachable route", str(destination), os.strerror(exc.code)
                ) from None

    @staticmethod
    def _guard_spec(destination: IPNetwork, table: int | None) -> dict[str, Any]:
        return {
            "dst": str(destination),
            "family": AF_BY_VERSION[destination.version],
            "type": "unreachable",
            "priority": GUARD_METRIC,
            "table": table or 254,
        }

    def default_routes(self, versions: Iterable[int]) -> dict[int, list[RouteSpec]]:
        """Default routes of the main table (unicast: not the tunnel's
        unreachable guard) of each IP version in ``versions``, as ``route
        del`` arguments: one dump for all of them."""
        found: dict[int, list[RouteSpec]] = {version: [] for version in versions}
        if not found:
            return found
        family = AF_BY_VERSION[next(iter(found))] if len(found) == 1 else socket.AF_UNSPEC
        request = rtnl.dump_request(rtmsg, family)
        for route in rtnl.main_table_defaults(self.rtnl.dump(request, rtnl.RTM_GETROUTE)):
            version = VERSION_BY_AF.get(route["family"])
            if version not in found or route.get("RTA_DST") is not None:
                continue
            spec: dict[str, Any] = {
                "family": route["family"],
                "dst_len": 0,
                "table": 254,
                "proto": route["proto"],
                "priority": route.get("RTA_PRIORITY"),
                "oif": route.get("RTA_OIF"),
                "gateway": route.get("RTA_GATEWAY"),
            }
            found[version].append({k: v for k, v in spec.items() if v is not None})
        return found

    def restore_route(self, spec: RouteSpec) -> None:
        _netlink("restore route", str(spec), lambda: self._replace_route(spec))

    def delete_route(self, spec: RouteSpec) -> None:
        log.debug("%s: delete route %s", self.label, spec)
        try:
            self._delete_route(spec)
        except NetlinkError as exc:
            if exc.code not in _GONE:
                raise SetupError("delete route", str(spec), os.strerror(exc.code)) from None

    def _replace_route(self, spec: RouteSpec) -> None:
        self.rtnl.change(rtnl.route(spec, adding=True), rtnl.RTM_NEWROUTE, rtnl.REPLACE)

    def _delete_route(self, spec: RouteSpec) -> None:
        self.rtnl.change(rtnl.route(spec, adding=False), rtnl.RTM_DELROUTE)

    def set_reply_path(self, version: int, mark: int, routes: Sequence[RouteSpec]) -> None:
        """Packets marked ``mark`` leave through ``routes`` (podman's default
        routes, copied into table ``mark``) unless the main table has a route
        for them more specific than a default or the tunnel's halves
        (podman's own subnets).  Replaces an earlier reply path."""
        self.clear_reply_path(version, mark)
        family = AF_BY_VERSION[version]
        if version == 4:
            # Reverse-path filtering then checks a marked packet's source with
            # its mark, and strict filtering lets it in (wg-quick does the
            # same on the host).
            self._write_sysctl(
                "net/ipv4/conf/all/src_valid_mark",
                "1",
                ("set up reply path", "src_valid_mark"),
                missing="no such setting in this kernel",
            )
        for route in routes:
            self.restore_route({**route, "table": mark})
        log.debug("%s: IPv%d reply path: fwmark %#x, table %d", self.label, version, mark, mark)
        rules = (
            {"table": 254, "priority": REPLY_RULE_PRIORITY, "suppress_prefixlen": 1},
            {"table": mark, "priority": REPLY_RULE_PRIORITY + 1},
        )
        for rule in rules:
            _netlink(
                "add routing rule",
                f"fwmark {mark:#x} lookup {rule['table']}",
                partial(self.ipr.rule, "add", family=family, fwmark=mark, **rule),
            )

    def clear_reply_path(self, version: int, mark: int) -> None:
        """Remove what :meth:`set_reply_path` added; nothing if it is not there."""
        family = AF_BY_VERSION[version]
        what = f"IPv{version} fwmark {mark:#x}"
        _netlink(
            "delete routing rules", what, lambda: self.ipr.flush_rules(family=family, fwmark=mark)
        )
        _netlink(
            "delete routes",
            f"table {mark}",
            lambda: self.ipr.flush_routes(family=family, table=mark),
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
