"""Quadlet for real, inside the Debian 13 machine (tests/platform): the
shipped example unit, packaging/quadlet/wg-pod-example.container, started
by systemd, restarted and stopped; the hook's journal lines for each.

Only the unit's image (no registry here: the local busybox image) and its
command (fetch through the tunnel, then serve a page on 8080, which the
example's ``wg-pod.port-remapping=80:8080`` exposes on the tunnel) are
replaced; every ``Annotation=`` line is the example's own. Collected only
inside the machine (see tests/platform/conftest.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import (
    REPO,
    TEST_IMAGE,
    Lab,
    Peer,
    Podman,
    assert_host_clean,
    free_udp_port,
    run,
    venv_command,
    wait_for,
)

pytestmark = pytest.mark.podman

EXAMPLE = REPO / "packaging" / "quadlet" / "wg-pod-example.container"
UNIT_DIR = Path("/etc/containers/systemd")
SERVICE = "wg-pod-example.service"
CONTAINER = "systemd-wg-pod-example"  # quadlet's default name for the unit
SERVED = "served-by-the-quadlet-unit"
WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")


def example_unit(url: str) -> str:
    """The shipped example with its Image= and Exec= lines replaced."""
    script = (
        f"for i in 1 2 3 4 5; do timeout 5 wget -qO- {url} && break; sleep 1; done; "
        f"mkdir -p /www && echo {SERVED} > /www/index.html && exec httpd -f -p 8080 -h /www"
    )
    replaced = {"Image=": f"Image={TEST_IMAGE}", "Exec=": f"Exec=sh -c '{script}'"}
    lines, seen = [], []
    for line in EXAMPLE.read_text().splitlines():
        for prefix, new in replaced.items():
            if line.startswith(prefix):
                line = new
                seen.append(prefix)
        lines.append(line)
    assert sorted(seen) == sorted(replaced), f"{EXAMPLE} changed shape: {seen}"
    return "\n".join(lines) + "\n"


def example_config_path() -> Path:
    (line,) = [
        line
        for line in EXAMPLE.read_text().splitlines()
        if line.startswith("Annotation=wg-pod.config=")
    ]
    return Path(line.split("=", 2)[2])


def systemctl(*args: str, timeout: float = 120) -> str:
    return run(["systemctl", *args], timeout=timeout).stdout


def journal(identifier: str = "wg-pod") -> str:
    return run(["journalctl", "-q", "--no-pager", "-o", "cat", "-t", identifier]).stdout


@pytest.fixture
def unit(lab: Lab, peer: Peer) -> Iterator[Path]:
    """The example unit and its config in place; both removed afterwards."""
    config = example_config_path()
    client = peer.add_client(listen_port=free_udp_port(), allowed_ips=["0.0.0.0/0", "::/0"])
    config.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(client.config)
    UNIT_DIR.mkdir(parents=True, exist_ok=True)
    path = UNIT_DIR / "wg-pod-example.container"
    path.write_text(example_unit(peer.url_v4))
    try:
        systemctl("daemon-reload")
        yield path
    finally:
        run(["systemctl", "stop", SERVICE], check=False, timeout=120)
        path.unlink(missing_ok=True)
        config.unlink(missing_ok=True)
        run(["systemctl", "daemon-reload"], check=False)
        run(["systemctl", "reset-failed"], check=False)


def fetch_served(peer: Peer, address: str) -> str | None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = peer.try_fetch(f"http://{address}/")
        if body is not None:
            return body
        time.sleep(0.5)
    return None


def container_id(podman: Podman) -> str:
    return podman("inspect", "--format", "{{.Id}}", CONTAINER).stdout.strip()


def test_the_example_quadlet_unit_starts_restarts_and_stops_with_its_tunnel(
    unit: Path, peer: Peer, podman: Podman
) -> None:
    (client,) = peer.clients
    assert client.address_v4 is not None
    address = str(client.address_v4.ip)
    generated = systemctl("cat", SERVICE)
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("Annotation="):
            assert f"--annotation {line.removeprefix('Annotation=')}" in generated, generated

    ids = []
    for action in ("start", "restart"):
        systemctl(action, SERVICE)
        cid = container_id(podman)
        ids.append(cid)
        # The container's first instruction fetched through the tunnel.
        wait_for(
            lambda c=cid: peer.page in podman("logs", c, check=False).stdout,  # type: ignore[misc]
            timeout=30,
            what=f"the page in the logs of {CONTAINER} after {action}",
        )
        # The tunnel reaches the container: 80 on the tunnel is its 8080.
        body = fetch_served(peer, address)
        assert body is not None and SERVED in body, (
            f"nothing served through the tunnel after {action}"
        )
        state = json.loads(run([*WG_POD, "status", cid, "--json"]).stdout)
        (tunnel,) = state["tunnels"]
        assert tunnel["interface"] == "wg0" and tunnel["name"] in (None, CONTAINER)
        assert tunnel["peers"][0]["latest_handshake"], tunnel
        routes = podman("exec", cid, "ip", "-4", "route").stdout
        defaults = [r for r in routes.splitlines() if r.startswith("default")]
        assert all("dev wg0" in r for r in defaults), routes  # the example's delete-default
    assert ids[0] != ids[1], "quadlet's restart makes a new container"

    systemctl("stop", SERVICE)
    assert podman("container", "exists", CONTAINER, check=False).returncode == 1
    assert_host_clean()
    assert fetch_served_once(peer, address) is None

    logged = journal()
    for cid in ids:
        lines = [line for line in logged.splitlines() if cid[:12] in line]
        # createRuntime's and poststop's lines, each naming the container.
        assert any(" up (" in line for line in lines), (cid, lines)
        assert any(" up (" not in line for line in lines), (cid, lines)


def fetch_served_once(peer: Peer, address: str) -> str | None:
    return peer.try_fetch(f"http://{address}/", timeout=2)


def test_a_failed_start_is_in_the_journal_and_in_wg_pod_status(
    lab: Lab, podman: Podman, config_dir: Path
) -> None:
    """crun hides the hook's reason; the journal and ``wg-pod status`` have it."""
    conf = Path(config_dir) / "broken.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[Interface]\nListenPort = 51820\n")
    name, done = podman.run("true", annotations={"wg-pod.config": str(conf)}, rm=False, check=False)
    assert done.returncode != 0
    cid = podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
    lines = [line for line in journal().splitlines() if cid[:12] in line]
    assert any(f"{conf}" in line and "PrivateKey" in line for line in lines), lines
    shown = run([*WG_POD, "status", name]).stdout
    assert f"container: {name} ({cid[:12]})" in shown and "failed to start:" in shown, shown
