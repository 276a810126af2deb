"""What the hook needs from the OCI bundle's config.json (read once).

podman names there the resolv.conf it bind-mounts into the container and
the network namespace it made (``/run/netns/...``), which outlives the
container's process across restart-policy restarts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import StateError


@dataclass(frozen=True)
class Bundle:
    resolv_conf: Path | None = None
    netns_path: str | None = None


def _network_namespace_path(spec: dict[str, Any]) -> str | None:
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for namespace in namespaces if isinstance(namespaces, list) else []:
        if isinstance(namespace, dict) and namespace.get("type") == "network":
            path = namespace.get("path")
            return path if isinstance(path, str) and path.startswith("/") else None
    return None


def _resolv_conf(spec: dict[str, Any]) -> Path | None:
    mounts = spec.get("mounts")
    for mount in mounts if isinstance(mounts, list) else []:
        if isinstance(mount, dict) and mount.get("destination") == "/etc/resolv.conf":
            source = mount.get("source")
            if isinstance(source, str) and source.startswith("/"):
                return Path(source)
    return None


def read_bundle(bundle: PurePosixPath | None) -> Bundle:
    if bundle is None:
        return Bundle()
    config = Path(bundle) / "config.json"
    try:
        spec = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read the bundle's {config}: {exc}") from None
    if not isinstance(spec, dict):
        raise StateError(f"the bundle's {config} is not a JSON object")
    return Bundle(resolv_conf=_resolv_conf(spec), netns_path=_network_namespace_path(spec))
