"""Integration fixtures: every hook test runs once per backend.

``hook`` is the one runner of the hook: its settings allow the test's config
dir and pick ``backend``; ``hook.with_settings(**extra)`` gives a runner
for the same backend with more settings.  A module that is about one
backend only overrides the ``backend`` fixture.
"""

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
    def remake(**extra: object) -> Path:
        return make_settings(**{"backend": backend, **extra})

    return HookRunner(lab, remake(), remake=remake)
