"""Entering a network namespace: setns(2) for the calling thread, the one
way wg-pod moves a thread into a namespace (netlink.entered for a body of
work, nft's worker thread for the rest of its life).

os.setns is Python 3.12's; on Debian 12's 3.11 libc's own does it, loaded
when first needed (``wg-pod check`` imports nft.py and never gets here).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

CLONE_NEWNET = 0x40000000
_OS_SETNS = getattr(os, "setns", None)


def enter(fd: int) -> None:
    """Move the calling thread, only it, into the network namespace open
    as ``fd``; OSError (as os.setns raises it) when the kernel refuses."""
    if _OS_SETNS is not None:
        _OS_SETNS(fd, CLONE_NEWNET)
        return
    import ctypes  # loaded already by then: _libc's

    if _libc().setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)
