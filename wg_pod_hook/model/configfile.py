"""The one place that opens a user's WireGuard config, and the key files
it or the annotation wg-pod.private-key names.

The hook runs as root for containers that less trusted users may create, so
the annotation may only name a root-owned regular file inside an allowed
directory, and the file is checked through the descriptor it is read from,
by the rule of ownership and mode the settings file follows too (trust.py).
A key file follows the same rule, never readable by others, and may also
be in systemd's credentials directories (``/run/credentials``: a unit's
credentials, decrypted there when it starts; a rootless user's in
``/run/user/UID/credentials``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import AnnotationError, ConfigError
from .config import Key, WgConfig, parse_config, parse_key
from .oci import PRIVATE_KEY
from .trust import MAX_SIZE, read_capped, trust_problem

if TYPE_CHECKING:  # settings.py uses trust_problem: no import cycle at run time
    from .settings import Settings

# A key file holds 44 characters of base64 and a newline; wg reads no more.
MAX_KEY_FILE = 1024


def _inside(path: Path, dirs: tuple[Path, ...]) -> bool:
    for directory in dirs:
        try:
            allowed = directory.resolve(strict=True)
        except OSError:
            continue
        if path.is_relative_to(allowed) and path != allowed:
            return True
    return False


def read_config(
    path: PurePosixPath, settings: Settings, private_key: PurePosixPath | None = None
) -> WgConfig:
    """The config at ``path``, with its keys: the config's own, those of
    the files its key hooks name, or the one in ``private_key`` (the
    annotation wg-pod.private-key) instead of the config's."""
    source = str(path)
    if not path.is_absolute():
        raise ConfigError(source, None, "config path must be absolute")
    files: dict[str, str] = {}
    try:
        data = _read_trusted(path, "config file", settings.config_dirs, settings, files)
    except _Untrusted as exc:
        raise ConfigError(source, None, exc.problem) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, None, "config file is not UTF-8 text") from None
    given = None
    if private_key is not None:
        try:
            key = read_key_file(str(private_key), settings, files)
        except ValueError as exc:
            raise AnnotationError(PRIVATE_KEY, str(exc)) from None
        given = (key, f"{private_key} ({PRIVATE_KEY})")
    config = parse_config(
        text,
        source,
        read_key=lambda file, _line: read_key_file(file, settings, files),
        private_key=given,
    )
    return replace(config, files=files)


def read_key_file(path: str, settings: Settings, files: dict[str, str] | None = None) -> Key:
    """The key in ``path``, as wg reads a key file: by the configs' rules
    (root's, or the rootless user's, readable by no one else, in an
    allowed directory: a config's, or systemd's credentials); ValueError
    naming the file.  The key is never in the message.  ``files``: where
    the file's stamp goes."""
    what = f"key file {_shown(path)}"
    if not path.startswith("/"):
        raise ValueError(f"{what}: not an absolute path")
    try:
        data = _read_trusted(
            PurePosixPath(path), what, (*settings.config_dirs, *settings.key_dirs), settings, files
        )
    except _Untrusted as exc:
        raise ValueError(exc.problem) from None
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"{what} is not a key (larger than {MAX_KEY_FILE} bytes)")
    try:
        return parse_key(data.decode("ascii"), "the key in it")
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{what} is not a base64 key from `wg genkey`") from None


class _Untrusted(Exception):
    def __init__(self, problem: str) -> None:
        self.problem = problem


def _read_trusted(
    path: PurePosixPath,
    what: str,
    dirs: tuple[Path, ...],
    settings: Settings,
    files: dict[str, str] | None = None,
) -> bytes:
    """What the file at ``path`` holds, when it is a regular file inside
    one of ``dirs``, its owner's alone (trust.py), read through the
    descriptor it was checked on; _Untrusted with the problem.  Its stamp
    goes into ``files`` under ``path``."""
    try:
        real = Path(path).resolve(strict=True)
    except (FileNotFoundError, RuntimeError):  # RuntimeError: a symlink loop
        raise _Untrusted(f"{what} does not exist") from None
    except OSError as exc:  # another user's home, to a rootless user
        raise _Untrusted(f"cannot reach {what}: {exc.strerror}") from None
    if not _inside(real, dirs):
        shown = ", ".join(str(d) for d in dirs)
        raise _Untrusted(f"{what} is not inside an allowed directory ({shown})")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _Untrusted(f"cannot open {what}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        problem = trust_problem(info, what, "chmod 600", settings.owner)
        if problem:
            raise _Untrusted(problem)
        readable = info.st_mode & (stat.S_IRGRP | stat.S_IROTH)
        if readable and not (what == "config file" and settings.allow_readable_configs):
            raise _Untrusted(f"{what} is readable by group or others (chmod 600)")
        if info.st_size > MAX_SIZE:
            raise _Untrusted(f"{what} is larger than 1 MiB")
        if files is not None:
            files[str(path)] = stamp(info)
        return read_capped(fd)
    finally:
        os.close(fd)


def stamp(info: os.stat_result) -> str:
    """What tells one version of a file from the next: which file (an
    editor's save is often a new one, renamed over the old), its size and
    when it was last written."""
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def stamps_now(paths: Iterable[str]) -> dict[str, str]:
    """The stamps of the files at ``paths`` as they are now (``gone``: no
    file there, or none this process may see)."""
    now = {}
    for path in paths:
        try:
            now[path] = stamp(os.stat(path))
        except OSError:
            now[path] = "gone"
    return now


def _shown(path: str) -> str:
    return path if len(path) <= 200 else path[:200] + "..."
