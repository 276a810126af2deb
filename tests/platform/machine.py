"""A Debian 13 machine for the platform tier: podman 5.4, crun, netavark,
quadlet and journald under a real systemd, booted with systemd-nspawn.

The root is built once per package list with mmdebstrap and kept in
``CACHE`` (``/var/cache/wg-pod-platform/<key>/root``, the key a hash of the
package list, the suite, the inner pytest's version and ``RECIPE``; a new
key removes the old roots). Each boot runs on a copy of it, so the cache is
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
import fcntl
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab import REPO, children

SUITE = "trixie"
# Bump when the build steps below change: the cached root is rebuilt.
RECIPE = 1
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

IMAGE_SCRIPT = f"""set -e
d=$(mktemp -d)
for sub in bin etc tmp var/tmp www root proc sys dev run; do mkdir -p "$d/$sub"; done
chmod 1777 "$d/tmp" "$d/var/tmp"
cp /bin/busybox "$d/bin/busybox"
for applet in $("$d/bin/busybox" --list-full); do
    mkdir -p "$d/$(dirname "$applet")"
    [ -e "$d/$applet" ] || ln -s /bin/busybox "$d/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\\n' \\
    > "$d/etc/passwd"
printf 'root:x:0:\\nnogroup:x:65534:\\n' > "$d/etc/group"
tar -C "$d" -c . | podman import --quiet --change 'CMD ["/bin/sh"]' - {TEST_IMAGE} >/dev/null
rm -rf "$d"
"""


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


def cache_key() -> str:
    spec = {
        "suite": SUITE,
        "packages": sorted(PACKAGES),
        "pytest": inner_pytest_version(),
        "recipe": RECIPE,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Root:
    path: Path
    key: str
    built: bool  # False: taken from the cache
    seconds: float
    versions: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    CACHE.mkdir(mode=0o755, parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def root() -> Root:
    """The cached Debian 13 root for the current package list, built when missing."""
    key = cache_key()
    start = time.monotonic()
    with _cache_lock():
        final = CACHE / key
        if not (final / "ready.json").is_file():
            for old in CACHE.iterdir():
                if old.is_dir() and old.name != key:
                    shutil.rmtree(old, ignore_errors=True)  # an older package list, or a crash
            _build(final)
            built = True
        else:
            built = False
        versions = json.loads((final / "ready.json").read_text())
    return Root(final / "root", key, built, time.monotonic() - start, versions)


def _build(final: Path) -> None:
    work = CACHE / f".build-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        target = work / "root"
        argv = ["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES), SUITE]
        # A second try for a download that broke off; a real error repeats.
        for attempt in (1, 2):
            try:
                host_run("build the Debian 13 root (mmdebstrap)", [*argv, str(target)], timeout=900)
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


def install(machine: Machine) -> None:
    """The .deb built from this tree, installed with apt-get (offline: its
    dependencies are in the root); the busybox test image."""
    deb_dir = machine.out / "deb"
    host_run(
        "build the .deb from this tree (make deb)",
        ["make", "-C", str(REPO), "deb", f"DEBDIR={deb_dir}"],
        timeout=300,
    )
    (deb,) = deb_dir.glob("wg-pod_*_all.deb")
    machine.run(
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            f"{INNER_OUT}/deb/{deb.name}",
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
    machine.run(["sh", "-c", IMAGE_SCRIPT], timeout=120, step="import the busybox test image")
