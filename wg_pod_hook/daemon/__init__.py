"""The resident supervisor, ``wg-pod daemon``: keeps every tunnel up for
its container's whole life.

One process for the host (a lock on its state directory; under systemd it
is wg-pod.service, units.py), and one for each rootless user who wants it
(their systemd user unit: it first joins their podman's user and mount
namespaces, userns.py, where it is uid 0 as their hooks are).  It adopts
every tunnel from the records when it starts, learns of new ones when the
hook tells it (notify.py; a scan of the records every tick as fallback)
and forgets them when their container's process ends.  Its parts, each readable alone:

- loop.py: the one thread; every handle the daemon holds, its timers and
  its tick, and the forks of its workers (which close all those handles);
- hooks.py: the hooks' requests, each answered in a worker forked ahead;
- watches.py: a watch on each tunnel (link events in its namespace, a
  pidfd of its container's process);
- repairs.py: a tunnel whose interface went, set up again in place in a
  worker, with a backoff while it fails (the namespace stays closed);
- looks.py: every tick, each tunnel's status read once and handed to its
  periodic tasks (health; following host-name endpoints);
- main.py: the parts put together, the hooks' notes, metrics.

Everything the daemon does to a tunnel goes through the lifecycle and the
one teardown, under the namespace's lock, so it and a hook never work on
one namespace at once.  Stopping, restarting or killing it never takes a
tunnel down: nothing of a tunnel lives in the daemon, and a wireguard-go
it starts runs in its own process group, in its container's cgroups
(cgroups.py), not the daemon's service.
"""

from .main import run

__all__ = ["run"]
