"""Names derived from a container's id alone, so that cleanup finds what
wg-pod made for a container even after its process and its hook are gone.
(Light: the poststop path imports it.)"""

from __future__ import annotations

import hashlib
import re

TEMP_PREFIX = "wgp"
_TEMP_NAME = re.compile(TEMP_PREFIX + r"[0-9a-f]{12}")


def temp_name(container_id: str) -> str:
    """The host-side name of a container's interface until it is moved:
    unique per container, at most 15 bytes."""
    return TEMP_PREFIX + hashlib.sha256(container_id.encode()).hexdigest()[:12]


def is_temp_name(name: str) -> bool:
    return _TEMP_NAME.fullmatch(name) is not None
