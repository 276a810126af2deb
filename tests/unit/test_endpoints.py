"""When the daemon resolves a peer's host name again, and when it points
the peer elsewhere (resolution and the backend faked: our own boundaries)."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address
from typing import Any

import pytest

from wg_pod_hook.errors import StateError, WgPodError
from wg_pod_hook.model.config import Endpoint, Key
from wg_pod_hook.model.settings import Settings
from wg_pod_hook.runtime import Runtime
from wg_pod_hook.state.health import LivePeer
from wg_pod_hook.state.records import NetnsId, TunnelRecord
from wg_pod_hook.tunnel import endpoints

NOW = 1_800_000_000
RUNTIME = Runtime("/nonexistent/wg-pod", root=True)
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
    monkeypatch.setattr(endpoints, "_set_endpoint", lambda *args: seen["set"].append(args[2:]))
    return seen


def test_a_recent_handshake_needs_no_lookup(calls: dict[str, list[Any]]) -> None:
    assert endpoints.follow(RUNTIME, RECORD, FOLLOWED, [peer(100)], NOW, after=135) == []
    assert calls["resolve"] == []


def test_an_old_handshake_is_followed_to_the_new_address(calls: dict[str, list[Any]]) -> None:
    changed = endpoints.follow(RUNTIME, RECORD, FOLLOWED, [peer(200)], NOW, after=135)
    assert changed == [f"{KEY.base64}: 198.18.0.2:51820 -> 198.18.0.6:51820"]
    assert calls["resolve"] == [("vpn.example", 1)]  # one try: the daemon must not hang
    assert calls["set"] == [(KEY, (ip_address("198.18.0.6"), 51820))]


def test_no_handshake_ever_counts_as_old(calls: dict[str, list[Any]]) -> None:
    endpoints.follow(RUNTIME, RECORD, FOLLOWED, [peer(None)], NOW, after=135)
    assert len(calls["set"]) == 1


def test_the_same_address_is_left_alone(calls: dict[str, list[Any]]) -> None:
    assert (
        endpoints.follow(RUNTIME, RECORD, FOLLOWED, [peer(200, "198.18.0.6:51820")], NOW, 135) == []
    )
    assert calls["set"] == []


def test_peers_with_literal_endpoints_are_not_followed(calls: dict[str, list[Any]]) -> None:
    assert endpoints.follow(RUNTIME, RECORD, {}, [peer(200)], NOW, after=135) == []
    assert calls["resolve"] == []


def test_the_followed_peers_come_from_the_record_without_reading_the_config() -> None:
    """A repair's new record names them: the daemon does not parse the
    config a second time (the path here does not exist)."""
    record = replace(RECORD, config="/nonexistent/wg0.conf", followed={KEY.base64: ("vpn", 7)})
    followed = endpoints.host_name_peers(record, Settings())
    assert followed == {KEY.base64: endpoints.Followed(KEY, Endpoint("vpn", 7))}


def test_an_older_record_has_its_followed_peers_read_from_the_config() -> None:
    record = replace(RECORD, config="/nonexistent/wg0.conf")  # followed: None
    with pytest.raises(WgPodError, match="nonexistent"):
        endpoints.host_name_peers(record, Settings())


def test_a_broken_key_in_the_record_is_a_state_error() -> None:
    record = replace(RECORD, followed={"not a key": ("vpn", 7)})
    with pytest.raises(StateError, match="followed peers"):
        endpoints.host_name_peers(record, Settings())
