"""What the hook needs from the OCI bundle's config.json (read once), and
which of the files mounted into the container its engine made for it.

podman names there the resolv.conf it bind-mounts into the container, the
container's root filesystem, and the network namespace it made
(``/run/netns/...``), which outlives the container's process across
restart-policy restarts.

podman (and CRI-O) keep each container's own files in per-container
directories of its storage, ``<containers dir>/<64 hex id>/userdata/``:
the bundle (config.json) in the static one, resolv.conf, hosts and hostname
in the run one.  Docker keeps them in ``<data root>/containers/<64 hex
id>/`` beside the container's ``config.v2.json``, and hands containerd a
bundle named by the same id.  containerd's CRI (Kubernetes) keeps them per
pod, in ``<root>/io.containerd.grpc.v1.cri/sandboxes/<64 hex pod id>/``,
and names the pod in the container's ``io.kubernetes.cri.sandbox-id``
annotation; CRI-O keeps them as podman does for a pod, in its infra
container's directory.  A mount whose source lies anywhere else is the
user's (``-v /etc/resolv.conf:/etc/resolv.conf``): wg-pod never writes
such a file, since writing the source would change it on the host.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import StateError

USERDATA = "userdata"
DOCKER_CONTAINERS = "containers"
DOCKER_CONFIG = "config.v2.json"
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
CRI_SANDBOXES = "sandboxes"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
# A wg-pod device's hook, as cdi.py writes it: ``HOOK STAGE --config PATH``.
HOOK = "wg-pod-hook"
DEVICE_CONFIG = "--config"
RESOLV_CONF = "/etc/resolv.conf"
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Bundle:
    directory: str | None = None  # the OCI bundle (holds config.json)
    # Source of the container's /etc/resolv.conf mount, whoever made it.
    resolv_conf: Path | None = None
    netns_path: str | None = None
    # The container's root filesystem (config.json's root.path, resolved).
    rootfs: Path | None = None
    # Resolved directories holding the engine's per-container directories
    # for this container (podman's static and run ones, Docker's
    # containers one, containerd's sandboxes one); empty when there is no
    # bundle.
    storage_dirs: frozenset[Path] = frozenset()
    # containerd's pod (sandbox) of the container, whose files it mounts.
    pod_id: str | None = None
    # The container asked for a wg-pod CDI device (cdi.py): that device's
    # hook, which names the config, sets its tunnel up.
    device_hook: bool = False


def _real(path: Path) -> Path:
    """``path`` with every directory above it resolved; the last component
    stays as it is, so a symlink there is seen for what it is."""
    return Path(os.path.realpath(path.parent)) / path.name


def container_file_owner(path: Path) -> tuple[Path, str] | None:
    """(containers dir, container id) when ``path`` has the shape of a file
    an engine keeps for one container (or pod): podman's (and CRI-O's)
    ``<dir>/<64 hex id>/userdata/<name>``, Docker's
    ``<dir named containers>/<64 hex id>/<name>``, containerd's CRI's
    ``<root>/io.containerd.grpc.v1.cri/sandboxes/<64 hex id>/<name>``."""
    parent = path.parent
    if parent.name == USERDATA and _CONTAINER_ID.fullmatch(parent.parent.name):
        return parent.parent.parent, parent.parent.name
    if not _CONTAINER_ID.fullmatch(parent.name):
        return None
    above = parent.parent
    if above.name == DOCKER_CONTAINERS or (
        above.name == CRI_SANDBOXES and above.parent.name == CRI_PLUGIN
    ):
        return above, parent.name
    return None


def _of_pod(found: tuple[Path, str], pod_id: str | None) -> bool:
    """Whether ``found`` (container_file_owner) is a file containerd's CRI
    keeps for the pod ``pod_id``: its annotation counts for that layout
    alone."""
    directory, owner = found
    return owner == pod_id and directory.name == CRI_SANDBOXES


def _is_container(directory: Path, owner: str) -> bool:
    """Whether the engine keeps a container ``owner`` in ``directory``: its
    bundle (podman) or its config (Docker) is there."""
    return (directory / owner / USERDATA / "config.json").is_file() or (
        directory / owner / DOCKER_CONFIG
    ).is_file()


def made_by_engine(spec: Bundle, path: Path, container_id: str) -> bool:
    """Whether ``path`` is a file the engine made for this container, or for
    the container whose network namespace it joins (a pod's infra
    container, ``--network container:NAME``), whose resolv.conf the engine
    mounts instead.

    It must lie in this container's own storage, in one of the directories
    holding its per-container directories, under its own id, its pod's, or
    the id of another container of that storage.
    """
    found = container_file_owner(_real(path))
    if found is None or found[0] not in spec.storage_dirs:
        return False
    owner = found[1]
    return (
        owner == container_id
        or _of_pod(found, spec.pod_id)
        or any(_is_container(directory, owner) for directory in spec.storage_dirs)
    )


def _network_namespace_path(spec: dict[str, Any]) -> str | None:
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for namespace in namespaces if isinstance(namespaces, list) else []:
        if isinstance(namespace, dict) and namespace.get("type") == "network":
            path = namespace.get("path")
            return path if isinstance(path, str) and path.startswith("/") else None
    return None


def _rootfs(bundle: Path, spec: dict[str, Any]) -> Path | None:
    root = spec.get("root")
    path = root.get("path") if isinstance(root, dict) else None
    if not isinstance(path, str) or not path:
        return None
    return Path(os.path.realpath(bundle / path))  # relative to the bundle, as OCI says


def _mount_sources(spec: dict[str, Any]) -> dict[str, Path]:
    """destination -> absolute source of every mount that has one."""
    mounts = spec.get("mounts")
    sources = {}
    for mount in mounts if isinstance(mounts, list) else []:
        if not isinstance(mount, dict):
            continue
        destination, source = mount.get("destination"), mount.get("source")
        if isinstance(destination, str) and isinstance(source, str) and source.startswith("/"):
            sources[destination] = Path(source)
    return sources


def _storage_dirs(bundle: Path, sources: dict[str, Path], pod_id: str | None) -> frozenset[Path]:
    """The containers directories of this container's storage: the bundle's
    (podman's static one) and that of every mounted file kept under the
    same id (podman's run one; Docker's, whose bundle is containerd's
    ``<namespace dir>/<id>``) or its pod's (containerd's CRI)."""
    found = container_file_owner(_real(bundle / "config.json"))
    dirs = set()
    if found is not None:
        static_dir, own = found
        dirs.add(static_dir)
    elif _CONTAINER_ID.fullmatch(bundle.name):
        own = bundle.name
    else:
        return frozenset()
    for source in sources.values():
        owner = container_file_owner(_real(source))
        if owner is not None and (owner[1] == own or _of_pod(owner, pod_id)):
            dirs.add(owner[0])
    return frozenset(dirs)


def _pod_id(spec: dict[str, Any]) -> str | None:
    annotations = spec.get("annotations")
    found = annotations.get(CRI_SANDBOX_ID) if isinstance(annotations, dict) else None
    return found if isinstance(found, str) and _CONTAINER_ID.fullmatch(found) else None


def _has_device_hook(spec: dict[str, Any]) -> bool:
    """Whether the spec's createRuntime hooks hold a wg-pod device's (one
    that names its config: cdi.hook_args)."""
    hooks = spec.get("hooks")
    stage = hooks.get("createRuntime") if isinstance(hooks, dict) else None
    for hook in stage if isinstance(stage, list) else []:
        args = hook.get("args") if isinstance(hook, dict) else None
        if isinstance(args, list) and args[:1] == [HOOK] and DEVICE_CONFIG in args:
            return True
    return False


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
    sources = _mount_sources(spec)
    pod_id = _pod_id(spec)
    return Bundle(
        directory=str(bundle),
        resolv_conf=sources.get(RESOLV_CONF),
        netns_path=_network_namespace_path(spec),
        rootfs=_rootfs(Path(bundle), spec),
        storage_dirs=_storage_dirs(Path(bundle), sources, pod_id),
        pod_id=pod_id,
        device_hook=_has_device_hook(spec),
    )
