"""The wg-pod command against a real podman API service on a temporary socket."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostfile import assert_untouched, host_file
from tests.lab import (
    CONTAINERS_CONF,
    RETRYING_WGET,
    SYSTEM_PODMAN,
    ConfigDir,
    Lab,
    Peer,
    Podman,
    assert_host_clean,
    run,
    venv_command,
    wait_for,
)
from tests.system.test_podman_leaks import nameservers
from tests.system.test_podman_safety import dns_config
from wg_pod_hook.kernel.backends.userspace import accepts_connections
from wg_pod_hook.podman import DEFAULT_SOCKET

pytestmark = pytest.mark.podman

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
SYSTEM_SOCKET = Path(DEFAULT_SOCKET)


@pytest.fixture
def api(lab: Lab, podman_ready: None) -> Iterator[str]:
    """``podman system service`` on a socket of this test; its URL. With
    ``SYSTEM_PODMAN``: the machine's socket-activated podman.socket."""
    if SYSTEM_PODMAN:
        run(["systemctl", "start", "podman.socket"])
        wait_for(lambda: accepts_connections(SYSTEM_SOCKET), timeout=20, what="podman.socket")
        yield f"unix://{SYSTEM_SOCKET}"
        return
    sock = lab.tmp / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time", "0", f"unix://{sock}"],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: accepts_connections(sock), timeout=20, what="podman API socket")
        yield f"unix://{sock}"
    finally:
        service.terminate()
        service.wait(timeout=20)


def wg_pod(
    api: str, settings: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONTAINER_HOST": api, "WG_POD_SETTINGS": str(settings)}
    return run([*WG_POD, *args], env=env, check=check)


def test_join_status_leave(
    peer: Peer, config_dir: ConfigDir, settings: Path, podman: Podman, api: str
) -> None:
    name, _ = podman.run("sleep", "600", detach=True)
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    joined = wg_pod(api, settings, "join", name, conf, "--port-remapping", "80:8080")
    assert "wg0 up" in joined.stdout
    fetch = ["exec", name, "sh", "-c", RETRYING_WGET.format(url=peer.url_v4)]
    assert peer.page in podman(*fetch).stdout

    human = wg_pod(api, settings, "status", name).stdout
    assert f"container: {name} (" in human
    assert f"peer: {peer.public_key}" in human
    assert "seconds ago" in human or "second ago" in human
    data = json.loads(wg_pod(api, settings, "status", "--json").stdout)
    (tunnel,) = [t for t in data["tunnels"] if t["name"] == name]
    (status,) = tunnel["peers"]
    assert status["public_key"] == peer.public_key
    assert status["latest_handshake"] and status["latest_handshake_age"] is not None
    assert status["rx_bytes"] > 0 and status["tx_bytes"] > 0
    assert tunnel["interface"] == "wg0" and tunnel["backend"] == "userspace"

    # What check prints is what the hook applied; and the key is taken now.
    planned = wg_pod(
        api, settings, "check", conf, "--annotation", "wg-pod.port-remapping=80:8080", check=False
    )
    assert planned.returncode == 1
    assert "its private key is already in use by container" in planned.stderr
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    applied = run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", "nft", "list", "table", "inet", "wg-pod"]
    )
    rules = [line.strip() for line in planned.stdout.splitlines() if "redirect" in line]
    assert rules and all(rule in applied.stdout for rule in rules)

    wg_pod(api, settings, "leave", name)
    links = podman("exec", name, "ip", "-o", "link").stdout
    assert "wg0" not in links
    gone = podman("exec", name, "sh", "-c", f"timeout 3 wget -qO- {peer.url_v4}", check=False)
    assert gone.returncode != 0
    assert_host_clean()


def test_leave_and_restart_of_a_container_the_hook_started_with_tunnel_dns(
    peer: Peer, config_dir: ConfigDir, settings: Path, hooked_podman: Podman, api: str
) -> None:
    """The hook mounts wg-pod's resolv.conf over podman's (podman 5 writes
    podman's after the hook): ``leave`` shows the running container
    podman's text again, and a restart puts the tunnel's back."""
    tunnel = str(peer.tunnel_v4.ip)
    name, _ = hooked_podman.run(
        "sleep",
        "600",
        detach=True,
        annotations={"wg-pod.config": dns_config(peer, config_dir)},
    )
    resolv = ["exec", name, "cat", "/etc/resolv.conf"]
    assert nameservers(hooked_podman(*resolv).stdout) == [tunnel]
    wg_pod(api, settings, "leave", name)
    podmans = hooked_podman(*resolv).stdout
    assert "wg-pod" not in podmans and tunnel not in nameservers(podmans), podmans
    assert nameservers(podmans), podmans
    hooked_podman("restart", "-t", "0", name)
    assert nameservers(hooked_podman(*resolv).stdout) == [tunnel]


def test_join_without_the_api_socket_says_how_to_start_it(
    config_dir: ConfigDir, settings: Path, peer: Peer
) -> None:
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    done = wg_pod("unix:///nonexistent/podman.sock", settings, "join", "web", conf, check=False)
    assert done.returncode == 1
    assert "systemctl enable --now podman.socket" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_join_flag_errors_name_the_flag(
    config_dir: ConfigDir, settings: Path, peer: Peer, api: str
) -> None:
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    done = wg_pod(api, settings, "join", "web", conf, "--port-remapping", "80;reboot", check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("wg-pod: --port-remapping: ")


def test_join_and_leave_never_write_a_mounted_host_resolv_conf(
    lab: Lab, peer: Peer, config_dir: ConfigDir, settings: Path, podman: Podman, api: str
) -> None:
    mounted = host_file(lab.tmp)
    name, _ = podman.run(
        "sleep", "600", detach=True, options=["-v", f"{mounted}:/etc/resolv.conf:ro"]
    )
    conf = dns_config(peer, config_dir)
    refused = wg_pod(api, settings, "join", name, conf, check=False)
    assert refused.returncode == 1
    assert f"write DNS {mounted}: mounted over the container's /etc/resolv.conf" in refused.stderr
    assert "wg0" not in podman("exec", name, "ip", "-o", "link").stdout

    wg_pod(api, settings, "join", name, conf, "--dns", "off")
    fetch = ["exec", name, "sh", "-c", RETRYING_WGET.format(url=peer.url_v4)]
    assert peer.page in podman(*fetch).stdout
    wg_pod(api, settings, "leave", name)
    assert_untouched(mounted)
    assert_host_clean()


def test_join_refuses_a_key_another_container_uses_towards_the_peer(
    peer: Peer, config_dir: ConfigDir, settings: Path, podman: Podman, api: str
) -> None:
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    first, _ = podman.run("sleep", "600", detach=True)
    second, _ = podman.run("sleep", "600", detach=True)
    wg_pod(api, settings, "join", first, conf)
    first_id = podman("inspect", "--format", "{{.Id}}", first).stdout.strip()
    refused = wg_pod(api, settings, "join", second, conf, check=False)
    assert refused.returncode == 1
    assert f"its private key is already in use by container {first_id[:12]}" in refused.stderr
    assert "wg0" not in podman("exec", second, "ip", "-o", "link").stdout
    wg_pod(api, settings, "leave", first)
    wg_pod(api, settings, "join", second, conf)
    wg_pod(api, settings, "leave", second)
