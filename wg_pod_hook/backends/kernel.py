"""The kernel backend: a ``wireguard`` link configured over WireGuard netlink."""

from __future__ import annotations

import logging
import os
from typing import Any

from .. import _pyroute2
from .._pyroute2 import NetlinkError
from ..config import IPAddress, Key
from ..errors import SetupError
from ..netlink import Netlink, entered
from . import DeviceSetup

log = logging.getLogger(__name__)


def set_endpoint(
    netns_fd: int, ifname: str, public_key: Key, endpoint: tuple[IPAddress, int]
) -> None:
    """Point an existing peer at another endpoint (the interface lives in
    the container's namespace by now)."""
    with entered(netns_fd):
        wg = _pyroute2.WireGuard()
    try:
        wg.set(
            ifname,
            peer={
                "public_key": public_key.base64,
                "endpoint_addr": str(endpoint[0]),
                "endpoint_port": endpoint[1],
                "update_only": True,
            },
        )
    except NetlinkError as exc:
        raise SetupError("set endpoint", ifname, os.strerror(exc.code)) from None
    finally:
        wg.close()


class KernelBackend:
    name = "kernel"

    def create(self, ifname: str) -> None:
        with Netlink() as host:
            host.add_link(ifname, "wireguard")

    def wait_ready(self, ifname: str) -> None:
        pass  # the link is there once created

    def configure(self, ifname: str, device: DeviceSetup) -> None:
        wg = _pyroute2.WireGuard()
        try:
            wg.set(
                ifname,
                private_key=device.private_key.base64,
                listen_port=device.listen_port,
                fwmark=device.fwmark,
            )
            # One peer per request, as the netlink API expects.
            for setup in device.peers:
                peer: dict[str, Any] = {
                    "public_key": setup.peer.public_key.base64,
                    "allowed_ips": [str(n) for n in setup.peer.allowed_ips],
                    "replace_allowed_ips": True,
                    "persistent_keepalive": setup.peer.persistent_keepalive or 0,
                }
                if setup.peer.preshared_key is not None:
                    peer["preshared_key"] = setup.peer.preshared_key.base64
                if setup.endpoint is not None:
                    peer["endpoint_addr"] = str(setup.endpoint[0])
                    peer["endpoint_port"] = setup.endpoint[1]
                wg.set(ifname, peer=peer)
        except NetlinkError as exc:
            raise SetupError("configure WireGuard", ifname, os.strerror(exc.code)) from None
        finally:
            wg.close()
