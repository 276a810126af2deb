"""The only user of podman-py: finds running containers for ``wg-pod join``,
``leave`` and ``status`` through podman's REST API."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import WgPodError

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/podman/podman.sock"
URL_ENV = "CONTAINER_HOST"


class PodmanError(WgPodError):
    """podman's API could not answer."""


class NoSuchContainer(PodmanError):
    """podman's API answered: it has no container of that name or id."""


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    pid: int
    running: bool
    netns_path: str | None
    bundle: PurePosixPath | None  # holds config.json, as the hook's OCI state names it


def api_url(url: str | None = None) -> str:
    """``--url``, else ``$CONTAINER_HOST``, else the rootful socket."""
    url = url or os.environ.get(URL_ENV) or f"unix://{DEFAULT_SOCKET}"
    if url.startswith("unix://"):
        path = url.removeprefix("unix://")
        if not Path(path).exists():
            raise PodmanError(
                f"podman API socket {path} not found: start it with "
                "`systemctl enable --now podman.socket` or `podman system service --time 0 &`"
            )
        return "http+unix://" + path
    return url


def _client(url: str | None):  # type: ignore[no-untyped-def]
    from podman import PodmanClient  # imported here: only the command needs it

    return PodmanClient(base_url=api_url(url))


def inspect(name_or_id: str, url: str | None = None) -> ContainerInfo:
    from podman.errors import APIError, NotFound

    try:
        with _client(url) as client:
            attrs = client.containers.get(name_or_id).inspect()
    except NotFound:
        raise NoSuchContainer(f"no container {name_or_id!r}") from None
    except (APIError, OSError) as exc:
        raise PodmanError(f"podman API: {exc}") from None
    state = attrs.get("State") or {}
    sandbox = (attrs.get("NetworkSettings") or {}).get("SandboxKey") or None
    oci_config = attrs.get("OCIConfigPath") or None
    return ContainerInfo(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        pid=int(state.get("Pid") or 0),
        running=bool(state.get("Running")),
        netns_path=sandbox,
        bundle=PurePosixPath(oci_config).parent if oci_config else None,
    )


def names(url: str | None = None) -> dict[str, str]:
    """id -> name of every container; empty when the API is not there."""
    from podman.errors import APIError

    try:
        with _client(url) as client:
            return {c.id: c.name for c in client.containers.list(all=True)}
    except (PodmanError, APIError, OSError) as exc:  # status works without names
        log.debug("no container names from podman: %s", exc)
        return {}
