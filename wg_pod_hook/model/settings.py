"""YAML settings -> typed Settings (pure parsing plus one loader).

The file is optional; every key has a safe default.  YAML's surprises
(``no`` read as false, ``22:22`` as a number) are refused by checking each
value's type against what the key needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from ..errors import SettingsError
from ..runtime import CREDENTIALS_DIR, DEFAULT_CONFIG_DIRS, Runtime
from .oci import Toggle
from .trust import MAX_SIZE, directory_problem, read_capped, trust_problem

# backends.NAMES and "auto" (tests/unit/test_backends.py holds them equal;
# no import: the backends sit above the settings).
BACKENDS = ("auto", "kernel", "userspace")
LOG_LEVELS = ("debug", "info", "warning", "error")
DAEMON_ONLY = "daemon:"
# fault_injection_kill_after's one point outside the setup's steps: the
# daemon and its worker killed between a poststop's answer and its
# teardown (daemon/hooks.py).
POSTSTOP_ANSWERED = "poststop-answered"


@dataclass(frozen=True)
class Settings:
    config_dirs: tuple[Path, ...] = tuple(Path(d) for d in DEFAULT_CONFIG_DIRS)
    # Where key files may also be (besides config_dirs): systemd's credentials.
    key_dirs: tuple[Path, ...] = (Path(CREDENTIALS_DIR),)
    backend: str = "auto"
    userspace_command: tuple[str, ...] = ("wireguard-go",)
    log_level: str = "info"
    kill_switch: Toggle = Toggle.AUTO
    allow_readable_configs: bool = False
    # The daemon resolves a host-name endpoint again when its peer has had
    # no handshake for this long (wireguard-tools' reresolve-dns: 135 s).
    endpoint_refresh_after: int = 135
    # The daemon reloads a tunnel (lifecycle.reload) whose config or key
    # files changed.
    reload_on_change: bool = False
    # Where the daemon serves Prometheus metrics (address, port); None: not at all.
    metrics_listen: tuple[str, int] | None = None
    fault_injection_kill_after: str | None = None
    source: str = field(default="(defaults)", compare=False)
    # Who must own configs: uid 0 of the runtime (root, or a rootless
    # user), as messages name them.
    owner: str = field(default="root", compare=False)

    def in_daemon(self, daemon: bool) -> Settings:
        """These settings for work in the daemon (its repairs, its workers)
        or in a hook's own process.  ``fault_injection_kill_after: STEP``
        kills either after STEP; ``daemon:STEP`` only the daemon, so that a
        hook that then does the work itself runs to the end."""
        fault = self.fault_injection_kill_after
        if fault is None or not fault.startswith(DAEMON_ONLY):
            return self
        return replace(
            self, fault_injection_kill_after=fault[len(DAEMON_ONLY) :] if daemon else None
        )


def _str_list(source: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(source, key, "must be a non-empty list of strings")
    return tuple(value)


def _choice(source: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SettingsError(source, key, f"must be one of {', '.join(choices)} (quote it)")
    return value


def _only_comments(text: str) -> bool:
    """Nothing but blank lines and comments: a YAML document whose value
    is null, known without loading the YAML parser."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())


def parse_listen(source: str, value: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``) with an IP literal: where to serve."""
    if not isinstance(value, str) or ":" not in value:
        raise SettingsError(source, "metrics_listen", "must be ADDRESS:PORT, e.g. 127.0.0.1:9586")
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip_address(host)
        number = int(port)
    except ValueError:
        raise SettingsError(
            source, "metrics_listen", f"{value!r} is not ADDRESS:PORT with an IP address"
        ) from None
    if not 0 < number < 65536:
        raise SettingsError(source, "metrics_listen", f"port {number} out of range")
    return host, number


def parse_settings(text: str, source: str, defaults: Settings | None = None) -> Settings:
    defaults = defaults or Settings()
    if _only_comments(text):  # the packaged file as it comes: YAML's null, the defaults
        return replace(defaults, source=source)
    import yaml  # only for a file with settings in it: it costs every start ~10 ms

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SettingsError(source, None, f"{where}not valid YAML") from None
    if raw is None:
        return replace(defaults, source=source)
    if not isinstance(raw, dict):
        raise SettingsError(source, None, "must be a mapping of settings")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "config_dirs":
            dirs = _str_list(source, key, value)
            if not all(d.startswith("/") for d in dirs):
                raise SettingsError(source, key, "directories must be absolute paths")
            values[key] = tuple(Path(d) for d in dirs)
        elif key == "backend":
            values[key] = _choice(source, key, value, BACKENDS)
        elif key == "userspace_command":
            values[key] = _str_list(source, key, value)
        elif key == "log_level":
            values[key] = _choice(source, key, value, LOG_LEVELS)
        elif key == "kill_switch":
            values[key] = Toggle(_choice(source, key, value, tuple(t.value for t in Toggle)))
        elif key in ("allow_readable_configs", "reload_on_change"):
            if not isinstance(value, bool):
                raise SettingsError(source, key, "must be true or false")
            values[key] = value
        elif key == "endpoint_refresh_after":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 86400:
                raise SettingsError(source, key, "must be a number of seconds, 1 to 86400")
            values[key] = value
        elif key == "metrics_listen":
            values[key] = parse_listen(source, value)
        elif key == "fault_injection_kill_after":
            # Test only: the hook SIGKILLs itself right after this step of
            # its setup; the names are those of lifecycle.STEPS, checked
            # there, and POSTSTOP_ANSWERED.
            if not isinstance(value, str):
                raise SettingsError(source, key, "must be the name of a setup step")
            values[key] = value
        else:
            raise SettingsError(source, str(key), "unknown setting")
    return replace(defaults, source=source, **values)


def runtime_defaults(runtime: Runtime) -> Settings:
    """The settings without a file: the runtime's directories for configs
    and keys, and its owner of them."""
    return Settings(
        config_dirs=tuple(Path(d) for d in runtime.config_dirs),
        key_dirs=(Path(runtime.credentials),),
        owner=runtime.owner,
    )


def load_settings(runtime: Runtime) -> Settings:
    """Load the runtime's settings file: the one ``$WG_POD_SETTINGS`` named,
    or the default, with the runtime's directories for configs unless the
    file names others.

    Only the default file may be absent: a path someone named explicitly
    must exist, so a typo cannot silently fall back to defaults.  The file
    names a command root runs and where configs may be, so it follows the
    configs' rule (trust.trust_problem: root's, writable by no one
    else), checked through the descriptor it is read from, and so do the
    directories above it, as sshd's StrictModes has it.
    """
    defaults = runtime_defaults(runtime)
    target = Path(runtime.settings)
    source = str(target)
    try:
        real = target.resolve(strict=True)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if runtime.named_settings:
            raise SettingsError(source, None, "settings file does not exist") from None
        return defaults
    except (OSError, RuntimeError) as exc:
        raise SettingsError(source, None, f"cannot read: {exc}") from None
    try:
        info = os.fstat(fd)
        problem = trust_problem(
            info, "settings file", "chmod 644", runtime.owner
        ) or directory_problem(real, runtime.owner, foreign_dirs=runtime.rootless)
        if problem:
            raise SettingsError(source, None, problem)
        data = read_capped(fd)
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise SettingsError(source, None, "settings file is larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(source, None, "settings file is not UTF-8 text") from None
    return parse_settings(text, source, defaults)
