"""Docker, through a wg-pod CDI device, inside the Debian 13 machine
(tests/platform): Debian's docker.io with CDI turned on in daemon.json
(``features.cdi``), ``wg-pod cdi generate`` by the installed package, and
``docker run --device wg-pod.dev/tunnel=NAME``; the container fetches
through its tunnel, sees the tunnel's resolver in the resolv.conf Docker
keeps for it, the packaged daemon repairs a killed wireguard-go, and
removing the container leaves nothing. A Compose file with ``devices:``
does the same. Collected only inside the machine.

The machine's root does not start Docker at boot (tests/platform/machine.py):
these tests start it, with ``iptables: false``, so that Docker's FORWARD
policy never meets the other tests' podman networks, and stop it again.
The tunnel does not need Docker's rules: its UDP leaves from the machine's
namespace, where wg-pod creates the link.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import (
    TEST_IMAGE,
    Lab,
    Peer,
    host_leftovers,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from tests.platform.inside.test_daemon_unit import service  # noqa: F401
from tests.system.test_podman_daemon import FETCH_LOOP
from wg_pod_hook.state import records

pytestmark = pytest.mark.podman

DAEMON_JSON = Path("/etc/docker/daemon.json")
DEVICE = "wgpt-docker"  # the config's stem: the device's name and the interface's
CONFIG = Path(f"/etc/wg/{DEVICE}.conf")
SPEC = Path("/var/run/cdi/wgpt-docker.json")
WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")


def docker(*args: str, check: bool = True) -> str:
    return run(["docker", *args], check=check, timeout=120).stdout


class Fetching:
    """A Docker container on the device that fetches the peer's page every
    half second and logs ``ok`` or ``failed`` for each try."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = docker("inspect", "--format", "{{.Id}}", name).strip()

    def tries(self) -> int:
        return len(self._log())

    def fetched_since(self, tries: int) -> bool:
        return "ok" in self._log()[tries:]

    def _log(self) -> list[str]:
        return docker("logs", self.name).splitlines()


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    """dockerd with CDI on, the suite's test image in its store."""
    DAEMON_JSON.parent.mkdir(exist_ok=True)
    DAEMON_JSON.write_text(
        json.dumps({"features": {"cdi": True}, "iptables": False, "ip6tables": False}) + "\n"
    )
    try:
        run(["systemctl", "restart", "docker.service"], timeout=120)
        with tempfile.TemporaryDirectory() as directory:
            archive = f"{directory}/image.tar"
            run(["podman", "save", "--format", "docker-archive", "-o", archive, TEST_IMAGE])
            docker("load", "-i", archive)
        yield
    finally:
        run(["docker", "rmi", "--force", TEST_IMAGE], check=False, timeout=120)
        run(["systemctl", "stop", "docker.service", "docker.socket"], check=False, timeout=120)
        DAEMON_JSON.unlink(missing_ok=True)


@pytest.fixture
def device(engine: None, lab: Lab, peer: Peer) -> Iterator[str]:
    """The device's config (with the peer's tunnel address as its DNS) and
    the spec naming it; its name."""
    text = peer.client_config(extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    CONFIG.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        run([*WG_POD, "cdi", "generate", "--output", str(SPEC)])
        yield f"wg-pod.dev/tunnel={DEVICE}"
    finally:
        for each in (CONFIG, SPEC):
            each.unlink(missing_ok=True)


def test_docker_run_with_the_device_fetches_repairs_and_cleans_up(
    device: str,
    peer: Peer,
    service: None,  # noqa: F811 (the packaged daemon, started)
) -> None:
    name = "wgpt-docker-run"
    loop = FETCH_LOOP.format(url=peer.url_v4)
    docker("run", "-d", "--name", name, "--device", device, TEST_IMAGE, "sh", "-c", loop)
    try:
        container = Fetching(name)
        wait_for(lambda: container.fetched_since(0), timeout=30, what="the first fetch")
        links = docker("exec", name, "ip", "-o", "link")
        assert f": {DEVICE}: " in links, links

        # Docker's resolv.conf, the one it keeps for the container: the
        # tunnel's resolver, as podman's would have.
        resolv = docker("exec", name, "cat", "/etc/resolv.conf")
        assert f"nameserver {peer.tunnel_v4.ip}" in resolv, resolv
        record = records.load(the_runtime(), container.id)
        assert record is not None and record.process is not None
        assert record.resolv_conf == f"/var/lib/docker/containers/{container.id}/resolv.conf"
        status = run([*WG_POD, "status", container.id]).stdout
        assert f"interface: {DEVICE}" in status and f"config: {CONFIG}" in status, status

        os.kill(record.process.pid, signal.SIGKILL)
        seen = container.tries()
        wait_for(lambda: container.fetched_since(seen), timeout=30, what="a fetch after the repair")
        repaired = records.load(the_runtime(), container.id)
        assert repaired is not None and repaired.process not in (None, record.process)
    finally:
        docker("rm", "--force", name, check=False)
    wait_for(
        lambda: host_leftovers() == ([], [], []), timeout=20, what="nothing left after docker rm"
    )


def test_a_compose_service_with_the_device_gets_its_tunnel(
    device: str, peer: Peer, tmp_path: Path
) -> None:
    project = "wgpt-compose"
    script = f"for i in 1 2 3 4 5; do timeout 5 wget -qO- {peer.url_v4} && break; sleep 1; done"
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n"
        "  app:\n"
        f"    image: {TEST_IMAGE}\n"
        f"    command: [sh, -c, '{script}; exec sleep 600']\n"
        "    deploy:\n"
        "      resources:\n"
        "        reservations:\n"
        "          devices:\n"
        f"            - {{driver: cdi, device_ids: [{device}], capabilities: [cdi]}}\n"
    )
    up = ["docker-compose", "-p", project, "-f", str(compose)]
    run([*up, "up", "--detach"], timeout=120)
    try:
        wait_for(
            lambda: peer.page in run([*up, "logs", "app"]).stdout,
            timeout=40,
            what="the page in the Compose service's log",
        )
    finally:
        run([*up, "down", "--timeout", "1"], check=False, timeout=120)
    wait_for(lambda: host_leftovers() == ([], [], []), timeout=20, what="nothing left after down")
