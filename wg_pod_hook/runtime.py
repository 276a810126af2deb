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
namespace, the user who runs it.

A rootless user's runtime (``Runtime.of_user``) is the second way to build
this value, for the hook that rootless podman runs as uid 0 of the user's
user namespace, and for that user's ``wg-pod``: state in
``/run/user/UID/wg-pod`` (``$XDG_RUNTIME_DIR`` under systemd-logind, which
rootless podman's systemd cgroups need anyway), settings in
``~/.config/wg-pod/wg-pod.yaml``, configs in ``~/.config/wg-pod``, home
from the password database.  Both come from the uid alone, not from the
environment: a hook gets only the ``PATH`` of its hooks.d definition, and
the hook, the daemon and the user's commands must agree.

The hook's warm path imports this module: ``os`` only, no pathlib.
"""

from __future__ import annotations

import os

STATE_DIR_ENV = "WG_POD_STATE_DIR"
DEFAULT_STATE_DIR = "/run/wg-pod"
SETTINGS_ENV = "WG_POD_SETTINGS"
DEFAULT_SETTINGS = "/etc/wg-pod/wg-pod.yaml"
DEFAULT_CONFIG_DIRS = ("/etc/wireguard", "/etc/wg", "/etc/wg-pod")
# A rootless user's, under their home and their runtime directory.
USER_CONFIG_DIR = ".config/wg-pod"
USER_STATE_DIR = "/run/user/{uid}/wg-pod"
# Where wireguard-go puts its UAPI sockets (its own default, root's), and
# where a rootless user's go: wireguard-go sees that directory at its
# default place (kernel/backends/userspace.py).
WIREGUARD_SOCKETS = "/var/run/wireguard"
# systemd's credentials of units (LoadCredential=, LoadCredentialEncrypted=):
# the system manager's, and a user manager's in the user's runtime directory.
CREDENTIALS_DIR = "/run/credentials"
USER_CREDENTIALS_DIR = "/run/user/{uid}/credentials"


class Runtime:
    """Paths under one state directory, the settings file (the one named
    by ``$WG_POD_SETTINGS``, or the default that may be absent), the
    directories configs may be in unless the settings say otherwise,
    whether we run as root (uid 0 here: in a rootless user namespace, root
    of the user's namespaces only), and whose runtime it is: None for the
    system's, else the uid of the rootless user."""

    __slots__ = (
        "config_dirs",
        "default_settings",
        "named_settings",
        "owner",
        "root",
        "state_dir",
        "user",
    )

    def __init__(
        self,
        state_dir: str,
        root: bool,
        settings: str | None = None,
        config_dirs: tuple[str, ...] = DEFAULT_CONFIG_DIRS,
        *,
        user: int | None = None,
        default_settings: str = DEFAULT_SETTINGS,
        owner: str = "root",
    ) -> None:
        if not state_dir.startswith("/"):
            raise ValueError(f"{STATE_DIR_ENV}={state_dir}: not an absolute path")
        self.state_dir = state_dir.rstrip("/") or "/"
        self.root = root
        self.named_settings = settings
        self.config_dirs = config_dirs
        self.user = user
        self.default_settings = default_settings
        # Who must own configs and settings, for messages: uid 0 here.
        self.owner = owner

    @classmethod
    def of_process(cls) -> Runtime:
        """The runtime of this process: a rootless user's in that user's
        namespace (the hook under rootless podman, ``podman unshare``) or
        as that user, unless ``$WG_POD_STATE_DIR`` names another state
        directory; else root's, or a test's: ValueError (one line) when
        ``$WG_POD_STATE_DIR`` is not an absolute path."""
        euid = os.geteuid()
        user = namespace_user()
        named = os.environ.get(STATE_DIR_ENV)
        if user is None and euid != 0 and not named:
            user = euid
        if user:
            return cls.of_user(user, root=euid == 0)
        return cls(
            named or DEFAULT_STATE_DIR,
            euid == 0 and user is None,
            os.environ.get(SETTINGS_ENV) or None,
        )

    @classmethod
    def of_user(cls, uid: int, root: bool) -> Runtime:
        """The rootless runtime of the user ``uid`` (``root``: this process
        is uid 0 of that user's namespace).  ValueError when the password
        database does not know the user."""
        import pwd

        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            raise ValueError(f"uid {uid} has no entry in the password database") from None
        configs = f"{entry.pw_dir.rstrip('/')}/{USER_CONFIG_DIR}"
        return cls(
            USER_STATE_DIR.format(uid=uid),
            root,
            config_dirs=(configs,),
            user=uid,
            default_settings=f"{configs}/wg-pod.yaml",
            owner=f"{entry.pw_name} (uid {uid})",
        )

    def with_settings(self, settings: str | None) -> Runtime:
        """This runtime with another settings file (None: the default), as
        a hook that hands its work to the daemon names it."""
        return Runtime(
            self.state_dir,
            self.root,
            settings,
            self.config_dirs,
            user=self.user,
            default_settings=self.default_settings,
            owner=self.owner,
        )

    @property
    def settings(self) -> str:
        """The settings file: the one named, which must exist, or the
        default, which may be absent."""
        return self.named_settings or self.default_settings

    @property
    def rootless(self) -> bool:
        return self.user is not None

    @property
    def credentials(self) -> str:
        """Where systemd keeps the credentials of this runtime's units."""
        if self.user is None:
            return CREDENTIALS_DIR
        return USER_CREDENTIALS_DIR.format(uid=self.user)

    @property
    def wireguard_sockets(self) -> str:
        """Where wireguard-go's UAPI sockets are, as this process sees them."""
        return f"{self.state_dir}/wireguard" if self.rootless else WIREGUARD_SOCKETS

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
    def resolv_confs(self) -> str:
        return f"{self.state_dir}/resolv"

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
        return f"Runtime({self.state_dir!r}, root={self.root}, user={self.user})"


def namespace_user() -> int | None:
    """The uid outside that this process's uid 0 is, when it runs in a user
    namespace (rootless podman's maps the user who runs it); None in the
    initial one, whose map is the identity over every uid."""
    try:
        with open("/proc/self/uid_map") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        inside, outside, count = line.split()
        if inside == "0":
            return None if (outside, count) == ("0", "4294967295") else int(outside)
    return None


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
