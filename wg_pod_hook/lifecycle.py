"""up and down: runs a Plan step by step with an undo stack, and records it.

The WireGuard interface is born in the host namespace so its UDP socket
stays there and reaches the endpoint however the container's routes end
up; only then is it moved into the container.  Every step registers its
undo, so a failure anywhere leaves nothing behind and the container does
not start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from . import dns, nft, records
from .backends import Backend, DeviceSetup
from .backends.kernel import KernelBackend
from .backends.userspace import (
    UserspaceBackend,
    process_start_time,
    socket_path,
    stop_process,
)
from .bundle import Bundle
from .cleanup import (
    netns_alive,
    prune_stale,
    remove,
    stop_userspace,
    userspace_processes,
)
from .configfile import read_config
from .errors import BackendUnavailable, SetupError, StateError
from .netns import AF_BY_VERSION, Netlink, is_host_netns, open_netns
from .oci import ContainerState, parse_annotations
from .plan import REPLY_MARK, Plan, automatic_mtu, build_plan, is_temp_name
from .proc import in_netns, run
from .resolve import device_setup
from .settings import Settings

log = logging.getLogger(__name__)

LOCK_DEADLINE = 10.0


def prepare(state: ContainerState, settings: Settings) -> Plan:
    """Validate everything the container's creator handed us; touch nothing."""
    request = parse_annotations(state.annotations)
    config = read_config(request.config_path, settings)
    for warning in config.warnings:
        log.warning("%s", warning)
    return build_plan(state.id, state.pid, request, config, settings)


@contextmanager
def namespace_lock(netns_fd: int) -> Iterator[None]:
    """Serialise hooks working on one namespace (pod members share one).

    The lock is taken on the namespace file itself: every open of one
    namespace shares its inode, so no lock file is left behind.
    """
    deadline = time.monotonic() + LOCK_DEADLINE
    while True:
        try:
            fcntl.flock(netns_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SetupError("lock", "network namespace", "another hook holds it") from None
            time.sleep(0.02)
    try:
        yield
    finally:
        fcntl.flock(netns_fd, fcntl.LOCK_UN)


def _backends(settings: Settings) -> list[Backend]:
    userspace = UserspaceBackend(settings.userspace_command)
    if settings.backend == "kernel":
        return [KernelBackend()]
    if settings.backend == "userspace":
        return [userspace]
    return [KernelBackend(), userspace]


def _create(plan: Plan, settings: Settings) -> Backend:
    """Create the interface with the first backend this machine supports."""
    reasons = []
    for backend in _backends(settings):
        try:
            backend.create(plan.temp_name)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
            continue
        if settings.backend == "auto":
            log.info("backend auto: using %s", backend.name)
        return backend
    raise SetupError("create interface", plan.temp_name, "; ".join(reasons))


def apply_nft(netns_path: str, ruleset: str) -> None:
    run(in_netns(netns_path, ["nft", "-f", "-"]), step="apply nftables", stdin=ruleset)


def undo(stack: ExitStack, what: str, action: Callable[..., object], *args: object) -> None:
    """Register an undo step; a failing one is logged and the others still run,
    so the error that started the unwinding is the one reported."""

    def quietly() -> None:
        try:
            action(*args)
        except Exception:
            log.exception("undo failed: %s", what)

    stack.callback(quietly)


def up(plan: Plan, spec: Bundle, settings: Settings) -> dict[str, Any]:
    """Set up the tunnel of ``plan``; on any failure undo every step and raise."""
    if plan.pid <= 0:
        raise StateError(f"container {plan.container_id[:12]} has no process (pid {plan.pid})")
    device = device_setup(plan.config)
    resolv_conf = dns.check_resolv_conf(spec, plan.container_id) if plan.dns else None
    prune_stale()
    with open_netns(plan.netns_path) as netns_fd, namespace_lock(netns_fd):
        if is_host_netns(netns_fd):
            raise StateError(f"container {plan.container_id[:12]} uses the host network namespace")
        info = os.fstat(netns_fd)
        netns = {"path": spec.netns_path or plan.netns_path, "dev": info.st_dev, "ino": info.st_ino}
        with Netlink() as host, Netlink(netns_fd, "container") as inside, ExitStack() as stack:
            shared = _shared_tunnel(plan, inside, netns)
            if shared is not None:
                return shared
            check_key_unused(plan, netns)
            previous = _converge(plan, inside) or {}
            _clear_leftovers(plan.temp_name, host)

            backend = _create(plan, settings)
            undo(stack, "stop backend", backend.destroy, plan.temp_name)
            _fault("create", settings)
            # Before the move: wireguard-go only notices MTU changes in the
            # namespace it was started in.
            host.set_mtu(plan.temp_name, plan.mtu or _automatic_mtu(host, device))
            backend.configure(plan.temp_name, device)
            _fault("configure", settings)

            host.move(plan.temp_name, netns_fd, plan.interface)
            undo(stack, "delete interface", inside.delete_link, plan.interface)
            _fault("move", settings)
            if plan.uses_ipv6:
                inside.enable_ipv6(plan.interface)
            for address in plan.addresses:
                inside.add_address(plan.interface, address)
            inside.set_up(plan.interface)
            _fault("address", settings)

            # Podman's default routes, read once; a rerun finds them gone
            # already and carries over what the run it replaces removed.
            removed_routes = list(previous.get("removed_routes") or [])
            defaults = {
                version: inside.default_routes(version)
                for version in plan.delete_default | plan.reply_path
            }
            for version in sorted(plan.delete_default):
                for route in defaults[version]:
                    inside.delete_route(route)
                    undo(stack, "restore default route", inside.restore_route, route)
                    removed_routes.append(route)
            for network in plan.routes:
                inside.replace_route(network, device=plan.interface, table=plan.route_table)
            for extra in plan.extra_routes:
                inside.replace_route(extra.target, gateway=str(extra.gateway))
            reply_path = []
            for version in sorted(plan.reply_path):
                family = AF_BY_VERSION[version]
                routes = defaults[version] or [
                    r for r in removed_routes if r.get("family") == family
                ]
                if routes:  # else there is no other way back than the tunnel
                    inside.set_reply_path(version, REPLY_MARK, routes)
                    undo(stack, "remove reply path", inside.clear_reply_path, version, REPLY_MARK)
                    reply_path.append(version)
            _fault("routes", settings)

            ruleset = nft.render(plan, inside.local_networks(skip=plan.interface))
            if ruleset is not None:
                apply_nft(plan.netns_path, ruleset)
                undo(stack, "remove nftables", apply_nft, plan.netns_path, nft.removal())
            _fault("nftables", settings)

            original = None
            if plan.dns is not None and resolv_conf is not None:
                original = dns.read(resolv_conf)
                earlier = previous.get("resolv_conf_original")
                if original.startswith(dns.HEADER) and isinstance(earlier, str):
                    original = earlier  # a rerun: podman's file is what the first run read
                dns.write_in_place(resolv_conf, dns.render(plan.dns, original))
                undo(stack, "restore resolv.conf", dns.write_in_place, resolv_conf, original)
            _fault("dns", settings)

            record = {
                "container_id": plan.container_id,
                "container_pid": plan.pid,
                "netns": netns,
                "interface": plan.interface,
                "temp_name": plan.temp_name,
                "config": str(plan.config_path),
                "nftables": ruleset is not None,
                "resolv_conf": str(resolv_conf) if resolv_conf else None,
                # What `wg-pod leave` puts back.
                "resolv_conf_original": original,
                "removed_routes": removed_routes,
                "reply_path": reply_path,
                # Public, and what tells whether another tunnel uses the same key.
                "public_key": plan.public_key,
                "peer_public_keys": sorted(plan.peer_public_keys),
                "created": time.time(),
                **backend.record(),
            }
            records.write(plan.container_id, record)
            undo(stack, "remove record", records.remove, plan.container_id)
            # Again, now that this tunnel's record is there: of two hooks
            # starting with one key at once, the later writer sees the other.
            check_key_unused(plan, netns)
            _fault("record", settings)
            stack.pop_all()
    log.info(
        "container %s: %s up (%s backend, %d peer(s))",
        plan.container_id[:12],
        plan.interface,
        record["backend"],
        len(plan.config.peers),
    )
    return record


def check_key_unused(plan: Plan, netns: dict[str, Any] | None = None) -> None:
    """Refuse a private key that another live tunnel already uses towards
    one of the same peers: a peer keeps one endpoint per public key, so
    both tunnels would lose packets and handshakes, without a word.

    The same key towards other peers is fine (one provider key on two
    servers), and so is the tunnel of this container's own namespace (a
    rerun, or the pod member whose tunnel this one shares).  Keys are
    compared by their public halves, which the records hold.
    """
    for other in map(records.read, records.all_ids()):
        if (
            other is None
            or other.get("container_id") == plan.container_id
            or other.get("shared_with")
            or other.get("public_key") != plan.public_key
        ):
            continue
        common = plan.peer_public_keys & set(other.get("peer_public_keys") or [])
        other_netns = other.get("netns") or {}
        same_netns = netns is not None and (other_netns.get("dev"), other_netns.get("ino")) == (
            netns["dev"],
            netns["ino"],
        )
        if not common or same_netns or not netns_alive(other):
            continue
        raise SetupError(
            "check key",
            plan.config.source,
            f"its private key is already in use by container {other['container_id'][:12]} "
            f"(tunnel {other.get('interface')}) towards peer {min(common)}; the peer keeps one "
            "endpoint per key, so both tunnels would flap: give each container a key of its "
            "own (wg genkey)",
        )


def _clear_leftovers(name: str, host: Netlink) -> None:
    """A hook killed mid-way leaves things under this container's derived
    name; clear them so this start can use the name."""
    if host.index(name) is None and not socket_path(name).exists():
        return
    log.info("clearing leftovers of an earlier hook: %s", name)
    for pid, temp in userspace_processes().items():
        if temp == name:
            stop_process(pid, process_start_time(pid))
    host.delete_link(name)
    socket_path(name).unlink(missing_ok=True)


def _fault(step: str, settings: Settings) -> None:
    if settings.fault_injection_kill_after == step:
        log.warning("fault injection: killing the hook after %s", step)
        os.kill(os.getpid(), signal.SIGKILL)


def _automatic_mtu(host: Netlink, device: DeviceSetup) -> int:
    endpoints = [str(setup.endpoint[0]) for setup in device.peers if setup.endpoint]
    mtus = [mtu for mtu in map(host.route_mtu, endpoints) if mtu]
    if not mtus:  # as wg-quick: no endpoint route, so the default route's
        mtus = [mtu for mtu in [host.default_route_mtu()] if mtu]
    mtu = automatic_mtu(mtus)
    log.debug("automatic MTU %d from route MTUs %s", mtu, mtus)
    return mtu


def _shared_tunnel(plan: Plan, inside: Netlink, netns: dict[str, Any]) -> dict[str, Any] | None:
    """Pod members share one namespace: the first one's tunnel serves all.

    One wg-pod tunnel per namespace (its nftables table is the namespace's).
    Returns this container's record when another container's tunnel with the
    same config and name already lives there; refuses a different one.
    """
    for owner in map(records.read, records.all_ids()):
        if (
            owner is None
            or owner.get("container_id") == plan.container_id
            or owner.get("shared_with")
            or (owner.get("netns") or {}).get("ino") != netns["ino"]
            or (owner.get("netns") or {}).get("dev") != netns["dev"]
            or inside.index(str(owner.get("interface"))) is None
        ):
            continue
        if (owner.get("config"), owner.get("interface")) != (str(plan.config_path), plan.interface):
            raise SetupError(
                "join shared namespace",
                plan.interface,
                f"the namespace already carries container {owner['container_id'][:12]}'s "
                f"tunnel {owner.get('interface')} from {owner.get('config')}",
            )
        record = {
            "container_id": plan.container_id,
            "interface": plan.interface,
            "config": str(plan.config_path),
            "netns": netns,
            "shared_with": owner["container_id"],
            "created": time.time(),
        }
        records.write(plan.container_id, record)
        log.info(
            "container %s: shares %s of container %s",
            plan.container_id[:12],
            plan.interface,
            owner["container_id"][:12],
        )
        return record
    return None


def _converge(plan: Plan, inside: Netlink) -> dict[str, Any] | None:
    """A namespace that kept this container's tunnel is set up anew; returns
    the record of the run it replaces, which holds what that run took away
    (podman's default routes, resolv.conf) for ``wg-pod leave`` to put back."""
    if inside.index(plan.interface) is None:
        return None
    previous = records.read(plan.container_id)
    if previous is None or previous.get("interface") != plan.interface:
        raise SetupError(
            "create interface",
            plan.interface,
            "an interface of that name already exists in the container's namespace",
        )
    log.info("container %s: replacing its previous tunnel", plan.container_id[:12])
    inside.delete_link(plan.interface)
    stop_userspace(previous)
    return previous


def leave(container_id: str) -> None:
    """Take a running container off its tunnel (``wg-pod leave``): interface,
    nftables table, removed default routes, resolv.conf and record."""
    record = records.read(container_id)
    if record is None:
        raise SetupError("leave", container_id[:12], "the container has no wg-pod tunnel")
    if record.get("shared_with"):
        raise SetupError(
            "leave",
            container_id[:12],
            f"it shares the tunnel of container {record['shared_with'][:12]}: leave that one",
        )
    if netns_alive(record):
        path = record["netns"]["path"]
        with open_netns(path) as fd, namespace_lock(fd), Netlink(fd, "container") as inside:
            if record.get("nftables"):
                apply_nft(path, nft.removal())
            inside.delete_link(str(record.get("interface")))
            for route in record.get("removed_routes") or []:
                inside.restore_route(route)
            for version in record.get("reply_path") or []:
                inside.clear_reply_path(version, REPLY_MARK)
            original = record.get("resolv_conf_original")
            if isinstance(original, str) and record.get("resolv_conf"):
                dns.write_in_place(Path(record["resolv_conf"]), original)
    remove(container_id, record)
    for member in map(records.read, records.all_ids()):
        if member is not None and member.get("shared_with") == container_id:
            records.remove(str(member.get("container_id")))


def gc() -> list[str]:
    """Remove leftovers of hooks that were killed mid-way: stale records,
    host-side interfaces and userspace processes no record accounts for."""
    removed = [f"record {cid[:12]}" for cid in prune_stale()]
    live = {
        record.get("temp_name")
        for record in map(records.read, records.all_ids())
        if record is not None
    }
    with Netlink() as host:
        for link in host.ipr.get_links():
            name = link.get("IFLA_IFNAME")
            # Host-side names exist only until the move: never part of a live tunnel.
            if isinstance(name, str) and is_temp_name(name) and host.delete_link(name):
                removed.append(f"interface {name}")
    for pid, name in userspace_processes().items():
        if name not in live and stop_process(pid, process_start_time(pid)):
            socket_path(name).unlink(missing_ok=True)
            removed.append(f"process {pid} ({name})")
    return removed
