"""The lab itself: network namespaces and links, and the owner of them all.

:class:`Lab` registers every object a test creates and removes them in
reverse order on ``close()``; it makes namespaces (:class:`Netns`), veth
links to the host namespace, wireguard-go interfaces, peers and stand-ins.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tests.lab.base import (
    PREFIX,
    WG_RUN_DIR,
    LabError,
    Underlay,
    _allocated_underlays,
    _clean_env,
    allocate_underlay,
    link_names,
    run,
    stop_process,
    token,
    wait_for,
)
from tests.lab.peer import PEER_LISTEN_PORT, Client, Peer
from tests.lab.standin import ContainerStandIn

log = logging.getLogger("wgpt.lab")


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

    def underlay(self) -> Underlay:
        """Addresses for one link of this lab's (see allocate_underlay)."""
        underlay = allocate_underlay()
        self.defer("release underlay", lambda: _allocated_underlays.discard(underlay.index))
        return underlay

    def veth(self, ns: Netns, inner_name: str = "eth0") -> tuple[str, Underlay]:
        """A veth from the host namespace into ``ns``, addressed on both sides (v4 + v6)."""
        underlay = self.underlay()
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
        from wg_pod_hook.kernel.backends.userspace import accepts_connections

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
