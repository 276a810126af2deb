"""The hooks.d definitions that make podman run wg-pod-hook.

The templates in the repository's ``hooks.d/`` are what packages install
(with the hook's path filled in); ``wg-pod install`` writes the same
definitions, produced here, for the running installation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from .errors import SetupError
from .model.oci import KEY_PATTERN
from .runtime import SETTINGS_ENV, STATE_DIR_ENV

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/usr/share/containers/oci/hooks.d")
STAGES = ("createRuntime", "poststop")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# runc kills the hook after this. The hook's own deadlines add up to about
# 50 s at the very worst (endpoint resolution ~16 s, namespace lock 10 s,
# wireguard-go's UAPI socket 10 s, UAPI 5 s, nft 10 s), well inside it.
TIMEOUT = 90


def file_name(stage: str) -> str:
    return f"wg-pod-{stage}.json"


def definition(
    stage: str, hook: str, settings: str | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    env = [PATH]
    if settings:
        env.append(f"{SETTINGS_ENV}={settings}")
    if state_dir:  # an installation of its own (a test suite's)
        env.append(f"{STATE_DIR_ENV}={state_dir}")
    return {
        "version": "1.0.0",
        "hook": {
            "path": hook,
            "args": ["wg-pod-hook", stage],
            "env": env,
            "timeout": TIMEOUT,
        },
        # Any wg-pod.* key (any case) with any value, empty too: the hook
        # refuses what is not quite right (oci.parse_annotations) instead
        # of podman starting the container without it.
        "when": {"annotations": {KEY_PATTERN: ".*"}},
        "stages": [stage],
    }


def installed(command: str = "wg-pod-hook") -> str:
    """The ``command`` of this installation: beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(command)
    if found:
        return str(Path(found).resolve())
    raise SetupError("install", command, "executable not found beside python or on PATH")


def installed_hook() -> str:
    """This installation's wg-pod-hook: beside this Python or on PATH, else
    the one the installed createRuntime definition runs (a package keeps
    the hook in libexec, off PATH)."""
    try:
        return installed()
    except SetupError:
        pass
    try:
        path = json.loads((DEFAULT_DIR / file_name("createRuntime")).read_text())["hook"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        path = None
    if not isinstance(path, str) or not Path(path).is_absolute():
        raise SetupError(
            "find", "wg-pod-hook", "not beside python, on PATH or in an installed definition"
        )
    return path


def install(
    directory: Path, hook: str, settings: str | None = None, state_dir: str | None = None
) -> list[Path]:
    if not Path(hook).is_absolute():
        raise SetupError("install", hook, "the hook path must be absolute")
    if settings and not Path(settings).is_absolute():
        raise SetupError("install", settings, "the settings path must be absolute")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for stage in STAGES:
            target = directory / file_name(stage)
            target.write_text(
                json.dumps(definition(stage, hook, settings, state_dir), indent=2) + "\n"
            )
            log.debug("wrote %s", target)
            written.append(target)
    except OSError as exc:
        raise SetupError("install", str(directory), exc.strerror or str(exc)) from None
    return written


def uninstall(directory: Path) -> list[Path]:
    removed = []
    for stage in STAGES:
        target = directory / file_name(stage)
        if target.exists():
            target.unlink()
            removed.append(target)
    return removed
