"""Plan -> one nftables ruleset text for the container namespace (pure),
and its one effect: applying a ruleset there.

The text is applied with a single ``nft -f -``, which nftables runs as one
transaction: the table is created, emptied and refilled atomically, so a
re-run converges and a failure leaves the previous state untouched.  That
call is the only external command wg-pod runs to completion: it has a
deadline, logs its argv (never a secret) and its failure names it.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable

from .config import IPNetwork
from .errors import SetupError
from .plan import REPLY_MARK, TABLE_NAME, Plan

log = logging.getLogger(__name__)

APPLY_TIMEOUT = 10.0


def _set(items: Iterable[object]) -> str:
    return "{ " + ", ".join(str(i) for i in items) + " }"


def _port_remap_chain(plan: Plan) -> list[str]:
    rules = [
        f'iifname "{plan.interface}" {r.protocol} dport {r.if_port} redirect to :{r.container_port}'
        for r in plan.port_remaps
    ]
    return [
        "chain prerouting {",
        "type nat hook prerouting priority dstnat; policy accept;",
        *rules,
        "}",
    ]


def _reply_chains(plan: Plan) -> list[str]:
    """Connections that arrive outside the tunnel carry REPLY_MARK, and so
    do their replies, which the routing rules send back the way they came."""
    if not plan.reply_path:
        return []
    return [
        "chain reply-in {",
        "type filter hook prerouting priority mangle; policy accept;",
        f'iifname != {{ "lo", "{plan.interface}" }} ct state new ct mark set {REPLY_MARK}',
        # Marked on the way in too, for the reverse-path check.
        f"ct mark {REPLY_MARK} meta mark set {REPLY_MARK}",
        "}",
        "chain reply-out {",
        "type route hook output priority mangle; policy accept;",
        f"ct mark {REPLY_MARK} meta mark set {REPLY_MARK}",
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
        servers = [s for s in plan.dns.servers if s.version == version]
        if servers:
            target = f"[{servers[0]}]" if version == 6 else str(servers[0])
            rules.append(
                f"meta l4proto {{ tcp, udp }} th dport 53 {family} daddr != {_set(servers)} "
                f"dnat {family} to {target}"
            )
    return [
        "chain dns-redirect {",
        "type nat hook output priority -100; policy accept;",
        *rules,
        "}",
        # The query left with the source address of the way to the server
        # it was meant for; through the tunnel it needs the tunnel's own,
        # which the peer accepts from this client.
        "chain dns-source {",
        "type nat hook postrouting priority srcnat; policy accept;",
        f'oifname "{plan.interface}" ct status dnat '
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
        servers = [s for s in plan.dns.servers if s.version == version]
        match = f"{family} daddr != {_set(servers)} " if servers else ""
        rules.append(
            f"meta nfproto {'ipv4' if version == 4 else 'ipv6'} "
            f"meta l4proto {{ tcp, udp }} th dport 53 {match}drop"
        )
    return rules


def _output_chain(plan: Plan, local_networks: tuple[IPNetwork, ...]) -> list[str]:
    dns = _dns_rules(plan)
    if not plan.kill_switch and not dns:
        return []
    rules = ['oifname "lo" accept', *dns]
    policy = "accept"
    if plan.kill_switch:
        policy = "drop"
        rules += [
            f'oifname "{plan.interface}" accept',
            "ct state established,related accept",
            # Neighbour discovery keeps the podman network itself reachable.
            "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
        ]
        for family, version in (("ip", 4), ("ip6", 6)):
            nets = [n for n in local_networks if n.version == version]
            if nets:
                rules.append(f"{family} daddr {_set(nets)} accept")
    return [
        "chain output {",
        f"type filter hook output priority filter; policy {policy};",
        *rules,
        "}",
    ]


def render(plan: Plan, local_networks: tuple[IPNetwork, ...] = ()) -> str | None:
    """The whole wg-pod table for the namespace, or None when it needs none.

    ``local_networks`` are the podman network's own subnets, which the kill
    switch leaves reachable.
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
    return (
        f"add table inet {TABLE_NAME}\n"
        f"delete table inet {TABLE_NAME}\n"
        f"table inet {TABLE_NAME} {{\n{body}\n}}\n"
    )


def removal() -> str:
    """A batch that removes the table whether or not it exists."""
    return f"add table inet {TABLE_NAME}\ndelete table inet {TABLE_NAME}\n"


def apply(netns_path: str, ruleset: str) -> None:
    """Apply ``ruleset`` in the network namespace at ``netns_path``."""
    argv = ["nsenter", f"--net={netns_path}", "--", "nft", "-f", "-"]
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(
            argv,
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=APPLY_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise SetupError("apply nftables", argv[0], "not installed") from None
    except subprocess.TimeoutExpired:
        raise SetupError("apply nftables", "nft", f"no answer within {APPLY_TIMEOUT:g}s") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:300] or f"exit status {done.returncode}"
        raise SetupError("apply nftables", "nft", detail)
