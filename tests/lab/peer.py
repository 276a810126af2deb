"""A real WireGuard peer for the lab, and the clients it knows.

:class:`Peer` is wireguard-go (or the kernel's WireGuard) in a namespace of
its own with an HTTP server on its tunnel addresses; :class:`Client` is one
keypair registered on it, with the ``wg setconf`` and wg-quick texts the
tests and the hook use.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface
from typing import TYPE_CHECKING, Any

from tests.lab.base import PREFIX, LabError, genkey, genpsk, pubkey, run, token, wait_for

if TYPE_CHECKING:  # annotations only: namespaces imports this module (Lab makes peers)
    from tests.lab.namespaces import Lab

PEER_LISTEN_PORT = 51820
PEER_HTTP_PORT = 80


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
