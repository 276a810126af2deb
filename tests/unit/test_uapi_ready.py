"""The userspace backend waits until wireguard-go's UAPI socket listens, not
merely until its file exists (the file appears at bind(), before listen())."""

from __future__ import annotations

import socket
from pathlib import Path

from wg_pod_hook.kernel.backends.userspace import accepts_connections


def test_missing_socket_is_not_ready(tmp_path: Path) -> None:
    assert not accepts_connections(tmp_path / "wg0.sock")


def test_bound_but_not_listening_is_not_ready(tmp_path: Path) -> None:
    path = tmp_path / "wg0.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        assert path.exists()
        assert not accepts_connections(path)


def test_listening_socket_is_ready(tmp_path: Path) -> None:
    path = tmp_path / "wg0.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        assert accepts_connections(path)
