"""Plan -> one nftables ruleset text for the container namespace (pure),
and its one effect: applying a ruleset there.

The text is applied as one batch, which nftables runs as one transaction:
the table is created, emptied and refilled atomically, so a re-run
converges and a failure leaves the previous state untouched.

It is applied in-process through libnftables (its Python binding,
python3-nftables), from a short-lived thread that enters the container's
network namespace: on Linux a thread's namespace is its own, so the hook's
main thread never moves, and no nsenter and nft are forked.  Without the
binding or the library, ``nsenter --net=PATH -- nft -f -`` applies the same
text: the only external command wg-pod runs to completion, with a deadline,
its argv logged (never a secret) and named by its failure.
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
from typing import Any, TypeVar

from .config import IPNetwork
from .errors import SetupError
from .plan import REPLY_MARK, TABLE_NAME, Plan

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLY_TIMEOUT = 10.0
LIBNFTABLES = "libnftables.so.1"
CLONE_NEWNET = 0x40000000
NETLINK_NETFILTER = 12
ERROR_MAX = 300
# libnftables keeps state between contexts (its interface cache), and a
# thread left behind by the deadline may still be inside it.
_LIBNFTABLES_LOCK = threading.Lock()


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
    """Apply ``ruleset`` in the network namespace at ``netns_path``, as one
    transaction: in-process through libnftables, else with nsenter and nft."""
    new_context = _libnftables()
    if new_context is None:
        _apply_with_nft(netns_path, ruleset)
    else:
        log.debug("apply nftables in %s in-process (libnftables)", netns_path)
        _apply_in_process(new_context, netns_path, ruleset)


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


def _apply_in_process(new_context: Callable[[], Any], netns_path: str, ruleset: str) -> None:
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

    rc, error = in_netns(netns_path, run, APPLY_TIMEOUT)
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


def in_netns(netns_path: str, work: Callable[[Callable[[T], None]], None], timeout: float) -> T:
    """Run ``work(report)`` in a thread of its own that first enters the
    network namespace at ``netns_path``; return what it reports, or raise
    here what it raised before reporting.  The thread may go on tidying up
    after its report; nobody waits for that.

    setns(2) moves only the calling thread, and this one ends with its work:
    the caller's namespace never changes.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []
    answered = threading.Event()

    def report(value: T) -> None:
        outcome.append(value)
        answered.set()

    def run() -> None:
        try:
            _enter_netns(netns_path)
            work(report)
        except BaseException as exc:  # raised again in the caller's thread
            if answered.is_set():
                log.debug("after applying nftables in %s: %s", netns_path, exc)
            failure.append(exc)
        finally:
            answered.set()

    threading.Thread(target=run, name="wg-pod-nft", daemon=True).start()
    if not answered.wait(timeout):
        raise SetupError("apply nftables", "nft", f"no answer within {timeout:g}s")
    if outcome:
        return outcome[0]
    if failure:
        raise failure[0]
    raise SetupError("apply nftables", netns_path, "the worker thread gave no answer")


def _enter_netns(netns_path: str) -> None:
    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        cause = f"open network namespace: {exc.strerror or exc}"
        raise SetupError("apply nftables", netns_path, cause) from None
    try:
        _setns(fd)
    except OSError as exc:
        cause = f"enter network namespace: {exc.strerror or exc}"
        raise SetupError("apply nftables", netns_path, cause) from None
    finally:
        os.close(fd)


def _setns(fd: int) -> None:
    """setns(2) into a network namespace, for the calling thread only:
    os.setns from Python 3.12 on, libc's own before."""
    setns = getattr(os, "setns", None)
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes  # the hook has it loaded already (pyroute2); `wg-pod check` never gets here

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _apply_with_nft(netns_path: str, ruleset: str) -> None:
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
        detail = one_line(done.stderr) or f"exit status {done.returncode}"
        raise SetupError("apply nftables", "nft", detail)
