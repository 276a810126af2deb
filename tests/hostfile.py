"""A file of the host that a test mounts into a container (as a user's
``-v FILE:/etc/resolv.conf``), to prove wg-pod never writes it.

Never the host's real /etc/resolv.conf: a regression would cut this
machine's name resolution.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

TEXT = "# a file of the host\nnameserver 192.0.2.53\n"
MTIME = 1_000_000_000  # fixed, so that any write shows


def host_file(directory: Path) -> Path:
    path = directory / f"host-resolv-{secrets.token_hex(4)}.conf"
    path.write_text(TEXT)
    path.chmod(0o644)
    os.utime(path, (MTIME, MTIME))
    return path


def assert_untouched(path: Path) -> None:
    assert path.read_text() == TEXT
    assert path.stat().st_mtime == MTIME
