"""No unprivileged hand on a tunnel, and no tunnel for a namespace that is
not its own.

- The namespace lock is a root-only file under /run/wg-pod: a user who
  holds the namespace's own file (world-readable under /run/netns) delays
  no hook, and cannot open the lock.
- A record names its container's process whole (pid and start time) and
  its namespace by cookie: a repair, the daemon's or a direct one, in a
  namespace that cannot be proven to be the record's (another process got
  the pid, another namespace got the inode number) does nothing, above all
  hands no key; a record whose namespace is gone is pruned by the daemon.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import fetch_in, watched, wireguard_processes, write_config
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Peer,
    run,
    the_runtime,
    venv_command,
    wait_for,
    wg_pod_processes,
)
from wg_pod_hook import notify
from wg_pod_hook.daemon import loop as wg_pod_daemon
from wg_pod_hook.errors import Superseded
from wg_pod_hook.kernel.netlink import open_netns
from wg_pod_hook.model.names import temp_name
from wg_pod_hook.model.settings import load_settings
from wg_pod_hook.state import health, records
from wg_pod_hook.state.locks import namespace_lock
from wg_pod_hook.state.records import path_for, process_start_time
from wg_pod_hook.tunnel import lifecycle, teardown

pytestmark = pytest.mark.root

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def lock_file_of(standin: ContainerStandIn) -> Path:
    info = os.stat(standin.ns.path)
    return Path(the_runtime().locks, f"netns-{info.st_dev}-{info.st_ino}")


def held_by_another(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it a lock taken here
    return False


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_user_holding_the_namespace_file_delays_no_hook(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """The old lock was flock on the namespace file itself: this holder
    made every hook on the namespace fail after 10 s."""
    holder = subprocess.Popen(
        [*NOBODY, "flock", "--no-fork", standin.ns.path, "sleep", "30"],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: held_by_another(standin.ns.path), timeout=5, what="nobody's flock")
        annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
        # Done while nobody's flock holds (30 s): a hook that waited for it
        # would have failed at its deadline (10 s), as the old one did.
        hook.up(standin, annotations)
        assert held_by_another(standin.ns.path)
        assert peer.page in fetch_in(standin, peer.url_v4)
        teardown.leave(the_runtime(), standin.id)  # `wg-pod leave` takes the lock too
        assert held_by_another(standin.ns.path)
        assert sorted(standin.links()) == ["eth0", "lo"]
        assert holder.poll() is None, "the holder was to hold on throughout"
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_user_cannot_open_the_namespace_lock(standin: ContainerStandIn) -> None:
    with open_netns(standin.netns_path) as fd, namespace_lock(the_runtime(), fd):
        path = lock_file_of(standin)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.stat().st_uid == path.parent.stat().st_uid == 0
        for argv in (["flock", "--nonblock", str(path), "true"], ["cat", str(path)]):
            done = run([*NOBODY, *argv], check=False)
            assert done.returncode != 0 and "Permission denied" in done.stderr, done
    assert not path.exists()  # its holder removed it


def test_the_lock_file_a_killed_hook_left_is_used_again_and_swept_by_gc(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    crashing = hook.with_settings(fault_injection_kill_after="create")
    assert crashing.up(standin, annotations, ok=False).returncode == -9
    left = lock_file_of(standin)
    assert left.exists()
    hook.up(standin, annotations)  # takes the lock on it, and removes it
    assert not left.exists()
    assert crashing.up(standin, annotations, ok=False).returncode == -9
    done = run([*venv_command("wg-pod", "wg_pod_hook.cli"), "gc"])
    assert f"lock file {left.name}" in done.stdout
    assert not left.exists()


# -- A namespace that is not the record's ------------------------------------


def rewrite_record(standin: ContainerStandIn, other: ContainerStandIn, recycled: str) -> None:
    """Make ``standin``'s record look as it would to a process that got its
    container's pid (``pid``), or also a namespace that got its inode
    number with the start time of the process in it (``namespace``: only
    the cookie tells them apart): every path, pid and inode now names
    ``other``."""
    data = json.loads(path_for(the_runtime(), standin.id).read_text())
    info = os.stat(other.ns.path)
    data["container_pid"] = other.pid
    data["netns"].update(path=other.ns.path, dev=info.st_dev, ino=info.st_ino)
    if recycled == "namespace":
        data["container_start"] = process_start_time(other.pid)
    path_for(the_runtime(), standin.id).write_text(json.dumps(data))


def assert_nothing_for(other: ContainerStandIn, processes: dict[str, str]) -> None:
    """No interface (and so no key), no table in ``other``; no wireguard-go
    started (one may have been stopped: ``processes`` were there before)."""
    assert sorted(other.links()) == ["eth0", "lo"]
    assert "wg-pod" not in other.run(["nft", "list", "tables"]).stdout
    assert set(wg_pod_processes()) <= set(processes)


@pytest.fixture
def two(make_standin: Callable[[], ContainerStandIn]) -> tuple[ContainerStandIn, ContainerStandIn]:
    return make_standin(), make_standin()


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
@pytest.mark.parametrize("recycled", ["pid", "namespace"])
def test_a_repair_gives_nothing_to_a_namespace_it_cannot_prove_is_the_records(
    recycled: str,
    peer: Peer,
    two: tuple[ContainerStandIn, ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    standin, other = two
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    original = path_for(the_runtime(), standin.id).read_text()
    try:
        rewrite_record(standin, other, recycled)
        rewritten = path_for(the_runtime(), standin.id).read_text()
        record = records.load(the_runtime(), standin.id)
        assert record is not None
        processes = wg_pod_processes()
        with pytest.raises(Superseded):
            lifecycle.repair(
                the_runtime(),
                record,
                load_settings(the_runtime().with_settings(str(hook.settings))),
            )
        assert_nothing_for(other, processes)
        assert wg_pod_processes() == processes
        assert path_for(the_runtime(), standin.id).read_text() == rewritten  # touched nothing
        assert peer.page in fetch_in(standin, peer.url_v4)  # nor the real tunnel
    finally:
        path_for(the_runtime(), standin.id).write_text(original)  # for the lab's poststop


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
@pytest.mark.parametrize("recycled", ["pid", "namespace"])
def test_the_daemon_gives_nothing_to_a_namespace_it_cannot_prove_is_the_records(
    recycled: str,
    peer: Peer,
    two: tuple[ContainerStandIn, ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    """The daemon adopts the changed record at once (told, as a hook tells
    it) and, before this change, repaired the tunnel into ``other``'s
    namespace, with the key; now it watches nothing, and its next scan
    prunes the record, whose namespace (by its cookie) is gone."""
    standin, other = two
    running = daemon(hook)
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    watched(standin.id)
    processes = wg_pod_processes()
    original = path_for(the_runtime(), standin.id).read_text()
    try:
        rewrite_record(standin, other, recycled)
        notify.tell(the_runtime(), "up", standin.id)
        deadline = time.monotonic() + wg_pod_daemon.TICK + 5
        while path_for(the_runtime(), standin.id).exists() and time.monotonic() < deadline:
            assert sorted(other.links()) == ["eth0", "lo"], running.path.read_text()
            time.sleep(0.1)
        assert not path_for(the_runtime(), standin.id).exists(), "the record was not pruned"
        assert_nothing_for(other, processes)
        log = running.path.read_text()
        assert log.count(f"container {standin.id[:12]}: watching") == 1, log
        assert f"container {standin.id[:12]}: not watched" in log, log
    finally:
        if path_for(the_runtime(), standin.id).exists():
            path_for(the_runtime(), standin.id).write_text(original)


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_the_daemon_prunes_the_record_of_a_container_whose_namespace_is_gone(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
) -> None:
    """No poststop saw it go (podman rm after a restart-policy restart, a
    killed runtime): the daemon takes it down within a scan, not the next
    container's start."""
    daemon(hook)
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    watched(standin.id)
    standin.stop()
    wait_for(
        lambda: not path_for(the_runtime(), standin.id).exists(),
        timeout=wg_pod_daemon.TICK + 5,
        what="the daemon's prune",
    )
    assert wireguard_processes(temp_name(standin.id)) == []
    assert health.read(the_runtime(), standin.id) is None
