"""Request + config + settings -> a Plan: every step of the setup as data (pure).

The plan is what ``wg-pod check`` prints and what the lifecycle executes;
nothing in here touches the system.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, collapse_addresses
from pathlib import PurePosixPath

from ..errors import ConfigError
from .config import IPAddress, IPInterface, IPNetwork, WgConfig
from .curve25519 import public_key
from .names import TunnelNames, tunnel_names
from .oci import DnsChoice, ExtraRoute, PortRemap, Request, Toggle, is_interface_name
from .settings import Settings

DEFAULT_MTU = 1420
# WireGuard's overhead over IPv6 (40 IP + 8 UDP + 32 WireGuard), which
# wg-quick subtracts for either family.
OVERHEAD = 80

_EVERYTHING: dict[int, IPNetwork] = {4: IPv4Network("0.0.0.0/0"), 6: IPv6Network("::/0")}
# Two halves of the address space: longer than any default route, so they
# win over podman's default route without removing it.
_HALVES: dict[int, tuple[IPNetwork, IPNetwork]] = {
    4: (IPv4Network("0.0.0.0/1"), IPv4Network("128.0.0.0/1")),
    6: (IPv6Network("::/1"), IPv6Network("8000::/1")),
}


def interface_name(request: Request) -> str:
    """Annotation, else the config file's stem when valid (as wg-quick), else wg0."""
    if request.interface:
        return request.interface
    stem = request.config_path.stem if request.config_path.suffix == ".conf" else ""
    return stem if is_interface_name(stem) else "wg0"


@dataclass(frozen=True)
class DnsPlan:
    servers: tuple[IPAddress, ...]
    search: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    container_id: str
    pid: int
    names: TunnelNames  # of what it creates: host-side name, nftables table, mark
    interface: str
    backend: str  # auto, or one of backends.NAMES
    userspace_command: tuple[str, ...]
    mtu: int | None  # None: from the route towards the endpoints, when it starts
    addresses: tuple[IPInterface, ...]
    route_table: int | None  # None: the main table
    routes: tuple[IPNetwork, ...]  # through the tunnel, longest prefix first
    # Every prefix the tunnel routes, its addresses' subnets included: while
    # its interface is missing, these get unreachable routes instead of
    # another way out (none with Table = off, which routes nothing).
    guarded: tuple[IPNetwork, ...]
    delete_default: frozenset[int]  # IP versions whose podman default route goes
    extra_routes: tuple[ExtraRoute, ...]
    port_remaps: tuple[PortRemap, ...]
    kill_switch: bool
    # IP versions whose replies to connections that arrived outside the
    # tunnel go back the way they came instead of into it (full tunnels),
    # and so does the tunnel's own socket when it is in the container.
    reply_path: frozenset[int]
    dns: DnsPlan | None
    config: WgConfig = field(repr=False)
    # The interface's own public key (base64): what tells tunnels apart
    # without their private keys.
    public_key: str = ""
    annotations: tuple[tuple[str, str], ...] = ()  # the wg-pod.* ones, as given
    # The mark of the tunnel's own UDP socket when the link is born in the
    # container's namespace (a rootless user's: no other namespace is
    # theirs): the reply path's, so its packets leave the way podman's
    # default routes go, and the kill switch lets them.  None: the link is
    # born in the host's namespace, where its socket stays.
    socket_mark: int | None = None

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    @property
    def uses_ipv6(self) -> bool:
        return any(a.version == 6 for a in self.addresses) or any(
            r.version == 6 for r in (*self.routes, *(e.target for e in self.extra_routes))
        )

    @property
    def config_path(self) -> PurePosixPath:
        return PurePosixPath(self.config.source)

    @property
    def peer_public_keys(self) -> frozenset[str]:
        return frozenset(peer.public_key.base64 for peer in self.config.peers)

    @property
    def host_name_endpoints(self) -> dict[str, tuple[str, int]]:
        """The peers whose endpoint is a host name: (host, port) by public key."""
        return {key: (e.host, e.port) for key, e in self.config.host_name_endpoints.items()}


def fixed(plan: Plan) -> dict[str, str]:
    """What a running tunnel cannot take from a changed config in place
    (lifecycle.reload), by the name a refusal gives it, as text: its
    interface and addresses, its MTU and routing table, its DNS, the kill
    switch and the families it is the default route of.  Its peers, their
    keys, endpoints, keepalives and AllowedIPs (the routes), its own key,
    ListenPort and FwMark are not here: those change in place."""
    table = plan.config.interface.table.lower()
    dns = plan.dns
    return {
        "interface name": plan.interface,
        "Address": ", ".join(map(str, plan.addresses)),
        "MTU": str(plan.mtu or "automatic"),
        "Table": "main" if table == "auto" else table,
        "DNS": "off" if dns is None else ", ".join([*map(str, dns.servers), *dns.search]) or "none",
        "kill switch": "on" if plan.kill_switch else "off",
        "full tunnel": ", ".join(f"IPv{v}" for v in sorted(plan.reply_path)) or "none",
    }


def _route_table(config: WgConfig) -> tuple[bool, int | None]:
    """(add routes?, table) from wg-quick's ``Table=``."""
    table = config.interface.table.lower()
    if table == "off":
        return False, None
    if table in {"auto", "main"}:
        return True, None
    if table.isdigit() and 0 < int(table) < 2**32:
        return True, int(table)
    raise ConfigError(
        config.source, config.interface.line, "Table must be auto, off, main or a table number"
    )


def _tunnel_routes(
    config: WgConfig, delete_default: bool, table: int | None
) -> tuple[IPNetwork, ...]:
    """AllowedIPs as routes; like wg-quick, none for a prefix the interface's
    own address already routes in the main table."""
    connected = (
        {address.network for address in config.interface.addresses} if table is None else set()
    )
    prefixes: set[IPNetwork] = set()
    for peer in config.peers:
        for network in peer.allowed_ips:
            if network == _EVERYTHING[network.version] and not delete_default:
                prefixes.update(_HALVES[network.version])
            else:
                prefixes.add(network)
    if delete_default:
        # Podman's default route goes: a family covered in pieces (e.g.
        # 0.0.0.0/1, 128.0.0.0/1) gets the tunnel as its default route, as
        # 0.0.0.0/0 does; the pieces stay, the same way out.
        prefixes.update(_EVERYTHING[version] for version in full_tunnel_versions(config))
    return _longest_first(prefixes - connected)


def _guarded(
    routes: tuple[IPNetwork, ...], config: WgConfig, table: int | None
) -> tuple[IPNetwork, ...]:
    """The tunnel's routes and, in the main table, its addresses' subnets
    (routed by the interface itself, so gone with it)."""
    subnets = (
        {a.network for a in config.interface.addresses if a.network.prefixlen < a.max_prefixlen}
        if table is None
        else set()
    )
    return _longest_first(set(routes) | subnets)


def _longest_first(networks: set[IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(sorted(networks, key=lambda n: (-n.prefixlen, n.version, int(n.network_address))))


def _dns(choice: DnsChoice, config: WgConfig) -> DnsPlan | None:
    if choice.mode == "off":
        return None
    if choice.mode == "list":
        return DnsPlan(choice.servers, choice.search)
    iface = config.interface
    if not iface.dns_servers and not iface.dns_search:
        return None
    return DnsPlan(iface.dns_servers, iface.dns_search)


def automatic_mtu(route_mtus: list[int]) -> int:
    """wg-quick's rule: the smallest MTU on the way to the endpoints, minus
    WireGuard's overhead; 1420 when there is nothing to go by."""
    return min(route_mtus) - OVERHEAD if route_mtus else DEFAULT_MTU


def full_tunnel_versions(config: WgConfig) -> frozenset[int]:
    """IP versions whose whole address space the peers' AllowedIPs cover
    together: ``0.0.0.0/0``, or pieces such as ``0.0.0.0/1, 128.0.0.0/1``
    that generators write to win over an existing default route."""
    allowed = [network for peer in config.peers for network in peer.allowed_ips]
    v4 = collapse_addresses(n for n in allowed if isinstance(n, IPv4Network))
    v6 = collapse_addresses(n for n in allowed if isinstance(n, IPv6Network))
    return frozenset(
        version
        for version, union in ((4, list(v4)), (6, list(v6)))
        if union == [_EVERYTHING[version]]
    )


def _socket_mark(config: WgConfig, names: TunnelNames, socket_inside: bool) -> int | None:
    if not socket_inside:
        return None
    if config.interface.fwmark is not None:
        raise ConfigError(
            config.source,
            config.interface.line,
            f"FwMark: a rootless tunnel's socket is in the container and carries wg-pod's "
            f"own mark ({names.reply_mark}), which routes it outside the tunnel: remove FwMark",
        )
    return names.reply_mark


def build_plan(
    container_id: str,
    pid: int,
    request: Request,
    config: WgConfig,
    settings: Settings,
    *,
    socket_inside: bool = False,
) -> Plan:
    """The plan of a setup; ``socket_inside``: the link is born in the
    container's namespace (rootless), with its socket."""
    names = tunnel_names(container_id)
    socket_mark = _socket_mark(config, names, socket_inside)
    add_routes, table = _route_table(config)
    routes = _tunnel_routes(config, request.delete_default, table) if add_routes else ()
    full = full_tunnel_versions(config) if add_routes and table is None else frozenset()
    toggle = request.kill_switch or settings.kill_switch
    kill_switch = toggle is Toggle.ON or (toggle is Toggle.AUTO and bool(full))
    return Plan(
        container_id=container_id,
        pid=pid,
        names=names,
        interface=interface_name(request),
        backend=settings.backend,
        userspace_command=settings.userspace_command,
        mtu=config.interface.mtu,
        addresses=config.interface.addresses,
        route_table=table,
        routes=routes,
        guarded=_guarded(routes, config, table) if add_routes else (),
        delete_default=frozenset({4, 6}) if request.delete_default else frozenset(),
        extra_routes=request.add_routes,
        port_remaps=request.port_remaps,
        kill_switch=kill_switch,
        reply_path=full if socket_mark is None else frozenset({4, 6}),
        dns=_dns(request.dns, config),
        config=config,
        public_key=base64.b64encode(public_key(config.interface.private_key.raw)).decode(),
        annotations=request.annotations,
        socket_mark=socket_mark,
    )
