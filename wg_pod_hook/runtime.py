"""Where this process keeps wg-pod's state, and whether it runs as root:
one value, built once from the process's situation.

The state directory is ``/run/wg-pod``, or ``$WG_POD_STATE_DIR`` (an
absolute path) for an installation of its own — the test suite's, beside a
packaged daemon.  It holds the records (``<container-id>.json``), the kept
failures (``failed/``), the daemon's health looks (``health/``), the locks
(``locks/``) and the daemon's two sockets (``hook.sock`` for hooks handing
over their work, ``daemon.sock`` for the hooks' news); root's alone (0700).
``wg-pod install`` writes a non-default one into the hooks.d definitions,
so that the hooks podman runs use it too.

The hook's warm path imports this module: ``os`` only, no pathlib.
"""

from __future__ import annotations

import os

STATE_DIR_ENV = "WG_POD_STATE_DIR"
DEFAULT_STATE_DIR = "/run/wg-pod"


class Runtime:
    """Paths under one state directory, and whether we run as root."""

    __slots__ = ("root", "state_dir")

    def __init__(self, state_dir: str, root: bool) -> None:
        if not state_dir.startswith("/"):
            raise ValueError(f"{STATE_DIR_ENV}={state_dir}: not an absolute path")
        self.state_dir = state_dir.rstrip("/") or "/"
        self.root = root

    @classmethod
    def of_process(cls) -> Runtime:
        return cls(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR, os.geteuid() == 0)

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


_current: Runtime | None = None


def current() -> Runtime:
    """This process's runtime, built at the first call; ValueError (one
    line) when ``$WG_POD_STATE_DIR`` is not an absolute path."""
    global _current
    if _current is None:
        _current = Runtime.of_process()
    return _current
