"""Routes and routing rules wg-pod adds and takes away in a namespace: the
tunnel's routes, the unreachable guards beneath them, podman's default
routes (noted, deleted, put back) and the reply path.  Each call works
through the namespace's Netlink (netlink.py)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from ..errors import SetupError
from ..model.config import IPNetwork
from ..state.records import RouteSpec
from . import rtnl
from ._pyroute2 import NetlinkError, rtmsg
from .netlink import AF_BY_VERSION, GONE, VERSION_BY_AF, Netlink, netlink_step

log = logging.getLogger(__name__)

# Metric of the unreachable routes that guard a tunnel's prefixes: above any
# route of the tunnel's, so they only answer while its interface is gone.
GUARD_METRIC = 2**31 - 1
# Metric of the tunnel's IPv6 default route: below the kernel's 1024, which
# a default route learned from a router advertisement gets (slirp4netns
# sends them): one that comes back after delete-default never wins.
TUNNEL_DEFAULT_METRIC_V6 = 512
REPLY_RULE_PRIORITY = 32700  # and the ones beside it: before the main table's 32766
MAIN_TABLE = 254


def replace_route(
    nl: Netlink,
    destination: IPNetwork,
    *,
    device: str | None = None,
    gateway: str | None = None,
    table: int | None = None,
) -> None:
    spec = _route_spec(nl, destination, device, table)
    if gateway is not None:
        spec["gateway"] = gateway
    log.debug("%s: route %s", nl.label, spec)
    via = f" via {gateway}" if gateway else f" dev {device}"
    netlink_step("add route", f"{destination}{via}", lambda: _replace(nl, spec))


def delete_tunnel_route(
    nl: Netlink, destination: IPNetwork, device: str, table: int | None
) -> None:
    """The route of ``destination`` through ``device`` (replace_route's)
    goes; one already gone is no error."""
    spec = _route_spec(nl, destination, device, table)
    log.debug("%s: delete route %s", nl.label, spec)
    try:
        _delete(nl, spec)
    except NetlinkError as exc:
        if exc.code not in GONE:
            raise SetupError(
                "delete route", f"{destination} dev {device}", os.strerror(exc.code)
            ) from None


def _route_spec(
    nl: Netlink, destination: IPNetwork, device: str | None, table: int | None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"dst": str(destination), "family": AF_BY_VERSION[destination.version]}
    if device is not None and destination.version == 6 and destination.prefixlen == 0:
        spec["priority"] = TUNNEL_DEFAULT_METRIC_V6
    if device is not None:
        spec["oif"] = nl.require(device)
    if table is not None:
        spec["table"] = table
    return spec


def guard(nl: Netlink, destination: IPNetwork, table: int | None) -> None:
    """An unreachable route for ``destination`` below the tunnel's own
    (metric GUARD_METRIC): with the interface gone, its traffic fails
    instead of falling back to another route."""
    log.debug("%s: guard %s (table %s)", nl.label, destination, table or "main")
    spec = _guard_spec(destination, table)
    netlink_step("add unreachable route", str(destination), lambda: _replace(nl, spec))


def unguard(nl: Netlink, destination: IPNetwork, table: int | None) -> None:
    try:
        _delete(nl, _guard_spec(destination, table))
    except NetlinkError as exc:
        if exc.code not in GONE:
            raise SetupError(
                "delete unreachable route", str(destination), os.strerror(exc.code)
            ) from None


def _guard_spec(destination: IPNetwork, table: int | None) -> dict[str, Any]:
    return {
        "dst": str(destination),
        "family": AF_BY_VERSION[destination.version],
        "type": "unreachable",
        "priority": GUARD_METRIC,
        "table": table or MAIN_TABLE,
    }


def default_routes(nl: Netlink, versions: Iterable[int]) -> dict[int, list[RouteSpec]]:
    """Default routes of the main table (unicast: not the tunnel's
    unreachable guard) of each IP version in ``versions``, as ``route del``
    arguments: one dump for all of them."""
    found: dict[int, list[RouteSpec]] = {version: [] for version in versions}
    if not found:
        return found
    family = AF_BY_VERSION[next(iter(found))] if len(found) == 1 else socket.AF_UNSPEC
    request = rtnl.dump_request(rtmsg, family)
    for route in rtnl.main_table_defaults(nl.rtnl.dump(request, rtnl.RTM_GETROUTE)):
        version = VERSION_BY_AF.get(route["family"])
        if version not in found or route.get("RTA_DST") is not None:
            continue
        spec: dict[str, Any] = {
            "family": route["family"],
            "dst_len": 0,
            "table": MAIN_TABLE,
            "proto": route["proto"],
            "priority": route.get("RTA_PRIORITY"),
            "oif": route.get("RTA_OIF"),
            "gateway": route.get("RTA_GATEWAY"),
        }
        found[version].append({k: v for k, v in spec.items() if v is not None})
    return found


def default_route_mtu(nl: Netlink) -> int | None:
    """The MTU of the interface of the first default route (IPv4 first)."""
    defaults = default_routes(nl, (4, 6))
    for version in (4, 6):
        for route in defaults[version]:
            if "oif" in route:
                return nl.link_mtu(int(route["oif"]))
    return None


def restore_route(nl: Netlink, spec: RouteSpec) -> None:
    netlink_step("restore route", str(spec), lambda: _replace(nl, spec))


def delete_route(nl: Netlink, spec: RouteSpec) -> None:
    log.debug("%s: delete route %s", nl.label, spec)
    try:
        _delete(nl, spec)
    except NetlinkError as exc:
        if exc.code not in GONE:
            raise SetupError("delete route", str(spec), os.strerror(exc.code)) from None


def _replace(nl: Netlink, spec: RouteSpec) -> None:
    nl.rtnl.change(rtnl.route(spec, adding=True), rtnl.RTM_NEWROUTE, rtnl.REPLACE)


def _delete(nl: Netlink, spec: RouteSpec) -> None:
    nl.rtnl.change(rtnl.route(spec, adding=False), rtnl.RTM_DELROUTE)


def set_reply_path(nl: Netlink, version: int, mark: int, routes: Sequence[RouteSpec]) -> None:
    """Packets marked ``mark`` leave through ``routes`` (podman's default
    routes, copied into table ``mark``) unless the main table has a route
    for them more specific than a default or the tunnel's halves (podman's
    own subnets).  Replaces an earlier reply path."""
    clear_reply_path(nl, version, mark)
    family = AF_BY_VERSION[version]
    if version == 4:
        # Reverse-path filtering then checks a marked packet's source with
        # its mark, and strict filtering lets it in (wg-quick does the same
        # on the host).
        nl.write_sysctl(
            "net/ipv4/conf/all/src_valid_mark",
            "1",
            ("set up reply path", "src_valid_mark"),
            missing="no such setting in this kernel",
        )
    for route in routes:
        restore_route(nl, {**route, "table": mark})
    log.debug("%s: IPv%d reply path: fwmark %#x, table %d", nl.label, version, mark, mark)
    # A marked packet sent out of one of these interfaces by name (as
    # wireguard-go answers a peer: IP_PKTINFO with the interface its
    # packet came in on) goes by table ``mark`` alone: in the main table it
    # would skip the tunnel's routes (another interface) and meet the
    # unreachable guards, and the kernel would then send it as if its
    # destination were on that link.
    devices = sorted({nl.link_name(int(route["oif"])) for route in routes if "oif" in route})
    rules: list[dict[str, Any]] = [
        *({"table": mark, "priority": REPLY_RULE_PRIORITY - 1, "oifname": d} for d in devices),
        {"table": MAIN_TABLE, "priority": REPLY_RULE_PRIORITY, "suppress_prefixlen": 1},
        {"table": mark, "priority": REPLY_RULE_PRIORITY + 1},
    ]
    for rule in rules:
        netlink_step(
            "add routing rule",
            f"fwmark {mark:#x} lookup {rule['table']}",
            partial(nl.ipr.rule, "add", family=family, fwmark=mark, **rule),
        )


def clear_reply_path(nl: Netlink, version: int, mark: int) -> None:
    """Remove what set_reply_path added; nothing if it is not there."""
    family = AF_BY_VERSION[version]
    what = f"IPv{version} fwmark {mark:#x}"
    netlink_step(
        "delete routing rules", what, lambda: nl.ipr.flush_rules(family=family, fwmark=mark)
    )
    netlink_step(
        "delete routes", f"table {mark}", lambda: nl.ipr.flush_routes(family=family, table=mark)
    )
