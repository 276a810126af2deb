"""The hook hands its stage to the warm daemon, when one runs.

One request and one answer on the root-only Unix socket ``hook.sock`` in
the state directory (runtime.py; SOCK_SEQPACKET: one message each way).  The
request is the stage, the hook's settings file (``WG_POD_SETTINGS``), when
the hook started, the config a wg-pod device's hook names (cdi.py) and the
OCI state exactly as the runtime gave it on stdin; the answer is the
hook's exit status and the line it says on stderr.  The daemon checks
who asks (SO_PEERCRED: uid 0 as the daemon sees it: root, or in a
rootless user's daemon their hooks) and then does exactly what the hook
would do itself (stages.py).

The hook never depends on it: no socket, a refused connection, a daemon
that dies before it answers or does not answer within DEADLINE, and the
hook does the work itself.

This module is all the hook imports on its way to the daemon, and every
import is paid by every container start: no ``socket`` (its enums cost
some 14 ms), no ``json`` or ``re``, no logging; the messages are fields
separated by NUL bytes, which JSON text never holds.
"""

from __future__ import annotations

import _socket
import os

from .runtime import Runtime

# The hook waits this long for an answer, then does the work itself: well
# inside the hooks' 90 s, with room for its own deadlines after it.
DEADLINE = 30.0
MAX_MESSAGE = 65536
NOT_ROOT = "wg-pod needs root or rootless podman (the hook runs as a non-root user)"
VERSION = b"wg-pod-hook/2"

# stage, settings, started, the device's config, state
Request = tuple[str, str | None, float | None, str | None, str]
Answer = tuple[int, str | None]  # exit status, stderr line


def encode_request(
    stage: str, settings: str | None, started: float | None, device: str | None, state: str
) -> bytes:
    fields = [VERSION, stage.encode(), (settings or "").encode(), repr(started or 0.0).encode()]
    return b"\0".join([*fields, (device or "").encode(), state.encode()])


def decode_request(data: bytes) -> Request:
    """ValueError for anything but a request of this version."""
    parts = data.split(b"\0", 5)
    if len(parts) != 6 or parts[0] != VERSION:
        raise ValueError(f"not a {VERSION.decode()} request")
    stage, settings, started, device, state = (p.decode() for p in parts[1:])
    seconds = float(started)
    return stage, settings or None, seconds or None, device or None, state


def encode_answer(code: int, line: str | None) -> bytes:
    return b"%d\0%s" % (code, (line or "").encode())


def decode_answer(data: bytes) -> Answer:
    code, _, line = data.partition(b"\0")
    return int(code), line.decode(errors="replace") or None


def ask(
    stage: str,
    state: str,
    runtime: Runtime,
    device: str | None = None,
    deadline: float = DEADLINE,
) -> Answer | None:
    """The answer of the runtime's daemon, or None when the hook must do
    the work itself."""
    data = encode_request(stage, runtime.named_settings, started(), device, state)
    if len(data) > MAX_MESSAGE:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(deadline)
        sock.connect(runtime.hook_socket)
        sock.sendall(data)
        reply = sock.recv(MAX_MESSAGE)
    except OSError:  # no daemon, a dead one's socket, no answer in time
        return None
    finally:
        sock.close()
    if not reply:  # the daemon (or its worker) died before answering
        return None
    try:
        return decode_answer(reply)
    except ValueError:
        return None


def started() -> float | None:
    """When this process started, CLOCK_BOOTTIME seconds."""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    ticks = int(stat.rpartition(b")")[2].split()[19])
    return ticks / float(os.sysconf("SC_CLK_TCK"))
