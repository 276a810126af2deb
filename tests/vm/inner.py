"""pytest plugin for the run inside the VM (``-p tests.vm.inner``): only what needs its kernel.

The VM emulates its CPU (TCG) on these machines, some 25 times slower than
the host (a Python start with pyroute2 takes seconds), so it runs only what
the host cannot, and of that a chosen set that keeps the VM tier near ten
minutes: test_kernel whole, and the ``backend=kernel`` variants listed in
``KERNEL_SCENARIOS`` (a function name takes all its kernel variants, a name
with its parameters just that one). Every other kernel variant is listed in
``LEFT_OUT`` with the reason its ``[userspace]`` run on the host covers it;
the host's skip message of that variant says so (``left_out_reason``), and
tests/vm/test_vm.py fails when a kernel variant is neither run nor explained.
``WG_POD_VM_ALL=1`` keeps every test (``tests/integration`` whole; expect
well over an hour under TCG).
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
    "test_daemon.py": (
        "test_a_tunnel_whose_link_was_deleted_is_repaired_in_place",
        # The only test of re-pointing a kernel peer (backends/kernel.py set_endpoint).
        "test_a_peer_whose_host_name_moves_to_another_address_is_followed",
    ),
    "test_mtu_endpoints.py": ("test_mtu_follows_the_underlay_and_large_transfers_complete",),
    # The kernel backend's sync: peers removed and set in place over netlink.
    "test_reload.py": (
        "test_a_reload_adds_and_removes_a_peer_and_keeps_the_connection_through_one_that_stays",
    ),
    # The kernel's keepalive set and taken away again (the greeting).
    "test_greeting.py": (
        "test_the_handshake_starts_before_the_first_packet_and_the_keepalive_goes",
        "test_a_configured_keepalive_is_kept",
    ),
    # The kernel's link made ahead by the daemon (the warm pool), taken,
    # and deleted from outside before use.
    "test_pool.py": (
        "test_a_start_through_the_daemon_takes_the_interface_made_ahead",
        "test_a_pooled_interface_gone_before_use_is_never_handed_out",
    ),
    # The kernel's link made from a rootless user's namespace.
    "test_rootless_hook.py": ("test_a_rootless_users_hook_sets_up_the_tunnel_in_their_namespace",),
    "test_robustness.py": (
        "test_keys_appear_nowhere",
        "test_keys_appear_nowhere_through_the_daemon",
        # A hook killed right after creating a kernel link: a configured
        # ``wireguard`` link left in the host namespace, which gc removes.
        "test_gc_removes_what_a_killed_hook_left[kernel-create]",
    ),
}

# Why the [userspace] run on the host covers each kernel variant the VM
# leaves out. The backends differ only in create, wait_ready and configure
# (backends/), in how status reads the peers and how a peer's endpoint is
# re-pointed; from the move into the namespace on (addresses, routes,
# nftables, DNS, records, teardown by the derived name) it is one code path.
_BEFORE = (
    "covered by the [userspace] run: refused or settled before any backend step, "
    "so the backend is never called"
)
_AFTER = (
    "covered by the [userspace] run: what it checks (routes, nftables, DNS, records, "
    "leaving) is set on the moved interface by code that does not know the backend; "
    "tests/vm runs the kernel backend through the same steps in test_hook.py and test_leaks.py"
)
_KILLED = (
    "covered by the [userspace] run: the undo, gc and the next start remove a temporary "
    "link by its derived name with one call whatever its kind (the userspace run stops "
    "a wireguard-go as well); tests/vm runs the kernel's case, a configured link left "
    "in the host namespace, as test_gc_removes_what_a_killed_hook_left[kernel-create]"
)
_DAEMON = (
    "covered by the [userspace] run: the daemon and its workers run the same lifecycle "
    "as the hook; the kernel's peers as status and health read them are checked in "
    "tests/vm by test_status_reports_handshake_and_transfer[kernel], its repair by "
    "test_a_tunnel_whose_link_was_deleted_is_repaired_in_place[kernel]"
)
_SOCKET = (
    "covered by the [userspace] run and test_kernel.py::"
    "test_the_udp_socket_stays_in_the_host_namespace, which tests/vm runs: the kernel's "
    "socket is born in the host namespace too"
)
_KEY = (
    "covered by the [userspace] run: the key check reads the records before the backend's "
    "create, so a refused container never reaches the backend; the first container's "
    "kernel tunnel is what tests/vm's test_hook.py variants set up"
)
_ROLLBACK = (
    "covered by the [userspace] run: the unwind of a failed start removes the interface by "
    "its name whatever its kind; tests/vm runs the kernel's unwind as "
    "test_fails_cleanly_when_a_route_cannot_be_added[kernel]"
)
_KEYED = (
    "covered by the [userspace] run: the key is read from its file before the backend is "
    "called and handed to it as any config's key, which tests/vm's test_hook.py variants "
    "hand to the kernel"
)
_RELOADED = (
    "covered by the [userspace] run: the routes and guards follow AllowedIPs through code "
    "that does not know the backend, and a refused reload stops before any backend call; "
    "tests/vm runs the kernel backend's sync as "
    "test_a_reload_adds_and_removes_a_peer_and_keeps_the_connection_through_one_that_stays"
)
_GREETED = (
    "covered by the [userspace] run: health judges the peers as every backend reports them "
    "(tests/vm checks the kernel's in test_status_reports_handshake_and_transfer[kernel]), "
    "and the greeting reaches the kernel in "
    "test_the_handshake_starts_before_the_first_packet_and_the_keepalive_goes[kernel]"
)
_POOLED = (
    "covered by the [userspace] run: a pooled interface is removed by its name whatever its "
    "kind (pool.clear); tests/vm runs the kernel's pooled link, taken and deleted, in "
    "test_pool.py"
)
LEFT_OUT: dict[str, dict[str, str]] = {
    "test_daemon.py": {
        "test_a_repair_killed_midway_and_its_daemon_leave_nothing_the_next_does_not_converge": (
            _KILLED
        ),
        "test_a_second_daemon_refuses_to_start": _BEFORE,
        "test_health_file_is_removed_with_the_tunnel": _DAEMON,
        "test_health_of_all_fails_when_one_is_down": _DAEMON,
        "test_health_states": _DAEMON,
        "test_restarting_the_daemon_rebuilds_nothing": _DAEMON,
    },
    "test_fail_closed.py": {
        "test_a_rerun_killed_after_its_old_interface_went_loses_nothing": _KILLED,
        "test_what_a_pod_member_writes_into_the_shared_resolv_conf_never_fails_a_restart": _AFTER,
    },
    "test_greeting.py": {
        "test_a_handshake_that_never_completes_holds_no_start_and_health_says_stale": _GREETED,
    },
    "test_handoff.py": {
        "test_a_daemon_killed_between_a_poststops_answer_and_its_teardown_leaves_nothing_after": (
            _DAEMON
        ),
        "test_a_malformed_request_is_refused": _BEFORE,
        "test_a_request_of_a_non_root_user_is_refused_and_nothing_is_done": _BEFORE,
        "test_a_stuck_daemon_holds_no_start_past_the_deadline": _DAEMON,
        "test_a_waiting_worker_holds_none_of_the_daemons_handles": _DAEMON,
        "test_a_waiting_worker_killed_is_replaced_and_ends_with_the_daemon": _DAEMON,
        "test_a_worker_killed_at_any_step_leaves_the_hook_to_do_the_work": _KILLED,
        "test_the_hook_hands_both_stages_to_the_daemon_and_imports_no_netlink": _DAEMON,
    },
    "test_pool.py": {"test_the_pool_of_a_killed_daemon_goes_with_gc_or_the_next_daemon": _POOLED},
    "test_hook.py": {
        "test_endpoint_sees_the_host_side_address": _SOCKET,
        "test_fails_cleanly_on_a_bad_annotation": _BEFORE,
        "test_fails_cleanly_on_a_broken_config": _BEFORE,
        "test_fails_cleanly_on_an_unresolvable_endpoint": _BEFORE,
        "test_fails_cleanly_when_nftables_fails": _ROLLBACK,
        "test_fails_cleanly_without_a_resolv_conf_from_podman": _BEFORE,
        "test_full_tunnel_beside_podman_default_route": _AFTER,
        "test_ipv6_tunnel_in_a_namespace_with_ipv6_disabled": _AFTER,
        "test_kill_switch_blocks_traffic_beside_the_tunnel": _AFTER,
        "test_leave_after_a_rerun_puts_back_what_the_first_run_replaced": _AFTER,
        "test_pod_members_share_the_namespace_tunnel": _AFTER,
        "test_rerun_on_the_same_namespace_converges": _AFTER,
        "test_stale_records_are_pruned_by_the_next_start": _AFTER,
    },
    "test_host_files.py": {
        "test_a_link_in_podmans_directory_is_refused": _BEFORE,
        "test_a_mounted_host_file_is_refused_and_untouched": _BEFORE,
        "test_a_pod_member_writes_the_resolv_conf_of_the_namespace_owner": _AFTER,
        "test_a_resolv_conf_under_an_unknown_container_id_is_refused": _BEFORE,
        "test_with_dns_off_the_container_starts_and_the_file_is_untouched": _AFTER,
    },
    "test_key_conflict.py": {
        "test_a_second_container_with_the_same_key_and_peer_is_refused": _KEY,
        "test_the_same_key_towards_another_peer_is_allowed": _KEY,
        "test_two_containers_starting_at_once_with_one_key_exactly_one_runs": _KEY,
    },
    "test_leaks.py": {
        "test_dns_off_leaves_dns_alone": _AFTER,
        "test_dns_to_a_family_without_a_tunnel_resolver_is_dropped": _AFTER,
        "test_nothing_falls_back_to_eth0_while_the_interface_is_missing": _AFTER,
        "test_without_the_guards_the_tunnel_traffic_would_leave_through_eth0": _AFTER,
        "test_without_the_kill_switch_eth0_is_a_way_out": _AFTER,
        "test_a_lan_routed_with_add_route_stays_reachable_with_the_kill_switch_on": _AFTER,
    },
    "test_mtu_endpoints.py": {
        "test_explicit_mtu_wins": _AFTER,
        "test_host_name_endpoint": _SOCKET,
        "test_ipv6_only_tunnel_over_an_ipv6_endpoint": _AFTER,
    },
    "test_namespace_identity.py": {
        "test_the_lock_file_a_killed_hook_left_is_used_again_and_swept_by_gc": _KILLED,
    },
    "test_reply_path.py": {
        "test_replies_to_connections_from_outside_leave_through_eth0": _AFTER,
        "test_a_marked_packet_sent_out_of_eth0_by_name_goes_by_podmans_gateway": _AFTER,
    },
    "test_resolv_conf.py": {
        "test_podman_writing_its_file_after_the_hook_changes_nothing_the_container_sees": _AFTER,
        "test_podmans_text_kept_written_for_pod_members_and_a_rerun_rewrites_both": _AFTER,
    },
    "test_key_files.py": {
        "test_a_key_file_that_breaks_the_rules_stops_the_container_and_leaves_nothing": _BEFORE,
        "test_a_private_key_annotation_that_is_not_a_path_is_refused": _BEFORE,
        "test_the_annotation_gives_the_key_of_a_config_without_one": _KEYED,
        "test_wg_quicks_key_hooks_give_the_private_and_the_preshared_key": _KEYED,
    },
    "test_reload.py": {
        "test_a_reload_that_cannot_be_applied_changes_nothing": _RELOADED,
        "test_routes_and_guards_follow_allowed_ips": _RELOADED,
        "test_the_daemon_reloads_a_changed_config_with_reload_on_change": _RELOADED,
    },
    "test_robustness.py": {
        "test_concurrent_hooks_on_one_namespace_are_serialised": _AFTER,
        "test_gc_removes_what_a_killed_hook_left": _KILLED,
        "test_hook_killed_after_a_step_blocks_nothing": _KILLED,
        "test_thirty_parallel_starts": _AFTER,
    },
    "test_split_default.py": {
        "test_a_split_default_route_gets_the_kill_switch": _AFTER,
        "test_a_split_default_route_gets_the_reply_path": _AFTER,
        "test_a_split_default_route_with_delete_default_is_the_default_route": _AFTER,
        "test_without_the_kill_switch_a_split_default_route_leaks_through_eth0": _AFTER,
    },
}
NO_JOURNAL = (
    "the VM runs no journald: tests/vm runs the [syslog-kernel] variant, which reads the same lines"
)


def _parts(nodeid: str) -> tuple[str, str, str]:
    """Module file name, function name, and name with parameters of a node id."""
    path, _, name = nodeid.partition("::")
    return path.rpartition("/")[2], name.partition("[")[0], name


def run_in_vm(nodeid: str) -> bool:
    """Whether the VM runs this test (by its node id)."""
    module, function, name = _parts(nodeid)
    if os.environ.get("WG_POD_VM_ALL") == "1" or module in KERNEL_ONLY_MODULES:
        return True
    if "[journal-" in name:
        return False
    params = name.partition("[")[2].rstrip("]").split("-")
    chosen = KERNEL_SCENARIOS.get(module, ())
    return "kernel" in params and (function in chosen or name in chosen)


def left_out_reason(nodeid: str) -> str:
    """For the host's skip of a kernel variant: whether tests/vm runs it,
    and if not, why the [userspace] run covers it."""
    module, function, name = _parts(nodeid)
    if run_in_vm(nodeid):
        return "tests/vm runs this variant"
    if "[journal-" in name:
        return NO_JOURNAL
    reason = LEFT_OUT.get(module, {}).get(function)
    if reason is None:
        return "tests/vm does not run it, and tests/vm/inner.py records no reason (add one)"
    return f"tests/vm leaves it out for time; {reason}"


def wanted(item: pytest.Item) -> bool:
    return run_in_vm(item.nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = [item for item in items if wanted(item)]
    dropped = [item for item in items if not wanted(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
