"""Ordinary users of the machine, for the rootless podman tests: a user's
commands run with a login's environment only (runuser, ``env -i``), and
their configs are written theirs, mode 0600, in ``~/.config/wg-pod``.
Making one is the tier's own affair (systemd's linger in tests/platform,
a bare runtime directory on the host in tests/package)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.lab.base import run

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    home: Path

    @property
    def runtime_dir(self) -> str:
        return f"/run/user/{self.uid}"

    @property
    def configs(self) -> Path:
        return self.home / ".config" / "wg-pod"

    def env(self) -> list[str]:
        return [
            f"HOME={self.home}",
            f"USER={self.name}",
            f"XDG_RUNTIME_DIR={self.runtime_dir}",
            f"DBUS_SESSION_BUS_ADDRESS=unix:path={self.runtime_dir}/bus",
            f"PATH={PATH}",
        ]

    def run(self, *argv: str, check: bool = True, timeout: float = 120.0) -> Result:
        """``argv`` as this user, in their home, with a login's environment only."""
        done = run(
            [
                "runuser",
                "-u",
                self.name,
                "--",
                "env",
                "-i",
                *self.env(),
                "sh",
                "-c",
                'cd "$HOME" && exec "$@"',
                "sh",
                *argv,
            ],
            check=check,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def podman(self, *args: str, check: bool = True, timeout: float = 120.0) -> Result:
        return self.run("podman", *args, check=check, timeout=timeout)

    def wg_pod(self, *args: str, check: bool = True) -> Result:
        return self.run("wg-pod", *args, check=check)

    def write_config(self, name: str, text: str, mode: int = 0o600) -> Path:
        """A config of this user's own: theirs, mode 0600, in their directory."""
        for directory in (self.home / ".config", self.configs):
            directory.mkdir(mode=0o700, exist_ok=True)
            os.chown(directory, self.uid, self.uid)
        path = self.configs / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        os.chown(path, self.uid, self.uid)
        return path


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
