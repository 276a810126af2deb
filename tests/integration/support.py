"""Helpers shared by the integration tests: run the hook, fetch through the
tunnel, serve from a stand-in, and check that nothing is left behind."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    run,
    the_runtime,
    token,
    wait_for,
    wg_pod_processes,
)
from wg_pod_hook.model.names import temp_name
from wg_pod_hook.state import health
from wg_pod_hook.state.records import path_for
from wg_pod_hook.tunnel.dns import own_file

PAGE_TIMEOUT = 10.0


def kernel_has_wireguard() -> bool:
    probe = f"wgpt{token()}"
    made = run(["ip", "link", "add", probe, "type", "wireguard"], check=False)
    if made.returncode == 0:
        run(["ip", "link", "del", probe])
    return made.returncode == 0


class InNamespace(Protocol):
    """A stand-in, or any lab namespace: runs commands in it."""

    def run(
        self, argv: Sequence[str | os.PathLike[str]], **kw: Any
    ) -> subprocess.CompletedProcess[str]: ...


def fetch_in(standin: InNamespace, url: str, timeout: float = PAGE_TIMEOUT) -> str:
    """GET ``url`` from inside the stand-in; retries while the tunnel comes up."""
    script = (
        "import sys, time, urllib.request\n"
        "deadline = time.monotonic() + float(sys.argv[2])\n"
        "while True:\n"
        "    try:\n"
        "        print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()); break\n"
        "    except OSError:\n"
        "        if time.monotonic() > deadline: raise\n"
        "        time.sleep(0.1)\n"
    )
    return standin.run(
        [sys.executable, "-c", script, url, str(timeout)], timeout=timeout + 10
    ).stdout


def serve_in(lab: Lab, standin: ContainerStandIn, port: int, body: str) -> None:
    """An HTTP server inside the stand-in on every address, serving ``body``."""
    root = lab.tmp / f"www-{standin.name}-{port}"
    root.mkdir()
    (root / "index.html").write_text(body)
    lab.popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "::", "--directory", str(root)],
        netns=standin.name,
        name=f"http-{standin.name}-{port}",
    )
    deadline = time.monotonic() + 10
    while not standin.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
        assert time.monotonic() < deadline, "http server in the stand-in did not start"
        time.sleep(0.05)


def nft_tables(standin: ContainerStandIn) -> str:
    return standin.run(["nft", "list", "tables"]).stdout


def wireguard_processes(name: str) -> list[str]:
    """The userspace processes of the tunnel with temporary name ``name``."""
    return [pid for pid, temp in wg_pod_processes().items() if temp == name]


# How many of those a tunnel that is up has, by backend (after its end: none).
WIREGUARD_GO = {"userspace": 1, "kernel": 0}


def assert_nothing_left(standin: ContainerStandIn, before_routes: list[Any] | None = None) -> None:
    name = temp_name(standin.id)
    assert sorted(standin.links()) == ["eth0", "lo"]
    assert name not in run(["ip", "-o", "link", "show"]).stdout
    assert wireguard_processes(name) == []
    assert not Path(f"/var/run/wireguard/{name}.sock").exists()
    assert "wg-pod" not in nft_tables(standin)
    assert not path_for(the_runtime(), standin.id).exists()
    assert standin.resolv_conf.read_text().startswith("# written by the wg-pod test lab")
    assert standin.seen_resolv_conf() == standin.resolv_conf.read_text()
    assert not own_file(the_runtime(), standin.id).exists()
    if before_routes is not None:
        assert standin.default_routes(4) + standin.default_routes(6) == before_routes


def handled_by_the_daemon(daemon: Daemon, container_id: str, what: str) -> bool:
    """Whether a line of the daemon's log names the container (the first 12
    characters of its id; "?" for a state that named none) and says
    ``what``: a line its worker logs while doing the hook's work.  The hook
    that gets no answer does the work itself and prints the same line, but
    logs nothing there."""
    lines = daemon.path.read_text().splitlines()
    return any(container_id[:12] in line and what in line for line in lines)


def write_config(config_dir: ConfigDir, text: str, name: str = "wg0.conf") -> str:
    return str(config_dir.write(name, text))


def fails_cleanly(
    hook: HookRunner, standin: ContainerStandIn, annotations: dict[str, str], **kw: Any
) -> str:
    """Run createRuntime expecting failure: one line on stderr naming the
    container, and nothing left behind.  Returns that line."""
    before = standin.default_routes(4) + standin.default_routes(6)
    done = hook("createRuntime", standin, annotations, **kw)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"wg-pod: container {standin.id[:12]}: ")
    assert_nothing_left(standin, before)
    return lines[0]


class Sniffer:
    """Counts the packets that cross a host-side interface towards any of
    ``destinations`` (an AF_PACKET socket: what really left the container,
    whatever its routes and rules said)."""

    def __init__(self, ifname: str, destinations: Iterable[str]) -> None:
        self.ifname = ifname
        self.destinations = {ipaddress.ip_address(d).packed for d in destinations}
        self.count = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self._sock.bind((ifname, 0))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(65535)
            except TimeoutError:
                continue
            # The destination address: IPv4 at 14 + 16, IPv6 at 14 + 24.
            destination = {b"\x08\x00": frame[30:34], b"\x86\xdd": frame[38:54]}.get(frame[12:14])
            if destination in self.destinations:
                self.count += 1

    def __enter__(self) -> Sniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # what was sent last is still on its way
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


PEER_NAME = "peer.wgpt.test"


class DnsServer:
    """A real DNS server (Debian's dnsmasq) in a namespace of the lab that
    answers PEER_NAME with the peer's underlay address; ``resolv_conf``
    names it, for a private mount namespace (with_resolv_conf): nothing on
    the host is edited."""

    def __init__(self, lab: Lab, peer: Peer) -> None:
        self.lab, self.peer = lab, peer
        ns = lab.netns()
        _, link = lab.veth(ns)
        self.hosts = lab.tmp / f"dns-hosts-{token()}"
        self.hosts.write_text(f"{peer.underlay.inner_v4.ip} {PEER_NAME}\n")
        self.process = lab.popen(
            [
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                f"--addn-hosts={self.hosts}",
                f"--listen-address={link.inner_v4.ip}",
                "--bind-interfaces",
                "--user=root",
                "--pid-file",
                "--log-facility=-",
            ],
            netns=ns.name,
            name="dnsmasq",
        )
        self.resolv_conf = lab.tmp / f"resolv-{token()}.conf"
        self.resolv_conf.write_text(
            f"nameserver {link.inner_v4.ip}\noptions timeout:1 attempts:1\n"
        )
        self.moves = 0
        self.current = f"{peer.underlay.inner_v4}"

    def move_peer(self) -> str:
        """The peer moves to a new underlay address (a new link; the old
        address goes) and the DNS answer changes; returns the new address."""
        self.moves += 1
        _, moved = self.lab.veth(self.peer.ns, f"eth{self.moves}")
        device = "eth0" if self.moves == 1 else f"eth{self.moves - 1}"
        self.peer.run(["ip", "addr", "del", self.current, "dev", device])
        self.current = str(moved.inner_v4)
        self.hosts.write_text(f"{moved.inner_v4.ip} {PEER_NAME}\n")
        self.process.send_signal(signal.SIGHUP)  # dnsmasq reads its hosts file again
        return str(moved.inner_v4.ip)


def watched(container_id: str) -> None:
    """The daemon has looked at the tunnel (it is told at once by the hook;
    the bound is generous for a loaded machine)."""
    wait_for(
        lambda: health.read(the_runtime(), container_id) is not None,
        timeout=10,
        what="the daemon's look",
    )
