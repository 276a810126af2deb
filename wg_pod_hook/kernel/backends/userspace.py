"""The userspace backend: wireguard-go (or any implementation of the
cross-platform UAPI) started in the host namespace, configured over its
UAPI socket, so keys never reach argv, the environment or a file.

A rootless user's wireguard-go starts in the container's namespace, where
its TUN is born (the host's is not theirs; wireguard-go finds its TUN by
name in its own namespace, so it cannot serve one elsewhere).  It puts its
socket in ``/var/run/wireguard``, which is root's: it gets a mount
namespace of its own in which the user's state directory is ``/var/run``,
so its sockets are the state directory's ``wireguard/`` (and its inotify
watch on them, which a socket handed over by ``WG_UAPI_FD`` would still
need, finds them).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, SetupError
from ...model.config import NO_KEY, Endpoint, IPAddress, Key
from ...model.names import is_pool_name, is_temp_name
from ...namespaces import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, libc, made_in
from ...state.health import LivePeer
from ...state.records import ProcessId, TunnelRecord, process_start_time
from .. import cgroups
from . import DeviceSetup

if TYPE_CHECKING:
    from ...model.plan import Plan
    from ...runtime import Runtime

log = logging.getLogger(__name__)

START_DEADLINE = 10.0
UAPI_TIMEOUT = 5.0
TUN = "/dev/net/tun"
# wireguard-go's own output (its log goes to stdout; error lines only): the
# first OUTPUT_KEPT bytes are kept, in memory, and a start that fails quotes
# its last OUTPUT_LINES lines, at most OUTPUT_BYTES of them.
OUTPUT_KEPT = 16384
OUTPUT_LINES = 3
OUTPUT_BYTES = 500


def uapi_set(
    socket_file: Path, device: DeviceSetup, removed: Collection[str] | None = None
) -> None:
    """``device`` onto the interface of ``socket_file``: in place of all its
    peers, or (``removed``: the public keys, base64, of the peers to take
    away) as ``wg syncconf`` does, the peers that stay kept as they are."""
    lines = ["set=1", f"private_key={device.private_key.hex}"]
    if removed is None:
        lines.append("replace_peers=true")
    if device.listen_port is not None:
        lines.append(f"listen_port={device.listen_port}")
    if device.fwmark is not None:
        lines.append(f"fwmark={device.fwmark}")
    for public_key in removed or ():
        lines.extend([f"public_key={Key.from_base64(public_key).hex}", "remove=true"])
    for setup in device.peers:
        peer = setup.peer
        lines.append(f"public_key={peer.public_key.hex}")
        # All zero: none (a peer that had one loses it).
        lines.append(f"preshared_key={(peer.preshared_key or NO_KEY).hex}")
        if setup.endpoint is not None:
            lines.append(f"endpoint={Endpoint.of(*setup.endpoint)}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
        lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={network}" for network in peer.allowed_ips)
    request = ("\n".join(lines) + "\n\n").encode()
    reply = uapi_request(socket_file, request)
    if "errno=0" not in reply.splitlines():
        raise SetupError("configure WireGuard", socket_file.stem, f"UAPI refused: {reply.strip()}")


def set_endpoint(socket_file: Path, public_key: Key, endpoint: tuple[IPAddress, int]) -> None:
    """Point an existing peer at another endpoint."""
    at = Endpoint.of(*endpoint)
    request = f"set=1\npublic_key={public_key.hex}\nupdate_only=true\nendpoint={at}\n\n"
    reply = uapi_request(socket_file, request.encode())
    if "errno=0" not in reply.splitlines():
        raise SetupError("set endpoint", socket_file.stem, f"UAPI refused: {reply.strip()}")


def set_keepalives(socket_file: Path, keepalives: Mapping[Key, int]) -> None:
    """Give existing peers these persistent keepalives (0: none)."""
    lines = ["set=1"]
    for public_key, seconds in keepalives.items():
        lines += [f"public_key={public_key.hex}", "update_only=true"]
        lines.append(f"persistent_keepalive_interval={seconds}")
    reply = uapi_request(socket_file, ("\n".join(lines) + "\n\n").encode())
    if "errno=0" not in reply.splitlines():
        raise SetupError("set keepalive", socket_file.stem, f"UAPI refused: {reply.strip()}")


def read_peers(socket_file: Path) -> tuple[LivePeer, ...]:
    """Parse ``get=1``; the reply holds the private key, which is skipped."""
    reply = uapi_request(socket_file, b"get=1\n\n")
    peers: list[dict[str, Any]] = []
    for line in reply.splitlines():
        key, _, value = line.partition("=")
        if key == "public_key":
            peers.append(
                {
                    "public_key": base64.b64encode(bytes.fromhex(value)).decode(),
                    "allowed_ips": [],
                    "endpoint": None,
                    "latest_handshake": None,
                    "rx_bytes": 0,
                    "tx_bytes": 0,
                }
            )
        elif not peers:
            continue
        elif key == "endpoint":
            peers[-1]["endpoint"] = value
        elif key == "allowed_ip":
            peers[-1]["allowed_ips"].append(value)
        elif key == "last_handshake_time_sec":
            peers[-1]["latest_handshake"] = int(value) or None
        elif key in ("rx_bytes", "tx_bytes"):
            peers[-1][key] = int(value)
    return tuple(LivePeer(**{**peer, "allowed_ips": tuple(peer["allowed_ips"])}) for peer in peers)


def accepts_connections(path: Path) -> bool:
    """Whether the Unix socket at ``path`` (a UAPI socket) accepts
    connections.  Its file appears at bind(), a moment before listen(): a
    connection in between is refused, so the file alone does not mean ready."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def uapi_request(path: Path, request: bytes) -> str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(UAPI_TIMEOUT)
            sock.connect(str(path))
            sock.sendall(request)
            chunks: list[bytes] = []
            while not b"".join(chunks).endswith(b"\n\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise SetupError("talk to UAPI socket", str(path), exc.strerror or str(exc)) from None
    return b"".join(chunks).decode(errors="replace")


class UserspaceBackend:
    """Starts, recognises and stops wireguard-go: everything wg-pod knows of
    it lives in this module."""

    name = "userspace"

    def __init__(self, runtime: Runtime, plan: Plan | None = None) -> None:
        """``plan``: the setup's, for the command to start and the container
        whose cgroups wireguard-go joins (see cgroups.py)."""
        self.command = plan.userspace_command if plan is not None else ("wireguard-go",)
        self.home = cgroups.container_home(plan.pid) if plan is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.output: int | None = None  # its output until it is ready (_output_file)
        self.sockets = Path(runtime.wireguard_sockets)
        # A rootless user's: the directory its wireguard-go sees as /var/run.
        self.private_run = runtime.state_dir if runtime.rootless else None

    def socket_file(self, ifname: str) -> Path:
        return self.sockets / f"{ifname}.sock"

    def available(self) -> str:
        found = shutil.which(self.command[0])
        if found is None:
            raise BackendUnavailable(f"{self.command[0]} is not installed")
        try:  # opening it makes nothing (an interface takes TUNSETIFF)
            os.close(os.open(TUN, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            raise BackendUnavailable(f"{self.command[0]} needs {TUN}: {exc.strerror}") from None
        return found

    def create(self, ifname: str, netns_fd: int | None) -> ProcessId:
        """Start wireguard-go for ``ifname`` in the namespace ``netns_fd``
        (None: this one); returns at once with the process to record
        (``wait_ready`` waits for its socket)."""
        if shutil.which(self.command[0]) is None:
            raise BackendUnavailable(f"userspace backend: {self.command[0]} is not installed")
        # running_processes() recognises ours by this argv shape.
        argv = [*self.command, "-f", ifname]
        log.debug("start: %s", " ".join(argv))
        private_run = None
        if self.private_run is not None:
            self.sockets.mkdir(mode=0o700, exist_ok=True)
            private_run = partial(_private_run, libc(), self.private_run.encode())
        self.output = _output_file()
        try:
            # Its own process group (signals to the hook's group miss it) and
            # no inherited pipes: it must outlive the hook, and the runtime
            # waits for the hook's stdout/stderr to close.  Not its own
            # session: with scheduler autogroups that costs it CPU share.
            spawn = partial(_spawn, argv, private_run, self.output)
            process = made_in(netns_fd, spawn)  # born there
        except OSError as exc:
            self._forget_output()
            raise SetupError("start", argv[0], exc.strerror or str(exc)) from None
        except subprocess.SubprocessError:  # _private_run failed in the child
            self._forget_output()
            raise SetupError(
                "start", argv[0], f"cannot give it {self.private_run} as /var/run of its own"
            ) from None
        self.process = process
        self._account(process.pid)
        start = process_start_time(process.pid)
        # A child that has not been waited for stays a zombie, with a start time.
        assert start is not None or process.poll() is not None
        return ProcessId(process.pid, start or 0)

    def _account(self, pid: int) -> None:
        """Into the cgroups of the plan's container (see cgroups.py)."""
        if self.home is not None:
            for failure in cgroups.move_like(pid, self.home):
                log.warning("wireguard-go stays outside its container's cgroup: %s", failure)

    def wait_ready(self, ifname: str) -> None:
        """Until its UAPI socket listens; a start that fails says why in
        wireguard-go's own words (its output so far: nothing has been set
        over UAPI yet, so no key is in it)."""
        assert self.process is not None
        path = self.socket_file(ifname)
        deadline = time.monotonic() + START_DEADLINE
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    status = f"exited with status {self.process.returncode}"
                    raise SetupError("start", self.command[0], status + self._last_words())
                if accepts_connections(path):
                    return
                time.sleep(0.005)
            waited = f"no UAPI socket {path} after {START_DEADLINE:g}s"
            raise SetupError("start", self.command[0], waited + self._last_words())
        finally:
            # Never read again: what it writes once configured is not ours to show.
            self._forget_output()

    def _last_words(self) -> str:
        """``: `` and wireguard-go's last lines of output, in one line ("" when none)."""
        if self.output is None:
            return ""
        words = last_lines(os.pread(self.output, OUTPUT_KEPT, 0))
        return f": {words}" if words else ""

    def _forget_output(self) -> None:
        if self.output is not None:
            os.close(self.output)
            self.output = None

    def adopt(self, ifname: str, plan: Plan) -> bool:
        """Still running, listening, and started by the plan's command; then
        it joins the plan's container's cgroups, as ``create`` does."""
        if (
            self.process is None
            or self.process.poll() is not None
            or self.command != plan.userspace_command
            or not accepts_connections(self.socket_file(ifname))
        ):
            return False
        self.home = cgroups.container_home(plan.pid)
        self._account(self.process.pid)
        return True

    def configure(self, ifname: str, device: DeviceSetup, netns_fd: int | None) -> None:
        uapi_set(self.socket_file(ifname), device)

    def sync(self, record: TunnelRecord, device: DeviceSetup, netns_fd: int) -> None:
        socket_file = self.socket_file(str(record.temp_name))  # it keeps the birth name
        wanted = {setup.peer.public_key.base64 for setup in device.peers}
        live = [peer.public_key for peer in read_peers(socket_file)]
        uapi_set(socket_file, device, removed=[key for key in live if key not in wanted])

    def peers(self, record: TunnelRecord, netns_fd: int) -> tuple[LivePeer, ...]:
        return read_peers(self.socket_file(str(record.temp_name)))  # it keeps the birth name

    def set_endpoint(
        self, record: TunnelRecord, public_key: Key, endpoint: tuple[IPAddress, int]
    ) -> None:
        set_endpoint(self.socket_file(str(record.temp_name)), public_key, endpoint)

    def set_keepalives(self, record: TunnelRecord, keepalives: Mapping[Key, int]) -> None:
        set_keepalives(self.socket_file(str(record.temp_name)), keepalives)

    def stop(self, record: TunnelRecord) -> None:
        self._stop(record.process, record.temp_name)

    def left_behind(self, ifname: str) -> bool:
        return self.socket_file(ifname).exists()

    def clear(self, ifname: str) -> None:
        for process, name in running_processes().items():
            if name == ifname:
                self._stop(process, name)
        self.socket_file(ifname).unlink(missing_ok=True)

    def sweep(self, known: Collection[str]) -> list[str]:
        return [
            f"process {process.pid} ({name})"
            for process, name in running_processes().items()
            if is_temp_name(name) and name not in known and self._stop(process, name)
        ]

    def _stop(self, process: ProcessId | None, ifname: str | None) -> bool:
        """Stop a wireguard-go (if it is still that process) and remove its
        socket; False when there was no process to stop."""
        stopped = process is not None and stop_process(process.pid, process.start)
        if ifname is not None:
            self.socket_file(ifname).unlink(missing_ok=True)
        return stopped


BACKEND = UserspaceBackend


def _spawn(
    argv: list[str], preexec: Callable[[], None] | None, output: int | None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL if output is None else output,
        stderr=subprocess.DEVNULL if output is None else output,
        process_group=0,
        env={
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "WG_PROCESS_FOREGROUND": "1",
        },
        preexec_fn=preexec,
    )


def _output_file() -> int | None:
    """Where wireguard-go writes its output: a file in memory (no pipe: a
    write to a pipe the hook no longer reads would kill it), of OUTPUT_KEPT
    bytes that can never grow, so a tunnel that logs for weeks costs no
    more (its writes past the end fail, which its logger ignores).  Read
    only when it failed to start; None (its output is lost) where memfds
    cannot be had."""
    try:
        fd = os.memfd_create("wireguard-go-output", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):
        return None
    try:
        os.ftruncate(fd, OUTPUT_KEPT)
        seals = fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:
        os.close(fd)
        return None
    return fd


def last_lines(output: bytes) -> str:
    """wireguard-go's last lines of ``output`` (the rest of the file is
    zeros), without its ``LEVEL: (NAME) DATE TIME`` prefix, joined with
    "; " and at most OUTPUT_BYTES long, printable."""
    lines = [_bare(line) for line in output.rstrip(b"\0").decode(errors="replace").splitlines()]
    text = "; ".join([line for line in lines if line][-OUTPUT_LINES:])
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text.encode()[-OUTPUT_BYTES:].decode(errors="ignore")


def _bare(line: str) -> str:
    parts = line.strip().split(" ", 4)
    if (
        len(parts) == 5
        and parts[0].endswith(":")
        and parts[1].startswith("(")
        and parts[1].endswith(")")
        and parts[2].count("/") == 2
    ):
        return parts[4]
    return line.strip()


def _private_run(libc: Any, directory: bytes) -> None:
    """In the child, before wireguard-go runs: a mount namespace of its
    own, where ``directory`` is ``/var/run``.  Only libc calls here (the
    child of a fork): a failure raises, and the parent reports it."""
    if (
        libc.unshare(CLONE_NEWNS)
        or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None)
        or libc.mount(directory, b"/var/run", None, MS_BIND, None)
    ):
        raise OSError("mount namespace")


def stop_process(pid: int, start_time: int | None, timeout: float = 2.0) -> bool:
    """SIGTERM, then SIGKILL, the process ``pid`` only if it is still the one
    that started at ``start_time``; False when it was already gone."""
    if start_time is None or process_start_time(pid) != start_time:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_start_time(pid) != start_time:
            return True
        time.sleep(0.01)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise
    return True


def running_processes() -> dict[ProcessId, str]:
    """Every running process of this PID and user namespace started the way
    this backend starts one (``... -f <temporary or pool name>``), with
    that name.  Those of other PID namespaces (a machine or a
    container running its own wg-pod) are theirs, and so are those of
    other user namespaces (a rootless user's, root's): never ours to stop."""
    found = {}
    ours = [os.stat(f"/proc/self/ns/{kind}").st_ino for kind in ("pid", "user")]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            theirs = [os.stat(f"/proc/{entry}/ns/{kind}").st_ino for kind in ("pid", "user")]
            if theirs != ours:
                continue
        except OSError:
            continue
        args = argv.rstrip("\0").split("\0")
        start = process_start_time(int(entry))
        name = args[-1]
        named = is_temp_name(name) or is_pool_name(name)
        if len(args) > 2 and args[-2] == "-f" and named and start is not None:
            found[ProcessId(int(entry), start)] = name
    return found
