"""namespaces.enter, both ways (os.setns on Python 3.12 on, libc's before):
a file that is not a namespace is refused with the kernel's own errno,
worded as os.setns words it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from wg_pod_hook import namespaces


@pytest.mark.parametrize("way", ["python", "libc"])
def test_an_fd_that_is_no_namespace_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    if way == "libc":
        monkeypatch.setattr(namespaces, "_OS_SETNS", None)
    elif namespaces._OS_SETNS is None:
        pytest.skip("os.setns is Python 3.12's")
    fd = os.open(tmp_path / "not-a-namespace", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as info:
            namespaces.enter(fd)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EINVAL
    assert info.value.strerror == os.strerror(errno.EINVAL)
