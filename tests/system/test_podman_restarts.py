"""Restarts under real podman: restart, stop + start, restart policies."""

from __future__ import annotations

import pytest

from tests.lab import (
    RETRYING_WGET,
    ConfigDir,
    Lab,
    Peer,
    Podman,
    assert_host_clean,
    run,
    token,
    venv_command,
    wait_for,
    wg_pod_processes,
)
from wg_pod_hook.model.names import temp_name

pytestmark = pytest.mark.podman


def tunnel_processes(container_id: str) -> list[str]:
    name = temp_name(container_id)
    return [pid for pid, temp in wg_pod_processes().items() if temp == name]


def test_restart_stop_and_start_converge(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    conf = config_dir.write("wg0.conf", peer.client_config())
    name, _ = hooked_podman.run(
        "sleep", "600", annotations={"wg-pod.config": str(conf)}, detach=True
    )
    container_id = hooked_podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
    fetch = ["exec", name, "sh", "-c", RETRYING_WGET.format(url=peer.url_v4)]
    for step in ([], ["stop", "-t", "0", name], ["start", name], ["restart", "-t", "0", name]):
        if step:
            hooked_podman(*step)
        if step[:1] != ["stop"]:
            assert peer.page in hooked_podman(*fetch).stdout, step
            assert len(tunnel_processes(container_id)) == 1, step
    hooked_podman.remove(name)
    assert_host_clean()


def test_restart_policy_keeps_the_tunnel(
    peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    """podman 4.3 restarts the container in the namespace it had: poststop
    (namespace alive, tunnel kept), then createRuntime again (the tunnel
    converges). Every run must fetch through the tunnel, with one process."""
    conf = config_dir.write("wg0.conf", peer.client_config())
    script = f"{RETRYING_WGET.format(url=peer.url_v4)}; exit 1"
    name, _ = hooked_podman.run(
        "sh",
        "-c",
        script,
        annotations={"wg-pod.config": str(conf)},
        options=["--restart", "on-failure:2"],
        detach=True,
    )

    def finished() -> bool:
        # podman 4.3's inspect may fail while it restarts the container
        # ("read /proc/PID/cgroup: no such process"): asked again.
        state = hooked_podman(
            "inspect", "--format", "{{.RestartCount}} {{.State.Status}}", name, check=False
        )
        return state.stdout.split() == ["2", "exited"]

    wait_for(finished, timeout=60, what="two restarts")
    logs = hooked_podman("logs", name).stdout
    assert logs.count(peer.page) == 3, logs
    container_id = hooked_podman("inspect", "--format", "{{.Id}}", name).stdout.strip()
    # No run follows: the last run's tunnel goes with its namespace, and
    # with it its wireguard-go (none for the kernel backend).
    wait_for(
        lambda: tunnel_processes(container_id) == [],
        timeout=10,
        what="the last run's wireguard-go to end with its namespace",
    )
    hooked_podman.remove(name)
    assert_host_clean()


def test_pod_members_share_one_tunnel(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    """Members carry the annotation (podman 4.3 cannot annotate the infra
    container from `pod create`): the first one's tunnel serves the pod."""
    pod = f"wgpt-pod-{token()}"
    hooked_podman("pod", "create", "--name", pod)
    lab.defer(f"podman pod rm {pod}", lambda: hooked_podman("pod", "rm", "-f", "-t", "0", pod))
    annotations = {"wg-pod.config": str(config_dir.write("wg0.conf", peer.client_config()))}
    first, _ = hooked_podman.run(
        "sleep", "600", annotations=annotations, options=["--pod", pod], detach=True
    )
    _, done = hooked_podman.run(
        "sh",
        "-c",
        "ip -o link; " + RETRYING_WGET.format(url=peer.url_v4),
        annotations=annotations,
        options=["--pod", pod],
    )
    assert peer.page in done.stdout
    assert done.stdout.count(": wg0:") == 1
    hooked_podman.remove(first)
    # The pod's namespace, and with it the tunnel, lives on with its infra container.
    _, again = hooked_podman.run(
        "sh",
        "-c",
        RETRYING_WGET.format(url=peer.url_v4),
        annotations=annotations,
        options=["--pod", pod],
    )
    assert peer.page in again.stdout
    hooked_podman("pod", "rm", "-f", "-t", "0", pod)
    run([*venv_command("wg-pod", "wg_pod_hook.cli"), "gc"])
    assert_host_clean()
