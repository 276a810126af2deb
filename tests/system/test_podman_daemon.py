"""The daemon under real podman: a container that keeps fetching survives
the death of its wireguard-go, and many containers come and go while it
runs with nothing left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.lab import (
    RETRYING_WGET,
    SYSTEM_PODMAN,
    ConfigDir,
    Daemon,
    Lab,
    Peer,
    Podman,
    assert_host_clean,
    rss_kib,
    the_runtime,
    wait_for,
)
from wg_pod_hook.state import health, records

pytestmark = pytest.mark.podman

# Cycles of the soak: a warm-up, then 100 over which the daemon's memory
# must not grow, on the host; a short one where the same scenarios run again
# inside the Debian 13 machine, once per runtime (tests/platform).
# WG_POD_SOAK overrides.
SOAK = int(os.environ.get("WG_POD_SOAK", "20" if SYSTEM_PODMAN else "120"))
WARM_UP = min(20, SOAK // 2)
# What the daemon may grow by after the warm-up (it kept ~30 KiB for every
# container once: 3 MiB over 100).
GROWTH_KIB = 1024

# A loop that fetches through the tunnel every half second and reports.
FETCH_LOOP = (
    "while true; do if timeout 3 wget -qO- {url} >/dev/null 2>&1; "
    "then echo ok; else echo failed; fi; sleep 0.5; done"
)


class Fetching:
    """A container that fetches the peer's page through its tunnel every
    half second and logs ``ok`` or ``failed`` for each try."""

    def __init__(self, podman: Podman, peer: Peer, conf: Path) -> None:
        self.podman = podman
        self.name, _ = podman.run(
            "sh",
            "-c",
            FETCH_LOOP.format(url=peer.url_v4),
            annotations={"wg-pod.config": str(conf)},
            detach=True,
        )
        self.id = podman("inspect", "--format", "{{.Id}}", self.name).stdout.strip()

    def tries(self) -> int:
        return len(self._log())

    def fetched_since(self, tries: int) -> bool:
        return "ok" in self._log()[tries:]

    def _log(self) -> list[str]:
        return self.podman("logs", self.name).stdout.splitlines()


def test_a_container_keeps_its_tunnel_when_wireguard_go_dies(
    lab: Lab, peer: Peer, config_dir: ConfigDir, settings: Path, hooked_podman: Podman
) -> None:
    Daemon(lab, settings)
    container = Fetching(hooked_podman, peer, config_dir.write("wg0.conf", peer.client_config()))
    wait_for(lambda: container.fetched_since(0), timeout=20, what="the container's first fetch")
    wait_for(
        lambda: health.read(the_runtime(), container.id) is not None,
        timeout=5,
        what="the daemon's look",
    )
    record = records.load(the_runtime(), container.id)
    assert record is not None and record.process is not None
    os.kill(record.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    seen = container.tries()
    wait_for(lambda: container.fetched_since(seen), timeout=20, what="a fetch after the repair")
    print(f"fetching again {time.monotonic() - killed_at:.2f} s after the kill")
    running = hooked_podman("inspect", "--format", "{{.State.Running}}", container.name)
    assert running.stdout.strip() == "true"
    kept = health.read(the_runtime(), container.id)
    assert kept is not None and kept.repairs == 1
    hooked_podman.remove(container.name)
    assert_host_clean()


def test_soak_containers_come_and_go_while_the_daemon_runs(
    lab: Lab, peer: Peer, config_dir: ConfigDir, settings: Path, hooked_podman: Podman
) -> None:
    daemon = Daemon(lab, settings)
    conf = config_dir.write("wg0.conf", peer.client_config())
    script = RETRYING_WGET.format(url=peer.url_v4)
    rss_start = rss_warm = rss_kib(daemon.process.pid)
    every_hundred = []
    start = time.monotonic()
    for cycle in range(SOAK):
        _, done = hooked_podman.run("sh", "-c", script, annotations={"wg-pod.config": str(conf)})
        assert peer.page in done.stdout, f"cycle {cycle}: {done.stdout} {done.stderr}"
        if cycle == WARM_UP - 1:
            rss_warm = rss_kib(daemon.process.pid)
        if (cycle + 1) % 100 == 0:
            every_hundred.append(f"{rss_kib(daemon.process.pid)} after {cycle + 1}")
    rss_end = rss_kib(daemon.process.pid)
    print(
        f"soak: {SOAK} containers in {time.monotonic() - start:.0f} s, all connected; "
        f"daemon RSS {rss_start} KiB at start, {rss_warm} KiB after {WARM_UP}, {rss_end} KiB "
        f"after {SOAK} (+{rss_end - rss_warm} KiB); every 100: {', '.join(every_hundred)}"
    )
    assert daemon.process.poll() is None
    assert rss_end - rss_warm < GROWTH_KIB
    assert_host_clean()
    assert list(Path(the_runtime().health).glob("*.json")) == []
