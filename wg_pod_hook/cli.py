"""The ``wg-pod`` command (thin): parse arguments, call one function, map
errors to exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__, cdi, hooksd, logs, notify, podman, units
from .errors import (
    AnnotationError,
    BackendUnavailable,
    SetupError,
    StateError,
    WgPodError,
    describe,
)
from .kernel.backends import PeerSetup, Probe, probe
from .model import nft, oci
from .model.bundle import read_bundle
from .model.config import Endpoint
from .model.oci import CONFIG, ContainerState
from .model.plan import Plan
from .model.settings import load_settings
from .runtime import Runtime
from .state import failures, records
from .tunnel import status
from .tunnel.lifecycle import check_key_unused, prepare, reload, up
from .tunnel.resolve import device_setup
from .tunnel.teardown import gc, leave

EXAMPLES = {
    "join": "example: wg-pod join web /etc/wg/wg0.conf --port-remapping 80:8080 --delete-default",
    "leave": "example: wg-pod leave web",
    "status": "example: wg-pod status web --json",
    "reload": "example: wg-pod reload web",
    "check": "example: wg-pod check /etc/wg/wg0.conf --annotation wg-pod.delete-default=true",
    "install": "example: wg-pod install --daemon   (rootless: wg-pod install --user --daemon)",
    "uninstall": "example: wg-pod uninstall --daemon",
    "gc": "example: wg-pod gc",
    "cdi": "example: wg-pod cdi generate && podman run --device wg-pod.dev/tunnel=wg0 IMAGE",
    "daemon": "example: wg-pod daemon   (systemd: wg-pod.service; stop it with SIGTERM)",
    "health": "example: wg-pod health web && echo healthy",
}


def _endpoint_text(setup: PeerSetup) -> str:
    endpoint = setup.peer.endpoint
    if endpoint is None:
        return "(none)"
    if endpoint.ip is not None or setup.endpoint is None:
        return str(endpoint)
    return f"{endpoint} (resolves to {setup.endpoint[0]} now; the hook resolves it at each start)"


def format_plan(plan: Plan, ruleset: str | None, peers: Sequence[PeerSetup] = ()) -> str:
    """The plan as `wg-pod check` prints it; `peers` carry the endpoints as
    resolved (without them, host names are shown as written)."""
    cfg = plan.config
    resolved = {setup.peer.line: setup for setup in peers}
    lines = [
        f"config:      {cfg.source}",
        f"private key: from {cfg.interface.private_key_source or 'the config'}",
        f"interface:   {plan.interface} (created as {plan.names.temp_name} in the host namespace)",
        f"backend:     {plan.backend}",
        f"mtu:         {plan.mtu or 'automatic (route MTU towards the endpoints - 80, else 1420)'}",
        "addresses:   " + (", ".join(map(str, plan.addresses)) or "(none)"),
        "routes:      "
        + (", ".join(map(str, plan.routes)) or "(none)")
        + (f" (table {plan.route_table})" if plan.route_table else ""),
        "unreachable while the interface is missing: "
        + (", ".join(map(str, plan.guarded)) or "(nothing: Table = off)"),
        "delete default routes: "
        + (", ".join(f"IPv{v}" for v in sorted(plan.delete_default)) or "no"),
        "extra routes: "
        + (", ".join(f"{r.target} via {r.gateway}" for r in plan.extra_routes) or "(none)"),
        f"kill switch: {'on' if plan.kill_switch else 'off'}",
        "published ports: "
        + (
            "replies through podman's default route ("
            + ", ".join(f"IPv{v}" for v in sorted(plan.reply_path))
            + ")"
            if plan.reply_path
            else "replies follow the routes (no full tunnel)"
        ),
        "dns:         "
        + (
            " ".join([*map(str, plan.dns.servers), *(f"search:{d}" for d in plan.dns.search)])
            if plan.dns
            else "(unchanged)"
        ),
    ]
    if cfg.interface.listen_port is not None:
        lines.append(f"listen port: {cfg.interface.listen_port}")
    if cfg.interface.fwmark is not None:
        lines.append(f"fwmark:      {cfg.interface.fwmark:#x}")
    for peer in cfg.peers:
        lines.append(f"peer {peer.public_key.base64}")
        setup = resolved.get(peer.line, PeerSetup(peer, None))
        lines.append(f"  endpoint:    {_endpoint_text(setup)}")
        lines.append("  allowed ips: " + (", ".join(map(str, peer.allowed_ips)) or "(none)"))
        if peer.preshared_key is not None:
            lines.append("  preshared key: (set)")
        if peer.persistent_keepalive:
            lines.append(f"  keepalive:   {peer.persistent_keepalive}s")
    lines.append("nftables:")
    lines.append(ruleset.rstrip() if ruleset else "  (no rules)")
    if plan.kill_switch:
        lines.append("  (the kill switch also accepts the podman network's own subnets,")
        lines.append("   read from the container's namespace when it starts)")
    return "\n".join(lines)


def backend_here(plan: Plan, here: Probe) -> str:
    """The backend a setup would take here, what it runs on, and why not
    the ones before it: ``userspace (/usr/bin/wireguard-go; kernel: ...)``."""
    why = here.passed_over or (("as the settings ask",) if plan.backend != "auto" else ())
    return f"{here.name} ({'; '.join((here.runs_on, *why))})"


def plan_json(
    plan: Plan,
    ruleset: str | None,
    peers: Sequence[PeerSetup],
    here: Probe,
    refused: WgPodError | None,
) -> dict[str, Any]:
    """``wg-pod check --json`` (version 1): the plan format_plan prints, as
    data, with the backend here and the verdict.  Public keys only: of the
    private and preshared keys, only where they come from, or that one is set."""
    cfg = plan.config
    resolved = {
        setup.peer.line: str(Endpoint.of(*setup.endpoint))
        for setup in peers
        if setup.endpoint is not None
    }
    return {
        "version": 1,
        "ok": refused is None,
        "problem": None if refused is None else describe(refused),
        "config": cfg.source,
        "private_key_from": cfg.interface.private_key_source or "the config",
        "public_key": plan.public_key or None,
        "interface": plan.interface,
        "host_side_name": plan.names.temp_name,
        "backend": {
            "setting": plan.backend,
            "here": here.name,
            "runs_on": here.runs_on or None,
            "passed_over": list(here.passed_over),
        },
        "mtu": plan.mtu,
        "addresses": [str(a) for a in plan.addresses],
        "routes": [str(r) for r in plan.routes],
        "route_table": plan.route_table,
        "guarded": [str(g) for g in plan.guarded],
        "delete_default": sorted(plan.delete_default),
        "extra_routes": [
            {"target": str(r.target), "gateway": str(r.gateway)} for r in plan.extra_routes
        ],
        "port_remapping": [
            {"if_port": p.if_port, "container_port": p.container_port, "protocol": p.protocol}
            for p in plan.port_remaps
        ],
        "kill_switch": plan.kill_switch,
        "reply_path": sorted(plan.reply_path),
        "dns": None
        if plan.dns is None
        else {"servers": [str(s) for s in plan.dns.servers], "search": list(plan.dns.search)},
        "listen_port": cfg.interface.listen_port,
        "fwmark": cfg.interface.fwmark,
        "peers": [
            {
                "public_key": peer.public_key.base64,
                "endpoint": None if peer.endpoint is None else str(peer.endpoint),
                "endpoint_now": resolved.get(peer.line),  # as the hook would resolve it now
                "allowed_ips": [str(n) for n in peer.allowed_ips],
                "preshared_key": peer.preshared_key is not None,
                "persistent_keepalive": peer.persistent_keepalive,
            }
            for peer in cfg.peers
        ],
        "nftables": ruleset,
    }


def cmd_check(args: argparse.Namespace, runtime: Runtime) -> int:
    annotations = {CONFIG: str(Path(args.config).absolute())}
    for item in args.annotation:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"wg-pod: --annotation {item!r}: expected KEY=VALUE")
        annotations[key] = value
    settings = load_settings(runtime)
    state = ContainerState(
        id="check", status="creating", pid=0, bundle=None, annotations=annotations
    )
    plan = prepare(state, settings, runtime)
    # Host-name endpoints resolve through the hook's own code (same retries,
    # same error), in the host namespace where the hook resolves them.
    device = device_setup(plan)
    ruleset = nft.render(plan)
    here = probe(plan, runtime)
    # The plan stands; what the hook would refuse now (a key a tunnel up
    # now uses, no backend on this machine) fails the check after it.
    refused: WgPodError | None = None
    try:
        check_key_unused(plan, records.read_all(runtime))
        if here.name is None:
            raise BackendUnavailable(
                f"{plan.config.source} is valid, but no backend can run it here: "
                + "; ".join(here.passed_over)
            )
    except WgPodError as exc:
        refused = exc
    if args.json:
        print(json.dumps(plan_json(plan, ruleset, device.peers, here, refused), indent=2))
    else:
        print(format_plan(plan, ruleset, device.peers))
        if refused is None:
            print(f"ok: {plan.config.source} is valid; backend here: {backend_here(plan, here)}")
    if refused is not None:
        raise refused
    return 0


def _join_annotations(args: argparse.Namespace) -> dict[str, str]:
    """The join flags, spelled as the annotations they mirror."""
    annotations = {oci.CONFIG: str(Path(args.config).absolute())}
    if args.port_remapping:
        annotations[oci.PORT_REMAPPING] = ",".join(args.port_remapping)
    if args.add_route:
        annotations[oci.ADD_ROUTE] = ",".join(args.add_route)
    if args.delete_default:
        annotations[oci.DELETE_DEFAULT] = "true"
    for key, value in (
        (oci.INTERFACE, args.interface),
        (oci.DNS, args.dns),
        (oci.KILL_SWITCH, args.kill_switch),
        (oci.PRIVATE_KEY, args.private_key and str(Path(args.private_key).absolute())),
    ):
        if value is not None:
            annotations[key] = value
    return annotations


def _container_id(runtime: Runtime, name_or_id: str, url: str | None) -> str:
    """A record's id (or unique prefix of one) needs no podman; names do."""
    matches = [cid for cid in records.all_ids(runtime) if cid.startswith(name_or_id)]
    if len(name_or_id) >= 12 and len(matches) == 1:
        return matches[0]
    return podman.inspect(name_or_id, url).id


def cmd_join(args: argparse.Namespace, runtime: Runtime) -> int:
    annotations = _join_annotations(args)
    try:
        oci.parse_annotations(annotations)  # here, so errors name the flags
    except AnnotationError as exc:
        raise SystemExit(f"wg-pod: --{exc.key.removeprefix('wg-pod.')}: {exc.problem}") from None
    info = podman.inspect(args.container, args.url)
    if not info.running or info.pid <= 0:
        raise SystemExit(f"wg-pod: container {info.name} is not running")
    settings = load_settings(runtime)
    state = ContainerState(
        id=info.id, status="running", pid=info.pid, bundle=None, annotations=annotations
    )
    plan = prepare(state, settings, runtime)
    # The container's bundle, read as the hook reads it: the same rules for
    # which resolv.conf may be written.
    spec = read_bundle(info.bundle)
    if spec.netns_path is None:
        spec = replace(spec, netns_path=info.netns_path)
    record = up(runtime, plan, spec, settings)
    notify.tell(runtime, "up", record.container_id)
    print(f"{info.name}: {record.interface} up ({record.backend} backend)")
    return 0


def cmd_leave(args: argparse.Namespace, runtime: Runtime) -> int:
    container_id = _container_id(runtime, args.container, args.url)
    leave(runtime, container_id)
    notify.tell(runtime, "down", container_id)
    print(f"{args.container}: left")
    return 0


def cmd_reload(args: argparse.Namespace, runtime: Runtime) -> int:
    """Each named container's tunnel (else every tunnel) takes its config
    as it is now, in place (lifecycle.reload); 1 when one did not."""
    settings = load_settings(runtime)
    if args.container:
        named = [(name, _container_id(runtime, name, args.url)) for name in args.container]
    else:
        named = [
            (r.container_id[:12], r.container_id)
            for r in records.read_all(runtime)
            if r.complete and not r.shared_with
        ]
        if not named:
            print("no tunnels")
    worst = 0
    for name, container_id in named:
        try:
            record = records.load(runtime, container_id)
            if record is not None and record.shared_with:  # a pod member: the owner's
                record = records.load(runtime, record.shared_with)
            if record is None:
                raise StateError("it has no wg-pod tunnel")
            reloaded = reload(runtime, record, settings)
        except WgPodError as exc:
            print(f"wg-pod: {name}: {describe(exc)}", file=sys.stderr)
            worst = 1
            continue
        notify.tell(runtime, "up", record.container_id)
        print(f"{name}: {record.interface} reloaded: {reloaded}")
    return worst


def cmd_status(args: argparse.Namespace, runtime: Runtime) -> int:
    # State it cannot read is not "no tunnels": CannotKnow, exit status 1.
    status.recorded_ids(runtime)
    names = podman.names(args.url)
    failed = status.with_names(failures.recent(runtime), names)
    ids = None
    if args.container:
        # A container that failed to start may be gone (podman run --rm):
        # its kept failure answers by name or id without podman.
        wanted = args.container
        failed = [
            f
            for f in failed
            if wanted in (f.name, f.container_id)
            or (len(wanted) >= 12 and f.container_id.startswith(wanted))
        ]
        try:
            ids = [_container_id(runtime, wanted, args.url)]
        except WgPodError:
            if not failed:
                raise
            ids = []
        if ids and records.read(runtime, ids[0]) is None:
            failed = failed or [f for f in failures.recent(runtime) if f.container_id == ids[0]]
            if not failed:
                raise SystemExit(f"wg-pod: {wanted} has no wg-pod tunnel")
            ids = []
    tunnels = status.collect(runtime, ids, names)
    if args.json:
        print(json.dumps(status.as_json(tunnels, failed=failed), indent=2))
    else:
        print(status.render(tunnels, failed=failed))
    return 0


def cmd_gc(args: argparse.Namespace, runtime: Runtime) -> int:
    for what in gc(runtime):
        print(f"removed {what}")
    return 0


def cmd_daemon(args: argparse.Namespace, runtime: Runtime) -> int:
    from . import daemon  # the loop, and with it netlink: only here

    if runtime.rootless and not runtime.root:  # a user unit: first into podman's namespaces
        from .userns import join_podmans

        join_podmans(os.getuid())
        runtime = Runtime.of_process()
    settings = load_settings(runtime)
    # Under systemd, stderr is the journal already: the syslog lines suffice.
    to_stderr = "JOURNAL_STREAM" not in os.environ
    logs.setup("debug" if args.debug else settings.log_level, stderr=to_stderr)
    daemon.run(runtime, settings)
    return 0


def cmd_health(args: argparse.Namespace, runtime: Runtime) -> int:
    """0 only when every tunnel examined is known healthy (none at all: 0,
    "no tunnels"); 1 when one is not, or the named container has none; 2
    with one line when wg-pod cannot know (state it cannot read, a record
    that vanished, podman that cannot say which container is meant)."""
    try:
        ids = listed = status.recorded_ids(runtime)
        if args.container:
            try:
                ids = [_container_id(runtime, args.container, args.url)]
            except podman.NoSuchContainer as exc:
                return _unhealthy(args, str(exc))
            except podman.PodmanError as exc:
                raise status.CannotKnow(str(exc)) from None
            if ids[0] not in listed:
                return _unhealthy(args, f"{args.container} has no wg-pod tunnel")
        tunnels = status.health_tunnels(runtime, ids, podman.names(args.url))
        states = status.health_states(runtime, tunnels)
    except status.CannotKnow as exc:
        return cannot_know(args, exc)
    code = 0 if all(states[t.container_id].healthy for t in tunnels) else 1
    if args.json:
        print(json.dumps(status.health_json(tunnels, states, code), indent=2))
        return code
    if not tunnels:
        print("no tunnels")
    for tunnel in tunnels:
        shares = f" (shares the tunnel of {tunnel.shared_with[:12]})" if tunnel.shared_with else ""
        label = tunnel.name or tunnel.container_id[:12]
        print(f"{label}: {states[tunnel.container_id].value}{shares}")
    return code


def _unhealthy(args: argparse.Namespace, reason: str) -> int:
    """``health`` of a container that has no tunnel (or is not there): 1."""
    if args.json:
        print(json.dumps(status.health_json([], {}, 1, reason), indent=2))
    print(f"wg-pod: {reason}", file=sys.stderr)
    return 1


def cannot_know(args: argparse.Namespace, exc: status.CannotKnow) -> int:
    """What wg-pod must read cannot be read: one line; exit status 2 for
    ``health`` (cannot know, as it promises), 1 for the others."""
    if args.func is not cmd_health:
        print(f"wg-pod: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status.health_json([], {}, 2, str(exc)), indent=2))
    print(f"wg-pod: cannot tell the health: {exc}", file=sys.stderr)
    return 2


def cmd_doctor(args: argparse.Namespace, runtime: Runtime) -> int:
    """Every check of doctor.py, one line each (or a JSON list); 1 when one
    says FAIL, 0 otherwise (a warn never fails)."""
    from . import doctor  # podman info, every backend's probe: only here

    findings = doctor.examine(runtime, [Path(d) for d in args.hooks_dir])
    if args.json:
        print(json.dumps(doctor.as_json(findings), indent=2))
    else:
        print(doctor.report(findings))
    return doctor.exit_status(findings)


def cmd_install(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.user:
        return _user_unit(args, runtime, install=True)
    hook = args.hook or hooksd.installed()
    state_dir = None if runtime.is_default else runtime.state_dir
    # The hooks and the daemon read the same file, named as it is from anywhere.
    settings = str(Path(args.settings).absolute()) if args.settings else None
    for path in hooksd.install(Path(args.hooks_dir), hook, settings, state_dir):
        print(f"wrote {path}")
    if args.daemon:
        directory = Path(args.systemd_dir or units.ADMIN_DIR)
        unit = units.install(directory, hooksd.installed("wg-pod"), settings=settings)
        print(f"wrote {unit}")
    return 0


def cmd_cdi(args: argparse.Namespace, runtime: Runtime) -> int:
    """``cdi generate``: the CDI spec of every allowed config, written (or
    printed with ``--output -``); ``cdi list``: its devices."""
    configs = cdi.devices(load_settings(runtime).config_dirs)
    if args.action == "list":
        for name, config in configs.items():
            print(f"{cdi.KIND}={name}\t{config}")
        if not configs:
            print("no configs in the allowed directories: no devices")
        return 0
    if args.settings and not Path(args.settings).is_absolute():
        raise SetupError("generate CDI spec", args.settings, "the settings path must be absolute")
    hook = args.hook or hooksd.installed_hook()
    if not Path(hook).is_absolute():
        raise SetupError("generate CDI spec", hook, "the hook path must be absolute")
    state_dir = None if runtime.is_default else runtime.state_dir
    text = cdi.render(cdi.spec(configs, hook, args.settings, state_dir))
    if args.output == "-":
        print(text, end="")
        return 0
    cdi.write(Path(args.output), text)
    print(f"wrote {args.output}: {len(configs)} device(s) {', '.join(configs) or '(none)'}")
    return 0


def cmd_uninstall(args: argparse.Namespace, runtime: Runtime) -> int:
    if args.user:
        return _user_unit(args, runtime, install=False)
    for path in hooksd.uninstall(Path(args.hooks_dir)):
        print(f"removed {path}")
    if args.daemon:
        removed = units.uninstall(Path(args.systemd_dir or units.ADMIN_DIR))
        if removed is not None:
            print(f"removed {removed}")
    return 0


def _user_unit(args: argparse.Namespace, runtime: Runtime, install: bool) -> int:
    """A rootless user's daemon, as a unit of their systemd user manager;
    the hook is the system's (rootless podman runs it from hooks.d)."""
    if not runtime.rootless or runtime.root:
        raise SystemExit(
            "wg-pod: --user: the daemon of a rootless podman user, run as that user "
            "(root's: wg-pod install --daemon)"
        )
    import pwd

    own = units.user_dir(pwd.getpwuid(os.getuid()).pw_dir)
    directory = Path(args.systemd_dir) if args.systemd_dir else own
    if install:
        print(f"wrote {units.install(directory, hooksd.installed('wg-pod'), user=own)}")
    elif (removed := units.uninstall(directory, user=own)) is not None:
        print(f"removed {removed}")
    return 0


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser: ``--debug`` after the subcommand too (``wg-pod
    status --debug``), the same as before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Suppressed when absent: the top level's (before the subcommand) stays.
        self.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="log details to stderr"
        )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="wg-pod",
        description="Join podman containers to WireGuard networks. The main way in: "
        "podman run --annotation wg-pod.config=/etc/wireguard/wg0.conf IMAGE (the hook "
        "sets the tunnel up before the container starts); this command checks configs, "
        "joins running containers, and shows tunnels.",
        epilog="exit status: 0 success, 1 error (one line on stderr), 2 usage error",
    )
    top.add_argument("--version", action="version", version=f"wg-pod {__version__}")
    top.add_argument("--debug", action="store_true", help="log details to stderr")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Subcommand)

    join = sub.add_parser(
        "join", help="put a running container on a WireGuard network", epilog=EXAMPLES["join"]
    )
    join.add_argument("container", help="name or id of a running container")
    join.add_argument("config", help="path of the wg-quick style config")
    join.add_argument(
        "--port-remapping",
        action="append",
        default=[],
        metavar="IFPORT[/PROTO]:CPORT[/PROTO]",
        help="repeatable, or comma lists",
    )
    join.add_argument(
        "--delete-default", action="store_true", help="remove podman's IPv4 and IPv6 default routes"
    )
    join.add_argument(
        "--add-route",
        action="append",
        default=[],
        metavar="TARGET:GATEWAY",
        help="extra route (IPv6 in brackets); repeatable",
    )
    join.add_argument("--interface", help="interface name in the container")
    join.add_argument("--dns", help="auto, off, or a list of servers and search domains")
    join.add_argument("--kill-switch", choices=["auto", "on", "off"])
    join.add_argument(
        "--private-key", metavar="FILE", help="the private key from FILE, not from the config"
    )
    join.set_defaults(func=cmd_join)

    leave_cmd = sub.add_parser(
        "leave", help="remove a container's tunnel and its rules", epilog=EXAMPLES["leave"]
    )
    leave_cmd.add_argument("container", help="name or id")
    leave_cmd.set_defaults(func=cmd_leave)

    status_cmd = sub.add_parser(
        "status",
        help="tunnels wg-pod manages, like wg show",
        description="The tunnels wg-pod manages (the named container's, else all), shaped "
        "like wg show, and the hook's last failures. Exit status 1 with one line when it "
        "cannot read its state (not run as root, nor as the rootless podman user whose "
        "tunnels they are): that is never 'no tunnels'.",
        epilog=EXAMPLES["status"],
    )
    status_cmd.add_argument("container", nargs="?", help="name or id (default: all)")
    status_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    status_cmd.set_defaults(func=cmd_status)

    reload_cmd = sub.add_parser(
        "reload",
        help="apply changed configs to running tunnels in place, as wg syncconf",
        description="Each tunnel takes its config (and key files) as they are now: peers "
        "added and removed, keys, endpoints, keepalives, AllowedIPs with their routes, "
        "ListenPort and FwMark, without rebuilding the interface or dropping a session with "
        "a peer that stays. A change of Address, interface name, MTU, Table, DNS, the kill "
        "switch or which families the tunnel is the default route of needs a restart of the "
        "container: it is refused, and nothing changes; so does a config that is now invalid.",
        epilog=EXAMPLES["reload"],
    )
    reload_cmd.add_argument("container", nargs="*", help="names or ids (default: every tunnel)")
    reload_cmd.set_defaults(func=cmd_reload)

    for command in (join, leave_cmd, status_cmd, reload_cmd):
        command.add_argument(
            "--url",
            help=f"podman API (default: $CONTAINER_HOST, else unix://{podman.DEFAULT_SOCKET})",
        )

    check = sub.add_parser(
        "check",
        help="validate a config and print the plan",
        description="Validates CONFIG (and the annotations given) as the hook would, prints "
        "the plan, and ends with the verdict and the backend a container would get here "
        "('ok: CONFIG is valid; backend here: ...'). Exit status 1, with one line saying "
        "why, when the hook would refuse it now: an invalid config, a private key a running "
        "tunnel uses towards the same peer, or no backend on this machine. Nothing is changed.",
        epilog=EXAMPLES["check"],
    )
    check.add_argument("config", help="path of the wg-quick style config")
    check.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="K=V",
        help="a wg-pod.* annotation, as on podman run (repeatable)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="the plan as data, with the backend here and the verdict (no key material)",
    )
    check.set_defaults(func=cmd_check)

    cdi_cmd = sub.add_parser(
        "cdi",
        help="a CDI device for each allowed config (podman --device, Docker, containerd, CRI-O)",
        description=f"generate writes a CDI spec with one device, {cdi.KIND}=NAME, for "
        "each NAME.conf in the allowed config directories; a container that asks for it "
        "(podman run --device, quadlet AddDevice=, docker run --device) gets that tunnel, "
        "its wg-pod.* annotations adding options. list prints the devices.",
        epilog=EXAMPLES["cdi"],
    )
    cdi_cmd.add_argument("action", choices=["generate", "list"])
    cdi_cmd.add_argument(
        "--output", default=str(cdi.DEFAULT_SPEC), help=f"default: {cdi.DEFAULT_SPEC}; - prints it"
    )
    cdi_cmd.add_argument("--hook", help="absolute path of wg-pod-hook (default: this one)")
    cdi_cmd.add_argument("--settings", help="settings file the hook should use (WG_POD_SETTINGS)")
    cdi_cmd.set_defaults(func=cmd_cdi)

    gcmd = sub.add_parser(
        "gc", help="remove leftovers of hooks that were killed mid-way", epilog=EXAMPLES["gc"]
    )
    gcmd.set_defaults(func=cmd_gc)

    dcmd = sub.add_parser(
        "daemon",
        help="keep every tunnel up: repair in place, health (runs in the foreground)",
        epilog=EXAMPLES["daemon"],
    )
    dcmd.set_defaults(func=cmd_daemon)

    hcmd = sub.add_parser(
        "health",
        help="exit 0 when every (or the named) tunnel is up or idle, 1 otherwise",
        description="Exit status: 0 when every tunnel examined (the named container's, "
        "else all; none at all: 0, 'no tunnels') is up or idle; 1 when one is not, or "
        "the named container has no tunnel; 2 when wg-pod cannot know (it cannot read "
        "its state: not run as root, nor as the rootless podman user whose tunnels they "
        "are; a record or health file it cannot read; a "
        "record that vanished while it read; podman cannot say which container is "
        "meant), with one line saying why. A pod member answers with the tunnel it shares.",
        epilog=EXAMPLES["health"],
    )
    hcmd.add_argument("container", nargs="?", help="name or id (default: all)")
    hcmd.add_argument(
        "--url",
        help=f"podman API (default: $CONTAINER_HOST, else unix://{podman.DEFAULT_SOCKET})",
    )
    hcmd.add_argument(
        "--json",
        action="store_true",
        help="each tunnel's state and the verdict (healthy, unhealthy, unknown), as data",
    )
    hcmd.set_defaults(func=cmd_health)

    doctor_cmd = sub.add_parser(
        "doctor",
        help="check this host for what wg-pod needs, one line each with the fix",
        description="Checks, each ok, warn or FAIL with what was found and a fix: root (or "
        "a rootless podman user's setup), the backend auto would pick (the kernel's "
        "WireGuard, wireguard-go with /dev/net/tun), libnftables, podman and its OCI "
        "runtime, whether podman reads the directory wg-pod's hooks.d definitions are in "
        "(containers.conf hooks_dir), the settings file, the daemon, the CDI spec. "
        "Exit status: 1 when a check says FAIL (containers would start without their "
        "tunnel, or not at all), else 0: warn is kept for what is optional or only "
        "slower (no daemon, no CDI spec, wireguard-go instead of the kernel's WireGuard, "
        "nft instead of libnftables) and does not fail.",
        epilog="example: wg-pod doctor --json",
    )
    doctor_cmd.add_argument(
        "--json", action="store_true", help="a list of {name, status, detail, fix}"
    )
    doctor_cmd.add_argument(
        "--hooks-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="where wg-pod install --hooks-dir put the definitions (repeatable; "
        f"{hooksd.DEFAULT_DIR} and podman's own directories are always looked at)",
    )
    doctor_cmd.set_defaults(func=cmd_doctor)

    for name, func, helptext in (
        ("install", cmd_install, "write the hooks.d definitions for this installation"),
        ("uninstall", cmd_uninstall, "remove the hooks.d definitions"),
    ):
        cmd = sub.add_parser(name, help=helptext, epilog=EXAMPLES[name])
        cmd.add_argument(
            "--hooks-dir", default=str(hooksd.DEFAULT_DIR), help=f"default: {hooksd.DEFAULT_DIR}"
        )
        cmd.add_argument(
            "--daemon",
            action="store_true",
            help=f"also the daemon's {units.NAME} (in {units.ADMIN_DIR}, with systemd "
            "running: enabled and started)"
            if name == "install"
            else f"also stop, disable and remove the daemon's {units.NAME}",
        )
        cmd.add_argument(
            "--user",
            action="store_true",
            help="the daemon of a rootless podman user, as a unit of their systemd user "
            f"manager (in ~/{units.USER_DIR}); the hook is the system's"
            if name == "install"
            else "the rootless user's daemon unit that install --user wrote",
        )
        cmd.add_argument(
            "--systemd-dir",
            help=f"default: {units.ADMIN_DIR}, with --user ~/{units.USER_DIR}",
        )
        if name == "install":
            cmd.add_argument("--hook", help="absolute path of wg-pod-hook (default: this one)")
            cmd.add_argument(
                "--settings",
                help="settings file the hook should use (sets WG_POD_SETTINGS in the definition)",
            )
        cmd.set_defaults(func=func)
    return top


# The commands that work in containers' namespaces: a rootless user's are
# theirs only from within their user namespace, podman's.
IN_USER_NAMESPACE = (cmd_join, cmd_leave, cmd_reload, cmd_status, cmd_gc, cmd_health)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup("debug" if args.debug else "warning", stderr=True)
    try:
        runtime = Runtime.of_process()
    except ValueError as exc:
        print(f"wg-pod: {exc}", file=sys.stderr)
        return 1
    if runtime.rootless and not runtime.root and args.func in IN_USER_NAMESPACE:
        if args.func in (cmd_status, cmd_health):
            # A user with no state of their own (an ordinary one, one without
            # podman): what wg-pod cannot read, not what podman unshare says.
            try:
                status.own_state(runtime)
            except status.CannotKnow as exc:
                return cannot_know(args, exc)
        return in_user_namespace(2 if args.func is cmd_health else 1)
    try:
        return int(args.func(args, runtime))
    except WgPodError as exc:
        logging.getLogger(__name__).debug("failed", exc_info=True)
        print(f"wg-pod: {describe(exc)}", file=sys.stderr)
        return 1


def in_user_namespace(failed: int = 1) -> int:
    """This command again, as uid 0 of this user's rootless user namespace
    (``podman unshare``), where their containers' namespaces are theirs;
    ``failed`` when podman cannot be run."""
    command = ["podman", "unshare", sys.executable, *sys.orig_argv[1:]]
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(
            f"wg-pod: a rootless user's tunnels are reached through podman unshare: "
            f"{command[0]}: {exc.strerror}",
            file=sys.stderr,
        )
    return failed


if __name__ == "__main__":
    sys.exit(main())
