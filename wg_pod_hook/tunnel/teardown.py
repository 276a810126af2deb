"""One way down: undo exactly what a tunnel's record says was done.

wg-quick's ``del_if`` idea: a single teardown, guarded by what is known to
have been done, serves a failed setup's rollback, ``poststop``, ``wg-pod
leave``, ``wg-pod gc`` and the next start after a hook that was killed
mid-way (the record is written after every step, so it always knows).
"Already gone" is success; a step that fails is logged and the others
still run.

Light on imports: poststop runs on every container stop, usually to find
nothing left to do, and reaches for netlink and nft only when the
container's namespace is still there and something was done inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import ip_network
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SetupError
from ..kernel import backends
from ..model.names import is_temp_name, tunnel_names
from ..runtime import Runtime
from ..state import health, records
from ..state.records import TunnelRecord
from . import dns

if TYPE_CHECKING:
    from ..kernel.backends import Backend
    from ..kernel.netlink import Netlink

log = logging.getLogger(__name__)


def teardown(
    runtime: Runtime,
    record: TunnelRecord,
    *,
    replacing: bool = False,
    inside: Netlink | None = None,
) -> None:
    """Undo ``record``, newest step first, and remove it.

    ``replacing``: a new run in the same namespace takes over, or a run
    that replaced a running tunnel failed; only the interface and its
    backend go.  What the tunnel replaced (podman's default routes,
    resolv.conf), the protections it set up (nftables table, reply path,
    unreachable routes) and the record itself stay, so nothing leaks and
    nothing is forgotten in between: the caller writes the record anew.
    ``inside`` is a netlink socket already open in the container's
    namespace.  Raises SetupError naming every step that failed, after
    trying them all.
    """
    errors: list[str] = []

    def attempt(what: str, action: Callable[..., object], *args: object) -> None:
        try:
            action(*args)
        except Exception as exc:
            log.warning("container %s: %s: %s", record.container_id[:12], what, exc)
            errors.append(f"{what}: {exc}")

    # A rootless user's interface is born in the container's namespace
    # (lifecycle.py): before its "move" (a rename) it is there under its
    # temporary name.
    born_inside = runtime.rootless and not record.moved and record.temp_name is not None
    if record.shared_with is None:
        if record.netns.alive() and (born_inside or _did_inside(record, replacing)):
            with _container_netlink(record, inside) as netlink:
                _undo_inside(runtime, record, replacing, netlink, attempt)
                if born_inside:
                    attempt("delete interface", netlink.delete_link, record.temp_name)
        for backend in _backends(runtime, record):
            attempt(f"stop {backend.name} backend", backend.stop, record)
        if not record.moved and record.temp_name and not runtime.rootless:
            attempt("delete host-side interface", delete_host_link, record.temp_name)
    if replacing:  # a new run goes on with the record and its health (repairs count)
        log.info("container %s: interface taken down", record.container_id[:12])
    else:
        records.remove(runtime, record.container_id)
        health.forget(runtime, record.container_id)
        dns.remove_own(runtime, record.container_id)
        log.info("container %s: tunnel taken down", record.container_id[:12])
    if errors:
        raise SetupError("take down", record.interface, "; ".join(errors))


def _backends(runtime: Runtime, record: TunnelRecord) -> list[Backend]:
    """The record's backend; every one when it names none this wg-pod knows
    (a hook killed before it noted one), each stopping what it may have
    left under the record's names."""
    if record.backend is not None and record.backend in backends.NAMES:
        return [backends.get(record.backend, runtime)]
    return backends.every(runtime)


def _did_inside(record: TunnelRecord, replacing: bool) -> bool:
    if replacing:
        return record.moved
    return (
        record.moved
        or record.nftables
        or bool(record.reply_path or record.guarded or record.removed_routes)
        or record.resolv_conf_original is not None
        or record.own_resolv_conf
    )


def _undo_inside(
    runtime: Runtime,
    record: TunnelRecord,
    replacing: bool,
    netlink: Netlink,
    attempt: Callable[..., None],
) -> None:
    from ..kernel import nft_apply, routes
    from ..model import nft

    names = tunnel_names(record.container_id)
    if replacing:
        if record.moved:
            attempt("delete interface", netlink.delete_link, record.interface)
        return
    if record.resolv_conf:
        attempt("restore resolv.conf", dns.put_back, runtime, record)
    if record.nftables:
        attempt("remove nftables", nft_apply.apply, netlink.netns_fd, nft.removal(names.table))
    for version in record.reply_path:
        attempt("remove reply path", routes.clear_reply_path, netlink, version, names.reply_mark)
    for route in record.removed_routes:
        attempt("restore default route", routes.restore_route, netlink, route)
    if record.moved:
        attempt("delete interface", netlink.delete_link, record.interface)
    # Last: until the interface is gone, its prefixes must not fall back.
    for prefix in record.guarded:
        attempt(
            "remove unreachable route",
            routes.unguard,
            netlink,
            ip_network(prefix),
            record.route_table,
        )


@contextmanager
def _container_netlink(record: TunnelRecord, inside: Netlink | None) -> Iterator[Netlink]:
    if inside is not None:
        yield inside
        return
    from ..kernel.netlink import Netlink, open_netns

    # Only the record's namespace: the path may by now name another.
    with open_netns(record.netns.path, record.netns) as fd, Netlink(fd, "container") as netlink:
        yield netlink


def delete_host_link(name: str) -> bool:
    """Delete a host-side interface; False when there is none."""
    if not Path(f"/sys/class/net/{name}").exists():
        return False
    from ..kernel.netlink import Netlink  # pyroute2 only when there is work for it

    with Netlink() as host:
        return host.delete_link(name)


def down(runtime: Runtime, container_id: str) -> None:
    """poststop: remove what outlives the container.

    podman runs poststop also when a restart policy is about to restart the
    container in the same namespace; a finished tunnel stays there, and the
    createRuntime of the next run replaces it.  When no run follows, it goes
    with the namespace, and its record with the next start's prune.
    """
    record = records.read(runtime, container_id)
    if record is None:  # none, or unreadable: only what its name finds
        if not runtime.rootless:
            delete_host_link(tunnel_names(container_id).temp_name)
        records.remove(runtime, container_id)
        dns.remove_own(runtime, container_id)
        return
    if record.shared_with is None and record.netns.alive() and (record.complete or record.failed):
        # A failed rerun's record too: what keeps the namespace closed
        # stays while the namespace lives (pod members may run in it).
        log.info("container %s: namespace still in use, tunnel kept", container_id[:12])
        return
    teardown(runtime, record)


def prune_stale(runtime: Runtime) -> list[str]:
    """Take down the tunnels of containers whose namespace is gone without a
    poststop that saw it go (podman rm after a restart-policy restart, a
    killed hook); returns their ids."""
    pruned = []
    for record in records.read_all(runtime):
        if not record.netns.alive():
            try:
                teardown(runtime, record)
            except SetupError as exc:
                log.warning("prune: %s", exc)
            pruned.append(record.container_id)
    return pruned


def leave(runtime: Runtime, container_id: str) -> None:
    """Take a running container off its tunnel (``wg-pod leave``): interface,
    nftables table, routing rules, podman's default routes and resolv.conf
    put back, record; and the records of pod members sharing it."""
    from ..kernel.netlink import open_netns
    from ..state.locks import namespace_lock

    record = records.load(runtime, container_id)
    if record is None:
        raise SetupError("leave", container_id[:12], "the container has no wg-pod tunnel")
    if record.shared_with:
        raise SetupError(
            "leave",
            container_id[:12],
            f"it shares the tunnel of container {record.shared_with[:12]}: leave that one",
        )
    if record.netns.alive():
        with open_netns(record.netns.path, record.netns) as fd, namespace_lock(runtime, fd):
            teardown(runtime, record)
    else:
        teardown(runtime, record)
    for member in records.read_all(runtime):
        if member.shared_with == container_id:
            records.remove(runtime, member.container_id)


def gc(runtime: Runtime) -> list[str]:
    """Remove what hooks killed mid-way left behind: records of gone
    namespaces, unreadable records, host-side interfaces and wireguard-go
    processes that no record accounts for, wg-pod's resolv.conf files of
    containers without a record, record files a writer died before
    renaming, namespace lock files nobody holds, and a warm pool no
    daemon holds (a killed daemon's)."""
    from ..kernel.netlink import Netlink
    from ..state.locks import daemon_running, sweep_locks
    from . import pool

    removed = [f"record {cid[:12]}" for cid in prune_stale(runtime)]
    for container_id in records.broken_ids(runtime):
        records.remove(runtime, container_id)
        removed.append(f"unreadable record {container_id[:12]}")
    # Every record left has a live namespace; its hook may still be at work.
    known = {record.temp_name for record in records.read_all(runtime)}
    if not runtime.rootless:  # a rootless user's are born in containers, never here
        with Netlink() as host:
            for name in host.link_names():
                if is_temp_name(name) and name not in known and host.delete_link(name):
                    removed.append(f"interface {name}")
    if not daemon_running(runtime):  # a running one's warm pool is its own
        for name in pool.names(runtime):
            pool.clear(runtime, name)
            removed.append(f"pooled interface {name}")
    for backend in backends.every(runtime):
        removed += backend.sweep({name for name in known if name})
    removed += [f"resolv.conf {path.name}" for path in dns.sweep(runtime)]
    for path in records.orphaned_temporaries(runtime):
        path.unlink(missing_ok=True)
        removed.append(f"unfinished record file {path.name}")
    removed += [f"lock file {name}" for name in sweep_locks(runtime)]
    return removed
