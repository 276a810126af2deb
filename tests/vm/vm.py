"""Runs a pytest selection inside a VM that boots Debian's kernel (which has WireGuard).

This machine's kernel has no WireGuard module, so the kernel backend can only
be exercised in a VM. The VM boots ``/boot/vmlinuz-<ver>`` from Debian's
``linux-image-amd64`` with a tiny initramfs (static busybox plus the virtio
and 9p modules) that mounts this machine's own root file system read-only
over 9p and puts tmpfs over everything that needs writes (``/tmp``,
``/run``, ``/var/tmp``). A second, writable 9p share carries the
job description in and the results (pytest's log, junit XML, a result JSON)
out. The guest side is :mod:`tests.vm.guest`, run as PID 1 with the
project's venv python from the share, so the VM runs exactly the code and
the tools of this checkout and this machine.

KVM is tried first when ``/dev/kvm`` opens; on machines where it is present
but broken (the guest hangs before the kernel prints anything) the boot is
abandoned after a few seconds and repeated under TCG. ``WG_POD_VM_ACCEL``
(``kvm`` or ``tcg``) forces one.

Run by hand: ``sudo .venv/bin/python -m tests.vm.vm [PYTEST ARGS]``.
"""

from __future__ import annotations

import compileall
import json
import logging
import lzma
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("wgpt.vm")

REPO = Path(__file__).resolve().parent.parent.parent
VENV_PYTHON = Path(os.environ.get("WG_POD_VENV", REPO / ".venv")) / "bin" / "python"
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")

ROOT_TAG = "hostroot"
OUT_TAG = "wgptout"
GUEST_OUT = "/run/wgpt-vm"  # where the writable share is mounted inside the VM

# Loaded by the initramfs before the root file system exists (insmod, in
# dependency order): the virtio PCI transport, 9p, and ext4 on virtio-blk for
# the image of the Python trees.
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "virtio_blk", "crc32c_generic", "ext4")
# Loaded inside the VM with the shared tree's modprobe: what the hook and the
# lab use (WireGuard, wireguard-go's TUN, veth, the nftables the hook renders).
GUEST_MODULES = (
    "wireguard",
    "tun",
    "veth",
    "nf_tables",
    "nf_conntrack",
    "nf_nat",
    "nft_chain_nat",
    "nft_nat",
    "nft_redir",
    "nft_ct",
)
# Writable tmpfs mounts over the read-only root share. Not /root: the venv's
# interpreter may live there (pyenv); HOME is a directory under /tmp instead.
TMPFS_DIRS = ("tmp", "run", "var/tmp")

# Python imports are most of the VM's work (every hook run imports pyroute2),
# and each file access over 9p is a round trip to qemu. So the interpreter's
# standard library and the venv's site-packages also go in a read-only ext4
# image on a virtio disk, mounted over the same paths: same files, read from
# the guest's page cache. Top-level entries the tests never import are left
# out (the image is built on every run).
IMAGE_SKIP = frozenset(
    {
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "pydoc_data",
        "site-packages",
        "mypy",
        "mypyc",
        "pip",
        "ruff",
        "setuptools",
    }
)
IMAGE_SKIP_PREFIXES = ("config-3", "mypy-", "pip-", "ruff-", "setuptools-")
# The checkout's own packages have no bytecode (the root share is read-only
# in the guest, and the host runs without writing any), so every hook,
# wg-pod and pytest process in the VM compiled them from source again:
# seconds a process under TCG. Their copies in the image are compiled on
# the host, with the checkout's paths in the code objects.
PROJECT_TREES = ("wg_pod_hook", "tests")

KVM_PROBE_SECONDS = 8.0  # a working KVM prints the kernel banner in well under 1 s
MEMORY_MB = 2048
CPUS = int(os.environ.get("WG_POD_VM_CPUS", "2"))


class VMError(RuntimeError):
    """The VM could not be built, booted or did not report back; the message says why."""


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path

    @property
    def modules(self) -> Path:
        return Path("/lib/modules") / self.version


def find_kernel() -> Kernel:
    """The newest ``/boot/vmlinuz-*`` whose module tree has ``wireguard``.

    The running kernel is a custom one without modules under /boot; the VM's
    comes from Debian's ``linux-image-amd64`` (scripts/setup installs it).
    """
    candidates = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        kernel = Kernel(version, image)
        if "wireguard" in module_paths(kernel):
            candidates.append(kernel)
    if not candidates:
        raise VMError(
            "no /boot/vmlinuz-* with a wireguard module under /lib/modules: "
            "run scripts/setup (installs linux-image-amd64)"
        )

    def key(k: Kernel) -> list[int | str]:
        return [int(p) if p.isdigit() else p for p in k.version.replace("-", ".").split(".")]

    return max(candidates, key=key)


def _module_name(path: str) -> str:
    name = Path(path).name.split(".ko")[0]
    return name.replace("-", "_")


def module_paths(kernel: Kernel) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Module name -> (file, names of its dependencies), from ``modules.dep``."""
    dep = kernel.modules / "modules.dep"
    if not dep.exists():
        return {}
    result = {}
    for line in dep.read_text().splitlines():
        target, _, deps = line.partition(":")
        result[_module_name(target)] = (
            kernel.modules / target,
            tuple(_module_name(d) for d in deps.split()),
        )
    return result


def load_order(kernel: Kernel, names: Iterable[str]) -> list[Path]:
    """Module files for ``names`` and their dependencies, dependencies first."""
    table = module_paths(kernel)
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in table:
            raise VMError(f"module {name} not found in {kernel.modules}/modules.dep")
        path, deps = table[name]
        for dep in deps:
            visit(dep)
        order.append(path)

    for name in names:
        visit(name.replace("-", "_"))
    return order


class Cpio:
    """A ``newc`` cpio archive built in memory (what the kernel unpacks as initramfs)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._ino += 1
        self._data += b"070701" + b"".join(b"%08x" % f for f in fields) + encoded
        self._data += b"\0" * (-len(self._data) % 4)
        self._data += data
        self._data += b"\0" * (-len(self._data) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self._data)


def _module_bytes(path: Path) -> bytes:
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    raise VMError(f"cannot unpack module {path} (only .ko and .ko.xz are handled)")


def python_trees() -> list[Path]:
    """The venv interpreter's standard library and site-packages directories."""
    out = subprocess.run(
        [
            str(VENV_PYTHON),
            "-c",
            "import sysconfig; p = sysconfig.get_paths(); print(p['stdlib']); print(p['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return [Path(p) for p in dict.fromkeys(out)]


def _skip_in_image(directory: str, names: list[str]) -> set[str]:
    return {
        n
        for n in names
        if n in IMAGE_SKIP
        or n.startswith(IMAGE_SKIP_PREFIXES)
        or (n.endswith(".so") and "mypyc" in n)
    }


def project_trees() -> list[Path]:
    """The checkout's Python packages, to be compiled into the image."""
    return [REPO / name for name in PROJECT_TREES]


def build_python_image(trees: Sequence[Path], dest: Path, compiled: Sequence[Path] = ()) -> Path:
    """An ext4 image with ``trees`` as top-level directories ``0``, ``1``, ....

    The trees in ``compiled`` are copied without their ``__pycache__`` and
    compiled afresh (their sources keep their times, so the bytecode is
    valid for them)."""
    staging = dest.parent / "python-image"
    for i, tree in enumerate(trees):
        if tree in compiled:
            shutil.copytree(
                tree, staging / str(i), symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
            if not compileall.compile_dir(staging / str(i), ddir=str(tree), quiet=1):
                raise VMError(f"compiling {tree} for the VM's image failed")
            continue
        shutil.copytree(
            tree,
            staging / str(i),
            symlinks=True,
            ignore=lambda d, names, top=str(tree): _skip_in_image(d, names) if d == top else set(),
        )
    files = sum(len(f) + len(d) for _, d, f in os.walk(staging))
    size = sum(
        os.lstat(os.path.join(root, f)).st_size for root, _, fs in os.walk(staging) for f in fs
    )
    blocks = (size * 13 // 10 + files * 4096 + (64 << 20)) // 4096
    subprocess.run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-N",
            str(files + 1024),
            "-O",
            "^has_journal,^metadata_csum",
            "-d",
            str(staging),
            str(dest),
            str(blocks),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    shutil.rmtree(staging)
    return dest


def kept_paths() -> list[Path]:
    """The repository and the venv, where a tmpfs would hide them."""
    venv = VENV_PYTHON.parent.parent
    paths = [REPO] + ([venv] if not venv.is_relative_to(REPO) else [])
    return [path for path in paths if any(path.is_relative_to(Path("/") / d) for d in TMPFS_DIRS)]


def init_script(
    modules: Sequence[str], guest_argv: Sequence[str], python_trees: Sequence[Path] = ()
) -> str:
    """The initramfs's /init: 9p root, tmpfs for writes, then PID 1 = guest.py."""
    lines = [
        "#!/bin/busybox sh",
        "B=/bin/busybox",
        'say() { $B echo "wgpt-vm: $*"; }',
        'fail() { say "FAILED: $*"; $B sync; $B reboot -f; $B sleep 60; }',
        "$B mkdir -p /proc /sys /dev /newroot",
        "$B mount -t proc proc /proc",
        "$B mount -t sysfs sysfs /sys",
        "$B mount -t devtmpfs devtmpfs /dev",
        "say initramfs running",
    ]
    for module in modules:
        lines.append(f'$B insmod /modules/{module} || fail "insmod {module}"')
    opts = "trans=virtio,version=9p2000.L,msize=512000"
    lines += [
        f"$B mount -t 9p -o {opts},ro,cache=loose {ROOT_TAG} /newroot"
        ' || fail "mount the host root over 9p"',
    ]
    # The repository and the venv may live under a directory that gets a
    # tmpfs (CI clones into a temporary directory): set them aside, then put
    # them back on top of the tmpfs.
    kept = kept_paths()
    for i, path in enumerate(kept):
        lines += [
            f"$B mkdir -p /kept/{i}",
            f'$B mount --bind /newroot{path} /kept/{i} || fail "keep {path}"',
        ]
    for d in TMPFS_DIRS:
        lines.append(f'$B mount -t tmpfs -o mode=0755 tmpfs /newroot/{d} || fail "tmpfs on /{d}"')
    for i, path in enumerate(kept):
        lines += [
            f"$B mkdir -p /newroot{path}",
            f'$B mount --move /kept/{i} /newroot{path} || fail "put back {path}"',
        ]
    if python_trees:
        lines += [
            "for i in $($B seq 100); do [ -b /dev/vda ] && break; $B sleep 0.1; done",
            "$B mkdir -p /newroot/run/wgpt-python",
            "$B mount -t ext4 -o ro /dev/vda /newroot/run/wgpt-python"
            ' || fail "mount the Python image"',
        ]
    for i, tree in enumerate(python_trees):
        lines.append(
            f"$B mount --bind /newroot/run/wgpt-python/{i} /newroot{tree}"
            f' || fail "bind the Python image over {tree}"'
        )
    lines += [
        "$B chmod 1777 /newroot/tmp /newroot/var/tmp",
        f"$B mkdir -p /newroot{GUEST_OUT}",
        f'$B mount -t 9p -o {opts} {OUT_TAG} /newroot{GUEST_OUT} || fail "mount the output share"',
        "$B mount --move /proc /newroot/proc",
        "$B mount --move /sys /newroot/sys",
        "$B mount --move /dev /newroot/dev",
        "say switching to the host root",
        "exec $B switch_root /newroot " + shlex.join(guest_argv),
    ]
    return "\n".join(lines) + "\n"


def build_initramfs(
    kernel: Kernel, guest_argv: Sequence[str], dest: Path, python_trees: Sequence[Path] = ()
) -> Path:
    if not BUSYBOX.exists():
        raise VMError(f"{BUSYBOX} missing: run scripts/setup (installs busybox-static)")
    archive = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        archive.dir(d)
    archive.chardev("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    names = []
    for path in load_order(kernel, INITRAMFS_MODULES):
        name = _module_name(str(path)) + ".ko"
        archive.file(f"modules/{name}", _module_bytes(path))
        names.append(name)
    archive.file("init", init_script(names, guest_argv, python_trees).encode(), 0o755)
    dest.write_bytes(archive.finish())
    return dest


@dataclass
class VMRun:
    """What one VM run produced; ``out`` is the host side of the writable share."""

    out: Path
    accel: str = ""
    kernel: str = ""
    boot_attempts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    qemu_returncode: int | None = None

    @property
    def console(self) -> str:
        path = self.out / "console.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def pytest_log(self) -> str:
        path = self.out / "pytest.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def junit(self) -> Path:
        return self.out / "junit.xml"

    @property
    def result(self) -> dict[str, Any]:
        path = self.out / "result.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def console_tail(self, lines: int = 30) -> str:
        return "\n".join(self.console.splitlines()[-lines:])


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def qemu_argv(
    kernel: Kernel, initramfs: Path, out: Path, accel: str, image: Path | None = None
) -> list[str]:
    cpu = "host" if accel == "kvm" else os.environ.get("WG_POD_VM_CPU", "max")
    disk = ["-drive", f"file={image},format=raw,if=virtio,readonly=on"] if image else []
    return [
        QEMU,
        *disk,
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-smp",
        str(CPUS),
        "-m",
        str(MEMORY_MB),
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        f"file:{out / 'console.log'}",
        "-kernel",
        str(kernel.image),
        "-initrd",
        str(initramfs),
        "-append",
        "console=ttyS0 panic=-1 oops=panic",
        "-virtfs",
        f"local,path=/,mount_tag={ROOT_TAG},security_model=passthrough,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={out},mount_tag={OUT_TAG},security_model=passthrough,multidevs=remap",
    ]


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Stop qemu (by its pid, which we own); already exited is fine."""
    if proc.poll() is not None:
        return
    proc.kill()
    proc.wait(timeout=10)


def _boot(run: VMRun, argv: list[str], *, timeout: float, probe: float | None) -> bool:
    """Run qemu to completion (the guest reboots = qemu exits).

    With ``probe``, give up (return False) when the kernel has printed
    nothing after that many seconds: KVM that is present but broken.
    """
    console = run.out / "console.log"
    console.unlink(missing_ok=True)
    log.info("vm: %s", shlex.join(argv))
    with (run.out / "qemu.log").open("ab") as qlog:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog)
    try:
        start = time.monotonic()
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            if probe is not None and elapsed > probe:
                if "Linux version" not in run.console:
                    log.info("vm: no kernel output after %.0fs, abandoning this boot", elapsed)
                    return False
                probe = None
            if elapsed > timeout:
                raise VMError(
                    f"the VM did not finish within {timeout:.0f}s; console tail:\n"
                    + run.console_tail()
                )
            time.sleep(0.2)
        if probe is not None and "Linux version" not in run.console:
            # KVM that is present but makes qemu abort at once ("failed to
            # set MSR 0x10a"): as broken as KVM that prints nothing.
            log.info("vm: qemu exited %s before any kernel output", proc.returncode)
            return False
        run.qemu_returncode = proc.returncode
        return True
    finally:
        _kill(proc)


def run_pytest_in_vm(
    pytest_args: Sequence[str],
    *,
    out: Path | None = None,
    timeout: float = 540.0,
    accel: str | None = None,
    test_timeout: float | None = None,
) -> VMRun:
    """Boot the VM, run ``python -m pytest PYTEST_ARGS`` in the repo there, return the run.

    Raises VMError when qemu is missing, the VM does not boot, or the guest
    reports no result (modules that do not load, pytest that cannot start);
    pytest's own failures are in the result, not raised.
    """
    if shutil.which(QEMU) is None:
        raise VMError(f"{QEMU} is not installed: run scripts/setup (installs qemu-system-x86)")
    if not VENV_PYTHON.exists():
        raise VMError(f"{VENV_PYTHON} missing: run scripts/setup")
    kernel = find_kernel()
    out = out or Path(tempfile.mkdtemp(prefix="wgpt-vm-"))
    run = VMRun(out=out, kernel=kernel.version)
    job = {
        "repo": str(REPO),
        "modules": list(GUEST_MODULES),
        "pytest_args": list(pytest_args),
        "timeout": test_timeout if test_timeout is not None else max(timeout - 60, 30),
        "out": GUEST_OUT,
    }
    (out / "job.json").write_text(json.dumps(job, indent=2))
    guest_argv = [str(VENV_PYTHON), "-B", str(REPO / "tests" / "vm" / "guest.py"), GUEST_OUT]
    with tempfile.TemporaryDirectory(prefix="wgpt-vm-initramfs-") as tmp:
        compiled = project_trees()
        trees = [] if os.environ.get("WG_POD_VM_IMAGE") == "0" else python_trees() + compiled
        image = build_python_image(trees, Path(tmp) / "python.ext4", compiled) if trees else None
        initramfs = build_initramfs(kernel, guest_argv, Path(tmp) / "initramfs.cpio", trees)
        forced = accel or os.environ.get("WG_POD_VM_ACCEL")
        attempts = [forced] if forced else (["kvm", "tcg"] if kvm_usable() else ["tcg"])
        start = time.monotonic()
        for i, attempt in enumerate(attempts):
            run.boot_attempts.append(attempt)
            probe = KVM_PROBE_SECONDS if attempt == "kvm" and i + 1 < len(attempts) else None
            remaining = timeout - (time.monotonic() - start)
            argv = qemu_argv(kernel, initramfs, out, attempt, image)
            if _boot(run, argv, timeout=remaining, probe=probe):
                run.accel = attempt
                break
        run.seconds = time.monotonic() - start
    if not run.result:
        error = out / "guest-error.txt"
        detail = error.read_text().strip() if error.exists() else ""
        raise VMError(
            f"the VM ({kernel.version}, {run.accel or '/'.join(run.boot_attempts)}) "
            f"reported no result{': ' + detail if detail else ''}; console tail:\n"
            + run.console_tail()
        )
    return run


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if os.geteuid() != 0:
        print("tests/vm: must run as root", file=sys.stderr)
        return 1
    args = list(argv) or ["tests/integration", "-p", "no:cacheprovider", "-q", "-rs"]
    try:
        run = run_pytest_in_vm(args)
    except VMError as exc:
        print(f"tests/vm: {exc}", file=sys.stderr)
        return 1
    print(run.pytest_log)
    print(
        f"tests/vm: kernel {run.kernel}, accel {run.accel}, {run.seconds:.1f}s, "
        f"result {run.result}, output in {run.out}"
    )
    return int(run.result.get("pytest_exit", 1))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
