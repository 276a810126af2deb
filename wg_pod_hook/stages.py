"""The hook's work for one stage, wherever it runs: in the hook's own
process (no daemon, or the daemon could not answer) or in a worker of the
daemon, which the hook hands it to (handoff.py).  Both run exactly this:
the same parsing and checks of the OCI state, the same setup, the same
journal lines, records and kept failures, and the same one line for
stderr.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import notify
from .errors import PrivilegeError, Superseded, WgPodError, describe
from .handoff import Answer
from .model.bundle import Bundle, read_bundle
from .model.oci import ContainerState, parse_state, with_device
from .model.settings import Settings, load_settings
from .runtime import Runtime
from .state import failures
from .tunnel import teardown

if TYPE_CHECKING:  # the standalone poststop does without the pool's imports
    from .tunnel.pool import Ready

log = logging.getLogger("wg_pod_hook.hook")

STAGES = ("createRuntime", "poststop")


def run_stage(
    stage: str,
    text: str,
    runtime: Runtime,
    *,
    in_daemon: bool = False,
    started: float | None = None,
    refusal: str | None = None,
    wanted: Callable[[], bool] | None = None,
    device: str | None = None,
    ready: Ready | None = None,
) -> Answer:
    """Do ``stage`` for the OCI state ``text``.  ``started``: when the hook
    started (CLOCK_BOOTTIME seconds), for the duration the daemon's metrics
    report; ``wanted``: whether the hook still waits (lifecycle.up);
    ``device``: the config a wg-pod device's hook names (cdi.py);
    ``ready``: an interface the daemon's worker made ahead (pool.py).  The
    answer is the hook's exit status and its line for stderr."""
    container_id = ""
    try:
        state = parse_state(text)
        container_id = state.id
        if device is not None:
            state = with_device(state, device)
        if stage == "createRuntime":
            if refusal:
                raise PrivilegeError(refusal)
            settings = load_settings(runtime).in_daemon(in_daemon)
            bundle = read_bundle(state.bundle)
            if device is None and bundle.device_hook:
                # Its annotations woke hooks.d's hook too: the device's does the work.
                log.debug("container %s: left to its wg-pod device's hook", state.id[:12])
                return 0, None
            create_runtime(state, runtime, settings, bundle, wanted, ready)
            failures.forget(runtime, state.id)
            seconds = None if started is None else time.clock_gettime(time.CLOCK_BOOTTIME) - started
            notify.tell(runtime, "up", state.id, seconds=seconds)
        else:
            teardown.down(runtime, state.id)
            notify.tell(runtime, "down", state.id)
    except Superseded as exc:  # the hook does it: nothing to say, nothing to keep
        log.warning("%s; it does the work itself", exc)
        return 1, None
    except WgPodError as exc:
        message = describe(exc)
        log.error("container %s: %s: %s", container_id[:12] or "?", stage, message)
        return _failed(runtime, container_id, stage, message)
    except Exception as exc:  # a bug: fail closed, keep the traceback in the journal
        log.exception("container %s: %s: unexpected error", container_id[:12] or "?", stage)
        return _failed(runtime, container_id, stage, f"internal error {type(exc).__name__}")
    return 0, None


def create_runtime(
    state: ContainerState,
    runtime: Runtime,
    settings: Settings,
    bundle: Bundle,
    wanted: Callable[[], bool] | None = None,
    ready: Ready | None = None,
) -> None:
    logging.getLogger().setLevel(settings.log_level.upper())
    from .tunnel import lifecycle  # netlink and the backends: not on poststop's path

    plan = lifecycle.prepare(state, settings, runtime)
    lifecycle.up(runtime, plan, bundle, settings, wanted=wanted, creating=True, ready=ready)


def _failed(runtime: Runtime, container_id: str, stage: str, message: str) -> Answer:
    """poststop never fails a container's removal.  A failed createRuntime
    says why on stderr (runc shows it) and is kept for ``wg-pod status``
    (crun throws hook output away); its exit status stops the container."""
    if stage == "poststop":
        return 0, None
    name = failures.container_name(container_id) if container_id else None
    failures.remember(runtime, container_id or "unknown", stage, message, name)
    return 1, f"wg-pod: container {container_id[:12] or '?'}: {message} (journalctl -t wg-pod)"
