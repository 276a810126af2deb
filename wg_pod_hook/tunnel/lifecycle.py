"""up: runs a Plan as a table of named steps, filling in the tunnel's record.

The WireGuard interface is born in the host namespace so its UDP socket
stays there and reaches the endpoint however the container's routes end
up; only then is it moved into the container.

A rootless user's interface is born in the container's namespace, the
only one that is theirs (the host's is root's), and its socket stays
there, as wg-quick keeps the socket of a full tunnel on the host: the
socket's packets carry the reply mark (plan.socket_mark), which the
routing rules send the way podman's default routes go (pasta or
slirp4netns) whatever the tunnel routes, and which the kill switch lets
pass.  The "move" step then only renames it.  Each step writes into the
record what it did, as soon as it did it, and the record is saved at once:
a failure at any step is undone by the one teardown (teardown.py) from the
record, and so is a hook killed mid-way, by whoever comes next.  The
container does not start when its tunnel could not be set up.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from ipaddress import ip_network
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import (
    BackendUnavailable,
    ReloadRefused,
    SettingsError,
    SetupError,
    StateError,
    Superseded,
    WgPodError,
    describe,
)
from ..kernel import backends, nft_apply, routes
from ..kernel.backends import GREETING_KEEPALIVE, Backend, DeviceSetup
from ..kernel.netlink import VERSION_BY_AF, Netlink, open_netns, process_start_in
from ..model import nft
from ..model.bundle import Bundle, read_bundle
from ..model.configfile import read_config
from ..model.oci import ContainerState, parse_annotations
from ..model.plan import Plan, automatic_mtu, build_plan, fixed
from ..model.settings import Settings
from ..namespaces import is_host_netns
from ..runtime import Runtime
from ..state import records
from ..state.locks import keys_lock, namespace_lock
from ..state.records import NetnsId, ProcessId, RouteSpec, TunnelRecord
from . import dns
from .pool import Ready
from .resolve import device_setup
from .teardown import prune_stale, teardown

log = logging.getLogger(__name__)


def prepare(state: ContainerState, settings: Settings, runtime: Runtime) -> Plan:
    """Validate everything the container's creator handed us; touch nothing.
    A rootless runtime's link is born in the container's namespace."""
    request = parse_annotations(state.annotations)
    config = read_config(request.config_path, settings, request.private_key_path)
    for warning in config.warnings:
        log.warning("%s", warning)
    return build_plan(
        state.id, state.pid, request, config, settings, socket_inside=runtime.rootless
    )


@dataclass
class Run:
    """One setup in progress: what its steps share, and the record they
    fill in."""

    runtime: Runtime
    plan: Plan
    host: Netlink
    inside: Netlink
    netns_fd: int
    device: DeviceSetup
    resolv_conf: Path | None
    record: TunnelRecord
    # At createRuntime, for a container's own resolv.conf: where the
    # runtime mounted it, for wg-pod's own file to go over (dns.py).
    dns_mount_point: str | None = None
    backend: Backend | None = None
    # The record of the run this one replaces (a repair, a pod member's
    # restart, a rerun in a kept namespace, ``join`` again): its interface
    # goes first, and a failure keeps the namespace closed (_roll_back).
    previous: TunnelRecord | None = None
    # The daemon's worker: the interface it made ahead (pool.py).
    ready: Ready | None = None

    @property
    def temp_name(self) -> str:
        """The interface's name until it is moved: the plan's, or a pooled
        one's (the record names it from the create step on)."""
        return self.record.temp_name or self.plan.names.temp_name

    @property
    def birth(self) -> Netlink:
        """Netlink in the namespace the interface is born in."""
        return self.inside if self.runtime.rootless else self.host

    @property
    def birth_fd(self) -> int | None:
        """That namespace (None: the host's, this process's)."""
        return self.netns_fd if self.runtime.rootless else None

    def did(self, **changes: object) -> None:
        """Note what a step just did, and save the record at once."""
        self.record = replace(self.record, **changes)  # type: ignore[arg-type]
        records.write(self.runtime, self.record)


def _replace(run: Run) -> None:
    """Take down the interface of the run this one replaces, then write
    this run's record over its record: what that run replaced and the
    protections it left stay in place, and stay noted, at every moment (a
    kill in between leaves its record, which the next run reads)."""
    if run.previous is None:
        return
    teardown(run.runtime, run.previous, replacing=True, inside=run.inside)
    records.write(run.runtime, run.record)


def _create(run: Run) -> None:
    """Create the interface with the first backend this machine supports,
    or take the one the daemon made ahead, if it can serve."""
    plan = run.plan
    if _take_ready(run):
        return
    reasons = []
    for backend in backends.candidates(plan, run.runtime):
        try:
            process = backend.create(plan.names.temp_name, run.birth_fd)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
            continue
        run.backend = backend
        run.did(backend=backend.name, process=process)
        if plan.backend == "auto":
            log.info("backend auto: using %s", backend.name)
        backend.wait_ready(plan.names.temp_name)
        return
    raise SetupError("create interface", plan.names.temp_name, "; ".join(reasons))


def _take_ready(run: Run) -> bool:
    """Whether the setup took the interface made ahead (pool.py): one of
    the plan's backend, still there and serving, not a rootless one's."""
    ready, plan = run.ready, run.plan
    if (
        ready is None
        or run.runtime.rootless
        or plan.backend not in ("auto", ready.backend.name)
        or run.host.index(ready.name) is None
        or not ready.backend.adopt(ready.name, plan)
    ):
        return False
    run.backend = ready.backend
    run.did(backend=ready.backend.name, process=ready.process, temp_name=ready.name)
    ready.taken = True
    log.debug("container %s: took %s, made ahead", plan.container_id[:12], ready.name)
    return True


def _configure(run: Run) -> None:
    assert run.backend is not None
    # Before the move: wireguard-go only notices MTU changes in the
    # namespace it was started in.  The automatic MTU is the host's way to
    # the endpoints, also for a socket in the container (pasta's MTU is not
    # the path's).
    mtu = run.plan.mtu or _automatic_mtu(run.host, run.device)
    run.birth.set_mtu(run.temp_name, mtu)
    run.backend.configure(run.temp_name, run.device, run.birth_fd)


def _move(run: Run) -> None:
    """Into the container under its name (born there: renamed only)."""
    if run.runtime.rootless:
        run.inside.rename(run.temp_name, run.plan.interface)
    else:
        run.host.move(run.temp_name, run.netns_fd, run.plan.interface)
    run.did(moved=True)


def _address(run: Run) -> None:
    plan, inside = run.plan, run.inside
    if plan.uses_ipv6:
        inside.enable_ipv6(plan.interface)
    for address in plan.addresses:
        inside.add_address(plan.interface, address)
    inside.set_up(plan.interface)


def _guards(run: Run) -> None:
    """Unreachable routes under every prefix the tunnel routes, first: the
    tunnel's own routes come and go with its interface.  A rerun's config
    may route other prefixes, or into another table: those of the run it
    replaces that are not wanted now go."""
    plan, inside = run.plan, run.inside
    same_table = run.record.route_table == plan.route_table
    wanted = {str(n) for n in plan.guarded} if same_table else set()
    kept = []
    for guarded in run.record.guarded:
        if guarded in wanted:
            kept.append(guarded)
        else:
            routes.unguard(inside, ip_network(guarded), run.record.route_table)
    # All noted in one write, before they are added: taking down a guard
    # that is not there yet is no error.
    adding = [str(n) for n in plan.guarded if str(n) not in kept]
    run.did(route_table=plan.route_table, guarded=(*kept, *adding))
    for network in plan.guarded:
        routes.guard(inside, network, plan.route_table)


def _routes(run: Run) -> None:
    plan, inside = run.plan, run.inside
    _guards(run)
    # Podman's default routes, read once; a rerun finds them gone already
    # and carries over what the run it replaces removed.
    defaults = routes.default_routes(inside, plan.delete_default | plan.reply_path)
    for route in run.record.removed_routes:  # carried over, no longer to be removed
        if _version(route) not in plan.delete_default:
            routes.restore_route(inside, route)
            run.did(removed_routes=tuple(r for r in run.record.removed_routes if r != route))
    # Noted before they go, in one write: putting back a route that is
    # still there replaces it with itself.
    removing = [route for version in sorted(plan.delete_default) for route in defaults[version]]
    new = [route for route in removing if route not in run.record.removed_routes]
    if new:
        run.did(removed_routes=(*run.record.removed_routes, *new))
    for route in removing:
        routes.delete_route(inside, route)
    for network in plan.routes:
        routes.replace_route(inside, network, device=plan.interface, table=plan.route_table)
    for extra in plan.extra_routes:
        routes.replace_route(inside, extra.target, gateway=str(extra.gateway))
    for version in sorted(plan.reply_path):
        way_back = defaults[version] or [
            r for r in run.record.removed_routes if _version(r) == version
        ]
        if way_back:  # else there is no other way back than the tunnel
            # Noted first: clearing a reply path that is half there is safe.
            if version not in run.record.reply_path:
                run.did(reply_path=(*run.record.reply_path, version))
            routes.set_reply_path(inside, version, plan.names.reply_mark, way_back)


def _version(route: RouteSpec) -> int:
    return VERSION_BY_AF[int(route["family"])]


def _nftables(run: Run) -> None:
    ruleset = nft.render(run.plan, run.inside.local_networks(skip=run.plan.interface))
    if ruleset is not None:
        nft_apply.apply(run.netns_fd, ruleset)  # one transaction: all or nothing
        run.did(nftables=True)


def _dns(run: Run) -> None:
    plan, record = run.plan, run.record
    if plan.dns is None or run.resolv_conf is None:
        if record.resolv_conf:  # carried over
            dns.put_back(run.runtime, record)
            dns.remove_own(run.runtime, plan.container_id)
            run.did(resolv_conf=None, resolv_conf_original=None, own_resolv_conf=False)
        return
    own = run.dns_mount_point is not None or record.own_resolv_conf
    if record.resolv_conf_original is not None and record.resolv_conf == str(run.resolv_conf):
        # A rerun: podman's text is what the first run read.  The file now
        # holds whatever the container (any pod member) wrote into it, and
        # is replaced whole, never read.
        original = record.resolv_conf_original
    else:
        original = dns.read(run.resolv_conf)
    text = dns.render(plan.dns, original)
    # podman's file, for whoever shares it (pod members, --network
    # container:); podman 5 leaves the file of a container it creates empty
    # until after this hook, then writes it whole: that one is podman's.
    if original or not own:
        run.did(resolv_conf=str(run.resolv_conf), resolv_conf_original=original)
        dns.write_in_place(run.resolv_conf, text)
    if own:
        run.did(resolv_conf=str(run.resolv_conf), own_resolv_conf=True)
        path = dns.write_own(run.runtime, plan.container_id, text, like=run.resolv_conf)
        if run.dns_mount_point is not None:
            dns.mount_own(plan.pid, path, run.dns_mount_point)


def _greeted(run: Run) -> None:
    """The first handshake, started while the hook still works, not at
    the container's first packet (DeviceSetup.greeters): only once the
    record is complete, so that a start refused at the last key check never
    greets the peer it shares a key with (the peer would take its session
    over the other container's)."""
    assert run.backend is not None
    greeters = run.device.greeters()
    if greeters:
        run.backend.set_keepalives(run.record, dict.fromkeys(greeters, GREETING_KEEPALIVE))
        run.backend.set_keepalives(run.record, dict.fromkeys(greeters, 0))


def _finish(run: Run) -> None:
    # Again, with the check and the completed record one step for all
    # hooks: of two starting with one key at once, the first here
    # completes, and the second sees its record (an incomplete one is a
    # hook still on its way here, or one killed before: not a tunnel).
    with keys_lock(run.runtime):
        completed = [other for other in records.read_all(run.runtime) if other.complete]
        check_key_unused(run.plan, completed, run.record.netns)
        run.did(complete=True, writer=None, failed=None, failed_at=None)


# The setup, in order.  ``fault_injection_kill_after`` (tests only) names
# one of these.
STEPS: tuple[tuple[str, Callable[[Run], None]], ...] = (
    ("replace", _replace),
    ("create", _create),
    ("configure", _configure),
    ("move", _move),
    ("address", _address),
    ("routes", _routes),
    ("nftables", _nftables),
    ("dns", _dns),
    ("record", _finish),
    ("greeted", _greeted),
)
STEP_NAMES = tuple(name for name, _ in STEPS)


def up(
    runtime: Runtime,
    plan: Plan,
    spec: Bundle,
    settings: Settings,
    *,
    replacing: TunnelRecord | None = None,
    wanted: Callable[[], bool] | None = None,
    creating: bool = False,
    ready: Ready | None = None,
) -> TunnelRecord:
    """Set up the tunnel of ``plan``; on any failure take down what was done
    and raise.  The container's namespace is opened once, and that fd is
    the one every step uses.  ``replacing`` (a repair): the record this
    run is to replace; unless the namespace opened is proven to be that
    record's (the process found in it is the record's container process,
    pid and start time, and the namespace the recorded one), or if, under
    the namespace's lock, the record is another one (a hook set the tunnel
    up anew meanwhile) or gone, raise Superseded and do nothing.
    ``wanted`` (a daemon's worker): whether its hook still waits, asked
    under the lock; if not, the hook does the work itself: Superseded.
    ``creating``: the container is being created (createRuntime), its
    process not yet started, its mount namespace the runtime's to finish.
    ``ready``: an interface the daemon made ahead (pool.py), for the
    create step to take if it can."""
    if plan.pid <= 0:
        raise StateError(f"container {plan.container_id[:12]} has no process (pid {plan.pid})")
    fault = settings.fault_injection_kill_after
    if fault is not None and fault not in STEP_NAMES:
        raise SettingsError(
            settings.source, "fault_injection_kill_after", f"one of {', '.join(STEP_NAMES)}"
        )
    device = device_setup(plan)
    resolv_conf = dns.check_resolv_conf(spec, plan.container_id) if plan.dns else None
    prune_stale(runtime)
    with open_netns(plan.netns_path) as netns_fd, namespace_lock(runtime, netns_fd):
        if is_host_netns(netns_fd):
            raise StateError(f"container {plan.container_id[:12]} uses the host network namespace")
        netns = NetnsId.of(spec.netns_path or plan.netns_path, netns_fd)
        start = process_start_in(plan.pid, netns)
        if start is None:
            raise StateError(f"container {plan.container_id[:12]}: process {plan.pid} is gone")
        if replacing is not None:
            _prove_same(replacing, ProcessId(plan.pid, start), netns)
            if records.read(runtime, plan.container_id) != replacing:
                raise Superseded(f"container {plan.container_id[:12]}: its record changed")
        if wanted is not None and not wanted():
            raise Superseded(f"container {plan.container_id[:12]}: its hook gave up waiting")
        with Netlink() as host, Netlink(netns_fd, "container") as inside:
            others = records.read_all(runtime)  # once, under the lock, for both checks
            shared = _shared_tunnel(runtime, plan, inside, netns, others)
            if shared is not None:
                return shared
            check_key_unused(plan, others, netns)
            previous = _converge(runtime, plan, inside, netns)
            _clear_leftovers(runtime, plan.names.temp_name, inside if runtime.rootless else host)
            record = _new_record(plan, ProcessId(plan.pid, start), netns, spec.directory, previous)
            run = Run(
                runtime,
                plan,
                host,
                inside,
                netns_fd,
                device,
                resolv_conf,
                record,
                dns_mount_point=(
                    dns.mount_point(plan.pid, spec.rootfs)
                    if creating and resolv_conf and dns.is_own(resolv_conf, plan.container_id)
                    else None
                ),
                previous=previous,
                ready=ready,
            )
            execute(run, STEPS, kill_after=fault)
    log.info(
        "container %s: %s up (%s backend, %d peer(s))",
        plan.container_id[:12],
        plan.interface,
        run.record.backend,
        len(plan.config.peers),
    )
    return run.record


def repair(runtime: Runtime, record: TunnelRecord, settings: Settings) -> TunnelRecord:
    """Set a tunnel up again in its container's namespace, from its record:
    the same annotations and bundle, the config read anew (as a restart
    would), without restarting the container.

    Only in a namespace proven to be the record's (see up): a process that
    got the container's pid, or a namespace that got its inode number, gets
    nothing, above all no key.  Refused before anything is read or written:
    a record that does not name its container's process whole (an older
    wg-pod's: StateError), a container whose process or namespace is gone
    (Superseded: the daemon's scan prunes the record once its namespace is)."""
    name = record.container_id[:12]
    container = record.container()
    if container is None:
        raise StateError(
            f"container {name}: its record (of an older wg-pod) does not tell its process "
            "from a later one with its pid: not repaired (restart the container)"
        )
    if not container.alive():
        raise Superseded(f"container {name}: its process {container.pid} is gone")
    if not record.netns.alive():
        raise Superseded(f"container {name}: its network namespace is gone")
    state = _state_of(record)
    try:
        plan = prepare(state, settings, runtime)
        spec = read_bundle(state.bundle)
    except WgPodError as exc:  # nothing touched: the namespace stays as it is, closed
        if records.read(runtime, record.container_id) == record:
            _mark_failed(runtime, record, describe(exc))
        raise
    if spec.netns_path is None:
        spec = replace(spec, netns_path=record.netns.path)
    log.info("container %s: repairing %s", record.container_id[:12], record.interface)
    return up(runtime, plan, spec, settings, replacing=record)


def _state_of(record: TunnelRecord) -> ContainerState:
    """The container as its hook was handed it, from its record."""
    return ContainerState(
        id=record.container_id,
        status="running",
        pid=record.container_pid or 0,
        bundle=PurePosixPath(record.bundle) if record.bundle else None,
        annotations=dict(record.annotations),
    )


@dataclass(frozen=True)
class Reloaded:
    """What a reload changed: peers and routes (prefixes) added and
    removed; the peers that stayed were set again as the config has them."""

    peers_added: tuple[str, ...]
    peers_removed: tuple[str, ...]
    routes_added: tuple[str, ...]
    routes_removed: tuple[str, ...]

    def __str__(self) -> str:
        parts = [
            f"{label} {', '.join(items)}"
            for label, items in (
                ("peer added", self.peers_added),
                ("peer removed", self.peers_removed),
                ("route added", self.routes_added),
                ("route removed", self.routes_removed),
            )
            if items
        ]
        return "; ".join(parts) or "peers set again, nothing added or removed"


def reload(runtime: Runtime, record: TunnelRecord, settings: Settings) -> Reloaded:
    """Apply the config of a running tunnel, as it is now, in place, as
    ``wg syncconf`` does: its peers (added, removed, their keys, endpoints,
    keepalives and AllowedIPs), its own key, ListenPort and FwMark, and the
    routes and guards that follow AllowedIPs; no interface rebuilt, no
    session with a peer that stays dropped.

    Nothing changes when the config is now invalid (its error is raised),
    when it changes what only a restart can (plan.fixed: ReloadRefused), or
    when the tunnel is not the record's any more (Superseded).  A failure
    while it changes things marks the record failed, with what keeps the
    namespace closed in place, as a failed repair does: the daemon's repair
    then sets the tunnel up anew from the config."""
    name = record.container_id[:12]
    if record.shared_with:
        raise StateError(f"container {name} shares the tunnel of {record.shared_with[:12]}")
    if not record.complete or record.failed:
        raise StateError(
            f"container {name}: its tunnel is not up ({record.failed or 'setup incomplete'}); "
            "its repair reads the config anew"
        )
    if record.fixed is None:
        raise StateError(
            f"container {name}: its record (of an older wg-pod) does not say what a reload "
            "may change: restart the container"
        )
    container = record.container()
    if container is None or not container.alive() or not record.netns.alive():
        raise Superseded(f"container {name}: its process or its network namespace is gone")
    plan = prepare(_state_of(record), settings, runtime)
    wanted = fixed(plan)
    changed = [
        f"{what} ({record.fixed.get(what, '?')} -> {value})"
        for what, value in wanted.items()
        if record.fixed.get(what) != value
    ]
    if changed:
        raise ReloadRefused(
            f"container {name}: {plan.config.source} changes {'; '.join(changed)}: "
            "a running tunnel cannot take that in place; restart the container "
            "(nothing was changed)"
        )
    device = device_setup(plan)  # the endpoints resolved before anything changes
    with open_netns(record.netns.path, record.netns) as netns_fd, namespace_lock(runtime, netns_fd):
        netns = NetnsId.of(record.netns.path, netns_fd)
        start = process_start_in(container.pid, netns)
        _prove_same(record, ProcessId(container.pid, start or 0), netns)
        if records.read(runtime, record.container_id) != record:
            raise Superseded(f"container {name}: its record changed")
        with keys_lock(runtime), Netlink(netns_fd, "container") as inside:
            check_key_unused(plan, [r for r in records.read_all(runtime) if r.complete], netns)
            return _sync(runtime, record, plan, device, inside, netns_fd)


def _sync(
    runtime: Runtime,
    record: TunnelRecord,
    plan: Plan,
    device: DeviceSetup,
    inside: Netlink,
    netns_fd: int,
) -> Reloaded:
    """reload's changes, guards first and last: a prefix the tunnel now
    routes is guarded before its peer may carry it; one it no longer
    routes loses its guard after its route."""
    old = set(record.guarded)
    new = [str(n) for n in plan.guarded]
    added = [n for n in plan.guarded if str(n) not in old]
    gone = [ip_network(g) for g in record.guarded if g not in set(new)]
    # Noted before they are added, as the setup does.
    noted = replace(record, guarded=(*record.guarded, *map(str, added)))
    records.write(runtime, noted)
    try:
        for network in added:
            routes.guard(inside, network, plan.route_table)
        if plan.uses_ipv6:
            inside.enable_ipv6(plan.interface)
        backends.of(record, runtime).sync(record, device, netns_fd)
        for network in plan.routes:
            routes.replace_route(inside, network, device=plan.interface, table=plan.route_table)
        for network in gone:
            routes.delete_tunnel_route(inside, network, plan.interface, plan.route_table)
            routes.unguard(inside, network, plan.route_table)
    except BaseException as cause:
        reason = describe(cause) if isinstance(cause, WgPodError) else _internal(cause)
        _mark_failed(runtime, noted, f"reload: {reason}")
        raise
    peers = plan.peer_public_keys
    records.write(
        runtime,
        replace(
            noted,
            guarded=tuple(new),
            public_key=plan.public_key,
            peer_public_keys=tuple(sorted(peers)),
            followed=plan.host_name_endpoints,
            sources=dict(plan.config.files),
        ),
    )
    log.info("container %s: %s reloaded", record.container_id[:12], plan.interface)
    return Reloaded(
        peers_added=tuple(sorted(peers - set(record.peer_public_keys))),
        peers_removed=tuple(sorted(set(record.peer_public_keys) - peers)),
        routes_added=tuple(map(str, added)),
        routes_removed=tuple(map(str, gone)),
    )


def _prove_same(record: TunnelRecord, container: ProcessId, netns: NetnsId) -> None:
    """Superseded unless ``container`` (the process found in the namespace
    just opened) is ``record``'s container process, and ``netns`` its
    namespace (the same cookie, where the kernel gives one)."""
    name = record.container_id[:12]
    if record.container() != container:
        raise Superseded(f"container {name}: process {container.pid} is not its container's")
    if not record.netns.same(netns):
        raise Superseded(f"container {name}: its process is no longer in the tunnel's namespace")


def execute(
    run: Run, steps: Sequence[tuple[str, Callable[[Run], None]]], kill_after: str | None = None
) -> None:
    """Run ``steps`` in order; on any failure take down what they did (from
    the record) and raise.  ``kill_after`` (tests only) SIGKILLs the hook
    right after that step, as a crash there would."""
    try:
        for name, step in steps:
            step(run)
            if name == kill_after:
                log.warning("fault injection: killing the hook after %s", name)
                os.kill(os.getpid(), signal.SIGKILL)
    except BaseException as exc:
        _roll_back(run, exc)
        raise


def _new_record(
    plan: Plan,
    container: ProcessId,
    netns: NetnsId,
    bundle: str | None,
    previous: TunnelRecord | None,
) -> TunnelRecord:
    """The record before the first step; what a previous run in this
    namespace replaced (podman's default routes and resolv.conf) is still
    to be put back one day, so it carries over."""
    return _record(
        plan,
        netns,
        container_pid=container.pid,
        container_start=container.start,
        writer=ProcessId.mine(),
        temp_name=plan.names.temp_name,
        annotations=dict(plan.annotations),
        bundle=bundle,
        **(_carried_over(previous) if previous else {"route_table": plan.route_table}),
        public_key=plan.public_key,
        peer_public_keys=tuple(sorted(plan.peer_public_keys)),
        followed=plan.host_name_endpoints,
        fixed=fixed(plan),
        sources=dict(plan.config.files),
    )


def _carried_over(previous: TunnelRecord) -> dict[str, Any]:
    """What a run that replaces ``previous`` takes over from it: what it
    replaced (podman's default routes and resolv.conf), and the protections
    it left in place (nftables table, reply path, unreachable routes), which
    this run's steps then replace; a failure in between takes them down."""
    return {
        "removed_routes": previous.removed_routes,
        "resolv_conf": previous.resolv_conf,
        "resolv_conf_original": previous.resolv_conf_original,
        "own_resolv_conf": previous.own_resolv_conf,
        "nftables": previous.nftables,
        "reply_path": previous.reply_path,
        "route_table": previous.route_table,
        "guarded": previous.guarded,
    }


def _record(plan: Plan, netns: NetnsId, **fields: Any) -> TunnelRecord:
    return TunnelRecord(
        container_id=plan.container_id,
        interface=plan.interface,
        config=str(plan.config_path),
        netns=netns,
        created=time.time(),
        **fields,
    )


def _roll_back(run: Run, cause: BaseException) -> None:
    """Take down what the failed setup did; the error that started it is
    the one reported.

    A fresh start, with nothing running yet, is undone completely.  A run
    that replaced another takes down only what it made itself (its
    interface and backend): the kill switch, the guards, podman's removed
    default routes and the DNS redirect stay, and so does the record,
    marked failed, for ``status``, ``health`` and the daemon's next try."""
    replacing = run.previous is not None
    try:
        teardown(run.runtime, run.record, replacing=replacing, inside=run.inside)
    except WgPodError as exc:
        log.warning("container %s: rollback incomplete: %s", run.plan.container_id[:12], exc)
    if replacing:
        reason = describe(cause) if isinstance(cause, WgPodError) else _internal(cause)
        failed = replace(run.record, moved=False, process=None, complete=False, writer=None)
        _mark_failed(run.runtime, failed, reason)


def _internal(cause: BaseException) -> str:
    return f"internal error {type(cause).__name__}"


def _mark_failed(runtime: Runtime, record: TunnelRecord, reason: str) -> None:
    """Keep ``record`` as the tunnel's, marked failed with a one-line
    reason: nothing of it is undone, so what keeps the namespace closed
    stays noted, to be put back only when the tunnel goes for good."""
    records.write(runtime, replace(record, failed=reason, failed_at=time.time()))
    log.error("container %s: tunnel down, kept closed: %s", record.container_id[:12], reason)


def check_key_unused(
    plan: Plan, others: Sequence[TunnelRecord], netns: NetnsId | None = None
) -> None:
    """Refuse a private key that another live tunnel already uses towards
    one of the same peers: a peer keeps one endpoint per public key, so
    both tunnels would lose packets and handshakes, without a word.

    The same key towards other peers is fine (one provider key on two
    servers), and so is the tunnel of this container's own namespace (a
    rerun, or the pod member whose tunnel this one shares).  Keys are
    compared by their public halves, which the records of the other
    tunnels hold (``others``).
    """
    for other in others:
        common = plan.peer_public_keys & set(other.peer_public_keys)
        if (
            other.container_id == plan.container_id
            or other.shared_with
            or other.public_key != plan.public_key
            or not common
            or (netns is not None and other.netns.same(netns))
            or not other.netns.alive()
        ):
            continue
        raise SetupError(
            "check key",
            plan.config.source,
            f"its private key is already in use by container {other.container_id[:12]} "
            f"(tunnel {other.interface}) towards peer {min(common)}; the peer keeps one "
            "endpoint per key, so both tunnels would flap: give each container a key of its "
            "own (wg genkey)",
        )


def _clear_leftovers(runtime: Runtime, name: str, birth: Netlink) -> None:
    """A hook killed before its first record leaves things under this
    container's derived name (``birth``: where its interface was born);
    clear them so this start can use the name."""
    every = backends.every(runtime)
    if birth.index(name) is None and not any(backend.left_behind(name) for backend in every):
        return
    log.info("clearing leftovers of an earlier hook: %s", name)
    for backend in every:
        backend.clear(name)
    birth.delete_link(name)


def _automatic_mtu(host: Netlink, device: DeviceSetup) -> int:
    endpoints = [str(setup.endpoint[0]) for setup in device.peers if setup.endpoint]
    mtus = [mtu for mtu in map(host.route_mtu, endpoints) if mtu]
    if not mtus:  # as wg-quick: no endpoint route, so the default route's
        mtus = [mtu for mtu in [routes.default_route_mtu(host)] if mtu]
    mtu = automatic_mtu(mtus)
    log.debug("automatic MTU %d from route MTUs %s", mtu, mtus)
    return mtu


def _shared_tunnel(
    runtime: Runtime, plan: Plan, inside: Netlink, netns: NetnsId, others: list[TunnelRecord]
) -> TunnelRecord | None:
    """Pod members share one namespace: the first one's tunnel serves all.

    One wg-pod tunnel per namespace (its nftables table is the namespace's).
    Returns this container's record when another container's tunnel with the
    same config and name already lives there; refuses a different one.
    """
    for owner in others:
        if (
            owner.container_id == plan.container_id
            or owner.shared_with
            or not owner.complete
            or not owner.netns.same(netns)
            or inside.index(owner.interface) is None
        ):
            continue
        if (owner.config, owner.interface) != (str(plan.config_path), plan.interface):
            raise SetupError(
                "join shared namespace",
                plan.interface,
                f"the namespace already carries container {owner.container_id[:12]}'s "
                f"tunnel {owner.interface} from {owner.config}",
            )
        record = _record(plan, netns, shared_with=owner.container_id, complete=True)
        records.write(runtime, record)
        log.info(
            "container %s: shares %s of container %s",
            plan.container_id[:12],
            plan.interface,
            owner.container_id[:12],
        )
        return record
    return None


def _converge(runtime: Runtime, plan: Plan, inside: Netlink, netns: NetnsId) -> TunnelRecord | None:
    """A namespace that kept this container's tunnel (or the leftovers of a
    hook killed mid-way) is set up anew: the previous run's record is
    returned, which holds what that run took away (podman's default routes,
    resolv.conf) for a later teardown to put back; the first step (_replace)
    takes its interface down."""
    previous = records.read(runtime, plan.container_id)
    if previous is not None and not previous.netns.same(netns):
        previous = None  # another namespace's: the prune took it down
    if inside.index(plan.interface) is not None and (
        previous is None or previous.interface != plan.interface
    ):
        raise SetupError(
            "create interface",
            plan.interface,
            "an interface of that name already exists in the container's namespace",
        )
    if previous is None:
        return None
    log.info("container %s: replacing its previous tunnel", plan.container_id[:12])
    if not previous.moved and inside.index(previous.interface) is not None:
        previous = replace(previous, moved=True)  # killed between the move and its record
    return previous
