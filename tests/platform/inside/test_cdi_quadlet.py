"""A quadlet unit that asks for a wg-pod CDI device, inside the Debian 13
machine (tests/platform): ``wg-pod cdi generate`` by the installed
package, ``AddDevice=wg-pod.dev/tunnel=NAME`` in the ``.container`` file
and no annotation at all; systemd starts it, it fetches through the
tunnel named after its config, ``wg-pod status`` knows it, and stopping
the unit leaves nothing. Collected only inside the machine (see
tests/platform/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import (
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

UNIT_DIR = Path("/etc/containers/systemd")
NAME = "wgpt-device"
SERVICE = f"{NAME}.service"
CONTAINER = f"systemd-{NAME}"
DEVICE = "wgpt-dev"  # the config's stem: the device's name and the interface's
CONFIG = Path(f"/etc/wg/{DEVICE}.conf")
SPEC = Path("/var/run/cdi/wgpt-device.json")
WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")


@pytest.fixture
def unit(lab: Lab, peer: Peer) -> Iterator[Path]:
    client = peer.add_client(listen_port=free_udp_port())
    CONFIG.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(client.config)
    script = f"for i in 1 2 3 4 5; do timeout 5 wget -qO- {peer.url_v4} && break; sleep 1; done"
    UNIT_DIR.mkdir(parents=True, exist_ok=True)
    path = UNIT_DIR / f"{NAME}.container"
    path.write_text(
        "[Container]\n"
        f"Image={TEST_IMAGE}\n"
        f"Exec=sh -c '{script}; exec sleep 600'\n"
        f"AddDevice=wg-pod.dev/tunnel={DEVICE}\n"
    )
    try:
        run([*WG_POD, "cdi", "generate", "--output", str(SPEC)])
        run(["systemctl", "daemon-reload"])
        yield path
    finally:
        run(["systemctl", "stop", SERVICE], check=False, timeout=120)
        for each in (path, CONFIG, SPEC):
            each.unlink(missing_ok=True)
        run(["systemctl", "daemon-reload"], check=False)
        run(["systemctl", "reset-failed"], check=False)


def test_a_quadlet_unit_with_the_device_gets_its_tunnel(
    unit: Path, peer: Peer, podman: Podman
) -> None:
    listed = run([*WG_POD, "cdi", "list"]).stdout
    assert f"wg-pod.dev/tunnel={DEVICE}\t{CONFIG}" in listed, listed
    run(["systemctl", "start", SERVICE], timeout=120)
    wait_for(
        lambda: peer.page in podman("logs", CONTAINER, check=False).stdout,
        timeout=40,
        what=f"the page in the logs of {CONTAINER}",
    )
    links = podman("exec", CONTAINER, "ip", "-o", "link").stdout
    assert f": {DEVICE}: " in links, links
    cid = podman("inspect", "--format", "{{.Id}}", CONTAINER).stdout.strip()
    status = run([*WG_POD, "status", cid]).stdout  # by id: no podman API needed
    assert f"interface: {DEVICE}" in status and f"config: {CONFIG}" in status, status
    run(["systemctl", "stop", SERVICE], timeout=120)
    assert_host_clean()
