"""The OCI hook entry point: ``wg-pod-hook createRuntime|poststop``.

The stage comes from argv and the container state from stdin, as the OCI
runtime spec and podman's hooks.d define them.  This module only parses,
sets up logging, calls one function and maps errors to exit codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from . import failures, logs, notify, teardown
from .bundle import read_bundle
from .errors import PrivilegeError, WgPodError, describe
from .oci import ContainerState, parse_state
from .records import ProcessId
from .settings import load_settings

log = logging.getLogger("wg_pod_hook.hook")

STAGES = ("createRuntime", "poststop")


def rootless_reason() -> str | None:
    """Why this hook cannot do its work here, if it cannot."""
    if os.geteuid() != 0:
        return "wg-pod needs rootful podman (the hook runs as a non-root user)"
    try:
        uid_map = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return None
    if uid_map[:3] != ["0", "0", "4294967295"]:
        return "wg-pod needs rootful podman (the hook runs in a user namespace)"
    return None


def create_runtime(state: ContainerState) -> None:
    reason = rootless_reason()
    if reason:
        raise PrivilegeError(reason)
    settings = load_settings()
    logging.getLogger().setLevel(settings.log_level.upper())
    from . import lifecycle  # netlink and the backends: not on poststop's path

    plan = lifecycle.prepare(state, settings)
    lifecycle.up(plan, read_bundle(state.bundle), settings)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    logs.setup()
    if len(args) != 1 or args[0] not in STAGES:
        print(f"usage: wg-pod-hook {{{'|'.join(STAGES)}}} < OCI-state", file=sys.stderr)
        return 2
    stage = args[0]
    text = sys.stdin.read()
    container_id = ""
    try:
        state = parse_state(text)
        container_id = state.id
        if stage == "createRuntime":
            create_runtime(state)
            failures.forget(state.id)
            notify.tell("up", state.id, seconds=_age())
        else:
            teardown.down(state.id)
            notify.tell("down", state.id)
    except WgPodError as exc:
        message = describe(exc)
        log.error("container %s: %s: %s", container_id[:12] or "?", stage, message)
        if stage == "poststop":
            return 0  # never fail a container's removal
        return failed(container_id, stage, message)
    except Exception as exc:  # a bug: fail closed, keep the traceback in the journal
        log.exception("container %s: %s: unexpected error", container_id[:12] or "?", stage)
        if stage == "poststop":
            return 0
        return failed(container_id, stage, f"internal error {type(exc).__name__}")
    return 0


def _age() -> float | None:
    """Seconds since this process started, its interpreter's start included."""
    start = ProcessId.mine().start
    if not start:
        return None
    ticks = float(os.sysconf("SC_CLK_TCK"))
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start / ticks)


def failed(container_id: str, stage: str, message: str) -> int:
    """Say why on stderr (runc shows it) and keep it for ``wg-pod status``
    (crun throws hook output away); the exit status that stops the container."""
    print(
        f"wg-pod: container {container_id[:12] or '?'}: {message} (journalctl -t wg-pod)",
        file=sys.stderr,
    )
    name = failures.container_name(container_id) if container_id else None
    failures.remember(container_id or "unknown", stage, message, name)
    return 1


def run() -> NoReturn:
    """The installed entry point: ``main``, then exit without the
    interpreter's teardown.  Freeing every module and object at exit costs
    each container start some 15-25 ms and does nothing for the hook: its
    record is written and closed, wireguard-go is a process of its own, and
    the log and the standard streams are flushed here."""
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # The runtime may have closed its end: nothing more to say there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
