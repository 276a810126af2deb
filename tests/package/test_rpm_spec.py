"""packaging/rpm/wg-pod.spec parses (rpmspec from Debian's rpm) and its
%files list is what the Makefile installs (apart from the Python library,
which the spec installs with %pyproject_install)."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import pytest

from tests.lab import REPO, run

SPEC = REPO / "packaging" / "rpm" / "wg-pod.spec"
# The values of the spec's macros on Fedora, as passed to make there.
MAKE_VARS = ["PREFIX=/usr", "SYSCONFDIR=/etc", "PKGLIBDIR=/usr/lib/wg-pod"]
# What the spec itself writes: the preset that enables the daemon's unit.
SPEC_ONLY = ["/usr/lib/systemd/system-preset/90-wg-pod.preset"]


def parsed_spec() -> str:
    if shutil.which("rpmspec") is None:
        pytest.fail("rpmspec missing (Debian package rpm): run scripts/setup")
    return run(["rpmspec", "-P", str(SPEC)]).stdout


def files_section(text: str) -> list[str]:
    lines = text.split("\n%files", 1)[1].split("\n%changelog", 1)[0].splitlines()
    assert lines[0].strip() == "-f %{pyproject_files}", lines[0]
    entries = []
    for line in lines[1:]:
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("%dir "):
            continue
        entries.append(line.removeprefix("%config(noreplace) "))
    return entries


def test_spec_parses_and_uses_the_pyproject_macros() -> None:
    text = parsed_spec()
    for macro in ("%pyproject_buildrequires", "%pyproject_wheel", "%pyproject_install"):
        assert macro in text
    assert "%pyproject_save_files wg_pod_hook" in text
    from wg_pod_hook import __version__

    assert f"Version:        {__version__}" in text
    for scriptlet in ("%systemd_post", "%systemd_preun", "%systemd_postun_with_restart"):
        assert f"{scriptlet} wg-pod.service" in text


def test_spec_files_match_make_install(tmp_path: Path) -> None:
    entries = files_section(parsed_spec())
    dest = tmp_path / "root"
    run(["make", "-s", "-C", str(REPO), "install-data", f"DESTDIR={dest}", *MAKE_VARS])
    installed = sorted("/" + str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())

    def covered(path: str, entry: str) -> bool:
        if entry.endswith("/"):
            return path.startswith(entry)
        return fnmatch.fnmatchcase(path, entry)

    uncovered = [p for p in installed if not any(covered(p, e) for e in entries)]
    unused = [
        e for e in entries if e not in SPEC_ONLY and not any(covered(p, e) for p in installed)
    ]
    assert uncovered == [], f"installed by make but not in %files: {uncovered}"
    assert unused == [], f"in %files but not installed by make: {unused}"
