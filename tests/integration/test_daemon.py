"""The daemon keeps tunnels up for their container's whole life: it repairs
a tunnel in place when its interface disappears, survives its own restart
and death without touching a tunnel, and tells the health of each."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import (
    PEER_NAME,
    WIREGUARD_GO,
    DnsServer,
    fetch_in,
    watched,
    wireguard_processes,
    write_config,
)
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    LabError,
    Peer,
    link_names,
    run,
    the_runtime,
    venv_command,
    wait_for,
    with_resolv_conf,
)
from wg_pod_hook.kernel import cgroups
from wg_pod_hook.model.names import temp_name
from wg_pod_hook.state import health, records

pytestmark = pytest.mark.root

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
REPAIR_DEADLINE = 20.0


def repaired(standin: ContainerStandIn, peer: Peer, before: records.TunnelRecord) -> float:
    """Seconds until the container fetches through its tunnel again."""
    start = time.monotonic()
    assert peer.page in fetch_in(standin, peer.url_v4, timeout=REPAIR_DEADLINE)
    elapsed = time.monotonic() - start
    after = records.load(the_runtime(), standin.id)
    assert after is not None and after.complete and after.created > before.created
    kept = health.read(the_runtime(), standin.id)
    assert kept is not None and kept.repairs == 1
    print(f"repaired in {elapsed:.2f} s")
    return elapsed


def status_of(hook: HookRunner, container_id: str) -> dict[str, object]:
    done = run([*WG_POD, "status", "--json"], env={**os.environ, **hook.env})
    (tunnel,) = [t for t in json.loads(done.stdout)["tunnels"] if t["container_id"] == container_id]
    return dict(tunnel)


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_tunnel_whose_wireguard_go_was_killed_is_repaired_in_place(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    daemon(hook)
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert peer.page in fetch_in(standin, peer.url_v4)
    watched(standin.id)
    before = records.load(the_runtime(), standin.id)
    assert before is not None and before.process is not None
    os.kill(before.process.pid, signal.SIGKILL)
    repaired(standin, peer, before)
    assert len(wireguard_processes(temp_name(standin.id))) == 1
    tunnel = status_of(hook, standin.id)
    assert tunnel["repairs"] == 1 and tunnel["state"] in ("up", "idle")


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_repaired_wireguard_go_lives_in_its_containers_cgroups_not_the_daemons(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
    cgroup: Path,
) -> None:
    """As under systemd, where the daemon has a service cgroup of its own:
    the wireguard-go it starts joins the cgroups of the container's parent
    (here the test; under podman conmon), so stopping the daemon's service
    leaves it running."""
    running = daemon(hook)
    (cgroup / "cgroup.procs").write_text(str(running.process.pid))
    daemon_cgroup = "/" + cgroup.name
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    watched(standin.id)
    before = records.load(the_runtime(), standin.id)
    assert before is not None and before.process is not None
    os.kill(before.process.pid, signal.SIGKILL)
    repaired(standin, peer, before)
    after = records.load(the_runtime(), standin.id)
    assert after is not None and after.process is not None
    home = cgroups.container_home(standin.pid)
    assert home is not None
    expected = cgroups.membership(home)[frozenset()]
    assert expected != daemon_cgroup
    assert cgroups.membership(after.process.pid)[frozenset()] == expected
    running.stop()
    assert after.process.alive(), "stopping the daemon stopped the tunnel's wireguard-go"
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_a_second_daemon_refuses_to_start(
    hook: HookRunner, daemon: Callable[[HookRunner], Daemon]
) -> None:
    daemon(hook)
    with pytest.raises(LabError, match="another wg-pod daemon is running"):
        daemon(hook)


def test_a_tunnel_whose_link_was_deleted_is_repaired_in_place(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    daemon(hook)
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, {**annotations, "wg-pod.port-remapping": "80:8080"})
    watched(standin.id)
    before = records.load(the_runtime(), standin.id)
    assert before is not None
    standin.run(["ip", "link", "del", "wg0"])
    repaired(standin, peer, before)
    # Repaired as it was asked for: the same annotations.
    rules = standin.run(["nft", "list", "table", "inet", "wg-pod"]).stdout
    assert "redirect to :8080" in rules


def looked_at_all(daemon: Daemon, standins: list[ContainerStandIn]) -> None:
    """Waits until ``daemon`` has adopted each tunnel (its "watching" line)
    and looked at it (the health file's ``checked`` past what it was when
    the daemon started); then each must be as it was and healthy.  A
    daemon that set a tunnel up again instead would not look at it (it
    schedules a repair) or would find it down."""
    since = {}
    for standin in standins:
        kept = health.read(the_runtime(), standin.id)
        assert kept is not None
        since[standin.id] = kept.checked

    def looked() -> bool:
        log = daemon.path.read_text()
        for standin in standins:
            kept = health.read(the_runtime(), standin.id)
            if f"container {standin.id[:12]}: watching wg0" not in log:
                return False
            if kept is None or kept.checked <= since[standin.id]:
                return False
        return True

    wait_for(looked, timeout=10, what="the new daemon's look at every tunnel")
    for standin in standins:
        kept = health.read(the_runtime(), standin.id)
        assert kept is not None and kept.state.healthy and kept.repairs == 0, kept


def test_restarting_the_daemon_rebuilds_nothing(
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    first = daemon(hook)
    standins = [make_standin() for _ in range(3)]
    for index, standin in enumerate(standins):
        conf = write_config(config_dir, peer.client_config(), f"wg{index}.conf")
        hook.up(standin, {"wg-pod.config": conf, "wg-pod.interface": "wg0"})
        watched(standin.id)
    before = {s.id: records.load(the_runtime(), s.id) for s in standins}
    first.stop()
    second = daemon(hook)
    looked_at_all(second, standins)
    assert {s.id: records.load(the_runtime(), s.id) for s in standins} == before
    second.kill()  # killing it takes nothing down either
    looked_at_all(daemon(hook), standins)
    assert {s.id: records.load(the_runtime(), s.id) for s in standins} == before
    for standin in standins:
        assert peer.page in fetch_in(standin, peer.url_v4)
        kept = health.read(the_runtime(), standin.id)
        assert kept is not None and kept.repairs == 0


@pytest.mark.parametrize("step", ["create", "move", "nftables"])
def test_a_repair_killed_midway_and_its_daemon_leave_nothing_the_next_does_not_converge(
    step: str,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
    backend: str,
) -> None:
    """A repair runs in a worker of the daemon: the worker killed at a
    step (and the daemon with it, as a host-wide crash would) leaves a
    record that the next daemon sets up again."""
    crashing = daemon(hook.with_settings(fault_injection_kill_after=step))
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    watched(standin.id)
    standin.run(["ip", "link", "del", "wg0"])
    wait_for(
        lambda: f"killing the hook after {step}" in crashing.path.read_text(),
        timeout=REPAIR_DEADLINE,
        what=f"a repair killed after {step}",
    )
    assert crashing.process.poll() is None  # only its worker died
    crashing.process.send_signal(signal.SIGKILL)
    crashing.process.wait(timeout=REPAIR_DEADLINE)
    interrupted = records.load(the_runtime(), standin.id)
    assert interrupted is not None and not interrupted.complete

    daemon(hook)

    def converged() -> bool:
        record = records.load(the_runtime(), standin.id)
        return record is not None and record.complete

    wait_for(converged, timeout=REPAIR_DEADLINE, what="the next daemon's repair")
    assert peer.page in fetch_in(standin, peer.url_v4)
    name = temp_name(standin.id)
    assert name not in link_names()
    assert len(wireguard_processes(name)) == WIREGUARD_GO[backend]


# Health, without the daemon: `wg-pod health` looks twice where it must.


def wg_pod_health(hook: HookRunner, container_id: str) -> tuple[int, str]:
    done = run([*WG_POD, "health", container_id], env={**os.environ, **hook.env}, check=False)
    return done.returncode, done.stdout.strip()


def test_health_states(
    lab: Lab,
    make_peer: Callable[..., Peer],
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    peer = make_peer()
    quiet, busy, lonely, broken = (make_standin() for _ in range(4))
    for index, standin in enumerate((quiet, busy, broken)):
        conf = write_config(config_dir, peer.client_config(), f"wg{index}.conf")
        hook.up(standin, {"wg-pod.config": conf, "wg-pod.interface": "wg0"})
    assert peer.page in fetch_in(busy, peer.url_v4)

    gone = make_peer(http=False)
    conf = write_config(config_dir, gone.client_config(), "gone.conf")
    gone.run(["ip", "link", "del", gone.ifname])  # the peer is gone for good
    hook.up(lonely, {"wg-pod.config": conf, "wg-pod.interface": "wg0"})
    sender = "import socket, sys, time\n" + (
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(120):\n"
        "    s.sendto(b'x', (sys.argv[1], 9))\n"
        "    time.sleep(0.5)\n"
    )
    lab.popen(
        [sys.executable, "-c", sender, str(gone.tunnel_v4.ip)], netns=lonely.name, name="sender"
    )
    broken.run(["ip", "link", "del", "wg0"])

    # Quiet, but greeted at its start (test_greeting.py): a session, up. An
    # idle tunnel's is one whose last handshake is older than 180 s
    # (tests/unit/test_health.py).
    assert wg_pod_health(hook, quiet.id) == (0, f"{quiet.id[:12]}: up")
    assert wg_pod_health(hook, busy.id) == (0, f"{busy.id[:12]}: up")
    assert wg_pod_health(hook, lonely.id) == (1, f"{lonely.id[:12]}: stale")
    assert wg_pod_health(hook, broken.id) == (1, f"{broken.id[:12]}: down")


def test_health_of_all_fails_when_one_is_down(
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    fine, broken = make_standin(), make_standin()
    for index, standin in enumerate((fine, broken)):
        conf = write_config(config_dir, peer.client_config(), f"wg{index}.conf")
        hook.up(standin, {"wg-pod.config": conf, "wg-pod.interface": "wg0"})
        assert peer.page in fetch_in(standin, peer.url_v4)
    done = run([*WG_POD, "health"], env={**os.environ, **hook.env}, check=False)
    assert done.returncode == 0, done.stdout
    broken.run(["ip", "link", "del", "wg0"])
    done = run([*WG_POD, "health"], env={**os.environ, **hook.env}, check=False)
    assert done.returncode == 1
    assert f"{broken.id[:12]}: down" in done.stdout and f"{fine.id[:12]}: up" in done.stdout


def test_health_file_is_removed_with_the_tunnel(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    daemon(hook)
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, annotations)
    watched(standin.id)
    standin.stop()
    hook.down(standin, annotations)
    # The daemon's worker answers a poststop, then takes the tunnel down.
    gone = [health.path_for(the_runtime(), standin.id), records.path_for(the_runtime(), standin.id)]
    wait_for(lambda: not any(Path(p).exists() for p in gone), timeout=10, what="both files gone")


def test_a_peer_whose_host_name_moves_to_another_address_is_followed(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    """A real DNS server (dnsmasq) in a namespace of the test's names the
    peer; the hook and the daemon resolve through it (their own
    /etc/resolv.conf in a private mount namespace).  The peer moves to a new
    address and the answer changes: the tunnel recovers without a restart."""
    dns = DnsServer(lab, peer)
    resolving = hook.with_prefix(with_resolv_conf(dns.resolv_conf)).with_settings(
        endpoint_refresh_after=3
    )
    text = peer.client_config(endpoint=f"{PEER_NAME}:{peer.listen_port}")
    resolving.up(standin, {"wg-pod.config": write_config(config_dir, text)})
    assert peer.page in fetch_in(standin, peer.url_v4)
    running = daemon(resolving)
    watched(standin.id)

    moved = dns.move_peer()
    start = time.monotonic()
    assert peer.page in fetch_in(standin, peer.url_v4, timeout=60)
    print(f"followed in {time.monotonic() - start:.1f} s")
    assert f"-> {moved}:{peer.listen_port}" in running.path.read_text()
    kept = health.read(the_runtime(), standin.id)
    assert kept is not None and kept.repairs == 0  # followed, not rebuilt


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for each in family.samples:
            found.setdefault(each.name, []).append((dict(each.labels), each.value))
    return found


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_the_metrics_endpoint_is_scraped_and_parsed(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = hook.with_settings(metrics_listen=f"127.0.0.1:{port}")
    daemon(served)
    served.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert peer.page in fetch_in(standin, peer.url_v4)
    short = standin.id[:12]

    def counted() -> bool:  # the daemon's next look (every 10 s) has the traffic
        received = scrape(port).get("wg_pod_peer_receive_bytes_total", [])
        return any(labels["container"] == short and value > 0 for labels, value in received)

    wait_for(counted, timeout=30, what="the peer's bytes in the metrics")
    found = scrape(port)
    states = {
        labels["state"]: value
        for labels, value in found["wg_pod_tunnel_state"]
        if labels["container"] == short
    }
    assert states["up"] == 1 and sum(states.values()) == 1
    assert ({"container": short, "interface": "wg0"}, 0.0) in found["wg_pod_tunnel_repairs_total"]
    (hooks,) = [v for _, v in found["wg_pod_hook_duration_seconds_count"]]
    assert hooks == 1
