"""The OCI hook entry point: ``wg-pod-hook createRuntime|poststop
[--config PATH]``.

The stage comes from argv and the container state from stdin, as the OCI
runtime spec and podman's hooks.d define them; a wg-pod CDI device's hook
(cdi.py) names its config in argv too.  When the wg-pod daemon
runs, the hook hands both to it and says what it answers (handoff.py):
that path imports next to nothing, which is most of a warm start's gain.
Otherwise, or when the daemon cannot answer, the hook does the work itself
(stages.py): the same checks, setup, journal lines and exit status.
"""

from __future__ import annotations

import os
import sys

from . import handoff
from .runtime import Runtime, namespace_user

# Not typing itself: every import is paid by every container start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

STAGES = ("createRuntime", "poststop")
ROOT_USERNS = (
    "wg-pod needs root or rootless podman (the hook runs in a user namespace of root's, "
    "without root's privileges)"
)


def refusal(context: Runtime) -> str | None:
    """Why this hook cannot do its work here, if it cannot: it runs as
    root, or as uid 0 of a rootless user's namespace (rootless podman's),
    and as nothing else."""
    if context.root:
        return None
    if namespace_user() == 0:
        return ROOT_USERNS
    return handoff.NOT_ROOT


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    device = args[2] if len(args) == 3 and args[1] == "--config" else None
    if len(args) not in (1, 3) or args[0] not in STAGES or (len(args) == 3 and device is None):
        print(
            f"usage: wg-pod-hook {{{'|'.join(STAGES)}}} [--config PATH] < OCI-state",
            file=sys.stderr,
        )
        return 2
    stage = args[0]
    text = sys.stdin.read()
    try:
        context = Runtime.of_process()
    except ValueError as exc:
        print(f"wg-pod: {exc}", file=sys.stderr)
        return 1
    reason = refusal(context)
    answer = handoff.ask(stage, text, context, device) if reason is None else None
    if answer is None:
        answer = here(stage, text, context, reason, device)
    code, line = answer
    if line:
        print(line, file=sys.stderr)
    return code


def here(
    stage: str, text: str, context: Runtime, refused: str | None, device: str | None = None
) -> handoff.Answer:
    """The work in this process.  The installed hook starts without the
    site module (python3 -IS, see packaging/launcher.in); the work needs
    the site directories (PyYAML, the libnftables binding)."""
    if sys.flags.no_site:
        import site

        site.main()
    from . import logs, stages

    logs.setup()
    return stages.run_stage(
        stage, text, context, started=handoff.started(), refusal=refused, device=device
    )


def run() -> NoReturn:
    """The installed entry point: ``main``, then exit without the
    interpreter's teardown.  Freeing every module and object at exit costs
    each container start some 15-25 ms and does nothing for the hook: its
    record is written and closed, wireguard-go is a process of its own, and
    the log and the standard streams are flushed here."""
    code = main()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is not imported on the warm path)
            stream.flush()
        except (OSError, ValueError):  # the runtime closed its end: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
