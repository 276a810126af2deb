"""The one place that opens a user's WireGuard config.

The hook runs as root for containers that less trusted users may create, so
the annotation may only name a root-owned regular file inside an allowed
directory, and the file is checked through the descriptor it is read from,
by the rule of ownership and mode the settings file follows too (trust.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .config import WgConfig, parse_config
from .trust import MAX_SIZE, read_capped, trust_problem

if TYPE_CHECKING:  # settings.py uses trust_problem: no import cycle at run time
    from .settings import Settings


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
    except (FileNotFoundError, RuntimeError):  # RuntimeError: a symlink loop
        raise ConfigError(source, None, "config file does not exist") from None
    except OSError as exc:  # another user's home, to a rootless user
        raise ConfigError(source, None, f"cannot reach config file: {exc.strerror}") from None
    if not _inside(real, settings.config_dirs):
        dirs = ", ".join(str(d) for d in settings.config_dirs)
        raise ConfigError(source, None, f"config file is not inside an allowed directory ({dirs})")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(source, None, f"cannot open config file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        problem = trust_problem(info, "config file", "chmod 600", settings.owner)
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
