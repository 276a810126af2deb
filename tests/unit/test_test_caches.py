"""The test suite's caches are keyed by what they contain: the .deb by the
sources it is built from (tests/package/build.py), the Debian 13 root by its
recipe and the archive's package indexes (tests/platform/machine.py), the
test image by its recipe and busybox (scripts/test-image). A change makes a
new key; the same content the same key."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.package.build import REPO, cache_key
from tests.platform import machine
from tests.platform.machine import (
    PACKAGES,
    SOURCES,
    MachineError,
    archive_key,
    index_entry,
    recipe_key,
)

TOOLS = "dpkg-dev 1.21.22\ndebhelper 13.11.4\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    files = {
        "wg_pod_hook/__init__.py": "__version__ = '0.1.0'\n",
        "wg_pod_hook/hook.py": "def run() -> None: ...\n",
        "hooks.d/wg-pod-poststop.json": "{}\n",
        "packaging/debian/rules": "#!/usr/bin/make -f\n",
        "packaging/vendor.txt": "pyroute2==0.9.7 --hash=sha256:00\n",
        "packaging/vendor/pyroute2-0.9.7-py3-none-any.whl": "wheel\n",
        "docs/wg-pod.8.scd": "wg-pod(8)\n",
        "pyproject.toml": "[project]\n",
        "Makefile": "deb:\n",
        "README.md": "# wg-pod\n",
        "tests/unit/test_x.py": "def test() -> None: ...\n",
        "bench/b_hook.py": "\n",
        "scripts/setup": "#!/bin/sh\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        "wg_pod_hook/__pycache__/hook.cpython-311.pyc": "\0",
    }
    for name, text in files.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "src"


def test_the_same_sources_give_the_same_deb_key(tree: Path, tmp_path: Path) -> None:
    key = cache_key(tree, TOOLS)
    assert cache_key(tree, TOOLS) == key
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    assert cache_key(copy, TOOLS) == key  # by content, not by place


@pytest.mark.parametrize(
    "change",
    [
        "wg_pod_hook/hook.py",
        "hooks.d/wg-pod-poststop.json",
        "packaging/debian/rules",
        "packaging/vendor.txt",
        "docs/wg-pod.8.scd",
        "pyproject.toml",
        "Makefile",
        "README.md",
    ],
)
def test_a_changed_source_gives_a_new_deb_key(tree: Path, change: str) -> None:
    key = cache_key(tree, TOOLS)
    with open(tree / change, "a") as f:
        f.write("# changed\n")
    assert cache_key(tree, TOOLS) != key


def test_a_new_file_a_removed_file_and_an_executable_bit_give_new_deb_keys(tree: Path) -> None:
    keys = {cache_key(tree, TOOLS)}
    (tree / "wg_pod_hook" / "units.py").write_text("\n")
    keys.add(cache_key(tree, TOOLS))
    (tree / "hooks.d" / "wg-pod-poststop.json").unlink()
    keys.add(cache_key(tree, TOOLS))
    (tree / "packaging" / "debian" / "rules").chmod(0o755)
    keys.add(cache_key(tree, TOOLS))
    assert len(keys) == 4


def test_upgraded_build_tools_give_a_new_deb_key(tree: Path) -> None:
    assert cache_key(tree, TOOLS) != cache_key(tree, TOOLS.replace("13.11.4", "13.11.5"))


@pytest.mark.parametrize(
    "unread",
    [
        "tests/unit/test_x.py",
        "bench/b_hook.py",
        "scripts/setup",
        ".git/HEAD",
        "packaging/vendor/pyroute2-0.9.7-py3-none-any.whl",
        "wg_pod_hook/__pycache__/hook.cpython-311.pyc",
    ],
)
def test_what_the_build_never_reads_keeps_the_deb_key(tree: Path, unread: str) -> None:
    key = cache_key(tree, TOOLS)
    with open(tree / unread, "a") as f:
        f.write("# changed\n")
    assert cache_key(tree, TOOLS) == key


def test_the_root_key_follows_the_recipe() -> None:
    key = recipe_key(pytest_version="8.3.0")
    assert recipe_key(pytest_version="8.3.0") == key
    assert recipe_key(tuple(reversed(PACKAGES)), pytest_version="8.3.0") == key  # a set
    assert recipe_key((*PACKAGES, "uidmap"), pytest_version="8.3.0") != key
    assert recipe_key(recipe=999, pytest_version="8.3.0") != key
    assert recipe_key(pytest_version="8.4.0") != key


def in_release(packages_sha: str) -> str:
    return (
        "Origin: Debian\nSuite: stable\nMD5Sum:\n"
        " 0123 100 main/binary-amd64/Packages\n"
        "SHA256:\n"
        " aaaa 100 main/binary-arm64/Packages\n"
        f" {packages_sha} 100 main/binary-amd64/Packages\n"
        " bbbb 10 main/binary-amd64/Packages.xz\n"
    )


def test_the_root_key_follows_the_archive_index() -> None:
    indexes = {f"{mirror}/dists/{suite}/InRelease": "1111" for mirror, suite in SOURCES}

    def fetch(url: str) -> str:
        return in_release(indexes[url])

    key = archive_key(fetch)
    assert archive_key(fetch) == key
    mirror, suite = SOURCES[-1]  # a security update
    indexes[f"{mirror}/dists/{suite}/InRelease"] = "2222"
    assert archive_key(fetch) != key


def test_the_index_entry_is_the_sha256_of_the_uncompressed_packages() -> None:
    assert index_entry(in_release("cafe"), "main/binary-amd64/Packages") == "cafe"
    with pytest.raises(MachineError, match="no SHA256 of main/binary-i386/Packages"):
        index_entry(in_release("cafe"), "main/binary-i386/Packages")


def test_the_archive_unreachable_is_an_oserror() -> None:
    """root() falls back to the newest cached root on OSError."""

    def fetch(url: str) -> str:
        raise OSError(f"{url}: unreachable")

    with pytest.raises(OSError):
        archive_key(fetch)


def image_key(script: Path) -> str:
    return subprocess.run(
        ["sh", str(script), "--key"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_image_key_follows_its_recipe(tmp_path: Path) -> None:
    script = tmp_path / "test-image"
    shutil.copy(REPO / "scripts" / "test-image", script)
    key = image_key(script)
    assert len(key) == 16
    assert image_key(script) == key
    with open(script, "a") as f:
        f.write("# changed\n")
    assert image_key(script) != key


def test_without_the_archive_the_newest_root_of_the_recipe_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(fetch: object = None, arch: str = "amd64") -> str:
        raise OSError("deb.debian.org: unreachable")

    monkeypatch.setattr(machine, "CACHE", tmp_path)
    monkeypatch.setattr(machine, "archive_key", unreachable)
    with pytest.raises(MachineError, match=r"could not be read .*; no cached root"):
        machine.root()
    recipe = machine.recipe_key()
    for name, age in ((f"{recipe}-older", 100), (f"{recipe}-newer", 10), ("0000-other", 0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ready.json").write_text('{"debian": "13.8"}\n')
        os.utime(tmp_path / name / "ready.json", (time.time() - age, time.time() - age))
    found = machine.root()
    assert (found.key, found.built) == (f"{recipe}-newer", False)
    assert "deb.debian.org: unreachable" in found.offline
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "0000-other",
        f"{recipe}-newer",
        f"{recipe}-older",
    ]  # nothing is built or removed offline
