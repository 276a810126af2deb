"""Fixtures of the package tier: the .deb built from this tree, installed on
the machine for the tests of this directory and purged afterwards, and a
hooks dir holding the INSTALLED hook definitions.

The package is built with ``make deb`` into a temp dir (a copy of the tree,
so the work tree gets no debian/), installed with apt-get and purged at the
end of the package's tests, also when they fail: the machine is left as it
was, with nothing under /etc.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab import REPO, Lab, run

PACKAGE = "wg-pod"
HOOK = "/usr/libexec/wg-pod/wg-pod-hook"
INSTALLED_HOOKS_DIR = Path("/usr/share/containers/oci/hooks.d")
STAGES = ("createRuntime", "poststop")
# Everything the package owns outside /usr/share/doc: gone after the purge.
OWNED = (
    Path("/etc/wg-pod"),
    Path("/usr/lib/wg-pod"),
    Path("/usr/libexec/wg-pod"),
    Path("/usr/bin/wg-pod"),
    Path("/lib/systemd/system/wg-pod.service"),
    Path("/etc/systemd/system/multi-user.target.wants/wg-pod.service"),
    *(INSTALLED_HOOKS_DIR / f"wg-pod-{stage}.json" for stage in STAGES),
)
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class Deb:
    path: Path
    build_seconds: float


def installed_version() -> str | None:
    proc = run(["dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE], check=False)
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and "installed" in words[:3] else None


def expected_definition(stage: str) -> dict[str, object]:
    """The repository's template for ``stage`` with the installed hook's path."""
    text = (REPO / "hooks.d" / f"wg-pod-{stage}.json").read_text()
    data: dict[str, object] = json.loads(text.replace("@HOOK@", HOOK))
    return data


@pytest.fixture(scope="package")
def deb() -> Iterator[Deb]:
    """``make deb`` into a temp dir; the dir is removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root (installs the package): run sudo ./scripts/test")
    out = Path(tempfile.mkdtemp(prefix="wgpt-deb-"))
    try:
        start = time.monotonic()
        run(["make", "-C", str(REPO), "deb", f"DEBDIR={out}"], timeout=300)
        (path,) = out.glob(f"{PACKAGE}_*_all.deb")
        yield Deb(path, time.monotonic() - start)
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="package")
def installed(deb: Deb) -> Iterator[Deb]:
    """The package installed with apt-get; purged at the end of tests/package."""
    assert installed_version() is None, (
        f"{PACKAGE} is already installed on this machine; the package tests "
        f"install and purge it, so remove it first (apt-get purge {PACKAGE})"
    )
    try:
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb.path)],
            env=APT_ENV,
            timeout=300,
        )
        assert installed_version() is not None
        yield deb
    finally:
        run(["apt-get", "purge", "-y", "-q", PACKAGE], env=APT_ENV, timeout=300, check=False)
    assert installed_version() is None
    left = [str(p) for p in OWNED if p.exists()]
    assert not left, f"left after apt-get purge {PACKAGE}: {left}"


@pytest.fixture
def hooks_dir(lab: Lab, settings: Path, installed: Deb) -> Path:
    """Overrides the system tests' ``hooks_dir``: copies of the definitions the
    package installed, each checked against the repository's template, with
    only ``WG_POD_SETTINGS`` added to its environment (the test's config dir
    is not in the installed default settings) and the suite's own
    ``WG_POD_STATE_DIR``, as ``wg-pod install`` would write them."""
    from wg_pod_hook import runtime

    state = runtime.current()
    path = lab.tmp / "installed-hooks.d"
    path.mkdir()
    for stage in STAGES:
        name = f"wg-pod-{stage}.json"
        data = json.loads((INSTALLED_HOOKS_DIR / name).read_text())
        assert data == expected_definition(stage), name
        data["hook"]["env"].append(f"WG_POD_SETTINGS={settings}")
        if not state.is_default:
            data["hook"]["env"].append(f"{runtime.STATE_DIR_ENV}={state.state_dir}")
        (path / name).write_text(json.dumps(data, indent=2) + "\n")
    return path
