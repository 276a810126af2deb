"""The one place that opens a user's WireGuard config.

The hook runs as root for containers that less trusted users may create, so
the annotation may only name a root-owned regular file inside an allowed
directory, and the file is checked through the descriptor it is read from.
:func:`trust_problem` is that rule of ownership and mode, which the settings
file (settings.py) follows too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .config import WgConfig, parse_config
from .errors import ConfigError

if TYPE_CHECKING:  # settings.py uses trust_problem: no import cycle at run time
    from .settings import Settings

MAX_SIZE = 1 << 20


def _others_may_write(info: os.stat_result) -> bool:
    # Group root is root's own: its write bit gives no one else a hand.
    return bool(info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP and info.st_gid != 0))


def trust_problem(info: os.stat_result, what: str, fix: str) -> str | None:
    """Why root may not trust the file ``info`` describes (a config, the
    settings), or None: it must be a regular file owned by root that no one
    else can write.  ``what`` names the file in the message, ``fix`` is the
    chmod that mends it."""
    if not stat.S_ISREG(info.st_mode):
        return f"{what} is not a regular file"
    if info.st_uid != 0:
        return f"{what} is not owned by root"
    if _others_may_write(info):
        return f"{what} is writable by others ({fix})"
    return None


def read_capped(fd: int) -> bytes:
    """What ``fd`` holds, up to one byte more than MAX_SIZE (so that a file
    grown since its fstat still tells that it is too large)."""
    data = b""
    while len(data) <= MAX_SIZE and (chunk := os.read(fd, 65536)):
        data += chunk
    return data


def directory_problem(path: Path) -> str | None:
    """Why a directory above ``path`` (a resolved path) lets someone other
    than root replace what it names, or None.  As sshd's StrictModes: each
    directory up to / is owned by root and not writable by others, but for
    a sticky one (/tmp), where others cannot rename or remove root's files."""
    for directory in path.parents:
        try:
            info = os.stat(directory)
        except OSError as exc:
            return f"cannot check directory {directory}: {exc.strerror}"
        if info.st_uid != 0:
            return f"directory {directory} is not owned by root"
        if _others_may_write(info) and not info.st_mode & stat.S_ISVTX:
            return f"directory {directory} is writable by others"
    return None


def _inside(path: Path, dirs: tuple[Path, ...]) -> bool:
    for directory in dirs:
        try:
            allowed = directory.resolve(strict=True)
        except OSError:
            continue
        if path.is_relative_to(allowed) and path != allowed:
            return True
    return False


def read_config(path: PurePosixPath, settings: Settings) -> WgConfig:
    source = str(path)
    if not path.is_absolute():
        raise ConfigError(source, None, "config path must be absolute")
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConfigError(source, None, "config file does not exist") from None
    if not _inside(real, settings.config_dirs):
        dirs = ", ".join(str(d) for d in settings.config_dirs)
        raise ConfigError(source, None, f"config file is not inside an allowed directory ({dirs})")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(source, None, f"cannot open config file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        problem = trust_problem(info, "config file", "chmod 600")
        if problem:
            raise ConfigError(source, None, problem)
        if info.st_mode & (stat.S_IRGRP | stat.S_IROTH) and not settings.allow_readable_configs:
            raise ConfigError(
                source, None, "config file is readable by group or others (chmod 600)"
            )
        if info.st_size > MAX_SIZE:
            raise ConfigError(source, None, "config file is larger than 1 MiB")
        data = read_capped(fd)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(source, None, "config file is not UTF-8 text") from None
    return parse_config(text, source)
