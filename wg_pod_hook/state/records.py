"""What wg-pod set up for each container: one typed record per container,
kept in ``<container-id>.json`` in the state directory (runtime.py:
``/run/wg-pod``).

The record is the state of a tunnel.  The hook fills it in as each step of
the setup succeeds and writes it after each one, so that whoever comes
next — a rollback, ``poststop``, ``wg-pod leave``, ``gc``, the next start
after a killed hook — tears down exactly what it says was done
(teardown.py).  It holds names, pids, paths and public keys, never a
private or preshared key.

The file (JSON, ``"version": 4``; version 3 had no ``fixed`` and no
``sources``, version 2 no ``container_start`` and no ``netns.cookie``
either, version 1 no ``version`` field either, and the same keys less
``complete``, ``moved`` and ``process``; all are still read):

- ``container_id``, ``interface`` (name in the container), ``config``
  (path), ``created`` (Unix time); ``annotations`` (the container's
  ``wg-pod.*`` annotations) and ``bundle`` (its OCI bundle directory): what
  the daemon needs to set the tunnel up again;
- ``netns``: ``path``, ``dev``, ``ino`` of the container's network
  namespace and its ``cookie`` (SO_NETNS_COOKIE, Linux 5.14 on; null
  before): the identity that tells whether it still exists.  A freed
  namespace's inode number is given to a later one; its cookie never is;
- ``shared_with``: the container whose tunnel this one shares (pod members
  in one namespace); such a record has nothing of its own to tear down;
- ``complete``: every step done (false while the hook works, or when it
  was killed); ``writer`` (``pid``, ``start``): the process doing the
  setup, which tells a setup at work from one that was interrupted;
- ``container_pid`` and ``container_start`` (the kernel's start time of
  that process, read while it was proven to be in the namespace: with the
  pid it names the container's process, never a later one that got its
  pid), ``temp_name`` (host-side name before the move),
  ``backend`` (``kernel``/``userspace``), ``process`` (``pid`` and
  ``start``, the kernel's start time, of wireguard-go), ``moved`` (the
  interface is in the container's namespace);
- what was replaced, for teardown to put back: ``removed_routes`` (podman's
  default routes, as netlink route specs), ``resolv_conf`` (podman's file)
  and ``resolv_conf_original`` (its text, when wg-pod wrote into it) or
  ``own_resolv_conf`` (wg-pod's own file is mounted over it, see dns.py);
  and what was added:
  ``guarded`` (prefixes with an unreachable route, in ``route_table``, null
  for the main table), ``reply_path`` (IP versions with routing rules),
  ``nftables`` (the table);
- ``public_key`` and ``peer_public_keys``: which key the tunnel uses
  towards which peers; ``followed``: the peers whose endpoint is a host
  name (public key: ``[HOST, PORT]``), for the daemon to follow (absent
  in an older wg-pod's records: the daemon reads the config then);
- ``fixed``: what a reload cannot change in place (plan.fixed: setting
  name to its value as text), as the tunnel was set up; ``sources``: the
  files its config and keys were read from, each with the stamp of the
  version read (configfile.stamp), which tells the daemon of a change;
- ``failed`` and ``failed_at``: a run that replaced a running tunnel (a
  repair, a pod member's restart, ``join`` again) failed, why and when; what
  keeps the namespace closed stays, and the daemon tries again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import WgPodError
from ..runtime import Runtime, write_file, writer_pid

log = logging.getLogger(__name__)

VERSION = 4

# A netlink route spec, as Netlink.default_routes gives and restore_route takes.
RouteSpec = Mapping[str, int | str]


class RecordError(WgPodError):
    """A record file that cannot be read or does not parse."""


@dataclass(frozen=True)
class NetnsId:
    """A network namespace: a path to it and the identity of the namespace.

    ``(dev, ino)`` names one namespace only while it lives: a freed
    namespace's inode number goes to a later one.  ``cookie`` (None on
    kernels before 5.14, and in records of older versions) is never given
    to another namespace until the machine reboots."""

    path: str
    dev: int
    ino: int
    cookie: int | None = None

    @classmethod
    def of(cls, path: str, netns_fd: int) -> NetnsId:
        """The identity of the namespace open as ``netns_fd`` (``path`` is
        where it is to be found again)."""
        from ..namespaces import netns_cookie  # socket: not on poststop's path

        info = os.fstat(netns_fd)
        return cls(path, info.st_dev, info.st_ino, netns_cookie(netns_fd))

    def alive(self) -> bool:
        """Whether the namespace still exists and ``path`` still names it:
        the same inode, and the same cookie when one was recorded (a
        namespace that got the inode number of a freed one is not it)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        if (info.st_dev, info.st_ino) != (self.dev, self.ino):
            return False
        if self.cookie is None:
            return True
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return self.same(NetnsId.of(self.path, fd))
        except PermissionError:  # not root (status): the inode is all it can tell
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def same(self, other: NetnsId) -> bool:
        """One namespace: the same inode, and the same cookie when both
        have one."""
        if self.cookie is not None and other.cookie is not None:
            return (self.dev, self.ino, self.cookie) == (other.dev, other.ino, other.cookie)
        return (self.dev, self.ino) == (other.dev, other.ino)


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a live ``pid``: with the pid, it names one
    process.  None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


@dataclass(frozen=True)
class ProcessId:
    """One process: a pid with the kernel's start time, which tells it from
    a later process that got the same pid."""

    pid: int
    start: int

    @classmethod
    def mine(cls) -> ProcessId:
        pid = os.getpid()
        return cls(pid, process_start_time(pid) or 0)

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start


@dataclass(frozen=True)
class TunnelRecord:
    container_id: str
    interface: str
    config: str
    netns: NetnsId
    created: float
    shared_with: str | None = None
    complete: bool = False
    writer: ProcessId | None = None  # who sets it up (hook, daemon, join) until complete
    container_pid: int | None = None
    container_start: int | None = None  # the kernel's start time of container_pid
    temp_name: str | None = None
    backend: str | None = None
    process: ProcessId | None = None
    moved: bool = False
    removed_routes: tuple[RouteSpec, ...] = ()
    route_table: int | None = None
    guarded: tuple[str, ...] = ()
    reply_path: tuple[int, ...] = ()
    nftables: bool = False
    resolv_conf: str | None = None
    resolv_conf_original: str | None = field(default=None, repr=False)
    own_resolv_conf: bool = False
    public_key: str | None = None
    peer_public_keys: tuple[str, ...] = ()
    followed: Mapping[str, tuple[str, int]] | None = None
    fixed: Mapping[str, str] | None = None  # None: an older wg-pod's record
    sources: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    bundle: str | None = None
    # A run that replaced a running tunnel failed: why (one line, no
    # secrets) and when.  The namespace stays closed until a run succeeds.
    failed: str | None = None
    failed_at: float | None = None

    def container(self) -> ProcessId | None:
        """The container's process, when the record names it whole: its pid
        alone may by now be another process's (records before version 3)."""
        if self.container_pid is None or self.container_start is None:
            return None
        return ProcessId(self.container_pid, self.container_start)

    def to_json(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies every
        # value, several times the cost of the JSON text, at every step.
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("netns", "writer", "process"):
            value = data[name]
            data[name] = None if value is None else vars(value).copy()
        data["removed_routes"] = [dict(route) for route in self.removed_routes]
        data["annotations"] = dict(self.annotations)
        data["sources"] = dict(self.sources)
        if self.fixed is not None:
            data["fixed"] = dict(self.fixed)
        if self.followed is not None:
            data["followed"] = {key: list(endpoint) for key, endpoint in self.followed.items()}
        return {"version": VERSION, **data}


# ---------------------------------------------------------------------------
# Parsing: every field checked once, here.
# ---------------------------------------------------------------------------


def _typed(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """``data[key]`` when it is of ``kind`` (booleans only where a boolean is
    meant); ``default`` when it is absent or null."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ValueError(f"{key}: wrong type {type(value).__name__}")
    return value


def _route(item: object) -> RouteSpec:
    if not isinstance(item, dict) or not all(
        isinstance(k, str) and isinstance(v, int | str) and not isinstance(v, bool)
        for k, v in item.items()
    ):
        raise ValueError("removed_routes: not a list of route specs")
    return dict(item)


def _process(data: Mapping[str, Any], key: str = "process") -> ProcessId | None:
    nested = data.get(key)
    if isinstance(nested, dict):
        pid, start = nested.get("pid"), nested.get("start")
    else:  # version 1: flat
        pid, start = data.get("process_pid"), data.get("process_start")
    if pid is None and start is None:
        return None
    if not isinstance(pid, int) or not isinstance(start, int) or pid <= 0:
        raise ValueError(f"{key}: needs a pid and a start time")
    return ProcessId(pid, start)


def from_json(data: object) -> TunnelRecord:
    """A record from its JSON form; ValueError saying which field is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("version", 1)
    if version not in (1, 2, 3, VERSION):
        raise ValueError(f"unknown version {version!r}")
    netns = data.get("netns")
    if not (
        isinstance(netns, dict)
        and isinstance(netns.get("path"), str)
        and isinstance(netns.get("dev"), int)
        and isinstance(netns.get("ino"), int)
    ):
        raise ValueError("netns: needs path, dev and ino")
    cookie = netns.get("cookie")
    if cookie is not None and (isinstance(cookie, bool) or not isinstance(cookie, int)):
        raise ValueError("netns: cookie is a number")
    for key in ("container_id", "interface", "config"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{key}: missing")
    routes = _typed(data, "removed_routes", list, [])
    versions = _typed(data, "reply_path", list, [])
    if any(v not in (4, 6) for v in versions):
        raise ValueError("reply_path: IP versions are 4 and 6")
    peers = _typed(data, "peer_public_keys", list, [])
    guarded = _typed(data, "guarded", list, [])
    if not all(isinstance(p, str) for p in [*peers, *guarded]):
        raise ValueError("peer_public_keys, guarded: lists of strings")
    return TunnelRecord(
        container_id=data["container_id"],
        interface=data["interface"],
        config=data["config"],
        netns=NetnsId(netns["path"], netns["dev"], netns["ino"], cookie),
        created=float(_typed(data, "created", (int, float), 0.0)),
        shared_with=_typed(data, "shared_with", str, None),
        # Version 1 wrote its record once, at the end.
        complete=bool(_typed(data, "complete", bool, version == 1)),
        writer=_process(data, "writer") if isinstance(data.get("writer"), dict) else None,
        container_pid=_typed(data, "container_pid", int, None),
        container_start=_typed(data, "container_start", int, None),
        temp_name=_typed(data, "temp_name", str, None),
        backend=_typed(data, "backend", str, None),
        process=_process(data),
        moved=bool(_typed(data, "moved", bool, version == 1)),
        removed_routes=tuple(_route(r) for r in routes),
        route_table=_typed(data, "route_table", int, None),
        guarded=tuple(guarded),
        reply_path=tuple(versions),
        nftables=bool(_typed(data, "nftables", bool, False)),
        resolv_conf=_typed(data, "resolv_conf", str, None),
        resolv_conf_original=_typed(data, "resolv_conf_original", str, None),
        own_resolv_conf=bool(_typed(data, "own_resolv_conf", bool, False)),
        public_key=_typed(data, "public_key", str, None),
        peer_public_keys=tuple(peers),
        followed=_followed(data),
        fixed=_strings(data, "fixed", None),
        sources=_strings(data, "sources", {}) or {},
        annotations=_strings(data, "annotations", {}) or {},
        bundle=_typed(data, "bundle", str, None),
        failed=_typed(data, "failed", str, None),
        failed_at=_typed(data, "failed_at", (int, float), None),
    )


def _followed(data: Mapping[str, Any]) -> dict[str, tuple[str, int]] | None:
    followed = _typed(data, "followed", dict, None)
    if followed is None:
        return None
    endpoints = {}
    for key, endpoint in followed.items():
        if not (
            isinstance(endpoint, list)
            and len(endpoint) == 2
            and isinstance(endpoint[0], str)
            and isinstance(endpoint[1], int)
            and not isinstance(endpoint[1], bool)
        ):
            raise ValueError("followed: not a map of [host, port]")
        endpoints[key] = (endpoint[0], endpoint[1])
    return endpoints


def _strings(
    data: Mapping[str, Any], key: str, default: dict[str, str] | None
) -> dict[str, str] | None:
    strings = _typed(data, key, dict, default)
    if strings is None:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in strings.items()):
        raise ValueError(f"{key}: not a map of strings")
    return dict(strings)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def path_for(runtime: Runtime, container_id: str) -> Path:
    return Path(runtime.records, f"{container_id}.json")


def write(runtime: Runtime, record: TunnelRecord) -> Path:
    """Write atomically: a reader never sees half a record."""
    # Compact: json's C encoder writes no indented text.
    text = json.dumps(record.to_json(), sort_keys=True).encode()
    target = write_file(runtime.make(runtime.records), f"{record.container_id}.json", text)
    log.debug("wrote record %s", target)
    return Path(target)


def load(runtime: Runtime, container_id: str) -> TunnelRecord | None:
    """The record of ``container_id``; None when there is none, RecordError
    when its file is unreadable or does not parse."""
    path = path_for(runtime, container_id)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RecordError(f"record {path}: {exc}") from None
    try:
        record = from_json(data)
    except ValueError as exc:
        raise RecordError(f"record {path}: {exc}") from None
    if record.container_id != container_id:
        raise RecordError(f"record {path}: holds container {record.container_id[:12]}")
    return record


def read(runtime: Runtime, container_id: str) -> TunnelRecord | None:
    """Like :func:`load`, but a broken record is logged and reads as none:
    nothing a hook does fails on it (``wg-pod gc`` removes it)."""
    try:
        return load(runtime, container_id)
    except RecordError as exc:
        log.warning("%s (wg-pod gc removes it)", exc)
        return None


def read_all(runtime: Runtime) -> list[TunnelRecord]:
    return [r for cid in all_ids(runtime) if (r := read(runtime, cid)) is not None]


def broken_ids(runtime: Runtime) -> list[str]:
    """Containers whose record does not parse."""
    broken = []
    for container_id in all_ids(runtime):
        try:
            load(runtime, container_id)
        except RecordError:
            broken.append(container_id)
    return broken


def remove(runtime: Runtime, container_id: str) -> None:
    path_for(runtime, container_id).unlink(missing_ok=True)


def list_ids(runtime: Runtime) -> list[str]:
    """Every container with a record; none when the directory does not
    exist, OSError when it cannot be read (``wg-pod health`` must know)."""
    try:
        names = os.listdir(runtime.records)
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and n[0] != ".")


def all_ids(runtime: Runtime) -> list[str]:
    try:
        return list_ids(runtime)
    except OSError:
        return []


def orphaned_temporaries(runtime: Runtime) -> list[Path]:
    """Temporary files of writers that died between writing and renaming
    (runtime.write_file names them after the writer's pid): of records,
    kept failures and health looks."""
    found = []
    for directory in (runtime.records, runtime.failed, runtime.health):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            pid = writer_pid(name)
            if pid is not None and process_start_time(pid) is None:
                found.append(Path(directory, name))
    return found
