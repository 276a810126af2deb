"""Network lab for the integration and system tests.

Throwaway network namespaces, veth links to the host namespace, a real
WireGuard peer (wireguard-go in its own namespace, with an HTTP server on its
tunnel addresses) and a stand-in for a container's network namespace. Every
object is named ``wgpt...`` so leftovers are identifiable, and every object is
registered with a :class:`Lab`, whose ``close()`` removes them in reverse
order, also when the test failed.

Addresses (see shared ENVIRONMENT.md): veth links use random /30s in
198.18.0.0/15 and ``fd77:ff:<n>::/64``; tunnels use ``10.250.<n>.0/24`` and
``fd77:<n>::/64`` (n in 1..254, never 0xff), which exist only inside the
lab's namespaces. Nothing else is ever added to the host namespace, and the
host's routes are never touched.

Private keys are passed to ``wg`` through 0600 files or stdin, never argv.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("wgpt.lab")

REPO = Path(__file__).resolve().parent.parent.parent


def _containers_conf() -> Path:
    """The test-only podman configuration: containers.conf for Debian 12's
    podman 4.3 (CNI), containers-podman5.conf on a Debian 13 host (podman 5
    has no CNI). scripts/setup and scripts/test choose the same way."""
    try:
        major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    except OSError:
        major = ""
    name = "containers-podman5.conf" if major == "13" else "containers.conf"
    return REPO / "tests" / "system" / name


CONTAINERS_CONF = _containers_conf()
TEST_IMAGE = "localhost/wg-pod-test"
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
WG_RUN_DIR = Path("/var/run/wireguard")
PEER_LISTEN_PORT = 51820
PEER_HTTP_PORT = 80

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


def wg_pod_processes() -> dict[str, str]:
    """pid -> temporary interface name of every userspace process the hook
    started, whoever's test it belongs to."""
    from wg_pod_hook.backends.userspace import running_processes

    return {str(process.pid): name for process, name in running_processes().items()}


def host_leftovers() -> tuple[list[str], list[str], list[str]]:
    """wg-pod's host-side interfaces, userspace processes and records."""
    from wg_pod_hook.names import is_temp_name
    from wg_pod_hook.records import RECORD_DIR

    links = [name for name in link_names() if is_temp_name(name)]
    records = sorted(p.name for p in RECORD_DIR.glob("*.json")) if RECORD_DIR.exists() else []
    return links, sorted(wg_pod_processes()), records


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


class Lab:
    """Owns everything a test creates; ``close()`` undoes it in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []
        self._tunnel_indices: set[int] = set()
        self.tmp = Path(tempfile.mkdtemp(prefix="wgpt-lab-"))  # 0700
        self.defer("remove lab temp dir", lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self._closed = False

    # -- bookkeeping ---------------------------------------------------------

    def defer(self, what: str, undo: Callable[[], None]) -> None:
        """Register an undo step; run by ``close()`` in reverse order."""
        self._undo.append((what, undo))

    def close(self) -> None:
        """Undo everything; every step runs even when an earlier one fails."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep cleaning; report at the end
                log.warning("lab cleanup: %s failed: %s", what, exc)
                errors.append(f"{what}: {exc}")
        if errors:
            raise LabError("lab cleanup failed: " + "; ".join(errors))

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tunnel_index(self) -> int:
        """A tunnel subnet number n for 10.250.n.0/24 and fd77:n::/64, unique in this lab."""
        for _ in range(1000):
            n = 1 + secrets.randbelow(254)
            if n not in self._tunnel_indices:
                self._tunnel_indices.add(n)
                return n
        raise LabError("no free tunnel subnet")

    def logfile(self, name: str) -> TextIO:
        f = (self.tmp / name).open("w")
        self.defer(f"close {name}", f.close)
        return f

    def secret_file(self, text: str) -> Path:
        """A 0600 file in the lab's 0700 temp dir (for ``wg setconf``/``preshared-key``)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="secret-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return Path(name)

    def popen(
        self, argv: Sequence[str], *, netns: str | None = None, name: str
    ) -> subprocess.Popen[str]:
        """Start a background process we own; it is terminated on close."""
        full = list(argv)
        if netns is not None:
            full = ["ip", "netns", "exec", netns, *full]
        out = self.logfile(f"{name}.log")
        log.debug("popen: %s", shlex.join(full))
        try:
            proc = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=_clean_env(),
            )
        except FileNotFoundError as exc:
            raise LabError(f"{full[0]} is not installed: run scripts/setup") from exc
        self.defer(f"stop {name} (pid {proc.pid})", lambda: stop_process(proc))
        return proc

    def log_of(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text() if path.exists() else ""

    # -- objects -------------------------------------------------------------

    def netns(self) -> Netns:
        ns = Netns(f"{PREFIX}-{token()}")
        run(["ip", "netns", "add", ns.name])
        self.defer(f"delete netns {ns.name}", ns.delete)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def veth(self, ns: Netns, inner_name: str = "eth0") -> tuple[str, Underlay]:
        """A veth from the host namespace into ``ns``, addressed on both sides (v4 + v6)."""
        underlay = allocate_underlay()
        self.defer("release underlay", lambda: _allocated_underlays.discard(underlay.index))
        host = f"{PREFIX}{token()}v"
        run(
            [
                "ip",
                "link",
                "add",
                host,
                "type",
                "veth",
                "peer",
                "name",
                inner_name,
                "netns",
                ns.name,
            ]
        )
        self.defer(f"delete veth {host}", lambda: delete_link(host))
        run(["ip", "addr", "add", str(underlay.host_v4), "dev", host])
        run(["ip", "addr", "add", str(underlay.host_v6), "dev", host, "nodad"])
        run(["ip", "link", "set", host, "up"])
        ns.run(["ip", "addr", "add", str(underlay.inner_v4), "dev", inner_name])
        ns.run(["ip", "addr", "add", str(underlay.inner_v6), "dev", inner_name, "nodad"])
        ns.run(["ip", "link", "set", inner_name, "up"])
        return host, underlay

    def peer(
        self,
        *,
        listen_port: int = PEER_LISTEN_PORT,
        http: bool = True,
        socket_in_host: bool = False,
        kernel: bool = False,
    ) -> Peer:
        return Peer(
            self, listen_port=listen_port, http=http, socket_in_host=socket_in_host, kernel=kernel
        )

    def standin(self) -> ContainerStandIn:
        return ContainerStandIn(self)

    def wireguard_go(self, ifname: str, *, netns: str | None = None) -> subprocess.Popen[str]:
        """Start ``wireguard-go -f IFNAME`` (in ``netns`` or the host); wait for its UAPI socket."""
        from wg_pod_hook.backends.userspace import accepts_connections

        proc = self.popen(
            ["wireguard-go", "-f", ifname], netns=netns, name=f"wireguard-go-{ifname}"
        )
        sock = WG_RUN_DIR / f"{ifname}.sock"

        def ready() -> bool:
            if proc.poll() is not None:
                raise LabError(
                    f"wireguard-go {ifname} exited {proc.returncode}: "
                    f"{self.log_of(f'wireguard-go-{ifname}')}"
                )
            return accepts_connections(sock) and ifname in link_names(netns)

        wait_for(ready, timeout=10, what=f"wireguard-go UAPI socket {sock}")
        self.defer(f"remove {sock}", lambda: sock.unlink(missing_ok=True))
        return proc

    def userspace_client(
        self, standin: ContainerStandIn, client: Client, ifname: str = "wg0"
    ) -> str:
        """Bring ``client`` up in ``standin`` the way the hook does, by hand.

        wireguard-go is born in the host namespace (so its UDP socket stays
        there and reaches the peer's underlay), configured, then moved into
        the stand-in's namespace and renamed in one step. Returns the
        temporary host-side name (also the UAPI socket name).
        """
        tmp_name = f"{PREFIX}{token()}c"
        self.wireguard_go(tmp_name)
        conf = self.secret_file(client.setconf_text())
        try:
            run(["wg", "setconf", tmp_name, conf])
        finally:
            conf.unlink()
        run(["ip", "link", "set", tmp_name, "netns", standin.ns.name, "name", ifname])
        for addr in client.addresses:
            extra = ["nodad"] if addr.version == 6 else []
            standin.run(["ip", "addr", "add", str(addr), "dev", ifname, *extra])
        standin.run(["ip", "link", "set", ifname, "up"])
        for net in client.allowed_ips:
            standin.run(["ip", f"-{net.version}", "route", "replace", str(net), "dev", ifname])
        return tmp_name


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


def delete_link(name: str, netns: str | None = None) -> None:
    proc = run(["ip", "link", "del", name], netns=netns, check=False)
    if proc.returncode != 0 and "Cannot find device" not in proc.stderr:
        raise LabError(f"ip link del {name}: {proc.stderr.strip()}")


@dataclass
class Netns:
    """A named network namespace (``ip netns add``)."""

    name: str

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def run(
        self, argv: Sequence[str | os.PathLike[str]], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return run(argv, netns=self.name, **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        """Unmanaged background process in the namespace; prefer ``Lab.popen(netns=...)``."""
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], **kw)

    def routes(self, version: int = 4) -> list[dict[str, Any]]:
        out = self.run(["ip", "-j", f"-{version}", "route", "show", "table", "all"]).stdout
        return list(json.loads(out or "[]"))

    def links(self) -> list[str]:
        return link_names(self.name)

    def delete(self) -> None:
        proc = run(["ip", "netns", "del", self.name], check=False)
        if proc.returncode != 0 and "No such file" not in proc.stderr:
            raise LabError(f"ip netns del {self.name}: {proc.stderr.strip()}")


@dataclass(frozen=True)
class Client:
    """One client of a :class:`Peer`: its keys, addresses and config text."""

    private_key: str = field(repr=False)
    public_key: str
    addresses: tuple[IPv4Interface | IPv6Interface, ...]
    peer_public_key: str
    allowed_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    endpoint: str
    preshared_key: str | None = field(default=None, repr=False)
    listen_port: int | None = None
    keepalive: int | None = None
    config: str = field(default="", repr=False)  # wg-quick text for the hook

    @property
    def address_v4(self) -> IPv4Interface | None:
        return next((a for a in self.addresses if isinstance(a, IPv4Interface)), None)

    @property
    def address_v6(self) -> IPv6Interface | None:
        return next((a for a in self.addresses if isinstance(a, IPv6Interface)), None)

    def setconf_text(self) -> str:
        """The ``wg setconf`` subset of the config (no Address, DNS, ...)."""
        lines = ["[Interface]", f"PrivateKey = {self.private_key}"]
        if self.listen_port is not None:
            lines.append(f"ListenPort = {self.listen_port}")
        lines += ["", "[Peer]", f"PublicKey = {self.peer_public_key}"]
        if self.preshared_key:
            lines.append(f"PresharedKey = {self.preshared_key}")
        lines.append("AllowedIPs = " + ", ".join(str(n) for n in self.allowed_ips))
        lines.append(f"Endpoint = {self.endpoint}")
        if self.keepalive:
            lines.append(f"PersistentKeepalive = {self.keepalive}")
        return "\n".join(lines) + "\n"


class Peer:
    """A real WireGuard peer: wireguard-go in its own namespace, reachable from the host.

    Underlay: veth ``host <-> peer ns eth0`` (host side ``underlay.host_v4``/
    ``host_v6``, peer side ``underlay.inner_v4``/``inner_v6``). Tunnel:
    ``tunnel_v4`` = 10.250.n.1/24, ``tunnel_v6`` = fd77:n::1/64. An HTTP server
    on ``[::]:80`` (dual stack) serves ``page`` at ``url_v4``/``url_v6``.
    """

    def __init__(
        self,
        lab: Lab,
        *,
        listen_port: int = PEER_LISTEN_PORT,
        http: bool = True,
        socket_in_host: bool = False,
        kernel: bool = False,
    ) -> None:
        """``socket_in_host``: start wireguard-go in the host namespace and move
        its interface into the peer's, so the peer listens on the host's
        addresses (``127.0.0.1:listen_port`` included); pick a free port.
        ``kernel``: the kernel's WireGuard instead of wireguard-go (``ip link
        add ... type wireguard`` inside the peer namespace; needs the module,
        see tests/vm); ``process`` is then None and the link goes with the
        namespace."""
        self.lab = lab
        self.ns = lab.netns()
        self.host_ifname, self.underlay = lab.veth(self.ns)
        self.index = lab.tunnel_index()
        self.tunnel_v4 = IPv4Interface(f"10.250.{self.index}.1/24")
        self.tunnel_v6 = IPv6Interface(f"fd77:{self.index:x}::1/64")
        self.listen_port = listen_port
        self.ifname = f"{PREFIX}{token()}p"
        self.private_key = genkey()
        self.public_key = pubkey(self.private_key)
        self.clients: list[Client] = []
        self._next_host = 2
        self.page = f"wg-pod lab peer {token(8)}"
        self.http_port = PEER_HTTP_PORT

        self.process: subprocess.Popen[str] | None = None
        if kernel:
            self.ns.run(["ip", "link", "add", self.ifname, "type", "wireguard"])
        elif socket_in_host:
            self.process = lab.wireguard_go(self.ifname)
            run(["ip", "link", "set", self.ifname, "netns", self.ns.name])
        else:
            self.process = lab.wireguard_go(self.ifname, netns=self.ns.name)
        conf = lab.secret_file(
            f"[Interface]\nPrivateKey = {self.private_key}\nListenPort = {listen_port}\n"
        )
        try:
            self.wg(["setconf", self.ifname, str(conf)])
        finally:
            conf.unlink()
        self.ns.run(["ip", "addr", "add", str(self.tunnel_v4), "dev", self.ifname])
        self.ns.run(["ip", "addr", "add", str(self.tunnel_v6), "dev", self.ifname, "nodad"])
        self.ns.run(["ip", "link", "set", self.ifname, "up"])
        self.http: subprocess.Popen[str] | None = None
        if http:
            self._start_http()

    def __repr__(self) -> str:
        return f"Peer(ns={self.ns.name}, if={self.ifname}, endpoint={self.endpoint_v4})"

    # -- addresses -----------------------------------------------------------

    @property
    def endpoint_v4(self) -> str:
        return f"{self.underlay.inner_v4.ip}:{self.listen_port}"

    @property
    def endpoint_v6(self) -> str:
        return f"[{self.underlay.inner_v6.ip}]:{self.listen_port}"

    @property
    def tunnel_networks(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        return self.tunnel_v4.network, self.tunnel_v6.network

    @property
    def _port_suffix(self) -> str:
        return "" if self.http_port == 80 else f":{self.http_port}"

    @property
    def url_v4(self) -> str:
        return f"http://{self.tunnel_v4.ip}{self._port_suffix}/"

    @property
    def url_v6(self) -> str:
        return f"http://[{self.tunnel_v6.ip}]{self._port_suffix}/"

    # -- commands ------------------------------------------------------------

    def run(
        self, argv: Sequence[str | os.PathLike[str]], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.ns.run(argv, **kw)

    def wg(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.ns.run(["wg", *args], **kw)

    def _start_http(self) -> None:
        root = self.lab.tmp / f"www-{self.ifname}"
        root.mkdir()
        (root / "index.html").write_text(self.page + "\n")
        os.chmod(root, 0o755)
        self.http = self.lab.popen(
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                "::",
                "--directory",
                str(root),
                str(self.http_port),
            ],
            netns=self.ns.name,
            name=f"http-{self.ifname}",
        )
        http = self.http

        def listening() -> bool:
            if http.poll() is not None:
                raise LabError(f"http server exited: {self.lab.log_of(f'http-{self.ifname}')}")
            out = self.ns.run(["ss", "-Hltn", f"sport = :{self.http_port}"]).stdout
            return bool(out.strip())

        wait_for(listening, timeout=10, what=f"http server in {self.ns.name}")

    def add_client(
        self,
        address_v4: str | None = "auto",
        address_v6: str | None = "auto",
        *,
        allowed_ips: Iterable[str] | None = None,
        extra_interface_lines: Iterable[str] = (),
        extra_peer_lines: Iterable[str] = (),
        endpoint_family: int = 4,
        endpoint: str | None = None,
        listen_port: int | None = None,
        keepalive: int | None = None,
        preshared: bool = False,
        peer_allowed_ips: Iterable[str] = (),
    ) -> Client:
        """Make a client keypair, register it on the peer, and return its config.

        ``address_v4``/``address_v6``: ``"auto"`` picks the next free host in
        the tunnel subnets (10.250.n.k/24, fd77:n::k/64), ``None`` omits the
        family, anything else is used as written. ``allowed_ips`` defaults to
        the peer's tunnel subnets. With ``listen_port`` the peer learns the
        client's endpoint (host-side veth address:port) up front, so it can
        reach the client before the client sends anything.
        ``peer_allowed_ips`` are routed to this client on the peer side, in
        addition to its own addresses.
        """
        k = self._next_host
        addresses: list[IPv4Interface | IPv6Interface] = []
        if address_v4 == "auto":
            addresses.append(IPv4Interface(f"10.250.{self.index}.{k}/24"))
        elif address_v4:
            addresses.append(IPv4Interface(address_v4))
        if address_v6 == "auto":
            addresses.append(IPv6Interface(f"fd77:{self.index:x}::{k:x}/64"))
        elif address_v6:
            addresses.append(IPv6Interface(address_v6))
        self._next_host += 1

        allowed = tuple(
            ipaddress.ip_network(n, strict=False)
            for n in (
                allowed_ips if allowed_ips is not None else [str(n) for n in self.tunnel_networks]
            )
        )
        if endpoint is None:
            endpoint = self.endpoint_v4 if endpoint_family == 4 else self.endpoint_v6
        private = genkey()
        psk = genpsk() if preshared else None
        client = Client(
            private_key=private,
            public_key=pubkey(private),
            addresses=tuple(addresses),
            peer_public_key=self.public_key,
            allowed_ips=allowed,
            endpoint=endpoint,
            preshared_key=psk,
            listen_port=listen_port,
            keepalive=keepalive,
        )
        text = _wg_quick_text(client, extra_interface_lines, extra_peer_lines)
        client = dataclasses.replace(client, config=text)

        # Register the client on the peer side.
        peer_side = [f"{a.ip}/{a.max_prefixlen}" for a in addresses]
        peer_side += [str(ipaddress.ip_network(n, strict=False)) for n in peer_allowed_ips]
        args = ["set", self.ifname, "peer", client.public_key]
        if peer_side:
            args += ["allowed-ips", ",".join(peer_side)]
        if listen_port is not None:
            if endpoint_family == 4:
                host = str(self.underlay.host_v4.ip)
            else:
                host = f"[{self.underlay.host_v6.ip}]"
            args += ["endpoint", f"{host}:{listen_port}"]
        psk_file = self.lab.secret_file(psk + "\n") if psk else None
        if psk_file is not None:
            args += ["preshared-key", str(psk_file)]
        try:
            self.wg(args)
        finally:
            if psk_file is not None:
                psk_file.unlink()
        self.clients.append(client)
        return client

    def client_config(
        self,
        address_v4: str | None = "auto",
        address_v6: str | None = "auto",
        **kw: Any,
    ) -> str:
        """wg-quick text for a new client (see :meth:`add_client` for the options)."""
        return self.add_client(address_v4, address_v6, **kw).config

    def fetch(self, url: str, *, timeout: float = 5.0) -> str:
        """GET ``url`` from inside the peer namespace; the body, or LabError."""
        return self.ns.run(
            [sys.executable, "-c", _FETCH_SCRIPT, url, str(timeout)], timeout=timeout + 10
        ).stdout

    def try_fetch(self, url: str, *, timeout: float = 3.0) -> str | None:
        """Like :meth:`fetch`, but ``None`` when the request fails."""
        try:
            return self.fetch(url, timeout=timeout)
        except LabError:
            return None

    def latest_handshakes(self) -> dict[str, int]:
        out = self.wg(["show", self.ifname, "latest-handshakes"]).stdout
        result = {}
        for line in out.splitlines():
            key, _, when = line.partition("\t")
            result[key] = int(when or 0)
        return result


_FETCH_SCRIPT = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=float(sys.argv[2])) as r:
    sys.stdout.write(r.read().decode())
"""


def _wg_quick_text(client: Client, iface_lines: Iterable[str], peer_lines: Iterable[str]) -> str:
    lines = ["[Interface]", f"PrivateKey = {client.private_key}"]
    if client.addresses:
        lines.append("Address = " + ", ".join(str(a) for a in client.addresses))
    if client.listen_port is not None:
        lines.append(f"ListenPort = {client.listen_port}")
    lines += list(iface_lines)
    lines += ["", "[Peer]", f"PublicKey = {client.peer_public_key}"]
    if client.preshared_key:
        lines.append(f"PresharedKey = {client.preshared_key}")
    if client.allowed_ips:
        lines.append("AllowedIPs = " + ", ".join(str(n) for n in client.allowed_ips))
    lines.append(f"Endpoint = {client.endpoint}")
    if client.keepalive:
        lines.append(f"PersistentKeepalive = {client.keepalive}")
    lines += list(peer_lines)
    return "\n".join(lines) + "\n"


class ContainerStandIn:
    """A namespace that looks to the hook like a container podman just created.

    A ``sleep`` process lives in it (``pid``, ``netns_path``), ``eth0`` is a
    veth to the host with ``underlay.inner_v4``/``inner_v6`` and IPv4 + IPv6
    default routes via the host side (like podman's bridge), and ``bundle``
    holds a minimal ``config.json`` that bind-mounts ``resolv_conf`` to
    ``/etc/resolv.conf``, both where podman keeps them (its static and run
    directories for the container).
    """

    RESOLV_CONF_TEXT = "# written by the wg-pod test lab\nnameserver {ns}\nsearch lab.invalid\n"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.id = secrets.token_hex(32)
        self.ns = lab.netns()
        self.host_ifname, self.underlay = lab.veth(self.ns, "eth0")
        self.run(["ip", "-4", "route", "add", "default", "via", str(self.underlay.host_v4.ip)])
        self.run(["ip", "-6", "route", "add", "default", "via", str(self.underlay.host_v6.ip)])
        self.process = lab.popen(
            ["sleep", "3600"], netns=self.ns.name, name=f"sleep-{self.ns.name}"
        )
        self.pid = self.process.pid
        # ``ip netns exec`` execs sleep, so the pid is the process in the namespace.
        wait_for(
            lambda: (
                os.path.exists(self.netns_path)
                and os.stat(self.netns_path).st_ino == os.stat(self.ns.path).st_ino
            ),
            timeout=5,
            what=f"sleep in {self.ns.name}",
        )
        # podman's layout: the bundle in the container's static directory,
        # the files it mounts (resolv.conf, hostname) in its run directory.
        self.bundle = lab.tmp / "storage" / "overlay-containers" / self.id / "userdata"
        self.run_dir = lab.tmp / "run" / "overlay-containers" / self.id / "userdata"
        for directory in (self.bundle / "rootfs", self.run_dir):
            directory.mkdir(parents=True)
        self.resolv_conf = self.run_dir / "resolv.conf"
        self.resolv_conf.write_text(self.RESOLV_CONF_TEXT.format(ns=self.underlay.host_v4.ip))
        (self.run_dir / "hostname").write_text(self.ns.name + "\n")
        # What config.json mounts over /etc/resolv.conf: a test may put a
        # file of its own there (as ``-v FILE:/etc/resolv.conf``), or None.
        self.resolv_conf_mount: Path | None = self.resolv_conf
        self.write_config_json({})

    def __repr__(self) -> str:
        return f"ContainerStandIn(ns={self.ns.name}, pid={self.pid})"

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    @property
    def name(self) -> str:
        return self.ns.name

    def run(
        self, argv: Sequence[str | os.PathLike[str]], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.ns.run(argv, **kw)

    def routes(self, version: int = 4) -> list[dict[str, Any]]:
        return self.ns.routes(version)

    def stop(self) -> None:
        """What podman does when the container stops: its process ends and
        its network namespace is deleted (before poststop runs)."""
        stop_process(self.process)
        self.ns.delete()

    def default_routes(self, version: int = 4) -> list[dict[str, Any]]:
        """Default routes of the main table that carry traffic (not the
        tunnel's unreachable guard)."""
        return [
            r
            for r in self.routes(version)
            if r.get("dst") == "default" and r.get("table", "main") == "main" and "type" not in r
        ]

    def links(self) -> list[str]:
        return self.ns.links()

    def config_json(self, annotations: Mapping[str, str]) -> dict[str, Any]:
        return {
            "ociVersion": "1.0.2",
            "process": {"args": ["sleep", "3600"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]},
            "root": {"path": str(self.bundle / "rootfs")},
            "hostname": self.ns.name,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                *(
                    {
                        "destination": destination,
                        "type": "bind",
                        "source": str(source),
                        "options": ["bind", "rprivate"],
                    }
                    for destination, source in (
                        ("/etc/resolv.conf", self.resolv_conf_mount),
                        ("/etc/hostname", self.run_dir / "hostname"),
                    )
                    if source is not None
                ),
            ],
            "annotations": dict(annotations),
            "linux": {
                "namespaces": [
                    {"type": "network", "path": self.ns.path},
                    {"type": "mount"},
                    {"type": "pid"},
                ]
            },
        }

    def write_config_json(self, annotations: Mapping[str, str]) -> Path:
        path = self.bundle / "config.json"
        path.write_text(json.dumps(self.config_json(annotations), indent=2))
        return path

    def oci_state(
        self,
        annotations: Mapping[str, str],
        bundle: str | os.PathLike[str] | None = None,
        *,
        status: str = "creating",
    ) -> str:
        """The OCI state JSON the runtime passes on the hook's stdin.

        Also writes the annotations into the bundle's config.json, as podman does.
        """
        if bundle is None:
            self.write_config_json(annotations)
            bundle = self.bundle
        return json.dumps(
            {
                "ociVersion": "1.0.2",
                "id": self.id,
                "status": status,
                "pid": self.pid,
                "bundle": str(bundle),
                "annotations": dict(annotations),
            }
        )


class ConfigDir:
    """A root-owned 0700 directory for WireGuard configs; files are written 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write(self, name: str, text: str, mode: int = 0o600) -> Path:
        path = self.path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, mode)  # umask-proof, and also when the file existed
        return path


def make_config_dir(lab: Lab) -> ConfigDir:
    parent = None
    if SYSTEM_PODMAN:
        SYSTEM_CONFIG_ROOT.mkdir(mode=0o700, exist_ok=True)
        parent = str(SYSTEM_CONFIG_ROOT)
    path = Path(tempfile.mkdtemp(prefix="wgpt-conf-", dir=parent))
    os.chmod(path, 0o700)
    lab.defer(f"remove {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    return ConfigDir(path)


def write_settings(
    path: Path, config_dirs: Iterable[str | os.PathLike[str]], **extra: object
) -> Path:
    """Write a wg-pod settings YAML file (JSON is valid YAML, so no PyYAML needed here)."""
    data: dict[str, object] = {
        "config_dirs": [str(d) for d in config_dirs],
        "backend": "userspace",
    }
    data.update(extra)
    lines = [f"{key}: {json.dumps(value)}" for key, value in data.items()]
    path.write_text("# wg-pod test settings\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


class Podman:
    """podman with the test containers.conf (and optionally a hooks dir), or
    with ``SYSTEM_PODMAN`` the machine's own configuration.

    Containers started through :meth:`run` get a ``wgpt-...`` name and are
    removed (``podman rm -f``) when the lab closes.
    """

    def __init__(self, lab: Lab, hooks_dir: str | os.PathLike[str] | None = None) -> None:
        """``hooks_dir`` goes into a containers.conf of this instance rather
        than ``--hooks-dir``: podman's cleanup and restart-policy processes,
        started by conmon, do not get the flag but do read CONTAINERS_CONF
        (with ``SYSTEM_PODMAN``: CONTAINERS_CONF_OVERRIDE, on top of the
        machine's own files)."""
        self.lab = lab
        self.hooks_dir = hooks_dir
        self._runtime: str | None = None
        if SYSTEM_PODMAN:
            self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_CONF")}
            if hooks_dir is not None:
                override = lab.tmp / f"containers-{token()}.conf"
                override.write_text(f"[engine]\nhooks_dir = [{json.dumps(str(hooks_dir))}]\n")
                self.env["CONTAINERS_CONF_OVERRIDE"] = str(override)
            return
        conf = CONTAINERS_CONF
        if hooks_dir is not None:
            conf = lab.tmp / f"containers-{token()}.conf"
            text = CONTAINERS_CONF.read_text()
            assert "\n[engine]\n" in text
            conf.write_text(
                text.replace(
                    "\n[engine]\n", f"\n[engine]\nhooks_dir = [{json.dumps(str(hooks_dir))}]\n"
                )
            )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    @property
    def runtime(self) -> str:
        """The OCI runtime podman uses here (``runc``, ``crun``)."""
        if self._runtime is None:
            self._runtime = self("info", "--format", "{{.Host.OCIRuntime.Name}}").stdout.strip()
        return self._runtime

    @property
    def version(self) -> tuple[int, ...]:
        """podman's version, e.g. (4, 3, 1)."""
        text = self("version", "--format", "{{.Client.Version}}").stdout.strip()
        return tuple(int(part) for part in text.split("-")[0].split(".") if part.isdigit())

    def hook_error(self, name: str, done: subprocess.CompletedProcess[str]) -> str:
        """What a user learns of why the hook stopped container ``name``:
        podman's stderr, where runc passes the hook's line on; with crun,
        which throws it away, the failure the hook kept for ``wg-pod status``
        (in the hook's own stderr format)."""
        if self.runtime != "crun":
            return done.stderr
        from wg_pod_hook.failures import recent

        return "\n".join(
            f"wg-pod: container {f.container_id[:12]}: {f.message}"
            for f in recent()
            if f.name == name
        )

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], check=check, timeout=timeout, env=self.env)

    def run(
        self,
        *args: str,
        annotations: Mapping[str, str] | None = None,
        image: str = TEST_IMAGE,
        rm: bool = True,
        detach: bool = False,
        check: bool = True,
        timeout: float = 120.0,
        options: Sequence[str] = (),
    ) -> tuple[str, subprocess.CompletedProcess[str]]:
        """``podman run [--rm|-d] --name wgpt-... [--annotation K=V]... IMAGE ARGS``.

        Returns the container name and the completed process.
        """
        name = f"{PREFIX}-{token()}"
        argv = ["run", "--name", name]
        if detach:
            argv.append("-d")
        elif rm:
            argv.append("--rm")
        for key, value in (annotations or {}).items():
            argv += ["--annotation", f"{key}={value}"]
        argv += options
        self.lab.defer(f"podman rm -f {name}", lambda: self.remove(name))
        return name, self(*argv, image, *args, check=check, timeout=timeout)

    def remove(self, name: str) -> None:
        self("rm", "-f", "--time", "0", name, check=False, timeout=60)

    def image_exists(self, image: str = TEST_IMAGE) -> bool:
        return self("image", "exists", image, check=False).returncode == 0


HOOK_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def with_resolv_conf(path: Path) -> list[str]:
    """An argv prefix that runs a command in a mount namespace of its own
    whose /etc/resolv.conf is ``path``: a resolver of the test's, and
    nothing of the host's edited (mounts made later still propagate in)."""
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, "sh", str(path)]


def venv_command(name: str, module: str) -> list[str]:
    """The console script ``name`` next to the running interpreter (the venv's), else -m;
    with ``SYSTEM_PODMAN``, the installed command."""
    installed = shutil.which(name) if SYSTEM_PODMAN else None
    if installed:
        return [installed]
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


class HookRunner:
    """Runs ``wg-pod-hook STAGE`` the way the runtime does, against a stand-in.

    The environment is only what the hooks.d definition sets (PATH and
    WG_POD_SETTINGS); the OCI state goes to stdin. Every stand-in that got a
    ``createRuntime`` gets a ``poststop`` when the lab closes (before the
    stand-in's namespace goes), unless the test already ran it.
    """

    def __init__(
        self,
        lab: Lab,
        settings: str | os.PathLike[str],
        *,
        remake: Callable[..., Path] | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        """``remake(**extra)`` writes settings like ``settings`` with ``extra``
        keys on top (see :meth:`with_settings`); ``prefix`` goes before the
        hook's argv (e.g. :func:`with_resolv_conf`)."""
        self.lab = lab
        self.settings = settings
        self.remake = remake
        self.prefix = tuple(prefix)
        self._up: dict[str, tuple[ContainerStandIn, dict[str, str]]] = {}

    def with_settings(self, **extra: object) -> HookRunner:
        """A runner like this one (same backend) with more settings, e.g.
        ``fault_injection_kill_after``, ``log_level`` or ``userspace_command``."""
        assert self.remake is not None, "this runner was made without a settings factory"
        return HookRunner(self.lab, self.remake(**extra), remake=self.remake, prefix=self.prefix)

    def with_prefix(self, prefix: Sequence[str]) -> HookRunner:
        return HookRunner(self.lab, self.settings, remake=self.remake, prefix=prefix)

    @property
    def env(self) -> dict[str, str]:
        path = HOOK_PATH_ENV.partition("=")[2]
        return {"PATH": path, "WG_POD_SETTINGS": str(self.settings)}

    def __call__(
        self,
        stage: str,
        standin: ContainerStandIn,
        annotations: Mapping[str, str],
        *,
        check: bool = False,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        bundle: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``env`` adds to (or replaces part of) the hook's environment;
        ``bundle`` replaces the stand-in's own bundle in the state."""
        status = "creating" if stage == "createRuntime" else "stopped"
        state = standin.oci_state(annotations, bundle, status=status)
        if stage == "createRuntime" and standin.id not in self._up:
            self._up[standin.id] = (standin, dict(annotations))
            self.lab.defer(f"poststop {standin.name}", lambda: self._final_down(standin.id))
        elif stage == "poststop":
            self._up.pop(standin.id, None)
        return run(
            [*self.prefix, *venv_command("wg-pod-hook", "wg_pod_hook.hook"), stage],
            input=state,
            check=check,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )

    def up(
        self,
        standin: ContainerStandIn,
        annotations: Mapping[str, str],
        *,
        ok: bool = True,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """createRuntime; asserts that it succeeded, silently, unless ``ok=False``
        (then the caller looks at the result)."""
        done = self("createRuntime", standin, annotations, **kw)
        if ok:
            assert done.returncode == 0, f"createRuntime exited {done.returncode}: {done.stderr}"
            assert done.stderr == "", done.stderr
        return done

    def down(
        self,
        standin: ContainerStandIn,
        annotations: Mapping[str, str],
        *,
        ok: bool = True,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """poststop; asserts exit status 0 (poststop never fails) unless ``ok=False``."""
        done = self("poststop", standin, annotations, **kw)
        if ok:
            assert done.returncode == 0, f"poststop exited {done.returncode}: {done.stderr}"
        return done

    def _final_down(self, container_id: str) -> None:
        entry = self._up.pop(container_id, None)
        if entry is not None:
            standin, annotations = entry
            standin.stop()
            self("poststop", standin, annotations, check=True)


class Daemon:
    """``wg-pod daemon`` in the foreground, as systemd would run it."""

    def __init__(
        self, lab: Lab, settings: str | os.PathLike[str], prefix: Sequence[str] = ()
    ) -> None:
        from wg_pod_hook.notify import SOCKET

        self.log = lab.logfile(f"daemon-{time.monotonic_ns()}.log")
        self.path = Path(self.log.name)
        SOCKET.unlink(missing_ok=True)  # what a killed one left: not a sign of this one
        self.process = subprocess.Popen(
            [*prefix, *venv_command("wg-pod", "wg_pod_hook.cli"), "--debug", "daemon"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WG_POD_SETTINGS": str(settings)},
        )
        lab.defer(f"stop daemon {self.process.pid}", self.stop)
        wait_for(self._listening, timeout=15, what="the daemon's socket")

    def _listening(self) -> bool:
        from wg_pod_hook.notify import SOCKET

        if self.process.poll() is not None:
            code = self.process.returncode
            raise LabError(f"wg-pod daemon exited {code}: {self.path.read_text()}")
        return SOCKET.exists()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LabError(f"no VmRSS for {pid}")
