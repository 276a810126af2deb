"""Network lab for the integration and system tests.

Throwaway network namespaces, veth links to the host namespace, a real
WireGuard peer (wireguard-go in its own namespace, with an HTTP server on its
tunnel addresses) and a stand-in for a container's network namespace. Every
object is named ``wgpt...`` so leftovers are identifiable, and every object is
registered with a :class:`Lab`, whose ``close()`` removes them in reverse
order, also when the test failed.

Addresses (see shared ENVIRONMENT.md): veth links use random /30s in
198.18.0.0/15 and ``fd77:ff:<n>::/64``; tunnels use ``10.250.<n>.0/24`` and
``fd77:<n>::/64`` (n in 1..254, never 0xff), which exist only inside the
lab's namespaces. Nothing else is ever added to the host namespace, and the
host's routes are never touched.

Private keys are passed to ``wg`` through 0600 files or stdin, never argv.

The modules, each importing only those above it at run time:

  base        run, wait_for, keys, names, LabError, host leftovers, underlays,
              free UDP ports, a running daemon's lock and sockets
  peer        Peer, Client, their wg setconf and wg-quick texts
  standin     ContainerStandIn, ConfigDir, make_config_dir, write_settings
  namespaces  Lab (which makes peers and stand-ins), Netns, delete_link
  runners     Podman, RETRYING_WGET, HookRunner, Daemon, venv_command,
              with_resolv_conf, rss_kib, collect_inner_ids

Tests import from the package: ``from tests.lab import Lab, Peer``.
"""

from tests.lab.base import (
    INSTALLED_HOOKS_DIR,
    PODMAN_MODE_ENV,
    PREFIX,
    REPO,
    SUITE_STATE_DIR,
    SYSTEM_CONFIG_ROOT,
    SYSTEM_PODMAN,
    WG_RUN_DIR,
    WITHOUT_TUN,
    LabError,
    Underlay,
    allocate_underlay,
    assert_host_clean,
    cache_lock,
    children,
    daemon_lock_holders,
    free_udp_port,
    genkey,
    genpsk,
    host_addresses,
    host_leftovers,
    link_names,
    netns_names,
    pubkey,
    require_root,
    run,
    socket_servers,
    stop_process,
    the_runtime,
    token,
    use_state_dir,
    wait_for,
    wg_pod_processes,
)
from tests.lab.namespaces import Lab, Netns, delete_link
from tests.lab.peer import PEER_HTTP_PORT, PEER_LISTEN_PORT, Client, Peer
from tests.lab.runners import (
    CONTAINERS_CONF,
    HOOK_PATH_ENV,
    RETRYING_WGET,
    TEST_IMAGE,
    Daemon,
    HookRunner,
    Podman,
    collect_inner_ids,
    rss_kib,
    venv_command,
    with_resolv_conf,
)
from tests.lab.standin import ConfigDir, ContainerStandIn, make_config_dir, write_settings

__all__ = [
    "CONTAINERS_CONF",
    "HOOK_PATH_ENV",
    "INSTALLED_HOOKS_DIR",
    "PEER_HTTP_PORT",
    "PEER_LISTEN_PORT",
    "PODMAN_MODE_ENV",
    "PREFIX",
    "REPO",
    "RETRYING_WGET",
    "SUITE_STATE_DIR",
    "SYSTEM_CONFIG_ROOT",
    "SYSTEM_PODMAN",
    "TEST_IMAGE",
    "WG_RUN_DIR",
    "WITHOUT_TUN",
    "Client",
    "ConfigDir",
    "ContainerStandIn",
    "Daemon",
    "HookRunner",
    "Lab",
    "LabError",
    "Netns",
    "Peer",
    "Podman",
    "Underlay",
    "allocate_underlay",
    "assert_host_clean",
    "cache_lock",
    "children",
    "collect_inner_ids",
    "daemon_lock_holders",
    "delete_link",
    "free_udp_port",
    "genkey",
    "genpsk",
    "host_addresses",
    "host_leftovers",
    "link_names",
    "make_config_dir",
    "netns_names",
    "pubkey",
    "require_root",
    "rss_kib",
    "run",
    "socket_servers",
    "stop_process",
    "the_runtime",
    "token",
    "use_state_dir",
    "venv_command",
    "wait_for",
    "wg_pod_processes",
    "with_resolv_conf",
    "write_settings",
]
