"""Plan -> one nftables ruleset text for the container namespace (pure).

The text is applied (nft_apply.py) as one batch, which nftables runs as
one transaction: the table is created, emptied and refilled atomically, so
a re-run converges and a failure leaves the previous state untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, collapse_addresses

from ..errors import SetupError
from .config import IPAddress, IPNetwork
from .oci import is_interface_name
from .plan import Plan

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------
# Values -> rule text.  Each value in a rule comes from one of these helpers,
# which take the parsed value (an ipaddress object, an int, a checked name),
# never the text it was parsed from, and write its canonical form: nothing a
# container's creator typed reaches the ruleset as typed.  A value outside
# its type's rule is refused here too, so the text never depends on every
# caller having checked.
# --------------------------------------------------------------------------

_U32_MAX = 0xFFFFFFFF
# The only protocol words a rule is written with.
_PROTOCOLS = {"tcp": "tcp", "udp": "udp"}


def _refused(what: str, problem: str) -> SetupError:
    return SetupError("render nftables", what, problem)


def _number(value: int, low: int, high: int, what: str) -> str:
    # bool is an int too, and an int subclass could bring its own text.
    if type(value) is not int or not low <= value <= high:
        raise _refused(what, f"not a number in {low}..{high}")
    return f"{value:d}"


def _port(port: int) -> str:
    return _number(port, 1, 65535, "port")


def _protocol(protocol: str) -> str:
    word = _PROTOCOLS.get(protocol)
    if word is None:
        raise _refused("port remapping", "protocol is not tcp or udp")
    return word


def _mark(mark: int) -> str:
    return _number(mark, 0, _U32_MAX, "mark")


def _interface(name: str) -> str:
    """A quoted interface name that follows the interface-name rule (which
    leaves no quote, blank or backslash to escape)."""
    if type(name) is not str or not is_interface_name(name):
        raise _refused("interface name", "not 1-15 of A-Z a-z 0-9 _ = + . - (not starting with -)")
    return f'"{name}"'


_TABLE = re.compile(r"[a-z][a-z0-9-]{0,31}")


def _table(name: str) -> str:
    """A table name of wg-pod's (names.py): nothing to quote."""
    if type(name) is not str or not _TABLE.fullmatch(name):
        raise _refused("table name", "not 1-32 of a-z 0-9 - (starting with a letter)")
    return name


def _address(address: IPAddress) -> str:
    """Rebuilt from its bytes, so the text is canonical and holds the
    address alone: an IPv6Address keeps a zone index in its text, which
    the parsers refuse and this drops besides."""
    if type(address) is IPv4Address:
        return str(IPv4Address(address.packed))
    if type(address) is IPv6Address:
        return str(IPv6Address(address.packed))
    raise _refused("address", "not an IPv4 or IPv6 address")


def _network(network: IPNetwork) -> str:
    if type(network) not in (IPv4Network, IPv6Network):
        raise _refused("network", "not an IPv4 or IPv6 network")
    prefix = _number(network.prefixlen, 0, network.max_prefixlen, "prefix length")
    return f"{_address(network.network_address)}/{prefix}"


def _addresses(addresses: tuple[IPAddress, ...], version: int) -> list[str]:
    """Those of one IP version, rendered (every one checked first)."""
    texts = [_address(a) for a in addresses]
    return [text for text, a in zip(texts, addresses, strict=True) if a.version == version]


def _set(elements: Iterable[str]) -> str:
    """An anonymous set of rendered elements."""
    return "{ " + ", ".join(elements) + " }"


def _port_remap_chain(plan: Plan) -> list[str]:
    interface = _interface(plan.interface)
    rules = [
        f"iifname {interface} {_protocol(r.protocol)} dport {_port(r.if_port)} "
        f"redirect to :{_port(r.container_port)}"
        for r in plan.port_remaps
    ]
    return [
        "chain prerouting {",
        "type nat hook prerouting priority dstnat; policy accept;",
        *rules,
        "}",
    ]


def _reply_chains(plan: Plan) -> list[str]:
    """Connections that arrive outside the tunnel carry the tunnel's reply
    mark, and so do their replies, which the routing rules send back the
    way they came.  So do the packets of the tunnel's own socket when it is
    in the container (it marks what it sends): what comes back to it is
    marked too, for the reverse-path check."""
    if not plan.reply_path:
        return []
    mark = _mark(plan.names.reply_mark)
    interface = _interface(plan.interface)
    own = [] if plan.socket_mark is None else [f"meta mark {mark} ct mark set {mark}"]
    return [
        "chain reply-in {",
        "type filter hook prerouting priority mangle; policy accept;",
        f"iifname != {_set((_interface('lo'), interface))} ct state new ct mark set {mark}",
        # Marked on the way in too, for the reverse-path check.
        f"ct mark {mark} meta mark set {mark}",
        "}",
        "chain reply-out {",
        "type route hook output priority mangle; policy accept;",
        *own,
        f"ct mark {mark} meta mark set {mark}",
        "}",
    ]


def _dns_redirect_chain(plan: Plan) -> list[str]:
    """A DNS query to any other server goes to the tunnel's first resolver
    of its family instead: whatever resolv.conf says, also when something
    writes it after the hook (podman 5 does, after createRuntime), or a
    program asks a server of its own.  A family without a tunnel resolver
    is left to the drop in the output chain."""
    if plan.dns is None or not plan.dns.servers:
        return []
    rules = []
    for family, version in (("ip", 4), ("ip6", 6)):
        servers = _addresses(plan.dns.servers, version)
        if servers:
            target = f"[{servers[0]}]" if version == 6 else servers[0]
            rules.append(
                f"meta l4proto {{ tcp, udp }} th dport 53 {family} daddr != {_set(servers)} "
                f"dnat {family} to {target}"
            )
    return [
        "chain dns-redirect {",
        "type nat hook output priority -100; policy accept;",
        *_own_socket(plan, "return"),
        *rules,
        "}",
        # The query left with the source address of the way to the server
        # it was meant for; through the tunnel it needs the tunnel's own,
        # which the peer accepts from this client.
        "chain dns-source {",
        "type nat hook postrouting priority srcnat; policy accept;",
        f"oifname {_interface(plan.interface)} ct status dnat "
        "meta l4proto { tcp, udp } th dport 53 masquerade",
        "}",
    ]


def _dns_rules(plan: Plan) -> list[str]:
    """DNS may only go to the tunnel's resolvers, whatever resolv.conf says
    (what the redirect sent there passes)."""
    if plan.dns is None or not plan.dns.servers:
        return []
    rules = []
    for family, version in (("ip", 4), ("ip6", 6)):
        servers = _addresses(plan.dns.servers, version)
        match = f"{family} daddr != {_set(servers)} " if servers else ""
        rules.append(
            f"meta nfproto {'ipv4' if version == 4 else 'ipv6'} "
            f"meta l4proto {{ tcp, udp }} th dport 53 {match}drop"
        )
    return rules


def _own_socket(plan: Plan, verdict: str) -> list[str]:
    """The tunnel's own packets, when its socket is in the container
    (rootless), pass: they leave the way podman's default routes go, to
    the endpoint, whatever port it has (53 too)."""
    if plan.socket_mark is None:
        return []
    return [f"meta mark {_mark(plan.socket_mark)} {verdict}"]


def _output_chain(plan: Plan, local_networks: tuple[IPNetwork, ...]) -> list[str]:
    dns = _dns_rules(plan)
    if not plan.kill_switch and not dns:
        return []
    rules = [f"oifname {_interface('lo')} accept", *_own_socket(plan, "accept"), *dns]
    policy = "accept"
    if plan.kill_switch:
        policy = "drop"
        rules += [
            f"oifname {_interface(plan.interface)} accept",
            "ct state established,related accept",
            # Neighbour discovery keeps the podman network itself reachable.
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
        ]
        for family, version in (("ip", 4), ("ip6", 6)):
            nets = [_network(n) for n in _reachable(plan, local_networks, version)]
            if nets:
                rules.append(f"{family} daddr {_set(nets)} accept")
    return [
        "chain output {",
        f"type filter hook output priority filter; policy {policy};",
        *rules,
        "}",
    ]


def _reachable(
    plan: Plan, local_networks: tuple[IPNetwork, ...], version: int
) -> tuple[IPNetwork, ...]:
    """What the kill switch lets out beside the tunnel, in one family: the
    podman network's own subnets, and the targets of the extra routes
    (``wg-pod.add-route``: a LAN the user routed outside the tunnel on
    purpose).  Merged where they overlap: an anonymous set refuses
    overlapping intervals."""
    nets = (*local_networks, *(route.target for route in plan.extra_routes))
    if version == 4:
        return tuple(collapse_addresses(n for n in nets if isinstance(n, IPv4Network)))
    return tuple(collapse_addresses(n for n in nets if isinstance(n, IPv6Network)))


def render(plan: Plan, local_networks: tuple[IPNetwork, ...] = ()) -> str | None:
    """The tunnel's whole table for the namespace, or None when it needs none.

    ``local_networks`` are the podman network's own subnets, which the kill
    switch leaves reachable, as it does the extra routes' targets.
    """
    chains: list[str] = []
    if plan.port_remaps:
        chains += _port_remap_chain(plan)
    chains += _reply_chains(plan)
    chains += _dns_redirect_chain(plan)
    chains += _output_chain(plan, local_networks)
    if not chains:
        return None
    body = "\n".join(
        f"\t{line}" if line.startswith("chain") or line == "}" else f"\t\t{line}" for line in chains
    )
    table = _table(plan.names.table)
    return f"{removal(table)}table inet {table} {{\n{body}\n}}\n"


def removal(table: str) -> str:
    """A batch that removes ``table`` whether or not it exists."""
    table = _table(table)
    return f"add table inet {table}\ndelete table inet {table}\n"
