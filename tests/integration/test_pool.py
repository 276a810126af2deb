"""The daemon's warm pool (tunnel/pool.py): its spare worker makes the
interface a setup would create ahead of the request, which the request
takes as its own; the pool refills, holds no key, and is gone with the
daemon. A pooled interface that died is never handed out; one a killed
daemon left goes with ``gc`` or the next daemon."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.support import fetch_in, write_config
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    children,
    run,
    the_runtime,
    venv_command,
    wait_for,
    wg_pod_processes,
)
from wg_pod_hook.kernel import cgroups
from wg_pod_hook.kernel.backends.userspace import uapi_request
from wg_pod_hook.state import records
from wg_pod_hook.tunnel import pool

pytestmark = pytest.mark.root


@pytest.fixture
def daemon(lab: Lab, hook: HookRunner) -> Daemon:
    return Daemon(lab, hook.settings, hook.prefix)


def pooled(count: int = 1) -> list[str]:
    """The suite's daemon's pooled interfaces, once there are ``count``."""
    wait_for(
        lambda: len(pool.names(the_runtime())) >= count, timeout=15, what="an interface made ahead"
    )
    return pool.names(the_runtime())


def pooled_processes() -> dict[str, str]:
    """pid -> pool name of the suite's daemon's pooled wireguard-go processes."""
    names = pool.names(the_runtime())
    return {pid: name for pid, name in wg_pod_processes(pooled=True).items() if name in names}


def test_a_start_through_the_daemon_takes_the_interface_made_ahead(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Daemon,
    backend: str,
) -> None:
    (ahead,) = pooled()
    if backend == "userspace":
        # Holds no key before a request: UAPI says none.
        socket = Path(the_runtime().wireguard_sockets) / f"{ahead}.sock"
        assert "private_key=" not in uapi_request(socket, b"get=1\n\n")
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, annotations)
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.complete
    assert record.temp_name == ahead, "the start made an interface of its own"
    assert peer.page in fetch_in(standin, peer.url_v4)
    if backend == "userspace":
        assert record.process is not None
        # Accounted to the container, as one started for it is.
        home = cgroups.container_home(standin.pid)
        assert home is not None
        unified = frozenset[str]()
        assert cgroups.membership(record.process.pid)[unified] == cgroups.membership(home)[unified]
    # The pool refills under a new name; the taken one is the tunnel's.
    wait_for(
        lambda: [n for n in pool.names(the_runtime()) if n != ahead] != [],
        timeout=15,
        what="the pool refilled",
    )

    standin.stop()
    hook.down(standin, annotations)
    wait_for(
        lambda: records.read(the_runtime(), standin.id) is None, timeout=10, what="the teardown"
    )
    assert ahead not in pool.names(the_runtime())
    daemon.stop()
    assert pool.names(the_runtime()) == [], "the daemon's stop left its pool"
    assert pooled_processes() == {}


def test_a_pooled_interface_gone_before_use_is_never_handed_out(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    daemon: Daemon,
    backend: str,
) -> None:
    """wireguard-go killed, or the kernel's link deleted from outside."""
    (ahead,) = pooled()
    if backend == "userspace":
        (pid,) = [pid for pid, name in pooled_processes().items() if name == ahead]
        os.kill(int(pid), signal.SIGKILL)
    else:
        run(["ip", "link", "delete", ahead])
    wait_for(lambda: ahead not in pool.names(the_runtime()), timeout=10, what="the pool emptied")
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    record = records.load(the_runtime(), standin.id)
    assert record is not None and record.complete
    assert record.temp_name != ahead
    assert peer.page in fetch_in(standin, peer.url_v4)


@pytest.mark.parametrize("then", ["gc", "the next daemon"])
def test_the_pool_of_a_killed_daemon_goes_with_gc_or_the_next_daemon(
    then: str, lab: Lab, hook: HookRunner, daemon: Daemon
) -> None:
    (ahead,) = pooled()
    # The spare stopped first, so that it cannot remove its interface when
    # its daemon goes.
    (spare,) = children(daemon.process.pid)
    os.kill(spare, signal.SIGSTOP)
    daemon.kill()
    os.kill(spare, signal.SIGKILL)
    assert pool.names(the_runtime()) == [ahead]
    if then == "gc":
        done = run([*venv_command("wg-pod", "wg_pod_hook.cli"), "gc"])
        assert f"pooled interface {ahead}" in done.stdout + done.stderr
    else:
        Daemon(lab, hook.settings, hook.prefix)
        wait_for(
            lambda: ahead not in pool.names(the_runtime()), timeout=15, what="the old pool gone"
        )
    assert ahead not in pool.names(the_runtime())
    assert ahead not in pooled_processes().values()
