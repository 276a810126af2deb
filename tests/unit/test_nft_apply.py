"""How nft.apply picks its way and words a failure, without root: the
in-process path (libnftables) when its binding and library load, else
nsenter + nft; nft's error text as one line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from wg_pod_hook.errors import SetupError
from wg_pod_hook.kernel import nft_apply

NFT_ERROR = (
    "/dev/stdin:28:51-54: Error: syntax error, unexpected string, expecting accept or drop\n"
    "\t\ttype filter hook output priority filter; policy dorp;\n"
    "\t\t                                                ^^^^\n"
)


def test_an_nft_error_becomes_one_line() -> None:
    assert nft_apply.one_line(NFT_ERROR) == (
        "/dev/stdin:28:51-54: Error: syntax error, unexpected string, expecting accept or drop "
        "type filter hook output priority filter; policy dorp; ^^^^"
    )


def test_a_long_nft_error_is_cut_at_300_characters() -> None:
    assert len(nft_apply.one_line(NFT_ERROR * 10)) == nft_apply.ERROR_MAX == 300
    assert nft_apply.one_line("\n \t\n") == ""


def test_without_the_python_module_nft_is_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "nftables", None)  # `import nftables` raises ImportError
    caplog.set_level(logging.DEBUG, logger="wg_pod_hook.kernel.nft_apply")
    assert nft_apply._libnftables() is None
    assert "apply nftables with nsenter and nft: no Python module nftables" in caplog.text


def test_without_the_library_nft_is_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    binding_is_there()
    monkeypatch.setattr(nft_apply, "LIBNFTABLES", "libwg-pod-no-such.so.1")
    caplog.set_level(logging.DEBUG, logger="wg_pod_hook.kernel.nft_apply")
    assert nft_apply._libnftables() is None
    assert "apply nftables with nsenter and nft: cannot load libwg-pod-no-such.so.1" in caplog.text


def test_with_binding_and_library_the_work_stays_in_process() -> None:
    binding_is_there()
    assert nft_apply._libnftables() is not None


def test_an_fd_that_is_no_namespace_is_refused(tmp_path: Path) -> None:
    """nft.apply takes the namespace the caller opened, as an fd: one that
    is not a namespace's is never entered, and nothing runs."""
    ran = []
    fd = os.open(tmp_path / "not-a-namespace", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(SetupError) as info:
            nft_apply.in_netns(fd, lambda report: ran.append(report(1)), 5.0)
    finally:
        os.close(fd)
    assert str(info.value) == (
        "apply nftables network namespace: enter network namespace: Invalid argument"
    )
    assert ran == []


def binding_is_there() -> None:
    try:
        import nftables  # noqa: F401
    except ImportError:
        pytest.fail("python3-nftables is not visible to this Python: run scripts/setup")
