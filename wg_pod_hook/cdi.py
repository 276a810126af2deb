"""CDI (Container Device Interface) specs: each allowed config a device.

A CDI spec in ``/etc/cdi`` names devices a container may ask for
(``podman run --device wg-pod.dev/tunnel=wg0``, quadlet ``AddDevice=``,
``docker run --device``, containerd's and CRI-O's CDI support); each
device adds edits to the container's OCI spec.  A wg-pod device adds the
hook's two stages, with the device's config in the hook's arguments
(``wg-pod-hook createRuntime --config /etc/wg/wg0.conf``): the engines
that never read hooks.d read CDI, and the administrator says which
tunnels exist, the user only picks one by name.  The container's
``wg-pod.*`` annotations may add the other options (oci.with_device).

The spec is JSON (which CDI reads as YAML too), written whole and in
place of the last one, the same for the same configs: it holds paths,
never a key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import hooksd
from .errors import SetupError
from .model.bundle import DEVICE_CONFIG, HOOK

KIND = "wg-pod.dev/tunnel"
# Hooks in containerEdits came with CDI 0.3.0, podman 4.3 reads it, and
# every later reader (Docker, containerd, CRI-O) still does.
CDI_VERSION = "0.3.0"
DEFAULT_SPEC = Path("/etc/cdi/wg-pod.json")
# CDI's rule for a device name.
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def devices(config_dirs: Iterable[Path]) -> dict[str, Path]:
    """Device name -> config: every ``NAME.conf`` in the config
    directories whose NAME CDI allows, the first directory's where two
    have one name; sorted by name."""
    found: dict[str, Path] = {}
    for directory in config_dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            path = Path(directory, name)
            stem = name.removesuffix(".conf")
            if (
                name.endswith(".conf")
                and _DEVICE_NAME.fullmatch(stem)
                and stem not in found
                and path.is_file()
            ):
                found[stem] = path
    return dict(sorted(found.items()))


def hook_args(stage: str, config: Path) -> list[str]:
    """The device hook's argv, which the hook (and model/bundle.py) reads."""
    return [HOOK, stage, DEVICE_CONFIG, str(config)]


def spec(
    configs: dict[str, Path], hook: str, settings: str | None = None, state_dir: str | None = None
) -> dict[str, Any]:
    """The CDI spec of ``configs`` (device name -> config), whose hooks
    run ``hook`` (an absolute path) with the environment hooks.d gives it."""
    environment = hooksd.definition("createRuntime", hook, settings, state_dir)["hook"]["env"]
    return {
        "cdiVersion": CDI_VERSION,
        "kind": KIND,
        "devices": [
            {
                "name": name,
                "containerEdits": {
                    "hooks": [
                        {
                            "hookName": stage,
                            "path": hook,
                            "args": hook_args(stage, config),
                            "env": environment,
                            "timeout": hooksd.TIMEOUT,
                        }
                        for stage in hooksd.STAGES
                    ]
                },
            }
            for name, config in configs.items()
        ],
    }


def write(target: Path, text: str) -> None:
    """``text`` as the spec at ``target``, whole (a reader never sees half
    of it), readable by all as /etc/cdi's specs are.  The temporary file
    beside it ends in neither .json nor .yaml, so no engine reads it."""
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fchmod(fd, 0o644)  # whatever the umask
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise SetupError("write CDI spec", str(target), exc.strerror or str(exc)) from None


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
