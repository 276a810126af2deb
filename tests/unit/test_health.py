"""Health states from looks at a tunnel; the daemon's small parsers."""

from __future__ import annotations

import struct

from wg_pod_hook import notify
from wg_pod_hook.daemon.watches import RTM_DELLINK, deleted_links
from wg_pod_hook.state.health import (
    REJECT_AFTER_TIME,
    SEND_WINDOW,
    LivePeer,
    Sample,
    State,
    classify,
    next_health,
)

NOW = 1_800_000_000.0


def look(at: float, handshake: float | None, tx: int, rx: int = 0, endpoint: bool = True) -> Sample:
    at_endpoint = "198.18.0.2:51820" if endpoint else None
    peer = LivePeer("K" * 43 + "=", at_endpoint, (), int(handshake) if handshake else None, rx, tx)
    return Sample(at, (peer,))


def test_down_when_the_interface_is_missing() -> None:
    assert classify(Sample(NOW, None), None) is State.DOWN


def test_up_with_a_recent_handshake() -> None:
    assert classify(look(NOW, NOW - 10, tx=100), None) is State.UP


def test_idle_when_nothing_is_sent() -> None:
    before = look(NOW - 10, NOW - 600, tx=100)
    assert classify(look(NOW, NOW - 600, tx=100), before) is State.IDLE
    assert classify(look(NOW, None, tx=0), None) is State.IDLE  # never used yet


def test_stale_when_sending_without_a_handshake() -> None:
    before = look(NOW - 10, NOW - REJECT_AFTER_TIME - 5, tx=100)
    assert classify(look(NOW, NOW - REJECT_AFTER_TIME - 5, tx=248), before) is State.STALE
    never = look(NOW - 10, None, tx=148)
    assert classify(look(NOW, None, tx=296), never) is State.STALE


def test_peers_without_an_endpoint_are_not_judged() -> None:
    """A server-side peer that waits for its client is not stale."""
    before = look(NOW - 10, None, tx=0, endpoint=False)
    assert classify(look(NOW, None, tx=10, endpoint=False), before) is State.UP


def test_looks_closer_than_the_send_window_keep_the_older_reference() -> None:
    first = next_health(None, "c", look(NOW, NOW - 600, tx=100))
    assert first.state is State.IDLE
    soon = next_health(first, "c", look(NOW + 1, NOW - 600, tx=248))
    assert soon.state is State.IDLE and soon.sample == first.sample
    later = next_health(soon, "c", look(NOW + SEND_WINDOW + 1, NOW - 600, tx=396))
    assert later.state is State.STALE and later.since == NOW + SEND_WINDOW + 1


def test_repairing_is_a_down_tunnel_the_daemon_works_on() -> None:
    health = next_health(None, "c", Sample(NOW, None), repairing=True)
    assert health.state is State.REPAIRING and not health.state.healthy
    assert State.IDLE.healthy and State.UP.healthy and not State.STALE.healthy


def test_notify_messages() -> None:
    assert notify.parse(b"up " + b"a" * 64) == ("up", "a" * 64, None)
    assert notify.parse(b"up abc 0.183") == ("up", "abc", 0.183)
    assert notify.parse(b"down abc") == ("down", "abc", None)
    for bad in (b"up", b"reboot abc", b"up ../../etc", b"up a b", b"up a -1", b"up a 1 2", b"\xff"):
        assert notify.parse(bad) is None


def test_deleted_links_are_read_from_netlink_datagrams() -> None:
    def message(kind: int, index: int) -> bytes:
        body = struct.pack("=BxHiII", 0, 1, index, 0, 0)
        return struct.pack("=LHHLL", 16 + len(body), kind, 0, 0, 0) + body

    data = message(16, 3) + message(RTM_DELLINK, 7) + message(RTM_DELLINK, 9)
    assert deleted_links(data) == [7, 9]
    assert deleted_links(b"\x00" * 8) == []
