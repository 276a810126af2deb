"""Integration fixtures: every hook test runs once per backend.

``hook`` is the one runner of the hook: its settings allow the test's config
dir and pick ``backend``; ``hook.with_settings(**extra)`` gives a runner
for the same backend with more settings.  A module that is about one
backend only overrides the ``backend`` fixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.support import kernel_has_wireguard
from tests.lab import Daemon, HookRunner, Lab, token
from tests.vm.inner import left_out_reason
from wg_pod_hook.kernel import cgroups


@pytest.fixture(params=["userspace", "kernel"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel" and not kernel_has_wireguard():
        why = left_out_reason(request.node.nodeid)
        pytest.skip(f"this kernel has no WireGuard module; {why}")
    return str(request.param)


@pytest.fixture
def hook(lab: Lab, make_settings: Callable[..., Path], backend: str) -> HookRunner:
    def remake(**extra: object) -> Path:
        return make_settings(**{"backend": backend, **extra})

    return HookRunner(lab, remake(), remake=remake)


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A throwaway cgroup (v2 hierarchy); what is left in it goes back to
    its parent before it is removed."""
    mount = cgroups.mount_point(frozenset())
    if mount is None:
        pytest.skip("this machine mounts no cgroup v2 hierarchy")
    path = mount / f"wgpt-{token()}"
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                (mount / "cgroup.procs").write_text(pid)
        path.rmdir()


@pytest.fixture
def daemon(lab: Lab) -> Iterator[Callable[[HookRunner], Daemon]]:
    """Starts ``wg-pod daemon`` with the settings (and the argv prefix) of
    a hook runner; each is stopped when the test ends."""
    started: list[Daemon] = []

    def start(hook: HookRunner) -> Daemon:
        started.append(Daemon(lab, hook.settings, hook.prefix))
        return started[-1]

    yield start
    for each in started:
        each.stop()
