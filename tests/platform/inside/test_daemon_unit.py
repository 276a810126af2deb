"""The daemon as the package ships it, inside the Debian 13 machine
(tests/platform): wg-pod.service started by systemd repairs a podman
container's tunnel in place; the wireguard-go of the repair lives in the
container's conmon cgroup, not the service's, so restarting and stopping
the service leave the tunnel up. Collected only inside the machine.

The package enables and starts the unit when it is installed (checked
before the inner run, tests/platform/test_platform.py), and the inner run
begins with it stopped; this test starts it and stops it again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.lab import ConfigDir, Lab, Peer, Podman, assert_host_clean, run, the_runtime, wait_for
from tests.platform.inside.test_quadlet import journal, systemctl
from tests.system.test_podman_daemon import Fetching
from wg_pod_hook import units
from wg_pod_hook.kernel import cgroups
from wg_pod_hook.state import records

pytestmark = pytest.mark.podman


def main_pid() -> int:
    return int(systemctl("show", "--property=MainPID", "--value", units.NAME).strip())


def service_cgroup() -> str:
    return systemctl("show", "--property=ControlGroup", "--value", units.NAME).strip()


@pytest.fixture
def service() -> Iterator[None]:
    systemctl("start", units.NAME)  # Type=notify: returns once it is ready
    try:
        yield
    finally:
        run(["systemctl", "stop", units.NAME], check=False, timeout=60)


def test_the_packaged_daemon_repairs_in_place_and_its_restarts_leave_the_tunnel_up(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman, service: None
) -> None:
    assert systemctl("is-enabled", units.NAME).strip() == "enabled"
    podman = hooked_podman
    container = Fetching(podman, peer, config_dir.write("wg0.conf", peer.client_config()))
    container_id, name = container.id, container.name
    conmon = int(podman("inspect", "--format", "{{.State.ConmonPid}}", name).stdout)

    wait_for(lambda: container.fetched_since(0), timeout=20, what="the container's first fetch")
    record = records.load(the_runtime(), container_id)
    assert record is not None and record.process is not None
    # The hook's wireguard-go: in conmon's cgroup, where the runtime ran the hook.
    home = cgroups.membership(conmon)[frozenset()]
    assert cgroups.membership(record.process.pid)[frozenset()] == home

    os.kill(record.process.pid, signal.SIGKILL)
    seen = container.tries()
    wait_for(lambda: container.fetched_since(seen), timeout=30, what="a fetch after the repair")
    repaired = records.load(the_runtime(), container_id)
    assert repaired is not None and repaired.process is not None
    assert repaired.process != record.process
    assert cgroups.membership(repaired.process.pid)[frozenset()] == home
    assert service_cgroup() not in home, (service_cgroup(), home)
    assert any(
        container_id[:12] in line and "repaired" in line for line in journal().splitlines()
    ), "no repair in the journal under wg-pod"

    before = main_pid()
    systemctl("restart", units.NAME)
    assert main_pid() != before
    systemctl("stop", units.NAME)
    assert repaired.process.alive(), "stopping wg-pod.service stopped the tunnel"
    seen = container.tries()
    time.sleep(1.5)
    assert container.fetched_since(seen), "the tunnel stopped carrying with the service stopped"

    podman.remove(name)
    assert_host_clean()
