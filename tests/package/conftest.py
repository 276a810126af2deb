"""Fixtures of the package tier: the .deb built from this tree, installed on
the machine for the tests of this directory and purged afterwards, and a
hooks dir holding the INSTALLED hook definitions.

The package is built with ``make deb`` (a copy of the tree, so the work tree
gets no debian/) once per content of the tree (build.py: the platform tier
and the benches take the same file), installed with apt-get and purged at
the end of the package's tests, also when they fail: the machine is left as
it was, with nothing under /etc.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import REPO, Lab, run, the_runtime
from tests.package.build import PACKAGE, Deb, built_deb

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


def installed_version() -> str | None:
    proc = run(["dpkg-query", "-W", "-f=${Status} ${Version}", PACKAGE], check=False)
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and "installed" in words[:3] else None


def expected_definition(stage: str) -> dict[str, object]:
    """The repository's template for ``stage`` with the installed hook's path."""
    text = (REPO / "hooks.d" / f"wg-pod-{stage}.json").read_text()
    data: dict[str, object] = json.loads(text.replace("@HOOK@", HOOK))
    return data


DEB_KEY = pytest.StashKey[Deb]()


@pytest.fixture(scope="package")
def deb(request: pytest.FixtureRequest) -> Deb:
    """The .deb of this tree (build.py: built once per content)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (installs the package): run sudo ./scripts/test")
    request.config.stash[DEB_KEY] = built = built_deb()
    return built


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    deb = config.stash.get(DEB_KEY, None)
    if deb is not None:
        how = f"built in {deb.build_seconds:.0f}s" if deb.built else "from the cache"
        terminalreporter.write_line(f"tests/package: the .deb {deb.path.name} {deb.key}: {how}")


# Noted while the tier's own install lasts: a run killed before its purge
# leaves the note, and the next run knows that package for its own.
INSTALLED_BY_TESTS = Path("/var/lib/wg-pod-tests/package-installed")


@pytest.fixture(scope="package")
def installed(deb: Deb) -> Iterator[Deb]:
    """The package installed with apt-get; purged at the end of tests/package.
    A wg-pod the machine had before (its administrator's) is left alone:
    these tests skip, saying so; one an aborted run left is purged first."""
    version = installed_version()
    if version is not None and not INSTALLED_BY_TESTS.exists():
        pytest.skip(
            f"{PACKAGE} {version} is installed on this machine, not by the test suite; "
            "the package tier installs and purges the package, so it leaves this one alone "
            f"(to run it: apt-get purge {PACKAGE})"
        )
    INSTALLED_BY_TESTS.parent.mkdir(parents=True, exist_ok=True)
    INSTALLED_BY_TESTS.touch()
    try:
        _purge()  # an aborted run's, if any
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", str(deb.path)],
            env=APT_ENV,
            timeout=300,
        )
        assert installed_version() is not None
        yield deb
    finally:
        _purge()
        shutil.rmtree(INSTALLED_BY_TESTS.parent, ignore_errors=True)
    assert installed_version() is None
    left = [str(p) for p in OWNED if p.exists()]
    assert not left, f"left after apt-get purge {PACKAGE}: {left}"


def _purge() -> None:
    if installed_version() is not None:
        run(["apt-get", "purge", "-y", "-q", PACKAGE], env=APT_ENV, timeout=300, check=False)


@pytest.fixture
def hooks_dir(lab: Lab, settings: Path, installed: Deb) -> Path:
    """Overrides the system tests' ``hooks_dir``: copies of the definitions the
    package installed, each checked against the repository's template, with
    only ``WG_POD_SETTINGS`` added to its environment (the test's config dir
    is not in the installed default settings) and the suite's own
    ``WG_POD_STATE_DIR``, as ``wg-pod install`` would write them."""
    from wg_pod_hook import runtime

    state = the_runtime()
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
