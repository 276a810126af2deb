"""What wg-pod set up for each container, in /run/wg-pod/<id>.json.

Records hold names, pids and paths, never key material; cleanup (poststop,
``wg-pod leave``, ``wg-pod gc``) works from them after the container's
process is gone.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD_DIR = Path("/run/wg-pod")


def path_for(container_id: str) -> Path:
    return RECORD_DIR / f"{container_id}.json"


def write(container_id: str, record: dict[str, Any]) -> Path:
    """Write atomically: a reader never sees half a record."""
    RECORD_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = path_for(container_id)
    fd, tmp = tempfile.mkstemp(dir=RECORD_DIR, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote record %s", target)
    return target


def read(container_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path_for(container_id).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable record for %s: %s", container_id[:12], exc)
        return None
    return data if isinstance(data, dict) else None


def remove(container_id: str) -> None:
    path_for(container_id).unlink(missing_ok=True)


def all_ids() -> list[str]:
    try:
        return sorted(p.stem for p in RECORD_DIR.glob("*.json"))
    except OSError:
        return []
