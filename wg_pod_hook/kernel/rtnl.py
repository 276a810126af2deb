"""rtnetlink requests on the setup's way: pyroute2's message classes (their
layouts and attribute encodings) sent on a plain netlink socket.

pyroute2's IPRoute runs each call through its request machinery and an
asyncio loop: 0.5-1.5 ms a call on these machines, where the kernel's
round trip costs some 50 µs, and a container's setup makes some twenty
calls.  So the setup's links, addresses and routes, and the dumps it reads,
are built here with the same classes IPRoute fills in (tests/unit/test_rtnl
checks each against what IPRoute compiles for the same call: the same
fields, flags and attributes), sent, and their answers read; anything
else stays with IPRoute.

Errors are pyroute2's NetlinkError, with the kernel's errno, as IPRoute
raises them.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ._pyroute2 import NetlinkError, ifaddrmsg, ifinfmsg, rtmsg

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4  # what IPRoute sets on the routes it adds
RTN_UNICAST = 1
ROUTE_TYPES = {"unicast": RTN_UNICAST, "unreachable": 7}
IFF_UP = 0x1

CHANGE = NLM_F_REQUEST | NLM_F_ACK
REPLACE = CHANGE | NLM_F_CREATE | NLM_F_REPLACE
CREATE = CHANGE | NLM_F_CREATE | NLM_F_EXCL
HEADER = struct.Struct("=LHHLL")  # nlmsghdr: length, type, flags, sequence, port
_ERROR = struct.Struct("=i")  # nlmsgerr's error, after the header
_ROUTE = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, ..., table, proto, scope, type


class Rtnl:
    """One rtnetlink socket, in the namespace this process (thread) is in
    when it is made: requests one at a time, each answered before the next."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.sock.bind((0, 0))
        self.sequence = 0

    def close(self) -> None:
        self.sock.close()

    def change(self, message: Any, kind: int, flags: int = CHANGE) -> None:
        """Send ``message`` as a ``kind`` request and wait for its
        acknowledgement; NetlinkError when the kernel refuses it."""
        self._exchange(message, kind, flags)

    def dump(self, message: Any, kind: int) -> list[bytes]:
        """Each message of a ``kind`` dump, raw (with its header)."""
        return self._exchange(message, kind, NLM_F_REQUEST | NLM_F_DUMP)

    def ask(self, message: Any, kind: int) -> bytes:
        """The one answer to a ``kind`` request (e.g. a route lookup)."""
        (answer,) = self._exchange(message, kind, CHANGE)
        return answer

    def _exchange(self, message: Any, kind: int, flags: int) -> list[bytes]:
        """The answers to one request, up to its acknowledgement or the
        dump's end."""
        self.sequence += 1
        header = message["header"]
        header["type"], header["flags"] = kind, flags
        header["sequence_number"] = self.sequence
        message.encode()
        self.sock.send(message.data)
        answers: list[bytes] = []
        while True:
            for kind_, sequence, chunk in messages(self.sock.recv(1 << 16)):
                if sequence != self.sequence:
                    continue  # an answer to an earlier request that gave up
                if kind_ in (NLMSG_ERROR, NLMSG_DONE):
                    # The acknowledgement (error 0) or refusal; a dump's end,
                    # where newer kernels put a dump's error too.
                    _raise_error(chunk)
                    return answers
                answers.append(chunk)


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The netlink messages of one datagram, each as its type, its sequence
    number and the message itself (with its header, HEADER.size bytes)."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, kind, _flags, sequence, _port = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            return  # not a message: the rest of this datagram neither
        yield kind, sequence, data[offset : offset + length]
        offset += (length + 3) & ~3


def _raise_error(chunk: bytes) -> None:
    if len(chunk) >= HEADER.size + _ERROR.size:
        (error,) = _ERROR.unpack_from(chunk, HEADER.size)
        if error < 0:
            raise NetlinkError(-error, os.strerror(-error))


# -- the messages ------------------------------------------------------------


def link(index: int, *, up: bool = False, **attrs: object) -> Any:
    """An RTM_NEWLINK change of link ``index``: ``up``, and attributes such
    as ``IFLA_MTU``, ``IFLA_NET_NS_FD``, ``IFLA_IFNAME``."""
    message = ifinfmsg()
    message["index"] = index
    if up:
        message["flags"] = message["change"] = IFF_UP
    message["attrs"] = list(attrs.items())
    return message


def new_link(name: str, kind: str) -> Any:
    """An RTM_NEWLINK (with CREATE) of a link ``name`` of ``kind``."""
    message = ifinfmsg()
    message["attrs"] = [
        ("IFLA_IFNAME", name),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}),
    ]
    return message


def address(index: int, family: int, address: str, prefixlen: int) -> Any:
    message = ifaddrmsg()
    message["family"], message["prefixlen"], message["index"] = family, prefixlen, index
    attrs = [("IFA_ADDRESS", address)]
    if family == socket.AF_INET:
        attrs.append(("IFA_LOCAL", address))
    message["attrs"] = attrs
    return message


def route(spec: Mapping[str, Any], *, adding: bool) -> Any:
    """A route request from an IPRoute-style spec (``family``, ``dst``
    ``"NET/LEN"`` or ``dst_len``, ``table``, ``type``, ``proto``,
    ``priority``, ``oif``, ``gateway``), filled in as IPRoute fills it: a
    route it adds is unicast and ``static`` unless the spec says otherwise;
    one it deletes is matched on what the spec gives alone."""
    message = rtmsg()
    message["family"] = spec["family"]
    destination, _, length = str(spec.get("dst", "")).partition("/")
    message["dst_len"] = int(length) if length else spec.get("dst_len", 0)
    table = spec.get("table", RT_TABLE_MAIN)
    message["table"] = table if table < 256 else RT_TABLE_MAIN  # RTA_TABLE has the rest
    kind = spec.get("type", "unicast" if adding else 0)
    message["type"] = ROUTE_TYPES.get(kind, kind)
    message["proto"] = spec.get("proto", RTPROT_STATIC if adding else 0)
    attrs: list[tuple[str, object]] = []
    if destination:
        attrs.append(("RTA_DST", destination))
    for key, name in (("priority", "RTA_PRIORITY"), ("oif", "RTA_OIF"), ("table", "RTA_TABLE")):
        if key in spec:
            attrs.append((name, spec[key]))
    if "gateway" in spec:
        attrs.append(("RTA_GATEWAY", spec["gateway"]))
    message["attrs"] = attrs
    return message


def lookup(family: int, destination: str) -> Any:
    """RTM_GETROUTE for one destination, as ``ip route get``."""
    message = rtmsg()
    message["family"], message["dst_len"] = family, 32 if family == socket.AF_INET else 128
    message["table"] = RT_TABLE_MAIN
    message["attrs"] = [("RTA_DST", destination)]
    return message


def dump_request(kind: type, family: int) -> Any:
    message = kind()
    message["family"] = family
    return message


def decoded(kind: type, data: bytes) -> Any:
    message = kind(data)
    message.decode()
    return message


def main_table_defaults(answers: Sequence[bytes]) -> Iterator[Any]:
    """The unicast default routes of the main table among route dump
    answers, decoded (the others are skipped on their fixed part alone)."""
    for data in answers:
        _family, dst_len, _src, _tos, table, _proto, _scope, kind, _flags = _ROUTE.unpack_from(
            data, HEADER.size
        )
        if dst_len == 0 and kind == RTN_UNICAST and table == RT_TABLE_MAIN:
            yield decoded(rtmsg, data)
