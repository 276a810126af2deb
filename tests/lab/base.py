"""The lab's basics: one funnel for external commands, waits, keys, names.

:func:`run` runs every command of the lab, :func:`wait_for` bounds every
wait; WireGuard keys come from ``wg``; every object is named ``wgpt...``
(:data:`PREFIX` + :func:`token`); :func:`host_leftovers` lists what wg-pod
left in the host namespace; :func:`allocate_underlay` picks the addresses of
a veth link. Also the switch between this tree and the installed system
(:data:`SYSTEM_PODMAN`) that the rest of the lab reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wg_pod_hook.runtime import Runtime

log = logging.getLogger("wgpt.lab")

REPO = Path(__file__).resolve().parent.parent.parent

# Which podman the podman scenarios (tests/system) drive. Unset: this
# machine's podman with tests/system/containers.conf and this tree's hook
# through a hooks dir of each test. "system" (tests/platform, inside the
# Debian 13 machine): the machine's own podman configuration and runtime,
# the hook definitions the package installed, configs under /etc/wg (which
# the installed default settings allow) and the installed wg-pod command.
PODMAN_MODE_ENV = "WG_POD_TEST_PODMAN"
SYSTEM_PODMAN = os.environ.get(PODMAN_MODE_ENV) == "system"
SYSTEM_CONFIG_ROOT = Path("/etc/wg")
INSTALLED_HOOKS_DIR = Path("/usr/share/containers/oci/hooks.d")

PREFIX = "wgpt"
# A command's prefix that runs it in a mount namespace of its own whose
# /dev/net is an empty tmpfs: no /dev/net/tun there, the host's untouched
# (the namespace's mounts are private to it).
WITHOUT_TUN = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs -o size=64k wgpt-no-tun /dev/net && exec "$@"',
    "sh",
]
# The suite's own state directory (WG_POD_STATE_DIR, set by tests/conftest.py
# but inside the platform machine): records, sockets and locks apart from an
# installed wg-pod's /run/wg-pod.
SUITE_STATE_DIR = Path("/run/wg-pod-tests")
WG_RUN_DIR = Path("/var/run/wireguard")

_UNDERLAY_V4 = ipaddress.IPv4Network("198.18.0.0/15")
_UNDERLAY_SLOTS = _UNDERLAY_V4.num_addresses // 4  # /30s
_FORBIDDEN_NETWORKS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "fd00::/64", "10.88.0.0/16")
)
_allocated_underlays: set[int] = set()


class LabError(RuntimeError):
    """A lab command or wait failed; the message names the command and its stderr."""


def token(nbytes: int = 4) -> str:
    """Random hex string: 8 characters by default, so ``wgpt`` + token + 1 fits IFNAMSIZ."""
    return secrets.token_hex(nbytes)


def _clean_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    base = dict(os.environ if env is None else env)
    for key in list(base):
        if key.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del base[key]
    base.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return base


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    netns: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``netns`` when given) and capture its text output.

    The one funnel for every external command of the lab. A missing program
    is a failure that points at scripts/setup, never a skip.
    """
    full = [str(a) for a in argv]
    if netns is not None:
        full = ["ip", "netns", "exec", netns, *full]
    log.debug("run: %s", shlex.join(full))
    try:
        proc = subprocess.run(
            full,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(env),
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{full[0]} is not installed: run scripts/setup") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{shlex.join(full)} did not finish within {timeout}s") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"{shlex.join(full)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def require_root() -> bool:
    return os.geteuid() == 0


def genkey() -> str:
    return run(["wg", "genkey"]).stdout.strip()


def pubkey(private_key: str) -> str:
    return run(["wg", "pubkey"], input=private_key + "\n").stdout.strip()


def genpsk() -> str:
    return run(["wg", "genpsk"]).stdout.strip()


def host_addresses() -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Every address configured in the host namespace."""
    out = json.loads(run(["ip", "-j", "addr", "show"]).stdout or "[]")
    result: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    for link in out:
        for info in link.get("addr_info", []):
            result.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
    return result


def netns_names() -> list[str]:
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [entry["name"] for entry in json.loads(out or "[]")]


def link_names(netns: str | None = None) -> list[str]:
    out = run(["ip", "-j", "link", "show"], netns=netns).stdout.strip()
    return [entry["ifname"] for entry in json.loads(out or "[]")]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def wg_pod_processes(pooled: bool = False) -> dict[str, str]:
    """pid -> temporary interface name of every userspace process the hook
    started, whoever's test it belongs to; ``pooled``: those a daemon
    started ahead (tunnel/pool.py), by pool name, instead."""
    from wg_pod_hook.kernel.backends.userspace import running_processes
    from wg_pod_hook.model.names import is_pool_name

    return {
        str(process.pid): name
        for process, name in running_processes().items()
        if is_pool_name(name) == pooled
    }


def the_runtime() -> Runtime:
    """The runtime (wg_pod_hook/runtime.py) the product's entry points
    build in this process now: on the suite's state directory, or on a
    test's (use_state_dir)."""
    from wg_pod_hook.runtime import Runtime

    return Runtime.of_process()


def use_state_dir(monkeypatch: Any, directory: Path) -> Path:
    """Point this process's runtime (the_runtime, and the one ``wg-pod``
    builds when a test calls cli.main) at ``directory`` until the test
    ends (``monkeypatch``: pytest's)."""
    from wg_pod_hook.runtime import STATE_DIR_ENV

    monkeypatch.setenv(STATE_DIR_ENV, str(directory))
    return directory


def host_leftovers() -> tuple[list[str], list[str], list[str]]:
    """wg-pod's host-side interfaces, userspace processes and records; with
    the interfaces and processes of the suite's daemon's warm pool
    (tunnel/pool.py) when no daemon runs, which would own them."""
    from wg_pod_hook.model.names import is_temp_name, pool_prefix

    runtime = the_runtime()
    ours = pool_prefix(runtime.state_dir)
    pool_too = not daemon_lock_holders()
    links = [n for n in link_names() if is_temp_name(n) or (pool_too and n.startswith(ours))]
    processes = wg_pod_processes()
    if pool_too:
        processes |= {p: n for p, n in wg_pod_processes(pooled=True).items() if n.startswith(ours)}
    directory = Path(runtime.records)
    records = sorted(p.name for p in directory.glob("*.json")) if directory.exists() else []
    return links, sorted(processes), records


def assert_host_clean(timeout: float = 20.0) -> None:
    """Nothing of wg-pod's left on the host (host_leftovers): at once when
    the hooks did their own work; a daemon answers a poststop before its
    worker takes the tunnel down (daemon/hooks.py), so within moments."""
    deadline = time.monotonic() + timeout
    while (left := host_leftovers()) != ([], [], []):
        assert time.monotonic() < deadline, f"left on the host after {timeout:g} s: {left}"
        time.sleep(0.05)


def daemon_lock_holders(state_dir: str | None = None) -> list[int]:
    """The processes holding the lock a running ``wg-pod daemon`` keeps on
    its state directory (daemon/main.py _claim; default: this process's), read
    from /proc/locks: seen without taking the lock, so a daemon starting
    meanwhile is not turned away. PID 0 is a holder in another PID
    namespace."""
    try:
        info = os.stat(state_dir or the_runtime().state_dir)
    except FileNotFoundError:
        return []
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF"
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            holders.append(int(fields[4]))
    return sorted(set(holders))


def socket_servers(path: str | os.PathLike[str]) -> list[int]:
    """The processes holding a Unix socket bound to ``path`` (this network
    namespace's /proc/net/unix), found without connecting to it; a forked
    worker holding the same socket is left out for its parent."""
    name = str(path)
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == name:
            inodes.add(f"socket:[{fields[6]}]")
    pids = set()
    for entry in os.listdir("/proc") if inodes else ():
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                pids.add(int(entry))
        except OSError:  # gone meanwhile, or a fd closed while read
            continue
    return sorted(pid for pid in pids if _parent(pid) not in pids)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


def free_udp_port() -> int:
    """A UDP port free for IPv4 and IPv6 in this namespace, where a lab
    client's WireGuard socket lives (wireguard-go and the kernel's link are
    born in the host namespace): the kernel picks it (bind to port 0), so
    a second run or a busy host does not collide; the IPv6 check is for
    wireguard-go's second socket. Free when asked: bind it at once."""
    import socket

    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
            v4.bind(("0.0.0.0", 0))
            port: int = v4.getsockname()[1]
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
                v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    v6.bind(("::", port))
                except OSError:  # taken for IPv6 only: ask again
                    continue
                return port
    raise LabError("no UDP port free for both IPv4 and IPv6 in 100 tries")


@dataclass(frozen=True)
class Underlay:
    """Addresses of one veth link between the host namespace and a lab namespace."""

    index: int
    host_v4: IPv4Interface
    inner_v4: IPv4Interface
    host_v6: IPv6Interface
    inner_v6: IPv6Interface

    @classmethod
    def from_index(cls, index: int) -> Underlay:
        base = int(_UNDERLAY_V4.network_address) + 4 * index
        v6 = f"fd77:ff:{index:x}::"
        return cls(
            index=index,
            host_v4=IPv4Interface(f"{ipaddress.IPv4Address(base + 1)}/30"),
            inner_v4=IPv4Interface(f"{ipaddress.IPv4Address(base + 2)}/30"),
            host_v6=IPv6Interface(f"{v6}1/64"),
            inner_v6=IPv6Interface(f"{v6}2/64"),
        )

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        return self.host_v4.network, self.host_v6.network


def _overlaps(
    a: ipaddress.IPv4Network | ipaddress.IPv6Network,
    b: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    return a.version == b.version and a.overlaps(b)


def allocate_underlay() -> Underlay:
    """A random /30 + /64 that no address in the host namespace already uses."""
    in_use = host_addresses()
    for _ in range(100):
        index = secrets.randbelow(_UNDERLAY_SLOTS)
        if index in _allocated_underlays:
            continue
        candidate = Underlay.from_index(index)
        nets = candidate.networks
        if any(_overlaps(addr.network, net) for addr in in_use for net in nets):
            continue
        assert not any(_overlaps(n, f) for n in nets for f in _FORBIDDEN_NETWORKS)
        _allocated_underlays.add(index)
        return candidate
    raise LabError("no free underlay subnet in 198.18.0.0/15")


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate a process we started; ``already gone`` is success."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold the lock of the cache directory ``cache`` (made if missing):
    one run at a time fills or prunes it."""
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
