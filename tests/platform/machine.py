"""A Debian 13 machine for the platform tier: podman 5.4, crun, netavark,
quadlet and journald under a real systemd, booted with systemd-nspawn.

The root is built with mmdebstrap and kept in ``CACHE``
(``/var/cache/wg-pod-platform/<recipe>-<archive>/root``) by what it
contains: ``<recipe>`` a hash of the package list, the suite, the inner
pytest's version and ``RECIPE``, ``<archive>`` a hash of the package
indexes of ``SOURCES`` it was made from (their ``InRelease``). A changed
recipe, or a package updated in the archive, builds a new root and removes
the old ones; when the archive cannot be reached, the newest root of the
same recipe is used. Each boot runs on a copy of it, so the cache is
never changed by a test. The recipe and its traps are the ones in
ENVIRONMENT.md ("Debian 13"):

- ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``: a pure cgroup v2 tree inside
  (crun refuses the host's hybrid layout);
- ``--capability=all`` (netavark), ``SYSTEMD_SECCOMP=0`` (crun under
  systemd units: "create keyring: Operation not permitted");
- ``--private-network``: podman's 10.88.0.0/16 inside never meets the
  host's; ``--register=no --keep-unit``: the host has no systemd;
- the cgroup tree nspawn leaves (``payload``) is removed, or the next boot
  fails: nspawn runs in a cgroup of its own (``wgpt-platform-*``), which
  :meth:`Machine.stop` kills and removes, deepest first.

Every failure is a :class:`MachineError` naming the step; nothing here skips.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab import REPO, cache_lock, children
from tests.package.build import Deb, built_deb

SUITE = "trixie"
# What mmdebstrap installs from (its own default for trixie, spelled out:
# the cache key reads the same indexes).
SOURCES = (
    ("http://deb.debian.org/debian", SUITE),
    ("http://deb.debian.org/debian", f"{SUITE}-updates"),
    ("http://security.debian.org/debian-security", f"{SUITE}-security"),
)
COMPONENT = "main"
# Bump when the build steps below change: the cached root is rebuilt.
RECIPE = 7
PACKAGES = (
    # podman 5 with its default runtime (crun), runc as the second runtime,
    # netavark + aardvark-dns networking, quadlet (in podman), conmon
    "podman",
    "crun",
    "runc",
    "netavark",
    "aardvark-dns",
    "passt",
    "conmon",
    "catatonit",
    "iptables",
    # Docker (CDI devices: daemon.json's features.cdi) on its containerd,
    # and Compose
    "docker.io",
    "docker-cli",
    "docker-compose",
    # containerd's CRI, driven as a kubelet would (inside/test_cri.py): its
    # CNI plugins, the CRI API's .proto, protoc and Python's gRPC
    "containernetworking-plugins",
    "golang-github-kubernetes-cri-api-dev",
    "protobuf-compiler",
    "python3-protobuf",
    "python3-grpcio",
    # rootless podman: newuidmap/newgidmap for the users the rootless
    # scenarios add (useradd writes their subordinate ranges), their
    # systemd user managers (pam_systemd) and user buses
    "uidmap",
    "libpam-systemd",
    "dbus-user-session",
    # the machine: systemd as PID 1, journald, dbus (crun's systemd cgroups)
    "systemd",
    "dbus",
    # what the hook and the lab call
    "wireguard-go",
    "wireguard-tools",
    "nftables",
    "iproute2",
    "iputils-ping",
    "procps",
    "busybox-static",
    "ca-certificates",
    # Python 3.13, the package's dependencies (so the .deb installs offline),
    # a venv for the inner pytest
    "python3",
    "python3-venv",
    "python3-yaml",
    "python3-requests",
    "python3-urllib3",
    "python3-nftables",
)
CACHE = Path(os.environ.get("WG_POD_PLATFORM_CACHE", "/var/cache/wg-pod-platform"))
INNER_VENV = "/opt/wgpt-venv"
INNER_REPO = "/wgpt/repo"
INNER_OUT = "/wgpt/out"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The machine's own podman configuration: its cgroup tree has no pids
# controller on these hosts, so no pids limit may be asked for.
PLATFORM_CONF = "/etc/containers/containers.conf.d/50-wg-pod-platform.conf"
RUNTIME_CONF = "/etc/containers/containers.conf.d/60-wg-pod-platform-runtime.conf"
TEST_IMAGE = "localhost/wg-pod-test"
APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


class MachineError(RuntimeError):
    """The machine could not be built, booted or driven; names the step."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def host_run(
    step: str, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A host command of the build or boot; a failure is a MachineError of ``step``."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else {**os.environ, "PATH": PATH},
        )
    except FileNotFoundError:
        raise MachineError(step, f"{argv[0]} is not installed: run scripts/setup") from None
    except subprocess.TimeoutExpired:
        raise MachineError(step, f"{shlex.join(argv)} did not finish in {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise MachineError(
            step,
            f"{shlex.join(argv)} exited {proc.returncode}:\n{_tail(proc.stdout + proc.stderr)}",
        )
    return proc


def inner_pytest_version() -> str:
    import pytest

    return pytest.__version__


def recipe_key(
    packages: Sequence[str] = PACKAGES, recipe: int = RECIPE, pytest_version: str | None = None
) -> str:
    """How the root is made: suite, sources, packages, inner pytest, recipe."""
    spec = {
        "suite": SUITE,
        "sources": [list(source) for source in SOURCES],
        "packages": sorted(packages),
        "pytest": pytest_version or inner_pytest_version(),
        "recipe": recipe,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def index_entry(in_release: str, path: str) -> str:
    """The SHA256 line of ``path`` (e.g. ``main/binary-amd64/Packages``) in a
    Release file; a MachineError when it lists none."""
    section = False
    for line in in_release.splitlines():
        if not line.startswith(" "):
            section = line.rstrip() == "SHA256:"
            continue
        words = line.split()
        if section and len(words) == 3 and words[2] == path:
            return words[0]
    raise MachineError("read the archive's index", f"no SHA256 of {path} in the Release file")


def archive_key(fetch: Callable[[str], str] | None = None, arch: str = "amd64") -> str:
    """A hash of the package indexes the root is made from: the SHA256 of each
    source's ``main/binary-ARCH/Packages`` in its ``InRelease``. Raises
    OSError when the archive cannot be reached."""
    get = fetch or _fetch
    digest = hashlib.sha256()
    for mirror, suite in SOURCES:
        text = get(f"{mirror}/dists/{suite}/InRelease")
        entry = index_entry(text, f"{COMPONENT}/binary-{arch}/Packages")
        digest.update(f"{mirror} {suite} {entry}\n".encode())
    return digest.hexdigest()[:16]


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as response:
        text: str = response.read().decode("utf-8", errors="replace")
        return text


def host_arch() -> str:
    return host_run(
        "read the host's architecture", ["dpkg", "--print-architecture"], timeout=30
    ).stdout.strip()


@dataclass
class Root:
    path: Path
    key: str
    built: bool  # False: taken from the cache
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)
    offline: str = ""  # why the archive was not asked: the newest cached root was taken


def root() -> Root:
    """The cached Debian 13 root of this recipe and the archive's current
    packages, built when missing (then the other roots are removed)."""
    recipe = recipe_key()
    start = time.monotonic()
    offline = ""
    try:
        key = f"{recipe}-{archive_key(arch=host_arch())}"
    except (OSError, MachineError) as exc:
        offline = f"the archive could not be read ({exc})"
        key = ""
    with cache_lock(CACHE):
        if not key:
            ready = [p for p in CACHE.glob(f"{recipe}-*") if (p / "ready.json").is_file()]
            if not ready:
                raise MachineError("build the Debian 13 root", offline + "; no cached root")
            key = max(ready, key=lambda p: (p / "ready.json").stat().st_mtime).name
        final = CACHE / key
        if not (final / "ready.json").is_file():
            for old in CACHE.iterdir():
                if old.is_dir() and old.name != key:
                    shutil.rmtree(old, ignore_errors=True)  # another recipe or archive, or a crash
            _build(final)
            built = True
        else:
            built = False
        versions = json.loads((final / "ready.json").read_text())
    return Root(final / "root", key, built, time.monotonic() - start, versions, offline)


def _build(final: Path) -> None:
    work = CACHE / f".build-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        target = work / "root"
        argv = ["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES), SUITE]
        mirrors = [f"deb {mirror} {suite} {COMPONENT}" for mirror, suite in SOURCES]
        # A second try for a download that broke off; a real error repeats.
        for attempt in (1, 2):
            try:
                host_run(
                    "build the Debian 13 root (mmdebstrap)",
                    [*argv, str(target), *mirrors],
                    timeout=900,
                )
                break
            except MachineError:
                shutil.rmtree(target, ignore_errors=True)
                if attempt == 2:
                    raise
        _customize(target, work)
        versions = _versions(target)
        (work / "ready.json").write_text(json.dumps(versions, indent=2) + "\n")
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _customize(target: Path, work: Path) -> None:
    # A container loads no kernel modules: the unit would only fail and
    # leave the machine "degraded".
    (target / "etc/systemd/system/systemd-modules-load.service").symlink_to("/dev/null")
    # Docker starts only for its own tests (inside/test_docker.py), which
    # turn CDI on: at boot its iptables rules (FORWARD dropped) would meet
    # every other test's podman network.
    for wants in ("multi-user.target.wants/docker.service", "sockets.target.wants/docker.socket"):
        (target / "etc/systemd/system" / wants).unlink()
    conf = target / PLATFORM_CONF.lstrip("/")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        "# wg-pod platform tier: this machine's cgroup tree has no pids controller\n"
        "[containers]\npids_limit = 0\n"
    )
    # The inner pytest: wheels fetched on the host (its pip configuration
    # and CA bundle), installed offline into a venv that sees Debian's
    # python3-yaml; wg-pod's own code comes from the installed package.
    wheels = work / "wheels"
    host_run(
        "download the inner pytest's wheels (pip)",
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            "3.13",
            "-d",
            str(wheels),
            f"pytest=={inner_pytest_version()}",
        ],
        timeout=300,
    )
    inside = target / "var/tmp/wgpt-wheels"
    shutil.copytree(wheels, inside)
    host_run(
        "install the inner pytest into the Debian 13 root (chroot)",
        [
            "chroot",
            str(target),
            "/usr/bin/env",
            "-i",
            f"PATH={PATH}",
            "sh",
            "-c",
            f"python3 -m venv --system-site-packages {INNER_VENV} && "
            f"{INNER_VENV}/bin/pip install --quiet --disable-pip-version-check --no-index "
            f"--find-links /var/tmp/wgpt-wheels pytest=={inner_pytest_version()}",
        ],
        timeout=300,
        env={"PATH": PATH},
    )
    shutil.rmtree(inside)


def _versions(target: Path) -> dict[str, str]:
    proc = host_run(
        "read package versions in the Debian 13 root",
        [
            "chroot",
            str(target),
            "dpkg-query",
            "-W",
            "-f=${Package} ${Version}\\n",
            "podman",
            "crun",
            "runc",
            "netavark",
            "conmon",
            "systemd",
            "python3",
            "docker.io",
            "docker-compose",
            "containerd",
        ],
        timeout=60,
        env={"PATH": PATH},
    )
    found = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    found["debian"] = (target / "etc/debian_version").read_text().strip()
    return found


def _cgroup_base() -> Path:
    """Where nspawn's own cgroup goes: the cgroup v2 hierarchy (hybrid
    hosts mount it at /sys/fs/cgroup/unified)."""
    unified = Path("/sys/fs/cgroup/unified")
    if (unified / "cgroup.procs").exists():
        return unified
    return Path("/sys/fs/cgroup")


def _remove_cgroup_tree(top: Path) -> None:
    if not top.exists():
        return
    kill = top / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
    deadline = time.monotonic() + 30
    while True:
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for directory in [*dirs, top]:
            with contextlib.suppress(OSError):
                directory.rmdir()
        if not top.exists():
            return
        if time.monotonic() > deadline:
            left = [str(p) for p in top.rglob("cgroup.procs") if p.read_text().strip()]
            raise MachineError("remove the machine's cgroups", f"{top} stays; busy: {left}")
        time.sleep(0.2)


def _container_init(nspawn_pid: int) -> int | None:
    """The machine's PID 1 (its systemd), seen from the host."""
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        for child in children(pid):
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            nspid = next(
                (line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), []
            )
            if len(nspid) > 1 and nspid[-1] == "1":
                return child
            todo.append(child)
    return None


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


class Machine:
    """One boot of the Debian 13 root: a copy of it under /var/tmp, nspawn in
    a cgroup of its own, the repository read-only at ``INNER_REPO`` and an
    output directory at ``INNER_OUT``. ``stop()`` removes all of it."""

    def __init__(self, image: Root) -> None:
        self.image = image
        self.name = f"wgpt-platform-{secrets.token_hex(4)}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir="/var/tmp"))
        self.root = self.dir / "root"
        self.out = self.dir / "out"
        self.console = self.dir / "console.log"
        self.cgroup = _cgroup_base() / self.name
        self.process: subprocess.Popen[bytes] | None = None
        self.init_pid: int | None = None
        self.boot_seconds = 0.0

    # -- boot ------------------------------------------------------------------

    def boot(self, timeout: float = 120.0) -> None:
        start = time.monotonic()
        host_run(
            "copy the cached root for this boot",
            ["cp", "-a", "--reflink=auto", str(self.image.path), str(self.root)],
            timeout=300,
        )
        self.out.mkdir()
        self.cgroup.mkdir()
        procs = str(self.cgroup / "cgroup.procs")

        def enter_cgroup() -> None:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        argv = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--capability=all",
            "--private-network",
            f"--machine={self.name}",
            "--console=read-only",
            f"--bind-ro={REPO}:{INNER_REPO}",
            f"--bind={self.out}:{INNER_OUT}",
            "-D",
            str(self.root),
            "--boot",
        ]
        env = {"PATH": PATH, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_SECCOMP": "0"}
        with open(self.console, "wb") as console:
            try:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=enter_cgroup,  # pytest is single-threaded here
                )
            except FileNotFoundError:
                raise MachineError(
                    "boot (systemd-nspawn)", "systemd-nspawn is not installed: run scripts/setup"
                ) from None
        deadline = time.monotonic() + timeout
        while self.init_pid is None:
            if self.process.poll() is not None:
                raise MachineError(
                    "boot (systemd-nspawn)",
                    f"systemd-nspawn exited {self.process.returncode}:\n{self.console_tail()}",
                )
            if time.monotonic() > deadline:
                raise MachineError("boot (systemd-nspawn)", f"no PID 1 after {timeout:.0f}s")
            self.init_pid = _container_init(self.process.pid)
            time.sleep(0.1)
        while True:
            # Until systemd's bus is up, systemctl cannot even ask.
            state = self.run(
                ["systemctl", "is-system-running", "--wait"],
                check=False,
                timeout=max(10.0, deadline - time.monotonic()),
                step="boot (systemd inside)",
            )
            if state.stdout.strip() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if state.stdout.strip() != "running":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise MachineError(
                "boot (systemd inside)",
                f"system state {state.stdout.strip() or state.stderr.strip()!r}; "
                f"failed units: {failed.strip() or '(none)'}\n{self.console_tail()}",
            )
        self.boot_seconds = time.monotonic() - start

    def console_tail(self, lines: int = 30) -> str:
        try:
            return _tail(self.console.read_text(errors="replace"), lines)
        except OSError:
            return "(no console output)"

    # -- inside ----------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        check: bool = True,
        timeout: float = 120.0,
        input: str | None = None,
        step: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command inside (every namespace of its PID 1), with a clean
        environment: the host's variables never leak in."""
        assert self.init_pid is not None, "machine not booted"
        variables = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})}
        full = [
            "nsenter",
            "-t",
            str(self.init_pid),
            "-a",
            "env",
            "-i",
            "-C",
            cwd,
            *(f"{k}={v}" for k, v in variables.items()),
            *argv,
        ]
        what = step or f"inside: {shlex.join(argv)}"
        try:
            proc = subprocess.run(
                full,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={"PATH": PATH},
            )
        except subprocess.TimeoutExpired:
            raise MachineError(what, f"did not finish in {timeout:.0f}s") from None
        if check and proc.returncode != 0:
            raise MachineError(
                what, f"exited {proc.returncode}:\n{_tail(proc.stdout + proc.stderr)}"
            )
        return proc

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """A file inside the machine (through its root directory)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    # -- teardown ----------------------------------------------------------------

    def stop(self) -> list[str]:
        """Power off (SIGTERM to nspawn asks systemd to), else kill; remove the
        cgroups, the copy of the root and anything mounted under it. Returns
        what went wrong, after trying everything."""
        problems = []
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                problems.append("the machine did not power off within 60s: killed")
                self.process.kill()
                self.process.wait(timeout=30)
        # nspawn mirrors its cgroup into the v1 name=systemd hierarchy too.
        for tree in [self.cgroup, *Path("/sys/fs/cgroup").glob(f"*/{self.name}")]:
            try:
                _remove_cgroup_tree(tree)
            except MachineError as exc:
                problems.append(str(exc))
        for point in reversed(_mounts_under(self.dir)):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
            problems.append(f"{point} was still mounted")
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.dir.exists():
            problems.append(f"{self.dir} could not be removed")
        return problems


def install(machine: Machine) -> Deb:
    """The .deb built from this tree (once per content, tests/package/build.py),
    installed with apt-get (offline: its dependencies are in the root); the
    busybox test image (scripts/test-image, the host's recipe)."""
    try:
        deb = built_deb()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        raise MachineError("build the .deb from this tree (make deb)", str(exc)) from None
    deb_dir = machine.out / "deb"
    deb_dir.mkdir()
    shutil.copy2(deb.path, deb_dir / deb.path.name)
    machine.run(
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            f"{INNER_OUT}/deb/{deb.path.name}",
        ],
        env=APT_ENV,
        timeout=300,
        step="install the .deb inside (apt-get install)",
    )
    # The package enables and starts the daemon (Type=notify: started means
    # ready). The podman scenarios start daemons of their own, so the inner
    # runs begin with it stopped; inside/test_daemon_unit.py starts it.
    for check, wanted in (("is-enabled", "enabled"), ("is-active", "active")):
        said = machine.run(["systemctl", check, "wg-pod.service"], check=False).stdout.strip()
        if said != wanted:
            raise MachineError("the package's wg-pod.service", f"{check} says {said!r}")
    machine.run(["systemctl", "stop", "wg-pod.service"], step="stop wg-pod.service")
    machine.run(
        ["sh", f"{INNER_REPO}/scripts/test-image", TEST_IMAGE],
        timeout=120,
        step="import the busybox test image (scripts/test-image)",
    )
    return deb
