"""The names of a tunnel's objects, derived from its identity alone — the
container that sets it up (whose namespace and interface it then holds) —
so that cleanup finds what wg-pod made for a container even after its
process, its hook and its namespace are gone.  Every module takes a
tunnel's names from here, through its plan or its record's container id;
none spells one itself.  (Light: the poststop path imports it.)

The one name of no container is a pool name: the daemon's spare worker
makes an interface ahead of its request under one (tunnel/pool.py), and
the request's record names it from then on."""

from __future__ import annotations

import hashlib
import os
import re
from typing import NamedTuple

TEMP_PREFIX = "wgp"
_TEMP_NAME = re.compile(TEMP_PREFIX + r"[0-9a-f]{12}")
POOL_PREFIX = "wgq"
_POOL_NAME = re.compile(POOL_PREFIX + r"[0-9a-f]{12}")
# One wg-pod tunnel per namespace: its table and its mark are the
# namespace's own.
TABLE = "wg-pod"
# Firewall mark, and routing table, of replies to connections that arrived
# outside the tunnel (podman's published ports): next to wg-quick's 51820.
REPLY_MARK = 51821


class TunnelNames(NamedTuple):
    temp_name: str  # the interface's host-side name until it is moved
    table: str  # its nftables table (inet) in the container's namespace
    reply_mark: int  # the mark and routing table of its reply path


def tunnel_names(container_id: str) -> TunnelNames:
    return TunnelNames(temp_name(container_id), TABLE, REPLY_MARK)


def temp_name(container_id: str) -> str:
    """The host-side name of a container's interface until it is moved:
    unique per container, at most 15 bytes."""
    return TEMP_PREFIX + hashlib.sha256(container_id.encode()).hexdigest()[:12]


def is_temp_name(name: str) -> bool:
    return _TEMP_NAME.fullmatch(name) is not None


def pool_name(state_dir: str) -> str:
    """A fresh name for an interface made ahead of its container by the
    daemon of ``state_dir``, whose pool the name's first part marks (two
    daemons on one host, as the test suites run them, keep to their own)."""
    # Not secrets.token_hex: its imports (~19 ms) would be every poststop's.
    return pool_prefix(state_dir) + os.urandom(4).hex()


def pool_prefix(state_dir: str) -> str:
    return POOL_PREFIX + hashlib.sha256(state_dir.encode()).hexdigest()[:4]


def is_pool_name(name: str) -> bool:
    """A pool name, of any daemon's."""
    return _POOL_NAME.fullmatch(name) is not None
