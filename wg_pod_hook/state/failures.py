"""The last hook failures, in ``failed/`` of the state directory, for ``wg-pod status``.

crun (podman's default runtime on Fedora, RHEL and Debian 13) throws a
hook's output away: a container whose tunnel cannot be set up fails with
only ``crun: error executing hook ... (exit code: 1)``.  So the hook keeps
its one-line reason here, next to the container's id and name, where
``wg-pod status`` finds it.

One small file per failure, written atomically (parallel hooks never share
a file), at most ``MAX_KEPT`` of them, each field cut to a fixed length.
The message is the same line the hook logs, which never holds key
material.  A successful start of the same container forgets its failures.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..runtime import Runtime, write_file

log = logging.getLogger(__name__)

MAX_KEPT = 20
MAX_MESSAGE = 500
MAX_NAME = 128
# Container ids as oci.parse_state accepts them; anything else is "unknown".
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FILE = re.compile(r"(\d{20})-([A-Za-z0-9][A-Za-z0-9_.-]{0,127})\.json")
# How far up the process tree the hook looks for podman's conmon.
_ANCESTORS = 4


@dataclass(frozen=True)
class Failure:
    container_id: str
    name: str | None
    time: float  # seconds since the epoch
    stage: str
    message: str


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


def remember(
    runtime: Runtime,
    container_id: str,
    stage: str,
    message: str,
    name: str | None = None,
    now: float | None = None,
) -> Path | None:
    """Keep one failure; drop the oldest beyond ``MAX_KEPT``.  Never raises:
    the hook's exit status and its log line matter more than this file."""
    now = time.time() if now is None else now
    cid = container_id if _ID.fullmatch(container_id) else "unknown"
    data = {
        "container_id": cid,
        "name": _cut(name, MAX_NAME) if name else None,
        "time": round(now, 3),
        "stage": _cut(stage, 32),
        "message": _cut(message, MAX_MESSAGE),
    }
    try:
        target = write_file(
            runtime.make(runtime.failed),
            f"{int(now * 1e9):020d}-{cid}.json",
            json.dumps(data, sort_keys=True).encode(),
        )
        _prune(runtime)
    except OSError as exc:
        log.warning("could not keep the failure of %s in %s: %s", cid[:12], runtime.failed, exc)
        return None
    log.debug("kept failure %s", target)
    return Path(target)


def _files(runtime: Runtime) -> list[Path]:
    """Failure files, oldest first (their names start with the time)."""
    try:
        directory = Path(runtime.failed)
        return sorted(p for p in directory.iterdir() if _FILE.fullmatch(p.name))
    except OSError:
        return []


def _prune(runtime: Runtime) -> None:
    files = _files(runtime)
    for path in files[: max(0, len(files) - MAX_KEPT)]:
        path.unlink(missing_ok=True)


def forget(runtime: Runtime, container_id: str) -> None:
    """Drop the failures of a container that has now started."""
    for path in _files(runtime):
        match = _FILE.fullmatch(path.name)
        if match is not None and match.group(2) == container_id:
            path.unlink(missing_ok=True)


def recent(runtime: Runtime) -> list[Failure]:
    """The kept failures, newest first; unreadable files are skipped."""
    found = []
    for path in reversed(_files(runtime)):
        try:
            data = json.loads(path.read_text())
            found.append(
                Failure(
                    container_id=str(data["container_id"]),
                    name=str(data["name"]) if data.get("name") else None,
                    time=float(data["time"]),
                    stage=str(data["stage"]),
                    message=str(data["message"]),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("skipping failure file %s: %s", path, exc)
    return found


def container_name(container_id: str, pid: int | None = None) -> str | None:
    """The container's name, when the hook runs under podman's conmon: the
    runtime is the hook's parent and conmon (``-c ID ... -n NAME``) the
    runtime's.  None when there is no such ancestor (``wg-pod join``,
    another engine)."""
    pid = os.getppid() if pid is None else pid
    for _ in range(_ANCESTORS):
        if pid <= 1:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        args = [a.decode(errors="replace") for a in argv]
        if args and os.path.basename(args[0]) == "conmon":
            return _conmon_name(args, container_id)
        pid = int(stat.rpartition(")")[2].split()[1])
    return None


def _conmon_name(args: list[str], container_id: str) -> str | None:
    values: dict[str, str] = {}
    for flag, value in itertools.pairwise(args):
        if flag in ("-c", "--cid", "-n", "--name"):
            values.setdefault(flag.lstrip("-")[0], value)
    if values.get("c") != container_id:
        return None
    return values.get("n") or None
