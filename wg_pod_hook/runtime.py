"""Where this process keeps wg-pod's state, where it finds its settings
and configs, and whether it runs as root: one value, built once by the
entry point (hook.py, cli.py) from the process's situation and passed down
to what reads or writes the state; nothing below builds its own.

The state directory is ``/run/wg-pod``, or ``$WG_POD_STATE_DIR`` (an
absolute path) for an installation of its own — the test suite's, beside a
packaged daemon.  It holds the records (``<container-id>.json``), the kept
failures (``failed/``), the daemon's health looks (``health/``), the locks
(``locks/``) and the daemon's two sockets (``hook.sock`` for hooks handing
over their work, ``daemon.sock`` for the hooks' news); root's alone (0700).
``wg-pod install`` writes a non-default one into the hooks.d definitions,
so that the hooks podman runs use it too.

The settings file and the default directories for configs belong to the
situation too (root's ``/etc``).  Whoever must own a config is uid 0 as
this process sees it (trust.py): root, or, in a rootless podman's user
namespace, the user who runs it.  A rootless runtime is a second way to
build this value (``$XDG_RUNTIME_DIR/wg-pod``, the user's own config
directory).

The hook's warm path imports this module: ``os`` only, no pathlib.
"""

from __future__ import annotations

import os

STATE_DIR_ENV = "WG_POD_STATE_DIR"
DEFAULT_STATE_DIR = "/run/wg-pod"
SETTINGS_ENV = "WG_POD_SETTINGS"
DEFAULT_SETTINGS = "/etc/wg-pod/wg-pod.yaml"
DEFAULT_CONFIG_DIRS = ("/etc/wireguard", "/etc/wg", "/etc/wg-pod")


class Runtime:
    """Paths under one state directory, the settings file (the one named
    by ``$WG_POD_SETTINGS``, or the default that may be absent), the
    directories configs may be in unless the settings say otherwise, and
    whether we run as root."""

    __slots__ = ("config_dirs", "named_settings", "root", "state_dir")

    def __init__(
        self,
        state_dir: str,
        root: bool,
        settings: str | None = None,
        config_dirs: tuple[str, ...] = DEFAULT_CONFIG_DIRS,
    ) -> None:
        if not state_dir.startswith("/"):
            raise ValueError(f"{STATE_DIR_ENV}={state_dir}: not an absolute path")
        self.state_dir = state_dir.rstrip("/") or "/"
        self.root = root
        self.named_settings = settings
        self.config_dirs = config_dirs

    @classmethod
    def of_process(cls) -> Runtime:
        """Root's (or a test's) runtime: ValueError (one line) when
        ``$WG_POD_STATE_DIR`` is not an absolute path."""
        return cls(
            os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR,
            os.geteuid() == 0,
            os.environ.get(SETTINGS_ENV) or None,
        )

    def with_settings(self, settings: str | None) -> Runtime:
        """This runtime with another settings file (None: the default), as
        a hook that hands its work to the daemon names it."""
        return Runtime(self.state_dir, self.root, settings, self.config_dirs)

    @property
    def settings(self) -> str:
        """The settings file: the one named, which must exist, or the
        default, which may be absent."""
        return self.named_settings or DEFAULT_SETTINGS

    @property
    def is_default(self) -> bool:
        return self.state_dir == DEFAULT_STATE_DIR

    @property
    def records(self) -> str:
        return self.state_dir

    @property
    def failed(self) -> str:
        return f"{self.state_dir}/failed"

    @property
    def health(self) -> str:
        return f"{self.state_dir}/health"

    @property
    def locks(self) -> str:
        return f"{self.state_dir}/locks"

    @property
    def hook_socket(self) -> str:
        return f"{self.state_dir}/hook.sock"

    @property
    def daemon_socket(self) -> str:
        return f"{self.state_dir}/daemon.sock"

    def make(self, directory: str) -> str:
        """``directory`` (the state directory or one in it), made if missing:
        root's alone (0700), and so is the state directory above it."""
        for path in (self.state_dir, directory):
            try:  # noqa: SIM105 (no contextlib on the hook's warm path)
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
        return directory

    def __repr__(self) -> str:
        return f"Runtime({self.state_dir!r}, root={self.root})"


def write_file(directory: str, name: str, data: bytes) -> str:
    """Write ``directory/name`` atomically: a reader sees the old file or
    the whole new one, never half.  The temporary file, ``.tmp-STEM-PID.EXT``
    beside it, is named after the writer's pid: a killed writer's is
    truncated by the next writer of that pid, or removed by ``wg-pod gc``
    (temporaries_of_dead_writers).  Only root writes in these directories,
    so a predictable name is safe."""
    stem, dot, ext = name.rpartition(".")
    tmp = f"{directory}/.tmp-{stem or ext}-{os.getpid()}{dot}{ext if stem else ''}"
    target = f"{directory}/{name}"
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:  # noqa: SIM105
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def writer_pid(name: str) -> int | None:
    """The pid in a temporary file's name (write_file), or None when
    ``name`` is not one."""
    if not name.startswith(".tmp-"):
        return None
    stem = name.rpartition(".")[0] if name.count(".") > 1 else name
    pid = stem.rpartition("-")[2]
    return int(pid) if pid.isdigit() else None
