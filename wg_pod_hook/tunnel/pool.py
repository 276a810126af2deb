"""The daemon's warm pool: an interface made ahead of its request.

Each spare worker of the daemon (daemon/hooks.py) makes one while it waits
for its request, in the host namespace, under a pool name (names.py), with
the backend a setup would use: wireguard-go started with its UAPI socket
listening, or the kernel's ``wireguard`` link.  It holds no key, no peer,
no address: nothing a container could see.  A createRuntime that can use it
takes it as its own (lifecycle._create: the record names it at once, and
wireguard-go joins the container's cgroups then); the setup then only
configures, moves and addresses it.  A pooled interface that died, or that
is not what the setup would make, is never handed out.

What is not taken goes when its worker ends (a poststop, another backend,
the daemon's stop closing the spare's channel); a worker killed meanwhile
leaves it to the daemon (daemon/hooks.py clears it), a daemon killed leaves
it to ``gc`` and to the next daemon's start.  A rootless user's interfaces
are born in their containers (lifecycle.py): no pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..errors import BackendUnavailable, SetupError
from ..kernel import backends
from ..kernel.backends import Backend
from ..kernel.netlink import Netlink
from ..model.names import pool_prefix
from ..model.settings import Settings
from ..runtime import Runtime
from ..state.records import ProcessId

log = logging.getLogger(__name__)

DEFAULT_COMMAND = Settings().userspace_command


@dataclass
class Ready:
    """An interface made ahead of its request, and what serves it."""

    backend: Backend
    name: str
    process: ProcessId | None
    taken: bool = False


def make(runtime: Runtime, settings: Settings, name: str) -> Ready | None:
    """An interface called ``name``, of the first backend ``settings``
    would have a setup try that this machine runs; None when there is none
    to make (rootless, no backend), or making it failed (nothing left)."""
    if runtime.rootless:
        return None
    wanted = backends.NAMES if settings.backend == "auto" else (settings.backend,)
    for backend_name in wanted:
        if backend_name == "userspace" and settings.userspace_command != DEFAULT_COMMAND:
            continue  # the pool starts the default command only
        backend = backends.get(backend_name, runtime)
        try:
            process = backend.create(name, None)
            backend.wait_ready(name)
        except BackendUnavailable:
            continue
        except SetupError as exc:
            log.warning("daemon: no warm %s backend: %s", backend_name, exc)
            clear(runtime, name)
            return None
        log.debug("daemon: %s ready as %s", backend_name, name)
        return Ready(backend, name, process)
    return None


def discard(runtime: Runtime, ready: Ready | None) -> None:
    """Remove a pooled interface no request took."""
    if ready is not None and not ready.taken:
        clear(runtime, ready.name)


def clear(runtime: Runtime, name: str) -> None:
    """Remove whatever serves the pool name ``name``: its process and its link."""
    for backend in backends.every(runtime):
        backend.clear(name)
    with Netlink() as host:
        host.delete_link(name)


def names(runtime: Runtime) -> list[str]:
    """The pool names of the runtime's daemon on this host now: every
    pooled interface is a link in the host namespace (wireguard-go's TUN,
    or the kernel's), there while what serves it runs."""
    if runtime.rootless:
        return []
    with Netlink() as host:
        prefix = pool_prefix(runtime.state_dir)
        return sorted(name for name in host.link_names() if name.startswith(prefix))
