"""The .deb built from this tree, once per content: every tier that needs the
package (tests/package, tests/platform, bench/run --debian13) asks
:func:`built_deb`.

``make deb`` copies the whole tree and builds from the copy; the result is
kept in ``CACHE/<key>/`` (``/var/cache/wg-pod-deb``), the key a digest of
what the build reads: every file ``make deb`` copies except the trees it
never reads (tests/, bench/, scripts/; packaging/vendor holds the wheels
that packaging/vendor.txt pins by hash), with its path and executable bit,
and the host's build tools. A changed source makes a new key and a new
build; an unchanged tree reuses the package. The cache keeps the
``KEEP`` entries used last (worktrees of one machine share it).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab import cache_lock

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "wg-pod"
CACHE = Path(os.environ.get("WG_POD_DEB_CACHE", "/var/cache/wg-pod-deb"))
KEEP = 4
# What `make deb` leaves out of its copy (its tar --exclude list), and the
# trees the build never reads.
SKIPPED_TOP = frozenset(
    {".git", ".venv", "build", "debian", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
    | {"tests", "bench", "scripts", ".ci"}
)
SKIPPED_PATHS = frozenset({("packaging", "vendor")})
# The build tools on the host: an upgrade of one may change the package.
BUILD_TOOLS = ("dpkg-dev", "debhelper", "dh-python", "python3", "python3-setuptools", "scdoc")


@dataclass(frozen=True)
class Deb:
    path: Path
    build_seconds: float  # 0 when taken from the cache
    key: str = ""
    built: bool = True


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    return (
        parts[0] in SKIPPED_TOP
        or parts[:2] in SKIPPED_PATHS
        or any(part == "__pycache__" or part.endswith(".egg-info") for part in parts)
    )


def source_digest(tree: Path) -> str:
    """A digest of the files of ``tree`` the package is built from: their
    paths, contents and executable bits (symlinks by their target)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(tree):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _skipped((here / d).relative_to(tree)))
        for name in sorted(filenames):
            path = here / name
            relative = path.relative_to(tree)
            if _skipped(relative):
                continue
            digest.update(relative.as_posix().encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link\0" + os.readlink(path).encode())
            else:
                digest.update(b"x\0" if os.access(path, os.X_OK) else b"-\0")
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(b"\0")
    return digest.hexdigest()


def build_tools() -> str:
    """The versions of the host's build tools, one ``name version`` a line."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *BUILD_TOOLS],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout


def cache_key(tree: Path = REPO, tools: str | None = None) -> str:
    digest = hashlib.sha256(source_digest(tree).encode())
    digest.update(b"\0" + (build_tools() if tools is None else tools).encode())
    return digest.hexdigest()[:16]


def built_deb() -> Deb:
    """The .deb of this tree: from the cache, else ``make deb`` into it. Each
    build is one line in ``CACHE/builds.log``."""
    key = cache_key()
    start = time.monotonic()
    with cache_lock(CACHE):
        final = CACHE / key
        found = sorted(final.glob(f"{PACKAGE}_*_all.deb"))
        if len(found) == 1:
            final.touch()  # used last: kept by the pruning below
            return Deb(found[0], 0.0, key, built=False)
        shutil.rmtree(final, ignore_errors=True)  # a crashed build
        work = CACHE / f".build-{secrets.token_hex(4)}"
        try:
            proc = subprocess.run(
                ["make", "-C", str(REPO), "deb", f"DEBDIR={work}"],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
                raise RuntimeError(f"make deb exited {proc.returncode}:\n{tail}")
            work.rename(final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        seconds = time.monotonic() - start
        with open(CACHE / "builds.log", "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {key} built in {seconds:.0f}s\n")
        _prune(keep=key)
        (path,) = final.glob(f"{PACKAGE}_*_all.deb")
        return Deb(path, seconds, key, built=True)


def _prune(keep: str) -> None:
    """Under the cache lock: all but the ``KEEP`` entries used last, and any
    crashed build (``.build-*``)."""
    dirs = [p for p in CACHE.iterdir() if p.is_dir() and p.name != keep]
    crashed = [p for p in dirs if p.name.startswith(".")]
    entries = sorted(
        (p for p in dirs if not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in [*crashed, *entries[KEEP - 1 :]]:
        shutil.rmtree(old, ignore_errors=True)
