"""The kernel backend: a ``wireguard`` link configured over WireGuard netlink.

pyroute2 is imported only where a call needs it: teardown loads this
backend to stop a kernel tunnel, which has no process to stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import BackendUnavailable, SetupError
from ...model.config import NO_KEY
from ...state.health import LivePeer
from . import DeviceSetup

if TYPE_CHECKING:
    from ...model.config import IPAddress, Key
    from ...model.plan import Plan
    from ...runtime import Runtime
    from ...state.records import TunnelRecord

log = logging.getLogger(__name__)
T = TypeVar("T")


def _with_wireguard(netns_fd: int | None, work: Callable[[Any], T]) -> T:
    """``work`` given a WireGuard netlink socket of the namespace
    ``netns_fd`` (None: this one), and run there whole: pyroute2 makes a
    socket per thread, in the namespace the thread is in when it first
    asks."""
    from ...namespaces import made_in
    from .. import _pyroute2

    def there() -> T:
        wg = _pyroute2.WireGuard()
        try:
            return work(wg)
        finally:
            wg.close()

    return made_in(netns_fd, there)


def set_endpoint(
    netns_fd: int, ifname: str, public_key: Key, endpoint: tuple[IPAddress, int]
) -> None:
    """Point an existing peer at another endpoint (the interface lives in
    the container's namespace by now)."""
    from .._pyroute2 import NetlinkError

    peer = {
        "public_key": public_key.base64,
        "endpoint_addr": str(endpoint[0]),
        "endpoint_port": endpoint[1],
        "update_only": True,
    }
    try:
        _with_wireguard(netns_fd, lambda wg: wg.set(ifname, peer=peer))
    except NetlinkError as exc:
        raise SetupError("set endpoint", ifname, os.strerror(exc.code)) from None


def set_keepalives(netns_fd: int, ifname: str, keepalives: Mapping[Key, int]) -> None:
    """Give existing peers these persistent keepalives (0: none)."""
    from .._pyroute2 import NetlinkError

    def each(wg: Any) -> None:
        for public_key, seconds in keepalives.items():
            peer = {
                "public_key": public_key.base64,
                "persistent_keepalive": seconds,
                "update_only": True,
            }
            wg.set(ifname, peer=peer)

    try:
        _with_wireguard(netns_fd, each)
    except NetlinkError as exc:
        raise SetupError("set keepalive", ifname, os.strerror(exc.code)) from None


def _attr(nla: Any, name: str) -> Any:
    value = nla.get_attr(name)
    return value.get("value", value) if isinstance(value, dict) else value


def read_peers(netns_fd: int, interface: str) -> tuple[LivePeer, ...]:
    from .._pyroute2 import NetlinkError

    # The interface is only visible from inside its namespace.
    try:
        messages = _with_wireguard(netns_fd, lambda wg: list(wg.info(interface)))
    except NetlinkError as exc:
        raise SetupError("read WireGuard state", interface, str(exc)) from None
    peers = []
    for message in messages:
        for peer in message.get_attr("WGDEVICE_A_PEERS") or []:
            key = _attr(peer, "WGPEER_A_PUBLIC_KEY")
            endpoint = peer.get_attr("WGPEER_A_ENDPOINT")
            handshake = peer.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
            seconds = int(handshake["tv_sec"]) if handshake else 0
            address = endpoint["addr"] if endpoint else None
            peers.append(
                LivePeer(
                    public_key=key.decode() if isinstance(key, bytes) else str(key),
                    endpoint=(
                        None
                        if not address or address in ("0.0.0.0", "::")
                        else (f"[{address}]" if ":" in address else address)
                        + f":{endpoint['port']}"
                    ),
                    allowed_ips=tuple(
                        ip["addr"] for ip in peer.get_attr("WGPEER_A_ALLOWEDIPS") or []
                    ),
                    latest_handshake=seconds or None,
                    rx_bytes=int(peer.get_attr("WGPEER_A_RX_BYTES") or 0),
                    tx_bytes=int(peer.get_attr("WGPEER_A_TX_BYTES") or 0),
                )
            )
    return tuple(peers)


def _configure(wg: Any, ifname: str, device: DeviceSetup, removed: Collection[str] = ()) -> None:
    """``device`` onto ``ifname``, peer by peer, after taking away the
    peers ``removed`` (public keys, base64)."""
    wg.set(
        ifname,
        private_key=device.private_key.base64,
        listen_port=device.listen_port,
        fwmark=device.fwmark,
    )
    # One peer per request, as the netlink API expects.
    for public_key in removed:
        wg.set(ifname, peer={"public_key": public_key, "remove": True})
    for setup in device.peers:
        preshared = setup.peer.preshared_key
        peer: dict[str, Any] = {
            "public_key": setup.peer.public_key.base64,
            "allowed_ips": [str(n) for n in setup.peer.allowed_ips],
            "replace_allowed_ips": True,
            "persistent_keepalive": setup.peer.persistent_keepalive or 0,
            # None: no preshared key, which the kernel's all-zero one means
            # (a peer that had one loses it, as with wg syncconf).
            "preshared_key": (preshared or NO_KEY).base64,
        }
        if setup.endpoint is not None:
            peer["endpoint_addr"] = str(setup.endpoint[0])
            peer["endpoint_port"] = setup.endpoint[1]
        wg.set(ifname, peer=peer)


# Where a loaded (or built-in) module shows, and where an installed one is
# listed (in the directory of the running kernel's release).
LOADED = "/sys/module/wireguard"
MODULES = "/lib/modules"
INSTALLED = ("modules.dep", "modules.builtin")


def _installed() -> bool:
    """Whether this kernel's module lists name a wireguard module, which
    the kernel loads when root first asks for a ``wireguard`` link."""
    directory = f"{MODULES}/{os.uname().release}"
    for name in INSTALLED:
        try:
            with open(f"{directory}/{name}", "rb") as listing:
                if b"/wireguard.ko" in listing.read():
                    return True
        except OSError:
            continue
    return False


class KernelBackend:
    name = "kernel"

    def __init__(self, runtime: Runtime, plan: Plan | None = None) -> None:
        # A user namespace never loads a module: a rootless user's needs it loaded.
        self.rootless = runtime.rootless

    def available(self) -> str:
        if os.path.isdir(LOADED):
            return "module wireguard"
        if not _installed():
            raise BackendUnavailable("no wireguard module in this kernel")
        if self.rootless:
            raise BackendUnavailable(
                "module wireguard is not loaded, and a user namespace cannot load it "
                "(root: modprobe wireguard)"
            )
        return "module wireguard, loaded at the first tunnel"

    def create(self, ifname: str, netns_fd: int | None) -> None:
        """A rootless user's link is created in a namespace their user
        namespace owns: the kernel allows it once root has loaded the
        module (a user namespace never loads one)."""
        from ..netlink import Netlink

        with Netlink(netns_fd) as birth:
            birth.add_link(ifname, "wireguard")

    def wait_ready(self, ifname: str) -> None:
        pass  # the link is there once created

    def adopt(self, ifname: str, plan: Plan) -> bool:
        return True  # a link: nothing runs for it, nothing to account

    def configure(self, ifname: str, device: DeviceSetup, netns_fd: int | None) -> None:
        from .._pyroute2 import NetlinkError

        try:
            _with_wireguard(netns_fd, lambda wg: _configure(wg, ifname, device))
        except NetlinkError as exc:
            raise SetupError("configure WireGuard", ifname, os.strerror(exc.code)) from None

    def sync(self, record: TunnelRecord, device: DeviceSetup, netns_fd: int) -> None:
        from .._pyroute2 import NetlinkError

        wanted = {setup.peer.public_key.base64 for setup in device.peers}
        removed = [p.public_key for p in read_peers(netns_fd, record.interface)]
        removed = [key for key in removed if key not in wanted]
        try:
            _with_wireguard(netns_fd, lambda wg: _configure(wg, record.interface, device, removed))
        except NetlinkError as exc:
            raise SetupError(
                "reconfigure WireGuard", record.interface, os.strerror(exc.code)
            ) from None

    def peers(self, record: TunnelRecord, netns_fd: int) -> tuple[LivePeer, ...]:
        return read_peers(netns_fd, record.interface)

    def set_endpoint(
        self, record: TunnelRecord, public_key: Key, endpoint: tuple[IPAddress, int]
    ) -> None:
        from ..netlink import open_netns

        with open_netns(record.netns.path, record.netns) as fd:  # only the tunnel's
            set_endpoint(fd, record.interface, public_key, endpoint)

    def set_keepalives(self, record: TunnelRecord, keepalives: Mapping[Key, int]) -> None:
        from ..netlink import open_netns

        with open_netns(record.netns.path, record.netns) as fd:  # only the tunnel's
            set_keepalives(fd, record.interface, keepalives)

    # The link is the whole tunnel: deleting it (teardown) leaves nothing to stop.

    def stop(self, record: TunnelRecord) -> None:
        pass

    def left_behind(self, ifname: str) -> bool:
        return False

    def clear(self, ifname: str) -> None:
        pass

    def sweep(self, known: Collection[str]) -> list[str]:
        return []


BACKEND = KernelBackend
