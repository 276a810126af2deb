"""Fail closed on every path (issue 20): a run that replaces a running
tunnel — the daemon's repair, a pod member's restart, a rerun in a kept
namespace — and fails keeps the namespace closed (kill switch, guards,
podman's removed default routes, DNS redirect) and its record, marked
failed; the daemon tries again and a mended cause brings the tunnel back
without a restart.  What the container can write (the pod's shared
resolv.conf) never makes a rerun fail, and no kill between the steps of a
rerun loses what podman had."""

from __future__ import annotations

import copy
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import fetch_in, nft_tables, watched, write_config
from tests.integration.test_leaks import FULL_TUNNEL, Outside, ways_out
from tests.integration.test_leaks import outside as outside  # the fixture
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from wg_pod_hook.kernel.netlink import open_netns
from wg_pod_hook.state import health, records
from wg_pod_hook.state.locks import namespace_lock
from wg_pod_hook.tunnel import dns, teardown

pytestmark = pytest.mark.root

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
# Backoff after a failed repair: 1, 2, 4, ... 60 s; the first tries come soon.
RETRY_DEADLINE = 40.0


class FlakyBackend:
    """wireguard-go behind a switch: while ``broken`` exists it exits at
    once, as a backend that is missing or crashing would."""

    def __init__(self, lab: Lab, hook: HookRunner) -> None:
        self.broken = lab.tmp / "backend-broken"
        script = lab.tmp / "flaky-wireguard-go"
        script.write_text(f'#!/bin/sh\n[ -e {self.broken} ] && exit 1\nexec wireguard-go "$@"\n')
        script.chmod(0o755)
        self.hook = hook.with_settings(userspace_command=[str(script)])

    def breaks(self) -> None:
        self.broken.touch()

    def mended(self) -> None:
        self.broken.unlink()


def closed_tunnel(peer: Peer, config_dir: ConfigDir) -> dict[str, str]:
    """A full tunnel, with everything that closes a namespace: kill switch,
    guards, podman's default routes removed, DNS through the tunnel."""
    conf = write_config(config_dir, peer.client_config(allowed_ips=FULL_TUNNEL))
    return {
        "wg-pod.config": conf,
        "wg-pod.delete-default": "true",
        "wg-pod.dns": str(peer.tunnel_v4.ip),
    }


def assert_closed(standin: ContainerStandIn, outside: Outside) -> None:
    """Nothing leaves but through the tunnel, which is down."""
    assert "wg-pod" in nft_tables(standin)
    assert standin.default_routes(4) + standin.default_routes(6) == []
    assert standin.resolv_conf.read_text().startswith(dns.HEADER)
    assert standin.seen_resolv_conf().startswith(dns.HEADER)
    for version in (4, 6):
        for bound in (False, True):
            results = ways_out(standin, outside.addresses[version], bound=bound)
            assert not any(results.values()), results
    for version in (4, 6):
        guards = standin.run(["ip", f"-{version}", "route", "show", "type", "unreachable"])
        assert guards.stdout.strip(), f"no unreachable guard for IPv{version}"


def failed_record(container_id: str) -> records.TunnelRecord:
    record = records.load(the_runtime(), container_id)
    assert record is not None and record.failed is not None, record
    return record


def status(hook: HookRunner, *args: str) -> str:
    return run([*WG_POD, "status", *args], env={**os.environ, **hook.env}).stdout


def health_code(hook: HookRunner, container_id: str) -> int:
    done = run([*WG_POD, "health", container_id], env={**os.environ, **hook.env}, check=False)
    return done.returncode


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_failed_repair_keeps_the_namespace_closed_until_a_mended_cause_brings_it_back(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
    outside: Outside,
) -> None:
    flaky = FlakyBackend(lab, hook)
    running = daemon(flaky.hook)
    annotations = closed_tunnel(peer, config_dir)
    flaky.hook.up(standin, annotations)
    assert peer.page in fetch_in(standin, peer.url_v4)
    watched(standin.id)

    flaky.breaks()
    standin.run(["ip", "link", "del", "wg0"])
    wait_for(
        lambda: (r := records.read(the_runtime(), standin.id)) is not None and r.failed is not None,
        timeout=20,
        what="a failed repair",
    )
    record = failed_record(standin.id)
    assert record.failed is not None and "exited with status 1" in record.failed
    assert not record.complete and not record.moved
    assert_closed(standin, outside)

    tunnel = next(
        t
        for t in json.loads(status(flaky.hook, "--json"))["tunnels"]
        if t["container_id"] == standin.id
    )
    assert tunnel["failed"] == record.failed and tunnel["state"] in ("down", "repairing")
    assert f": repair failed: {record.failed}" in status(flaky.hook)
    assert health_code(flaky.hook, standin.id) == 1
    failures = json.loads(status(flaky.hook, "--json"))["failures"]
    assert any(f["container_id"] == standin.id and f["stage"] == "repair" for f in failures)
    # Still watched, still retried: a second failure, with backoff.
    wait_for(
        lambda: running.path.read_text().count(f"{standin.id[:12]}: repair failed") >= 2,
        timeout=RETRY_DEADLINE,
        what="a second try",
    )
    assert_closed(standin, outside)

    flaky.mended()
    assert peer.page in fetch_in(standin, peer.url_v4, timeout=RETRY_DEADLINE)
    # The tunnel carries traffic before the repair's last step completes its record.
    wait_for(
        lambda: (r := records.read(the_runtime(), standin.id)) is not None and r.complete,
        timeout=20,
        what="the repaired tunnel's complete record",
    )
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.complete and record.failed is None
    assert "repair failed" not in status(flaky.hook)
    # The tunnel is the way out again, and still the only one.
    for version in (4, 6):
        assert not any(ways_out(standin, outside.addresses[version], bound=True).values())


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_pod_member_whose_restart_fails_leaves_the_other_members_closed(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    outside: Outside,
) -> None:
    """Two members share one namespace; the one whose tunnel it is restarts
    (poststop keeps the tunnel, createRuntime replaces it) and the backend
    fails: the other member, still running, gets no way out; the next
    restart with the cause mended converges."""
    flaky = FlakyBackend(lab, hook)
    annotations = closed_tunnel(peer, config_dir)
    flaky.hook.up(standin, annotations)
    member = copy.copy(standin)
    member.id = secrets.token_hex(32)
    flaky.hook.up(member, annotations)
    assert peer.page in fetch_in(member, peer.url_v4)

    assert flaky.hook.down(standin, annotations).returncode == 0  # the member runs on
    flaky.breaks()
    done = flaky.hook.up(standin, annotations, ok=False)
    assert done.returncode == 1 and "exited with status 1" in done.stderr
    assert failed_record(standin.id).failed is not None
    assert_closed(member, outside)
    assert flaky.hook.down(standin, annotations).returncode == 0  # its poststop
    assert_closed(member, outside)

    flaky.mended()
    flaky.hook.up(standin, annotations)
    assert peer.page in fetch_in(member, peer.url_v4)
    assert records.load(the_runtime(), standin.id) is not None


def test_what_a_pod_member_writes_into_the_shared_resolv_conf_never_fails_a_restart(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """A member writes bytes that are not text (and then far too many)
    into the pod's resolv.conf; the other member's restart replaces the
    file whole, and leaving puts back podman's own text, not the member's."""
    podmans = standin.resolv_conf.read_text()
    annotations = {
        "wg-pod.config": write_config(config_dir, peer.client_config()),
        "wg-pod.dns": str(peer.tunnel_v4.ip),
    }
    hook.up(standin, annotations)
    member = copy.copy(standin)
    member.id = secrets.token_hex(32)
    hook.up(member, annotations)
    for garbage in (b"\xff\xfe\x00nameserver 192.0.2.1\n", b"nameserver 192.0.2.1\n" * 10000):
        # The very file the pod's members see as /etc/resolv.conf.
        standin.resolv_conf.write_bytes(garbage)
        assert hook.down(standin, annotations).returncode == 0
        hook.up(standin, annotations)
        text = standin.resolv_conf.read_text()
        assert text == f"{dns.HEADER}\nnameserver {peer.tunnel_v4.ip}\n", text
        assert peer.page in fetch_in(member, peer.url_v4)
    teardown.leave(the_runtime(), standin.id)
    assert standin.resolv_conf.read_text() == podmans


def test_a_rerun_killed_after_its_old_interface_went_loses_nothing(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """The run that replaces another writes its record over the old one
    only after the old interface went, and never removes it: killed right
    there, the next run still knows podman's default routes and
    resolv.conf, and leaving puts them back."""
    routes_before = standin.default_routes(4) + standin.default_routes(6)
    resolv_before = standin.resolv_conf.read_text()
    full_tunnel = peer.client_config(allowed_ips=FULL_TUNNEL)
    annotations = {
        "wg-pod.config": write_config(config_dir, full_tunnel),
        "wg-pod.delete-default": "true",
        "wg-pod.dns": str(peer.tunnel_v4.ip),
    }
    hook.up(standin, annotations)
    killed = hook.with_settings(fault_injection_kill_after="replace")
    done = killed("createRuntime", standin, annotations)
    assert done.returncode != 0
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.removed_routes and record.resolv_conf_original
    assert "wg0" not in standin.links()
    assert standin.default_routes(4) + standin.default_routes(6) == []  # still closed

    hook.up(standin, annotations)
    assert peer.page in fetch_in(standin, peer.url_v4)
    teardown.leave(the_runtime(), standin.id)
    assert standin.default_routes(4) + standin.default_routes(6) == routes_before
    assert standin.resolv_conf.read_text() == resolv_before


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_slow_repair_never_holds_up_a_container_start(
    peer: Peer,
    standin: ContainerStandIn,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    """A repair waits for its namespace's lock (held here, as a slow hook
    would); meanwhile another container starts through the daemon, and
    its hook is answered while the repair still waits."""
    running = daemon(hook)
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    watched(standin.id)
    netns = Path(f"/proc/{standin.pid}/ns/net")
    with open_netns(str(netns)) as fd, namespace_lock(the_runtime(), fd):
        standin.run(["ip", "link", "del", "wg0"])
        wait_for(
            lambda: (
                (h := health.read(the_runtime(), standin.id)) is not None
                and h.state is health.State.REPAIRING
            ),
            timeout=15,
            what="the repair",
        )
        other = make_standin()
        conf = write_config(config_dir, peer.client_config(), "other.conf")
        hook.up(other, {"wg-pod.config": conf})
        log = running.path.read_text()
        assert f"{other.id[:12]}: other up" in log  # the daemon's worker did it
        assert f"{standin.id[:12]}: repair failed" not in log  # the repair still waits
    assert peer.page in fetch_in(standin, peer.url_v4, timeout=RETRY_DEADLINE)
