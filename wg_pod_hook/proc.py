"""The one funnel for every external command wg-pod runs.

Every call has a deadline, logs its argv at debug level (argv never holds
secrets: they travel on stdin or sockets), and turns failures into
SetupError naming the command.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence

from .errors import SetupError

log = logging.getLogger(__name__)


def which(program: str) -> str | None:
    return shutil.which(program)


def in_netns(netns_path: str, argv: Sequence[str]) -> list[str]:
    """argv that runs ``argv`` inside the network namespace at ``netns_path``."""
    return ["nsenter", f"--net={netns_path}", "--", *argv]


def run(argv: Sequence[str], *, step: str, stdin: str | None = None, timeout: float = 10.0) -> str:
    """Run ``argv`` to completion; return stdout or raise SetupError(step)."""
    log.debug("run: %s", " ".join(argv))
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise SetupError(step, argv[0], "command not found (is it installed?)") from None
    except subprocess.TimeoutExpired:
        raise SetupError(step, argv[0], f"did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:300] or f"exit status {done.returncode}"
        raise SetupError(step, argv[0], detail)
    return done.stdout
