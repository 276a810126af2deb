"""When the daemon resolves a peer's host name again, and when it points
the peer elsewhere (resolution and the backend faked: our own boundaries)."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest

from wg_pod_hook import endpoints
from wg_pod_hook.backends import LivePeer
from wg_pod_hook.config import Endpoint, Key
from wg_pod_hook.records import NetnsId, TunnelRecord

NOW = 1_800_000_000
KEY = Key(bytes(range(32)))
RECORD = TunnelRecord("c" * 64, "wg0", "/etc/wg/wg0.conf", NetnsId("/x", 1, 2), 0.0)
FOLLOWED = {KEY.base64: endpoints.Followed(KEY, Endpoint("vpn.example", 51820))}


def peer(handshake_age: int | None, endpoint: str = "198.18.0.2:51820") -> LivePeer:
    handshake = NOW - handshake_age if handshake_age is not None else None
    return LivePeer(KEY.base64, endpoint, (), handshake, 0, 0)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"resolve": [], "set": []}
    answer = (ip_address("198.18.0.6"), 51820)

    def resolve(endpoint: Endpoint, attempts: int = 3) -> Any:
        seen["resolve"].append((endpoint.host, attempts))
        return answer

    monkeypatch.setattr(endpoints, "resolve_endpoint", resolve)
    monkeypatch.setattr(endpoints, "_set_endpoint", lambda *args: seen["set"].append(args[1:]))
    return seen


def test_a_recent_handshake_needs_no_lookup(calls: dict[str, list[Any]]) -> None:
    assert endpoints.follow(RECORD, FOLLOWED, [peer(100)], NOW, after=135) == []
    assert calls["resolve"] == []


def test_an_old_handshake_is_followed_to_the_new_address(calls: dict[str, list[Any]]) -> None:
    changed = endpoints.follow(RECORD, FOLLOWED, [peer(200)], NOW, after=135)
    assert changed == [f"{KEY.base64}: 198.18.0.2:51820 -> 198.18.0.6:51820"]
    assert calls["resolve"] == [("vpn.example", 1)]  # one try: the daemon must not hang
    assert calls["set"] == [(KEY, (ip_address("198.18.0.6"), 51820))]


def test_no_handshake_ever_counts_as_old(calls: dict[str, list[Any]]) -> None:
    endpoints.follow(RECORD, FOLLOWED, [peer(None)], NOW, after=135)
    assert len(calls["set"]) == 1


def test_the_same_address_is_left_alone(calls: dict[str, list[Any]]) -> None:
    assert endpoints.follow(RECORD, FOLLOWED, [peer(200, "198.18.0.6:51820")], NOW, 135) == []
    assert calls["set"] == []


def test_peers_with_literal_endpoints_are_not_followed(calls: dict[str, list[Any]]) -> None:
    assert endpoints.follow(RECORD, {}, [peer(200)], NOW, after=135) == []
    assert calls["resolve"] == []
