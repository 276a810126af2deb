"""Peer endpoints -> addresses, resolved in the host namespace.

The WireGuard socket lives in the host namespace, so that is where names
must resolve (a rootless tunnel's lives in the container's, and its
packets leave through podman's way out, pasta, into the host's network:
the host's resolver answers for it too).  Lookups are retried a bounded number of times, because a
container start must not hang on a slow resolver.
"""

from __future__ import annotations

import logging
import socket
import time
from ipaddress import ip_address

from ..errors import SetupError
from ..kernel.backends import DeviceSetup, PeerSetup
from ..model.config import Endpoint, IPAddress
from ..model.plan import Plan

log = logging.getLogger(__name__)

ATTEMPTS = 3
RETRY_PAUSE = 0.5


def resolve_endpoint(endpoint: Endpoint, attempts: int = ATTEMPTS) -> tuple[IPAddress, int]:
    if endpoint.ip is not None:
        return endpoint.ip, endpoint.port
    last = ""
    for attempt in range(attempts):
        try:
            infos = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            last = exc.strerror or str(exc)
            # A name that does not exist will not exist on the next try either.
            if exc.errno == socket.EAI_NONAME or attempt + 1 == attempts:
                break
            time.sleep(RETRY_PAUSE * (attempt + 1))
            continue
        # Prefer IPv4 as wg(8) does, for the same reachability reasons.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        address = ip_address(infos[0][4][0])
        log.debug("endpoint %s resolved to %s", endpoint.host, address)
        return address, endpoint.port
    raise SetupError("resolve endpoint", endpoint.host, last or "no address")


def device_setup(plan: Plan) -> DeviceSetup:
    """The device's configuration, endpoints resolved; its socket carries
    the plan's mark when it is in the container, else the config's FwMark."""
    config = plan.config
    iface = config.interface
    return DeviceSetup(
        private_key=iface.private_key,
        listen_port=iface.listen_port,
        fwmark=iface.fwmark if plan.socket_mark is None else plan.socket_mark,
        peers=tuple(
            PeerSetup(peer, resolve_endpoint(peer.endpoint) if peer.endpoint else None)
            for peer in config.peers
        ),
    )
