"""The daemon's systemd unit, and telling systemd the daemon is ready.

The unit text is made here only: the Makefile (and with it the Debian and
RPM packages) writes it with ``python3 -m wg_pod_hook.units BINDIR/wg-pod``,
and ``wg-pod install`` writes the same for a virtualenv.  A rootless
user's (``wg-pod install --user``) is a systemd user unit in their
``~/.config/systemd/user``, wanted by ``default.target``: their user
manager starts it (at boot too, with ``loginctl enable-linger``).

``wg-pod install --settings FILE --daemon`` gives the daemon the settings
file it gives the hooks: ``Environment=WG_POD_SETTINGS=FILE`` in the unit,
so that the daemon, which does the hooks' work while it runs, reads the
same file they would.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from .errors import SetupError
from .runtime import SETTINGS_ENV

log = logging.getLogger(__name__)

NAME = "wg-pod.service"
ADMIN_DIR = Path("/etc/systemd/system")  # where ``wg-pod install`` writes it
USER_DIR = ".config/systemd/user"  # in a user's home: ``wg-pod install --user``


def user_dir(home: str) -> Path:
    return Path(home) / USER_DIR


def environment(name: str, value: str) -> str:
    """An ``Environment=`` line setting ``name`` to ``value`` exactly:
    quoted (with C escapes) when the value holds a blank, a quote or a
    backslash, and ``%`` doubled (systemd's specifiers)."""
    if any(c in value for c in "\n\r\0"):
        raise SetupError("install", repr(value), "a path with a line break or NUL")
    assignment = f"{name}={value}".replace("%", "%%")
    if any(c in assignment for c in " \t\"'\\"):
        escaped = assignment.replace("\\", "\\\\").replace('"', '\\"')
        assignment = f'"{escaped}"'
    return f"Environment={assignment}"


def service(wg_pod: str, user: bool = False, settings: str | None = None) -> str:
    """The unit that runs ``wg_pod daemon`` (with ``settings``: reading
    that settings file, ``WG_POD_SETTINGS``).

    KillMode=process: the wireguard-go processes of the daemon's repairs
    are moved into their containers' cgroups when they start (cgroups.py);
    should one stay behind, stopping or restarting the daemon still leaves
    it running.  Restart: a crash costs the tunnels nothing, but their
    repairs wait for the next daemon.
    """
    env = f"{environment(SETTINGS_ENV, settings)}\n" if settings else ""
    return f"""\
[Unit]
Description=wg-pod daemon: keeps containers' WireGuard tunnels up
Documentation=man:wg-pod(8)

[Service]
Type=notify
{env}ExecStart={wg_pod} daemon
Restart=on-failure
RestartSec=2
KillMode=process
SyslogIdentifier=wg-pod

[Install]
WantedBy={"default.target" if user else "multi-user.target"}
"""


def install(
    directory: Path, wg_pod: str, user: Path | None = None, *, settings: str | None = None
) -> Path:
    """Write the unit into ``directory``; with systemd running there,
    enable and start it, as the packages do.  ``user``: the user's own
    unit directory, for a user unit (its manager is then the one).
    ``settings``: the settings file the daemon reads (the one ``install
    --settings`` gives the hooks), an absolute path; a rootless user's
    daemon reads theirs, ``~/.config/wg-pod/wg-pod.yaml``, only."""
    if not Path(wg_pod).is_absolute():
        raise SetupError("install", wg_pod, "the wg-pod path must be absolute")
    if settings is not None and user is not None:
        raise SetupError(
            "install", settings, "a rootless user's daemon reads ~/.config/wg-pod/wg-pod.yaml only"
        )
    if settings is not None and not Path(settings).is_absolute():
        raise SetupError("install", settings, "the settings path must be absolute")
    target = directory / NAME
    text = service(wg_pod, user=user is not None, settings=settings)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise SetupError("install", str(target), exc.strerror or str(exc)) from None
    if _managed(directory, user):
        _systemctl(user, "daemon-reload")
        _systemctl(user, "enable", "--now", NAME)
    return target


def uninstall(directory: Path, user: Path | None = None) -> Path | None:
    """Stop, disable and remove the unit that install() wrote, if any."""
    target = directory / NAME
    if not target.exists():
        return None
    managed = _managed(directory, user)
    if managed:
        _systemctl(user, "disable", "--now", NAME)
    target.unlink()
    if managed:
        _systemctl(user, "daemon-reload")
    return target


def _managed(directory: Path, user: Path | None) -> bool:
    """Whether systemd (the system's, or with ``user`` the user's manager,
    whose socket is in $XDG_RUNTIME_DIR) runs here and reads units from
    ``directory``."""
    if shutil.which("systemctl") is None:
        return False
    if user is not None:
        manager = Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent")) / "systemd" / "private"
        return directory == user and manager.exists()
    return directory == ADMIN_DIR and Path("/run/systemd/system").is_dir()


def _systemctl(user: Path | None, *args: str) -> None:
    scope = ["--user"] if user is not None else []
    done = subprocess.run(
        ["systemctl", *scope, *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        detail = " ".join(done.stderr.split())[:300] or f"exit status {done.returncode}"
        raise SetupError("systemctl " + " ".join(args), NAME, detail)


def ready() -> None:
    """sd_notify(READY=1) when systemd started us with Type=notify."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(b"READY=1", address)
    except OSError as exc:
        log.warning("could not tell systemd the daemon is ready: %s", exc)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].startswith("/"):
        print("usage: python3 -m wg_pod_hook.units /ABSOLUTE/PATH/TO/wg-pod", file=sys.stderr)
        return 2
    sys.stdout.write(service(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
