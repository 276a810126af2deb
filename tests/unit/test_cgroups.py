"""Reading cgroup membership and mount points (moving needs root: see
tests/integration/test_daemon.py)."""

from __future__ import annotations

import os
import subprocess

from wg_pod_hook.kernel import cgroups


def test_a_child_is_where_its_parent_is_and_its_home_is_the_parent() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert cgroups.membership(child.pid) == cgroups.membership(os.getpid())
        assert cgroups.container_home(child.pid) == os.getpid()
        # Already there: nothing to move, nothing failed.
        assert cgroups.move_like(child.pid, os.getpid()) == []
    finally:
        child.kill()
        child.wait()


def test_every_hierarchy_of_this_process_is_mounted() -> None:
    for controllers in cgroups.membership(os.getpid()):
        point = cgroups.mount_point(controllers)
        assert point is not None and (point / "cgroup.procs").exists(), controllers


def test_a_gone_process_has_no_home_and_cannot_be_a_reference() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert cgroups.container_home(child.pid) is None
    (failure,) = cgroups.move_like(os.getpid(), child.pid)
    assert f"process {child.pid}" in failure
