"""Integration fixtures: every hook test runs once per backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.support import kernel_has_wireguard
from tests.lab import HookRunner, Lab


@pytest.fixture(params=["userspace", "kernel"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "kernel" and not kernel_has_wireguard():
        pytest.skip("this kernel has no WireGuard module (the VM suite in tests/vm has one)")
    return str(request.param)


@pytest.fixture
def hook(lab: Lab, make_settings: Callable[..., Path], backend: str) -> HookRunner:
    """The hook with settings for one backend (overrides conftest's)."""
    return HookRunner(lab, make_settings(backend=backend))
