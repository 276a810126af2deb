"""rtnl.py builds each request the setup sends as pyroute2's IPRoute would
build it: compared with what IPRoute compiles for the same call (its
IPBatch sends nothing, it only encodes), field by field and attribute by
attribute.  The kernel's answers are tested in tests/integration."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from ipaddress import ip_network
from typing import Any

import pytest

from wg_pod_hook.kernel import routes, rtnl
from wg_pod_hook.kernel._pyroute2 import ifaddrmsg, ifinfmsg, rtmsg

IPBatch: Any = pytest.importorskip("pyroute2.iproute.linux").IPBatch
HEADER = struct.Struct("=LHHLL")


def compiled(call: Callable[[Any], object]) -> bytes:
    batch = IPBatch()
    call(batch)
    return bytes(batch.asyncore.batch)


def ours(message: Any, kind: int, flags: int) -> bytes:
    header = message["header"]
    header["type"], header["flags"], header["sequence_number"] = kind, flags, 1
    message.encode()
    return bytes(message.data)


def meaning(data: bytes, kind: type) -> tuple[int, int, dict[str, Any], list[tuple[str, Any]]]:
    """Type, flags, fields and attributes (sorted) of an encoded request."""
    _length, type_, flags, _seq, _port = HEADER.unpack_from(data)
    message = kind(data)
    message.decode()
    fields = {name: message[name] for name, *_ in kind.fields if not name.startswith("__")}
    return type_, flags, fields, sorted((a[0], a[1]) for a in message["attrs"])


ROUTES = [
    {"dst": "10.99.0.0/24", "family": 2, "oif": 5},
    {"dst": "10.99.0.0/24", "family": 2, "oif": 5, "table": 51820},
    {"dst": "fd00:99::/64", "family": 10, "oif": 5, "table": 200},
    {"dst": "10.99.0.0/24", "family": 2, "gateway": "10.0.0.1"},
    routes._guard_spec(ip_network("10.99.0.0/24"), None),
    routes._guard_spec(ip_network("::/1"), 51820),
    # a default route as default_routes gives it (restored, deleted)
    {"family": 2, "dst_len": 0, "table": 254, "proto": 3, "priority": 100, "oif": 2,
     "gateway": "10.0.0.1"},
    {"family": 10, "dst_len": 0, "table": 254, "proto": 3, "oif": 2, "gateway": "fe80::1"},
]  # fmt: skip


@pytest.mark.parametrize("spec", ROUTES)
def test_a_route_added_or_deleted_is_the_request_iproute_sends(spec: dict[str, Any]) -> None:
    assert meaning(
        ours(rtnl.route(spec, adding=True), rtnl.RTM_NEWROUTE, rtnl.REPLACE), rtmsg
    ) == meaning(compiled(lambda b: b.route("replace", **spec)), rtmsg)
    assert meaning(
        ours(rtnl.route(spec, adding=False), rtnl.RTM_DELROUTE, rtnl.CHANGE), rtmsg
    ) == meaning(compiled(lambda b: b.route("del", **spec)), rtmsg)


@pytest.mark.parametrize(
    ("family", "address", "prefixlen"),
    [
        (socket.AF_INET, "10.0.0.2", 24),
        (socket.AF_INET, "10.0.0.2", 32),
        (socket.AF_INET6, "fd00::2", 64),
    ],
)
def test_an_address_is_the_request_iproute_sends(family: int, address: str, prefixlen: int) -> None:
    expected = compiled(lambda b: b.addr("replace", index=5, address=address, prefixlen=prefixlen))
    message = rtnl.address(5, family, address, prefixlen)
    assert meaning(ours(message, rtnl.RTM_NEWADDR, rtnl.REPLACE), ifaddrmsg) == meaning(
        expected, ifaddrmsg
    )


@pytest.mark.parametrize(
    ("ours_", "iproute"),
    [
        (lambda: rtnl.link(5, up=True), {"state": "up"}),
        (lambda: rtnl.link(5, IFLA_MTU=1420), {"mtu": 1420}),
        (
            lambda: rtnl.link(5, IFLA_NET_NS_FD=7, IFLA_IFNAME="wg0"),
            {"net_ns_fd": 7, "ifname": "wg0"},
        ),
    ],
    ids=["up", "mtu", "move"],
)
def test_a_link_change_is_the_request_iproute_sends(
    ours_: Callable[[], Any], iproute: dict[str, Any]
) -> None:
    expected = compiled(lambda b: b.link("set", index=5, **iproute))
    assert meaning(ours(ours_(), rtnl.RTM_NEWLINK, rtnl.CHANGE), ifinfmsg) == meaning(
        expected, ifinfmsg
    )


def test_a_new_link_is_the_request_iproute_sends() -> None:
    expected = compiled(lambda b: b.link("add", ifname="wgx", kind="wireguard"))
    ours_ = ours(rtnl.new_link("wgx", "wireguard"), rtnl.RTM_NEWLINK, rtnl.CREATE)
    assert meaning(ours_, ifinfmsg) == meaning(expected, ifinfmsg)


def test_a_link_deletion_is_the_request_iproute_sends() -> None:
    expected = compiled(lambda b: b.link("del", index=5))
    ours_ = ours(rtnl.link(5), rtnl.RTM_DELLINK, rtnl.CHANGE)
    assert meaning(ours_, ifinfmsg) == meaning(expected, ifinfmsg)


@pytest.mark.parametrize(("family", "destination"), [(2, "10.1.2.3"), (10, "fd00::1")])
def test_a_route_lookup_is_the_request_iproute_sends(family: int, destination: str) -> None:
    expected = compiled(lambda b: b.route("get", dst=destination))
    message = rtnl.lookup(family, destination)
    assert meaning(ours(message, rtnl.RTM_GETROUTE, rtnl.CHANGE), rtmsg) == meaning(expected, rtmsg)


def test_only_main_table_unicast_defaults_are_decoded() -> None:
    def answer(**fields: int) -> bytes:
        message = rtmsg()
        message["family"], message["table"], message["type"] = 2, 254, rtnl.RTN_UNICAST
        for name, value in fields.items():
            message[name] = value
        message["attrs"] = [("RTA_GATEWAY", "10.0.0.1")]
        return ours(message, rtnl.RTM_NEWROUTE, 0)

    answers = [
        answer(),
        answer(dst_len=24),
        answer(table=255),
        answer(type=7),
        answer(table=51820 % 256),
    ]
    found = list(rtnl.main_table_defaults(answers))
    assert [r.get("RTA_GATEWAY") for r in found] == ["10.0.0.1"]
