"""1. Container start overhead: ``podman run --rm`` of the busybox image with
the wg-pod annotation vs the same without, interleaved; with the hook
standalone, then with the daemon running (the hook hands its work over)."""

from __future__ import annotations

from tests.lab import Daemon, Lab

from .common import Result, Row, Setup, Stats, interleaved, timed


def run(lab: Lab, small: bool) -> Result:
    setup = Setup(lab)
    conf = setup.config()
    podman = setup.podman
    # One warm-up each: the first podman run after a while pays for caches.
    podman.run("true")
    podman.run("true", annotations={"wg-pod.config": str(conf)})
    pairs = 2 if small else 15
    rows, details = [], []
    for way in ("standalone", "through the daemon"):
        daemon = Daemon(lab, setup.settings) if way != "standalone" else None
        hooked, plain = interleaved(
            pairs,
            lambda: timed(lambda: podman.run("true", annotations={"wg-pod.config": str(conf)})),
            lambda: timed(lambda: podman.run("true")),
        )
        if daemon is not None:
            daemon.stop()
        rows.append(
            Row(
                "start",
                f"podman run --rm true, with hook {way}",
                "ms",
                Stats.of(hooked),
                Stats.of(plain),
                "without",
            )
        )
        added = Stats.of(hooked).median - Stats.of(plain).median
        details.append(f"start: the hook {way} adds {added:.0f} ms (median) to podman run")
    return Result(rows, details)
