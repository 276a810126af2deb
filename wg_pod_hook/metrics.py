"""Prometheus metrics of the daemon, opt-in (settings ``metrics_listen``).

Served by prometheus-client's own HTTP server, in its thread, from files
only: the records and the daemon's last look at each tunnel
(``health/`` in the state directory), so a scrape never enters a namespace nor waits
on the daemon's loop; what it shows is at most one look (TICK) old.  The
hook's durations come from the hook itself, with the message that tells
the daemon a tunnel is up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from .runtime import Runtime
from .state import health, records

log = logging.getLogger(__name__)

# Buckets for a hook's run: from a warm start to a slow machine's.
HOOK_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)


class Metrics:
    """The daemon's registry: the tunnels (collected at each scrape) and
    the hook's durations (observed as the hook reports them)."""

    def __init__(self, runtime: Runtime) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Tunnels(runtime))
        self.hook_seconds = Histogram(
            "wg_pod_hook_duration_seconds",
            "Wall time of the hook's createRuntime, as the hook measured it",
            buckets=HOOK_BUCKETS,
            registry=self.registry,
        )

    def serve(self, host: str, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("metrics on http://%s/metrics", where)

    def hook_took(self, seconds: float) -> None:
        self.hook_seconds.observe(seconds)


class _Tunnels:
    """Collects the tunnels' metrics from the records and health files."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        tunnel = ["container", "interface"]
        peer = [*tunnel, "public_key"]
        state = GaugeMetricFamily(
            "wg_pod_tunnel_state", "1 for the tunnel's health state", labels=[*tunnel, "state"]
        )
        repairs = CounterMetricFamily(
            "wg_pod_tunnel_repairs", "Times the daemon set the tunnel up again", labels=tunnel
        )
        handshake = GaugeMetricFamily(
            "wg_pod_peer_latest_handshake_seconds",
            "Unix time of the peer's latest handshake (0: none)",
            labels=peer,
        )
        received = CounterMetricFamily(
            "wg_pod_peer_receive_bytes", "Bytes received from the peer", labels=peer
        )
        sent = CounterMetricFamily(
            "wg_pod_peer_transmit_bytes", "Bytes sent to the peer", labels=peer
        )
        for record in records.read_all(self.runtime):
            if record.shared_with:
                continue
            kept = health.read(self.runtime, record.container_id)
            labels = [record.container_id[:12], record.interface]
            for each in health.State:
                current = kept is not None and kept.state is each
                state.add_metric([*labels, each.value], 1.0 if current else 0.0)
            repairs.add_metric(labels, float(kept.repairs if kept else 0))
            sample = kept.sample if kept else None
            for p in (sample.peers or ()) if sample else ():
                keyed = [*labels, p.public_key]
                handshake.add_metric(keyed, float(p.latest_handshake or 0))
                received.add_metric(keyed, float(p.rx_bytes))
                sent.add_metric(keyed, float(p.tx_bytes))
        yield from (state, repairs, handshake, received, sent)
