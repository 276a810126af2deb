"""1. Container start overhead: ``podman run --rm`` of the busybox image with
the wg-pod annotation vs the same without, interleaved."""

from __future__ import annotations

from tests.lab import Lab

from .common import Result, Row, Setup, Stats, interleaved, timed


def run(lab: Lab, small: bool) -> Result:
    setup = Setup(lab)
    conf = setup.config()
    podman = setup.podman
    # One warm-up each: the first podman run after a while pays for caches.
    podman.run("true")
    podman.run("true", annotations={"wg-pod.config": str(conf)})
    pairs = 2 if small else 15
    hooked, plain = interleaved(
        pairs,
        lambda: timed(lambda: podman.run("true", annotations={"wg-pod.config": str(conf)})),
        lambda: timed(lambda: podman.run("true")),
    )
    row = Row(
        "start",
        "podman run --rm true, with hook",
        "ms",
        Stats.of(hooked),
        Stats.of(plain),
        "without",
    )
    added = Stats.of(hooked).median - Stats.of(plain).median
    return Result([row], [f"start: the hook adds {added:.0f} ms (median) to podman run"])
