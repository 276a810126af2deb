"""pytest plugin for the run inside the VM (``-p tests.vm.inner``): only what needs its kernel.

The VM emulates its CPU (TCG) on these machines, over ten times slower than
the host, so it runs only what the host cannot, and of that a chosen set:
test_kernel whole, and the ``backend=kernel`` variants of the scenarios
listed in ``KERNEL_SCENARIOS`` (the core issue's, the leak tests', the
secrets test, the daemon's repair of a deleted link; the unreachable
guards live in the container's routing table whatever the backend, so their
test runs on the host). Everything else runs on the host.
``WG_POD_VM_ALL=1`` keeps every test (``tests/integration`` whole; expect
well over ten minutes under TCG).
"""

from __future__ import annotations

import os

import pytest

KERNEL_ONLY_MODULES = ("test_kernel.py",)
KERNEL_SCENARIOS = {
    "test_hook.py": (
        "test_tunnel_carries_traffic_both_ways_v4_and_v6",
        "test_port_remapping_reached_from_the_peer",
        "test_delete_default_leaves_only_tunnel_routes",
        "test_add_route_present",
        "test_fails_cleanly_when_a_route_cannot_be_added",
        "test_poststop_keeps_a_live_namespace_tunnel_and_cleans_up_after_it",
        "test_status_reports_handshake_and_transfer",
    ),
    "test_leaks.py": (
        "test_kill_switch_blocks_every_way_out_beside_the_tunnel",
        "test_dns_goes_only_to_the_tunnel_servers",
    ),
    "test_daemon.py": ("test_a_tunnel_whose_link_was_deleted_is_repaired_in_place",),
    "test_mtu_endpoints.py": ("test_mtu_follows_the_underlay_and_large_transfers_complete",),
    "test_robustness.py": (
        "test_keys_appear_nowhere",
        "test_keys_appear_nowhere_through_the_daemon",
    ),
}


def wanted(item: pytest.Item) -> bool:
    if os.environ.get("WG_POD_VM_ALL") == "1":
        return True
    if item.path.name in KERNEL_ONLY_MODULES:
        return True
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec is not None else None
    if callspec is not None and callspec.params.get("hook_log") == "journal":
        return False  # the VM runs no journald: the [syslog] variant reads the same lines
    function = getattr(item, "originalname", item.name)
    return backend == "kernel" and function in KERNEL_SCENARIOS.get(item.path.name, ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = [item for item in items if wanted(item)]
    dropped = [item for item in items if not wanted(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
