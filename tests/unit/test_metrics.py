"""The daemon's metrics: the listen setting, and what a scrape shows from
the records and health files (prometheus-client's own parser reads it)."""

from __future__ import annotations

import os

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.lab import the_runtime
from wg_pod_hook import metrics
from wg_pod_hook.errors import SettingsError
from wg_pod_hook.model.settings import parse_settings
from wg_pod_hook.state import health, records
from wg_pod_hook.state.health import LivePeer

CID = "c" * 64


def test_listen_setting() -> None:
    assert parse_settings("metrics_listen: 127.0.0.1:9586", "s").metrics_listen == (
        "127.0.0.1",
        9586,
    )
    assert parse_settings("metrics_listen: '[::1]:9586'", "s").metrics_listen == ("::1", 9586)
    for bad in ("9586", "localhost:9586", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(SettingsError, match="metrics_listen"):
            parse_settings(f"metrics_listen: '{bad}'", "s")


@pytest.mark.usefixtures("state_dir")
def test_a_scrape_shows_state_repairs_and_peers() -> None:
    info = os.stat("/proc/self/ns/net")
    netns = records.NetnsId("/proc/self/ns/net", info.st_dev, info.st_ino)
    records.write(
        the_runtime(),
        records.TunnelRecord(CID, "wg0", "/etc/wg/wg0.conf", netns, 0.0, complete=True),
    )
    peer = LivePeer(
        "K" * 43 + "=", "198.18.0.2:51820", (), 1_800_000_000, rx_bytes=1234, tx_bytes=567
    )
    sample = health.Sample(1_800_000_005.0, (peer,))
    health.write(
        the_runtime(), health.Health(CID, health.State.UP, 1.0, 2.0, repairs=2, sample=sample)
    )

    served = metrics.Metrics(the_runtime())
    served.hook_took(0.183)
    text = generate_latest(served.registry).decode()
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    tunnel = (("container", CID[:12]), ("interface", "wg0"))
    keyed = (*tunnel, ("public_key", peer.public_key))
    assert found[("wg_pod_tunnel_state", tuple(sorted((*tunnel, ("state", "up")))))] == 1
    assert found[("wg_pod_tunnel_state", tuple(sorted((*tunnel, ("state", "down")))))] == 0
    assert found[("wg_pod_tunnel_repairs_total", tunnel)] == 2
    assert found[("wg_pod_peer_receive_bytes_total", tuple(sorted(keyed)))] == 1234
    assert found[("wg_pod_peer_transmit_bytes_total", tuple(sorted(keyed)))] == 567
    assert found[("wg_pod_peer_latest_handshake_seconds", tuple(sorted(keyed)))] == 1_800_000_000
    assert found[("wg_pod_hook_duration_seconds_count", ())] == 1
