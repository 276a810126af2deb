"""Plan -> one nftables ruleset text for the container namespace (pure),
and its one effect: applying a ruleset there.

The text is applied as one batch, which nftables runs as one transaction:
the table is created, emptied and refilled atomically, so a re-run
converges and a failure leaves the previous state untouched.

It is applied in-process through libnftables (its Python binding,
python3-nftables), from a short-lived thread that enters the container's
network namespace: on Linux a thread's namespace is its own, so the hook's
main thread never moves, and no nsenter and nft are forked.  Without the
binding or the library, ``nsenter --net=/proc/self/fd/N -- nft -f -`` (N:
the namespace's fd, passed on) applies the same text: the only external
command wg-pod runs to completion, with a deadline, its argv logged (never
a secret) and named by its failure.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable
from functools import partial
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

from . import namespaces
from .config import IPAddress, IPNetwork
from .errors import SetupError
from .oci import is_interface_name
from .plan import REPLY_MARK, TABLE_NAME, Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLY_TIMEOUT = 10.0
LIBNFTABLES = "libnftables.so.1"
NETLINK_NETFILTER = 12
ERROR_MAX = 300
# libnftables keeps state between contexts (its interface cache), and a
# thread left behind by the deadline may still be inside it.
_LIBNFTABLES_LOCK = threading.Lock()


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


def _networks(networks: tuple[IPNetwork, ...], version: int) -> list[str]:
    texts = [_network(n) for n in networks]
    return [text for text, n in zip(texts, networks, strict=True) if n.version == version]


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
    """Connections that arrive outside the tunnel carry REPLY_MARK, and so
    do their replies, which the routing rules send back the way they came."""
    if not plan.reply_path:
        return []
    mark = _mark(REPLY_MARK)
    interface = _interface(plan.interface)
    return [
        "chain reply-in {",
        "type filter hook prerouting priority mangle; policy accept;",
        f"iifname != {_set((_interface('lo'), interface))} ct state new ct mark set {mark}",
        # Marked on the way in too, for the reverse-path check.
        f"ct mark {mark} meta mark set {mark}",
        "}",
        "chain reply-out {",
        "type route hook output priority mangle; policy accept;",
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


def _output_chain(plan: Plan, local_networks: tuple[IPNetwork, ...]) -> list[str]:
    dns = _dns_rules(plan)
    if not plan.kill_switch and not dns:
        return []
    rules = [f"oifname {_interface('lo')} accept", *dns]
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
            nets = _networks(local_networks, version)
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


def apply(netns_fd: int, ruleset: str) -> None:
    """Apply ``ruleset`` in the network namespace open as ``netns_fd``, as
    one transaction: in-process through libnftables, else with nsenter and
    nft.  The fd the caller opened (and proved to be the container's), never
    a path opened again, which could by now name another namespace."""
    new_context = _libnftables()
    if new_context is None:
        _apply_with_nft(netns_fd, ruleset)
    else:
        log.debug("apply nftables in netns fd %d in-process (libnftables)", netns_fd)
        _apply_in_process(new_context, netns_fd, ruleset)


def preload() -> None:
    """Load libnftables and its binding now (~5 ms), for a process whose
    forks apply rulesets: the daemon, for its workers."""
    _libnftables()


def one_line(text: str) -> str:
    """nft's error text (message, the offending line, a line of carets) as
    one line of at most ERROR_MAX characters."""
    return " ".join(text.split())[:ERROR_MAX]


def _libnftables() -> Callable[[], Any] | None:
    """What makes a libnftables context, or None (logged, with the path
    taken instead) when python3-nftables or libnftables.so.1 is missing.

    Imported here, not with the module: the hook's start time counts, and
    ``wg-pod check`` renders rulesets without ever applying one.
    """
    try:
        binding = importlib.import_module("nftables")
        import ctypes  # loaded by the binding already

        ctypes.CDLL(LIBNFTABLES)  # once per process; each context finds it loaded
    except ImportError as exc:
        missing = f"no Python module nftables ({exc})"
    except OSError as exc:
        missing = f"cannot load {LIBNFTABLES} ({exc})"
    else:
        if hasattr(binding.Nftables, "cmd_from_file"):
            return partial(binding.Nftables, sofile=LIBNFTABLES)
        missing = "Python module nftables without cmd_from_file (too old)"
    log.debug("apply nftables with nsenter and nft: %s", missing)
    return None


def _apply_in_process(new_context: Callable[[], Any], netns_fd: int, ruleset: str) -> None:
    """The whole text as one file, as ``nft -f`` reads it: parsed and
    evaluated first, then sent as one netlink batch.  A file (in memory), not
    a buffer: from a buffer libnftables shows an error with the text's first
    line instead of the failing one, and without a line number.

    The deadline bounds the wait, not the work: a thread cannot be killed.
    libnftables itself never waits (once the batch is sent, which the kernel
    handles within the send, it reads the answers from a non-blocking
    socket), so only a kernel stuck on the namespace's nftables lock could
    hold the thread.  It is a daemon thread, never holding up the hook's
    exit, and the lock keeps a later call out of libnftables until it is done.
    """

    def run(report: Callable[[tuple[int, str]], None]) -> None:
        if not _LIBNFTABLES_LOCK.acquire(timeout=APPLY_TIMEOUT):
            raise SetupError("apply nftables", "nft", "an earlier call is still running")
        try:
            _check_netfilter_socket()
            # Its netlink socket is opened here (nft_ctx_new), so it is this
            # namespace's.
            nft = new_context()
            fd = _in_memory(ruleset)
            try:
                source = f"/proc/self/fd/{fd}"
                rc, _output, error = nft.cmd_from_file(source)
            finally:
                os.close(fd)
            # Named as nft -f - names its input: the message is the one the
            # nsenter path gives.
            report((int(rc), str(error).replace(f"{source}:", "/dev/stdin:")))
            # Freeing the context closes the socket, and that close waits
            # for the kernel to free what the transaction replaced (an RCU
            # grace period, about 10 ms): the caller has its answer already.
            del nft
        finally:
            _LIBNFTABLES_LOCK.release()

    rc, error = in_netns(netns_fd, run, APPLY_TIMEOUT)
    if rc != 0:
        raise SetupError("apply nftables", "nft", one_line(error) or f"libnftables error {rc}")


def _in_memory(ruleset: str) -> int:
    """A close-on-exec memfd holding ``ruleset``, read from its start."""
    try:
        fd = os.memfd_create("wg-pod-ruleset")
    except OSError as exc:
        raise SetupError("apply nftables", "nft", f"memfd: {exc.strerror or exc}") from None
    try:
        with open(fd, "wb", closefd=False) as text:
            text.write(ruleset.encode())
    except OSError as exc:
        os.close(fd)
        raise SetupError("apply nftables", "nft", f"memfd: {exc.strerror or exc}") from None
    return fd


def _check_netfilter_socket() -> None:
    """libnftables ends the whole process (exit(1)) when it cannot open its
    netlink socket, which would leave the rollback undone: try one first."""
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER).close()
    except OSError as exc:
        detail = f"no netfilter netlink socket: {exc.strerror or exc}"
        raise SetupError("apply nftables", "nft", detail) from None


def in_netns(netns_fd: int, work: Callable[[Callable[[T], None]], None], timeout: float) -> T:
    """Run ``work(report)`` in a thread of its own that first enters the
    network namespace open as ``netns_fd``; return what it reports, or raise
    here what it raised before reporting.  The thread may go on tidying up
    after its report; nobody waits for that.

    setns(2) moves only the calling thread, and this one ends with its work:
    the caller's namespace never changes.  The thread enters through a
    duplicate of the fd, its own: the caller may close its fd once the
    deadline passed, and that number may by then be another file's.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    answered = threading.Event()
    try:
        own = os.dup(netns_fd)
    except OSError as exc:
        cause = f"enter network namespace: {exc.strerror or exc}"
        raise SetupError("apply nftables", "network namespace", cause) from None

    def report(value: T) -> None:
        outcome.append(value)
        answered.set()

    def run() -> None:
        try:
            _enter_netns(own)
            work(report)
        except BaseException as exc:  # raised again in the caller's thread
            if answered.is_set():
                log.debug("after applying nftables in netns fd %d: %s", netns_fd, exc)
            failure.append(exc)
        finally:
            answered.set()

    try:
        threading.Thread(target=run, name="wg-pod-nft", daemon=True).start()
    except BaseException:
        os.close(own)
        raise
    if not answered.wait(timeout):
        raise SetupError("apply nftables", "nft", f"no answer within {timeout:g}s")
    if outcome:
        return outcome[0]
    if failure:
        raise failure[0]
    raise SetupError("apply nftables", "network namespace", "the worker thread gave no answer")


def _enter_netns(fd: int) -> None:
    """Move this thread into the namespace open as ``fd``, and close it."""
    try:
        namespaces.enter(fd)
    except OSError as exc:
        cause = f"enter network namespace: {exc.strerror or exc}"
        raise SetupError("apply nftables", "network namespace", cause) from None
    finally:
        os.close(fd)


def _apply_with_nft(netns_fd: int, ruleset: str) -> None:
    # nsenter opens the fd it inherits as its own /proc/self/fd/N: the same
    # namespace, not one a path names by now.
    argv = ["nsenter", f"--net=/proc/self/fd/{netns_fd}", "--", "nft", "-f", "-"]
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(
            argv,
            input=ruleset,
            capture_output=True,
            text=True,
            timeout=APPLY_TIMEOUT,
            check=False,
            pass_fds=(netns_fd,),
        )
    except FileNotFoundError:
        raise SetupError("apply nftables", argv[0], "not installed") from None
    except subprocess.TimeoutExpired:
        raise SetupError("apply nftables", "nft", f"no answer within {APPLY_TIMEOUT:g}s") from None
    if done.returncode != 0:
        detail = one_line(done.stderr) or f"exit status {done.returncode}"
        raise SetupError("apply nftables", "nft", detail)
