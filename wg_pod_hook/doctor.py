"""``wg-pod doctor``: what a support thread would ask, checked on this host.

Each check is a pure function from what was seen on the host (small frozen
records) to one ``Finding``: ``ok``, ``warn`` or ``FAIL``, what was found,
and for anything not ok the command that mends it.  The ``look_*``
functions are the only ones that look at the host; ``examine`` runs them
and the checks, ``report`` and ``as_json`` render the findings and
``exit_status`` turns them into the command's status.

The rule for the exit status: ``FAIL`` is anything that leaves a container
without its tunnel (or refused); ``warn`` is kept for what is optional or
only slower (no daemon, no CDI spec, wireguard-go instead of the kernel's
WireGuard, ``nft`` instead of libnftables) and never fails the command.

The most important check is whether podman reads the directory wg-pod's
hooks.d definitions are in: a definition in a directory podman does not
read is a container started without its tunnel, and without a word.
podman's directories come from containers.conf's ``hooks_dir``, read as
containers/common reads it (``podman_hooks_dirs``).

The backends answer for themselves, through their own capability probe
(``Backend.available``, which makes nothing); the doctor only says which
one ``auto`` would take and what would let the others run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from . import cdi, hooksd
from .errors import BackendUnavailable, SettingsError
from .model.bundle import DEVICE_CONFIG
from .model.settings import Settings, load_settings, parse_settings, runtime_defaults
from .runtime import Runtime

# containers.conf(5), containers-config(5): the system's files, then the
# admin's, then the user's; each later one overrides (or, with
# {append=true}, extends) what the earlier ones said.
USR_CONF_DIR = Path("/usr/share/containers")
ETC_CONF_DIR = Path("/etc/containers")
CONTAINERS_CONF = "CONTAINERS_CONF"
CONTAINERS_CONF_OVERRIDE = "CONTAINERS_CONF_OVERRIDE"
# containers/common's default hooks_dir (pkg/config/default.go).
PODMAN_HOOKS_DIRS = (Path("/usr/share/containers/oci/hooks.d"),)
# libpod's implicit directories, read (deprecated) only by a rootful podman
# whose hooks_dir was set to [] (libpod setupOCIHooks).
IMPLICIT_HOOKS_DIRS = (
    Path("/usr/share/containers/oci/hooks.d"),
    Path("/etc/containers/oci/hooks.d"),
)
# The hook's PATH, as its hooks.d definition gives it: where it finds nft
# and nsenter.
HOOK_PATH = hooksd.PATH.partition("=")[2]
TUN = "/dev/net/tun"
PODMAN_TIMEOUT = 30.0
# The oldest podman wg-pod is tested with (README: Tested versions).
OLDEST_PODMAN = (4, 3)


class Status(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    name: str
    status: Status
    detail: str
    fix: str | None = None


# What the host was seen to have, one record per check.


@dataclass(frozen=True)
class RootlessSetup:
    """A rootless user's situation: the runtime directory logind makes,
    subordinate ids for podman's user namespace, wg-pod's config directory."""

    user: str
    runtime_dir: Path
    runtime_dir_ok: bool
    subids: bool
    config_dir: Path
    config_dir_problem: str | None  # None: there, theirs, closed to others


@dataclass(frozen=True)
class BackendSeen:
    """One backend as its capability probe (``Backend.available``) found it."""

    name: str
    runs_on: str | None  # what it would run on here
    problem: str | None = None  # why it cannot run here


@dataclass(frozen=True)
class Nftables:
    libnftables_problem: str | None  # None: the hook applies rules in-process
    nft: str | None
    nsenter: str | None


@dataclass(frozen=True)
class Podman:
    version: str
    runtime: str
    runtime_version: str
    runtime_path: str


@dataclass(frozen=True)
class HooksDirs:
    """The directories podman reads hook definitions from, and which
    containers.conf said so (None: podman's default); ``problem`` when
    podman itself could not read its configuration."""

    dirs: tuple[Path, ...]
    source: str | None = None
    problem: str | None = None
    files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Definition:
    """One of wg-pod's hooks.d files: the hook it runs and the settings it
    names, whether that hook can run; ``problem`` when it does not parse."""

    file: Path
    hook: str | None = None
    runnable: bool = False
    settings: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class CdiSpec:
    path: Path
    present: bool
    devices: tuple[tuple[str, Path | None], ...] = ()  # name, its config
    missing_configs: tuple[str, ...] = ()  # device names whose config is gone
    new_configs: tuple[str, ...] = ()  # allowed configs without a device
    problem: str | None = None


@dataclass(frozen=True)
class Daemon:
    running: bool
    problem: str | None = None  # cannot tell


# The checks: pure.


def privileges(euid: int, rootless: RootlessSetup | None) -> Finding:
    if rootless is None:
        return Finding("privileges", Status.OK, f"root (uid {euid})")
    who = f"rootless podman user {rootless.user} (uid {euid})"
    if euid == 0:
        who = f"uid 0 of {rootless.user}'s user namespace"
    if not rootless.runtime_dir_ok:
        return Finding(
            "privileges",
            Status.FAIL,
            f"{who}: no runtime directory {rootless.runtime_dir} (wg-pod's state lives there)",
            f"loginctl enable-linger {rootless.user}   (or log in through systemd-logind)",
        )
    if rootless.config_dir_problem is not None:
        return Finding(
            "privileges",
            Status.FAIL,
            f"{who}: {rootless.config_dir_problem}",
            f"mkdir -p -m 700 {rootless.config_dir} && chmod 700 {rootless.config_dir}",
        )
    if not rootless.subids:
        return Finding(
            "privileges",
            Status.WARN,
            f"{who}: no subordinate ids in /etc/subuid and /etc/subgid "
            "(podman maps a single uid; many images need more)",
            f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {rootless.user}",
        )
    return Finding(
        "privileges",
        Status.OK,
        f"{who}: state in {rootless.runtime_dir}/wg-pod, configs in {rootless.config_dir}",
    )


def backend(choice: str, seen: Sequence[BackendSeen], rootless: bool = False) -> Finding:
    """Which backend a setup would take (``choice``: the settings'), as
    ``backends.candidates`` tries them: for ``auto`` the first that can
    run, in ``seen``'s order (backends.NAMES)."""
    tried = [s for s in seen if choice in ("auto", s.name)]
    said = "auto" if choice == "auto" else f"{choice} (settings)"
    picked = next((s for s in tried if s.runs_on is not None), None)
    if picked is None:
        why = "; ".join(f"{s.name}: {s.problem}" for s in tried) or f"no backend {choice}"
        fixes = ", or: ".join(remedy(s, rootless) for s in tried)
        return Finding("backend", Status.FAIL, f"{said}: no backend can run here: {why}", fixes)
    passed_over = tried[: tried.index(picked)]
    others = "; ".join(
        f"{s.name}: {s.runs_on or s.problem}" for s in seen if s not in (picked, *passed_over)
    )
    detail = f"{said} picks {picked.name} ({picked.runs_on})"
    if passed_over:
        why = "; ".join(f"{s.name}: {s.problem}" for s in passed_over)
        fixes = ", or: ".join(remedy(s, rootless) for s in passed_over)
        return Finding(
            "backend",
            Status.WARN,
            f"{detail}: {why}" + (f"; {others}" if others else ""),
            f"{fixes}   (optional: the kernel's WireGuard is faster)",
        )
    return Finding("backend", Status.OK, detail + (f"; {others}" if others else ""))


def remedy(seen: BackendSeen, rootless: bool = False) -> str:
    """The command that lets a backend run here (by its problem)."""
    if seen.name == "kernel":
        if seen.problem is not None and "no wireguard module" in seen.problem:
            return "a kernel with WireGuard (Linux 5.6 and later have it)"
        return "modprobe wireguard" + ("   (as root: a user namespace never loads it)" * rootless)
    if seen.problem is not None and TUN in seen.problem:
        return (
            "mkdir -p /dev/net && mknod -m 666 /dev/net/tun c 10 200   "
            "(an LXC container: let it have the device, c 10:200)"
        )
    return "apt install wireguard-go"


def nftables(seen: Nftables) -> Finding:
    if seen.libnftables_problem is None:
        return Finding("nftables", Status.OK, "libnftables loads (Python binding nftables)")
    if seen.nft and seen.nsenter:
        return Finding(
            "nftables",
            Status.WARN,
            f"{seen.libnftables_problem}: the hook applies its rules with nsenter and "
            f"{seen.nft} (a fork per start)",
            "apt install python3-nftables   (a virtualenv: made with --system-site-packages)",
        )
    missing = " and ".join(n for n, p in (("nft", seen.nft), ("nsenter", seen.nsenter)) if not p)
    return Finding(
        "nftables",
        Status.FAIL,
        f"{seen.libnftables_problem}, and no {missing} on the hook's PATH: no rules can be applied",
        "apt install python3-nftables nftables util-linux",
    )


def podman(seen: Podman | str) -> Finding:
    if isinstance(seen, str):
        fix = (
            "apt install podman" if "not found" in seen else "podman info   (and mend what it says)"
        )
        return Finding("podman", Status.FAIL, seen, fix)
    detail = f"podman {seen.version}, OCI runtime {seen.runtime} {seen.runtime_version}" + (
        f" ({seen.runtime_path})" if seen.runtime_path else ""
    )
    if seen.runtime == "crun":
        detail += "; crun discards the hook's messages: wg-pod status and journalctl -t wg-pod"
    if _version(seen.version) < OLDEST_PODMAN:
        oldest = ".".join(map(str, OLDEST_PODMAN))
        return Finding(
            "podman",
            Status.WARN,
            f"{detail}; older than any podman wg-pod is tested with ({oldest})",
            "upgrade podman",
        )
    return Finding("podman", Status.OK, detail)


def hooks(
    reads: HooksDirs,
    found: Mapping[Path, Mapping[str, Definition]],
    settings: str | None = None,
) -> Finding:
    """Whether podman reads wg-pod's hooks.d definitions.  ``found``: ours
    in every directory looked at (podman's and the usual ones), by stage;
    ``settings``: the settings file this doctor read."""
    said = f"hooks_dir from {reads.source}" if reads.source else "podman's default hooks_dir"
    reading = ", ".join(map(str, reads.dirs)) or "no directory"
    if reads.problem is not None:
        return Finding(
            "hooks",
            Status.FAIL,
            f"podman cannot read its configuration: {reads.problem}",
            "mend the file named   (podman refuses to start any container with it)",
        )
    # Of one file name in several directories, podman takes the last one's.
    effective: dict[str, Definition] = {}
    for directory in reads.dirs:
        effective.update(found.get(directory, {}))
    if effective:
        missing = [s for s in hooksd.STAGES if s not in effective]
        first = next(iter(effective.values())).file.parent
        if missing:
            return Finding(
                "hooks",
                Status.FAIL,
                f"{first} has no {', '.join(map(hooksd.file_name, missing))}: "
                "a tunnel would be set up and never taken down",
                f"wg-pod install --hooks-dir {first}",
            )
        for stage in hooksd.STAGES:
            definition = effective[stage]
            where = definition.file.parent
            if definition.problem is not None:
                return Finding(
                    "hooks",
                    Status.FAIL,
                    f"{definition.file}: {definition.problem} (podman refuses every container)",
                    f"wg-pod install --hooks-dir {where}",
                )
            if not definition.runnable:
                return Finding(
                    "hooks",
                    Status.FAIL,
                    f"{definition.file} runs {definition.hook}, which is missing or not "
                    "executable: containers with wg-pod annotations do not start",
                    f"wg-pod install --hooks-dir {where}",
                )
        dirs = sorted({str(d.file.parent) for d in effective.values()})
        detail = f"wg-pod's definitions in {', '.join(dirs)}, which podman reads ({said})"
        named = effective["createRuntime"].settings
        if named and named != settings:
            detail += f"; the hook reads settings {named}"
            return Finding(
                "hooks",
                Status.OK,
                detail + f" (check those: WG_POD_SETTINGS={named} wg-pod doctor)",
            )
        return Finding("hooks", Status.OK, detail)
    elsewhere = [d for d, ours in found.items() if ours and d not in reads.dirs]
    target = reads.dirs[0] if reads.dirs else PODMAN_HOOKS_DIRS[0]
    install = "wg-pod install" + (f" --hooks-dir {target}" if target != hooksd.DEFAULT_DIR else "")
    if not reads.dirs:
        return Finding(
            "hooks",
            Status.FAIL,
            f"podman reads no hooks directory (hooks_dir = [] in {reads.source}; rootless "
            "podman has no implicit ones): no container gets a tunnel",
            f'hooks_dir = ["{PODMAN_HOOKS_DIRS[0]}"] in [engine] of {reads.source}',
        )
    if elsewhere:
        places = ", ".join(map(str, elsewhere))
        edit = reads.source or str(ETC_CONF_DIR / "containers.conf")
        return Finding(
            "hooks",
            Status.FAIL,
            f"wg-pod's definitions are in {places}, which podman does not read: it reads "
            f"{reading} ({said}); no container gets a tunnel",
            f"{install}   (or add {places} to hooks_dir in [engine] of {edit})",
        )
    return Finding(
        "hooks",
        Status.FAIL,
        f"no wg-pod definitions found anywhere (podman reads {reading}, {said}): "
        "no container gets a tunnel",
        install,
    )


def settings_finding(runtime: Runtime, loaded: Settings | SettingsError) -> Finding:
    if isinstance(loaded, SettingsError):
        fix = f"edit {loaded.source}   (README: Settings)"
        if runtime.named_settings:
            fix += " or unset WG_POD_SETTINGS"
        return Finding("settings", Status.FAIL, str(loaded), fix)
    dirs = ", ".join(map(str, loaded.config_dirs))
    what = f"backend {loaded.backend}, configs in {dirs}"
    if loaded.source == "(defaults)" or not Path(loaded.source).is_absolute():
        return Finding("settings", Status.OK, f"no {runtime.settings}: the defaults ({what})")
    return Finding("settings", Status.OK, f"{loaded.source}: {what}")


def daemon(seen: Daemon, runtime: Runtime) -> Finding:
    start = (
        "wg-pod install --user --daemon"
        if runtime.rootless
        else "wg-pod install --daemon   (or systemctl enable --now wg-pod.service)"
    )
    if seen.problem is not None:
        return Finding("daemon", Status.WARN, f"cannot tell: {seen.problem}", "run it as root")
    if seen.running:
        return Finding("daemon", Status.OK, f"running (it holds {runtime.state_dir})")
    return Finding(
        "daemon",
        Status.WARN,
        "not running (optional): each hook sets its tunnel up itself, a slower start; "
        "nothing repairs a tunnel, follows a moved endpoint or looks at health",
        start,
    )


def cdi_finding(seen: CdiSpec) -> Finding:
    generate = "wg-pod cdi generate"
    if not seen.present:
        return Finding(
            "cdi",
            Status.WARN,
            f"no CDI spec {seen.path} (optional: only podman --device, Docker and CRI use it)",
            generate,
        )
    if seen.problem is not None:
        return Finding("cdi", Status.FAIL, f"{seen.path}: {seen.problem}", generate)
    if seen.missing_configs:
        return Finding(
            "cdi",
            Status.FAIL,
            f"{seen.path}: the configs of {', '.join(seen.missing_configs)} are gone: "
            "containers asking for them do not start",
            generate,
        )
    devices = ", ".join(f"{name} ({config})" for name, config in seen.devices) or "no devices"
    if seen.new_configs:
        return Finding(
            "cdi",
            Status.WARN,
            f"{seen.path}: {devices}; no device yet for {', '.join(seen.new_configs)}",
            generate,
        )
    return Finding("cdi", Status.OK, f"{seen.path}: {devices}")


# Rendering and the exit status.


def report(findings: Sequence[Finding]) -> str:
    """One line a check: its status, its name, what was found, and the fix."""
    width = max((len(f.name) for f in findings), default=0)
    lines = [
        f"{f.status.value:<4}  {f.name:<{width}}  {f.detail}" + (f"; fix: {f.fix}" if f.fix else "")
        for f in findings
    ]
    counts = {s: sum(f.status is s for f in findings) for s in Status}
    lines.append(
        f"{counts[Status.OK]} ok, {counts[Status.WARN]} warn, {counts[Status.FAIL]} FAIL"
        + (" (warn is optional and does not fail)" if counts[Status.WARN] else "")
    )
    return "\n".join(lines)


def as_json(findings: Sequence[Finding]) -> list[dict[str, str | None]]:
    return [
        {"name": f.name, "status": f.status.value, "detail": f.detail, "fix": f.fix}
        for f in findings
    ]


def exit_status(findings: Iterable[Finding]) -> int:
    """0 unless a check says FAIL; a warn never fails."""
    return 1 if any(f.status is Status.FAIL for f in findings) else 0


# podman's hooks directories, from containers.conf.


def containers_conf_files(
    env: Mapping[str, str],
    uid: int,
    home: str | None,
    usr: Path = USR_CONF_DIR,
    etc: Path = ETC_CONF_DIR,
) -> tuple[Path, ...]:
    """The containers.conf files podman reads, in order, later ones
    winning: ``$CONTAINERS_CONF`` alone (which must exist), else the
    system's, the admin's (with their drop-in directories; rootless ones
    for ``uid`` > 0) and the user's; ``$CONTAINERS_CONF_OVERRIDE`` last.
    FileNotFoundError for a ``$CONTAINERS_CONF`` that does not exist."""
    named = env.get(CONTAINERS_CONF)
    files: list[Path] = []
    if named:
        if not _present(Path(named)):
            raise FileNotFoundError(errno.ENOENT, f"{CONTAINERS_CONF}={named}: no such file")
        files.append(Path(named))
    else:
        for base in (usr, etc):
            files.append(base / "containers.conf")
            files += _drop_ins(base / "containers.conf.d")
            if uid == 0:
                files += _drop_ins(base / "containers.rootful.conf.d")
            else:
                files.append(base / "containers.rootless.conf")
                files += _drop_ins(base / "containers.rootless.conf.d")
                files += _drop_ins(base / "containers.rootless.conf.d" / str(uid))
        config_home = env.get("XDG_CONFIG_HOME") or (f"{home}/.config" if home else None)
        if config_home:
            files.append(Path(config_home, "containers", "containers.conf"))
            files += _drop_ins(Path(config_home, "containers", "containers.conf.d"))
    if env.get(CONTAINERS_CONF_OVERRIDE):
        files.append(Path(env[CONTAINERS_CONF_OVERRIDE]))
    return tuple(f for f in files if _present(f))


def _present(path: Path) -> bool:
    """Whether podman would read ``path``: a file there, or one it may not
    look at (podman fails on it, and so does podman_hooks_dirs, naming it)."""
    try:
        return path.is_file()
    except PermissionError:
        return True


def _drop_ins(directory: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [directory / n for n in names if n.endswith(".conf") and (directory / n).is_file()]


def podman_hooks_dirs(files: Sequence[Path], rootless: bool = False) -> HooksDirs:
    """podman's ``hooks_dir`` after reading ``files`` in order: each file
    that sets it replaces it, or extends it where ``{append=true}`` says
    so (for that file and the later ones); unset, containers/common's
    default.  An empty list: libpod's implicit directories for root, none
    for a rootless user."""
    dirs: list[Path] | None = None
    source = None
    appending = False
    for path in files:
        try:
            with path.open("rb") as f:
                engine = tomllib.load(f).get("engine", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            return HooksDirs((), str(path), f"{path}: {_reason(exc)}", tuple(files))
        value = engine.get("hooks_dir") if isinstance(engine, dict) else None
        if value is None:
            continue
        if not isinstance(value, list):
            return HooksDirs((), str(path), f"{path}: hooks_dir must be a list", tuple(files))
        entries: list[Path] = []
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("append"), bool):
                appending = item["append"]
            elif isinstance(item, str):
                entries.append(Path(item))
            else:
                problem = f"{path}: hooks_dir: {item!r} is not a path"
                return HooksDirs((), str(path), problem, tuple(files))
        dirs = [*(dirs or []), *entries] if appending and dirs is not None else entries
        source = str(path)
    if dirs is None:
        return HooksDirs(PODMAN_HOOKS_DIRS, None, None, tuple(files))
    if not dirs:
        return HooksDirs(() if rootless else IMPLICIT_HOOKS_DIRS, source, None, tuple(files))
    return HooksDirs(tuple(dict.fromkeys(dirs)), source, None, tuple(files))


def _version(text: str) -> tuple[int, ...]:
    """``4.3.1`` -> (4, 3, 1); what does not parse counts as new."""
    numbers = []
    for part in text.split("-")[0].split("."):
        if not part.isdigit():
            return (999,)
        numbers.append(int(part))
    return tuple(numbers)


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"not valid TOML ({exc})"


# Looking at the host.


def look_rootless(runtime: Runtime) -> RootlessSetup | None:
    if not runtime.rootless or runtime.user is None:
        return None
    import pwd

    uid = runtime.user
    name = pwd.getpwuid(uid).pw_name
    runtime_dir = Path(runtime.state_dir).parent
    try:
        runtime_dir_ok = runtime_dir.stat().st_uid == os.geteuid()
    except OSError:
        runtime_dir_ok = False
    config_dir = Path(runtime.config_dirs[0])
    return RootlessSetup(
        user=name,
        runtime_dir=runtime_dir,
        runtime_dir_ok=runtime_dir_ok,
        subids=all(_has_subids(Path(f), name, uid) for f in ("/etc/subuid", "/etc/subgid")),
        config_dir=config_dir,
        config_dir_problem=_config_dir_problem(config_dir),
    )


def _has_subids(path: Path, name: str, uid: int) -> bool:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return False
    return any(line.split(":", 1)[0] in (name, str(uid)) for line in lines)


def _config_dir_problem(directory: Path) -> str | None:
    try:
        info = directory.stat()
    except OSError:
        return f"no {directory}: the only place this user's configs may be"
    if info.st_uid != os.geteuid():
        return f"{directory} is not this user's"
    if stat.S_IMODE(info.st_mode) & 0o022:
        return f"{directory} is writable by others"
    return None


def look_backends(runtime: Runtime) -> tuple[BackendSeen, ...]:
    """Every backend, as its own capability probe finds it (nothing is made)."""
    from .kernel import backends

    seen = []
    for name in backends.NAMES:
        try:
            seen.append(BackendSeen(name, backends.get(name, runtime).available()))
        except BackendUnavailable as exc:
            seen.append(BackendSeen(name, None, str(exc)))
    return tuple(seen)


def look_nftables() -> Nftables:
    from .kernel import nft_apply

    problem = None
    if nft_apply._libnftables() is None:
        import importlib.util

        if importlib.util.find_spec("nftables") is None:
            problem = "no Python module nftables (python3-nftables)"
        else:
            problem = f"the nftables binding cannot load {nft_apply.LIBNFTABLES} or is too old"
    return Nftables(
        problem, shutil.which("nft", path=HOOK_PATH), shutil.which("nsenter", path=HOOK_PATH)
    )


def look_podman(env: Mapping[str, str] | None = None) -> Podman | str:
    """podman's version and OCI runtime from ``podman info`` (no API
    socket needed); a one-line problem when podman cannot say."""
    try:
        done = subprocess.run(
            ["podman", "info", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=PODMAN_TIMEOUT,
            check=False,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return "podman not found on PATH"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"podman info: {exc}"
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        # logrus's time="..." level=error msg="...": the message
        message = lines[-1].partition(' msg="')[2].removesuffix('"') or lines[-1]
        return f"podman info failed: {message}"
    try:
        info = json.loads(done.stdout)
        runtime = info["host"]["ociRuntime"]
        version = str(info["version"]["Version"])
    except (ValueError, KeyError, TypeError):
        return "podman info: output not understood"
    runtime_version = str(runtime.get("version") or "").splitlines()
    number = runtime_version[0].rpartition(" ")[2] if runtime_version else "(version unknown)"
    return Podman(version, str(runtime.get("name", "?")), number, str(runtime.get("path") or ""))


def look_definitions(directories: Iterable[Path]) -> dict[Path, dict[str, Definition]]:
    """wg-pod's definitions in each directory, by stage."""
    found: dict[Path, dict[str, Definition]] = {}
    for directory in dict.fromkeys(directories):
        ours = {}
        for stage in hooksd.STAGES:
            file = directory / hooksd.file_name(stage)
            if file.is_file():
                ours[stage] = read_definition(file)
        found[directory] = ours
    return found


def read_definition(file: Path) -> Definition:
    try:
        hook = json.loads(file.read_text())["hook"]
        path = hook["path"]
        env = hook.get("env") or []
    except OSError as exc:
        return Definition(file, problem=exc.strerror or str(exc))
    except (ValueError, KeyError, TypeError):
        return Definition(file, problem="not a hook definition podman can read")
    if not isinstance(path, str) or not isinstance(env, list):
        return Definition(file, problem="not a hook definition podman can read")
    prefix = "WG_POD_SETTINGS="
    settings = next(
        (e[len(prefix) :] for e in env if isinstance(e, str) and e.startswith(prefix)), None
    )
    runnable = os.path.isabs(path) and os.path.isfile(path) and os.access(path, os.X_OK)
    return Definition(file, path, runnable, settings)


def look_daemon(runtime: Runtime) -> Daemon:
    from .state.locks import daemon_running

    try:
        return Daemon(daemon_running(runtime))
    except OSError as exc:
        return Daemon(False, f"{runtime.state_dir}: {exc.strerror or exc}")


def look_cdi(path: Path, config_dirs: Iterable[Path]) -> CdiSpec:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return CdiSpec(path, False)
    except OSError as exc:
        return CdiSpec(path, True, problem=exc.strerror or str(exc))
    import yaml  # CDI reads JSON or YAML

    try:
        document: Any = yaml.safe_load(text)
        if document.get("kind") != cdi.KIND:
            return CdiSpec(path, True, problem=f"kind is not {cdi.KIND}")
        devices = tuple((str(d["name"]), _device_config(d)) for d in document["devices"] or [])
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        return CdiSpec(path, True, problem="not a CDI spec that parses")
    missing = tuple(name for name, config in devices if config is None or not config.is_file())
    named = {name for name, _ in devices}
    new = tuple(name for name in cdi.devices(config_dirs) if name not in named)
    return CdiSpec(path, True, devices, missing, new)


def _device_config(device: Mapping[str, Any]) -> Path | None:
    for hook in device.get("containerEdits", {}).get("hooks", []):
        args = hook.get("args") or []
        if DEVICE_CONFIG in args[:-1]:
            return Path(args[args.index(DEVICE_CONFIG) + 1])
    return None


def load(runtime: Runtime) -> Settings | SettingsError:
    """The runtime's settings, as the hook loads them.  A rootless user on
    the host is not uid 0 of their namespace, where the hook checks who
    owns the file: here the file's text alone is checked."""
    if runtime.rootless and not runtime.root:
        defaults = runtime_defaults(runtime)
        try:
            text = Path(runtime.settings).read_text()
        except FileNotFoundError:
            if runtime.named_settings:
                return SettingsError(runtime.settings, None, "settings file does not exist")
            return defaults
        except (OSError, UnicodeDecodeError) as exc:
            return SettingsError(runtime.settings, None, f"cannot read: {exc}")
        try:
            return parse_settings(text, runtime.settings, defaults)
        except SettingsError as exc:
            return exc
    try:
        return load_settings(runtime)
    except SettingsError as exc:
        return exc


def examine(
    runtime: Runtime,
    hooks_dirs: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Every check, on this host; ``hooks_dirs``: where wg-pod's hooks.d
    definitions were installed, besides the usual places and podman's."""
    env = os.environ if env is None else env
    loaded = load(runtime)
    settings = loaded if isinstance(loaded, Settings) else Settings()
    uid = runtime.user or 0
    try:
        files = containers_conf_files(env, uid, env.get("HOME"))
        reads = podman_hooks_dirs(files, rootless=uid != 0)
    except OSError as exc:
        reads = HooksDirs((), None, exc.strerror or str(exc))
    candidates = [*hooks_dirs, hooksd.DEFAULT_DIR, *IMPLICIT_HOOKS_DIRS, *reads.dirs]
    return [
        privileges(os.geteuid(), look_rootless(runtime)),
        backend(settings.backend, look_backends(runtime), runtime.rootless),
        nftables(look_nftables()),
        podman(look_podman(env)),
        hooks(reads, look_definitions(candidates), runtime.settings),
        settings_finding(runtime, loaded),
        daemon(look_daemon(runtime), runtime),
        cdi_finding(look_cdi(cdi.DEFAULT_SPEC, settings.config_dirs)),
    ]
