"""3. Time to first packet: from ``podman run`` to the container's first
successful HTTP response from the peer through the tunnel, vs the same
container fetching from a server on podman's own network without the hook;
with the hook standalone, then handing its work to a running daemon."""

from __future__ import annotations

import subprocess
import time

from tests.lab import TEST_IMAGE, Daemon, Lab, token

from .common import Result, Row, Setup, Stats, interleaved

FETCH = "until timeout 5 wget -q -O /dev/null {url}; do sleep 0.01; done; echo FIRST-OK"
DEADLINE = 60.0


def _time_to_first(podman_argv: list[str], url: str, env: dict[str, str]) -> float:
    """ms from starting ``podman run`` until the container printed its success."""
    argv = [*podman_argv, "sh", "-c", FETCH.format(url=url)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the container exits, or we kill it below
            if line.strip() == "FIRST-OK":
                return (time.perf_counter() - start) * 1000
            if time.perf_counter() - start > DEADLINE:
                break
        raise RuntimeError(f"no response within {DEADLINE:g}s: {' '.join(argv)}")
    finally:
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(lab: Lab, small: bool) -> Result:
    setup = Setup(lab)
    conf = setup.config()
    # The hooks dir comes with the lab's containers.conf (setup.podman.env).
    base = ["podman", "run", "--rm"]
    server, _ = setup.podman.run(
        "sh", "-c", "echo local > /www/index.html && exec httpd -f -p 8080 -h /www", detach=True
    )
    ip = setup.podman("inspect", "-f", "{{.NetworkSettings.IPAddress}}", server).stdout.strip()
    local_url = f"http://{ip}:8080/"

    def hooked() -> float:
        name = f"wgpt-{token()}"
        lab.defer(f"podman rm -f {name}", lambda: setup.podman.remove(name))
        argv = [*base, "--name", name, "--annotation", f"wg-pod.config={conf}", TEST_IMAGE]
        return _time_to_first(argv, setup.peer.url_v4, setup.podman.env)

    def plain() -> float:
        name = f"wgpt-{token()}"
        lab.defer(f"podman rm -f {name}", lambda: setup.podman.remove(name))
        return _time_to_first([*base, "--name", name, TEST_IMAGE], local_url, setup.podman.env)

    hooked()  # warm-up
    pairs = 1 if small else 10
    result = Result()
    for way in ("standalone", "through the daemon"):
        daemon = Daemon(lab, setup.settings) if way != "standalone" else None
        tunnel, local = interleaved(pairs, hooked, plain)
        if daemon is not None:
            daemon.stop()
        t, b = Stats.of(tunnel), Stats.of(local)
        result.rows.append(
            Row(
                "first",
                f"podman run -> first HTTP response via tunnel, hook {way}",
                "ms",
                t,
                b,
                "podman network, no hook",
            )
        )
        result.details.append(
            f"first, hook {way}: {t.median - b.median:.0f} ms later than the baseline (median)"
        )
    return result
