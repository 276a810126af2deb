"""The only user of podman-py: finds running containers for ``wg-pod join``,
``leave`` and ``status`` through podman's REST API."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote

from .errors import WgPodError
from .runtime import namespace_user

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


def socket_path(url: str) -> str | None:
    """The Unix socket a podman API URL names (``unix:///PATH``,
    ``unix:/PATH``, ``http+unix://`` with the path as is or %-quoted, as
    podman-py writes it); None for one that is not a Unix socket's."""
    for scheme in ("unix://", "unix:", "http+unix://"):
        if url.startswith(scheme):
            return unquote(url.removeprefix(scheme).partition("?")[0]) or None
    return None


def _how_to_start(path: str) -> str:
    """How to get podman's API to listen on ``path``: the system's
    socket unit, or a rootless user's (theirs is under /run/user/UID)."""
    without = "without systemd: `podman system service --time 0 &`"
    if path.startswith("/run/user/"):
        return f"`systemctl --user enable --now podman.socket` ({without})"
    uid = namespace_user() or os.geteuid()
    theirs = f"unix:///run/user/{uid or 'UID'}/podman/podman.sock"
    return (
        "`systemctl enable --now podman.socket` (a rootless user's podman: "
        f"`systemctl --user enable --now podman.socket` and --url {theirs}; {without})"
    )


def _not_answering(path: str) -> str | None:
    """Why the podman API socket at ``path`` cannot be talked to (not
    there, nothing listening, not ours to open); None when it answers a
    connection (the trouble is elsewhere)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
        except FileNotFoundError:
            return f"podman API socket {path} is not there: start it with {_how_to_start(path)}"
        except ConnectionRefusedError:
            return (
                f"podman API socket {path}: nothing listens on it (connection refused): "
                f"start it with {_how_to_start(path)}"
            )
        except PermissionError:
            return _denied(path)
        except OSError as exc:
            return f"podman API socket {path}: {exc.strerror or exc}"
    return None


def _denied(path: str) -> str:
    return (
        f"podman API socket {path}: permission denied (root's needs root; a rootless "
        "user's is their own, --url unix:///run/user/UID/podman/podman.sock)"
    )


def api_url(url: str | None = None) -> str:
    """``--url``, else ``$CONTAINER_HOST``, else the rootful socket; a Unix
    socket's as podman-py takes it.  PodmanError, saying how to start it,
    when that socket is not there."""
    url = url or os.environ.get(URL_ENV) or f"unix://{DEFAULT_SOCKET}"
    path = socket_path(url)
    if path is None:
        return url
    try:
        os.stat(path)
    except PermissionError:  # root's, in a directory only root may search
        raise PodmanError(_denied(path)) from None
    except OSError:
        raise PodmanError(
            f"podman API socket {path} is not there: start it with {_how_to_start(path)}"
        ) from None
    return "http+unix://" + path


def _unreachable(url: str | None, exc: Exception) -> PodmanError:
    """podman-py's failure (``GET operation failed``), said as what is
    wrong with the socket when it is one."""
    path = socket_path(url or os.environ.get(URL_ENV) or f"unix://{DEFAULT_SOCKET}")
    why = _not_answering(path) if path is not None else None
    return PodmanError(why or f"podman API: {exc}")


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
        raise _unreachable(url, exc) from None
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
