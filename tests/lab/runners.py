"""The programs the tests drive: podman, the hook, the daemon, pytest inside.

:class:`Podman` runs podman with the test configuration (or, with
``SYSTEM_PODMAN``, the machine's own), and :data:`RETRYING_WGET` is the
fetch the containers run; :class:`HookRunner` runs ``wg-pod-hook`` the way
an OCI runtime does, against a stand-in; :class:`Daemon` runs
``wg-pod daemon`` as systemd would; :func:`collect_inner_ids` lists the
tests a tier runs inside a VM or a machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.lab.base import (
    PREFIX,
    REPO,
    SYSTEM_PODMAN,
    LabError,
    run,
    the_runtime,
    token,
    wait_for,
)
from tests.lab.namespaces import Lab
from tests.lab.standin import ContainerStandIn


def _containers_conf() -> Path:
    """The test-only podman configuration: containers.conf for Debian 12's
    podman 4.3 (CNI), containers-podman5.conf on a Debian 13 host (podman 5
    has no CNI). scripts/setup and scripts/test choose the same way."""
    try:
        major = Path("/etc/debian_version").read_text().split(".")[0].strip()
    except OSError:
        major = ""
    name = "containers-podman5.conf" if major == "13" else "containers.conf"
    return REPO / "tests" / "system" / name


CONTAINERS_CONF = _containers_conf()
TEST_IMAGE = "localhost/wg-pod-test"
# busybox wget has no retry; the first attempt may race the handshake. A
# subshell: its status is the fetch's, and a script goes on after it.
RETRYING_WGET = (
    "(for i in 1 2 3 4 5; do timeout 5 wget -qO- {url} && exit 0; sleep 1; done; exit 1)"
)


class Podman:
    """podman with the test containers.conf (and optionally a hooks dir), or
    with ``SYSTEM_PODMAN`` the machine's own configuration.

    Containers started through :meth:`run` get a ``wgpt-...`` name and are
    removed (``podman rm -f``) when the lab closes.
    """

    def __init__(self, lab: Lab, hooks_dir: str | os.PathLike[str] | None = None) -> None:
        """``hooks_dir`` goes into a containers.conf of this instance rather
        than ``--hooks-dir``: podman's cleanup and restart-policy processes,
        started by conmon, do not get the flag but do read CONTAINERS_CONF
        (with ``SYSTEM_PODMAN``: CONTAINERS_CONF_OVERRIDE, on top of the
        machine's own files)."""
        self.lab = lab
        self.hooks_dir = hooks_dir
        self._runtime: str | None = None
        if SYSTEM_PODMAN:
            self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_CONF")}
            if hooks_dir is not None:
                override = lab.tmp / f"containers-{token()}.conf"
                override.write_text(f"[engine]\nhooks_dir = [{json.dumps(str(hooks_dir))}]\n")
                self.env["CONTAINERS_CONF_OVERRIDE"] = str(override)
            return
        conf = CONTAINERS_CONF
        if hooks_dir is not None:
            conf = lab.tmp / f"containers-{token()}.conf"
            text = CONTAINERS_CONF.read_text()
            assert "\n[engine]\n" in text
            conf.write_text(
                text.replace(
                    "\n[engine]\n", f"\n[engine]\nhooks_dir = [{json.dumps(str(hooks_dir))}]\n"
                )
            )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    @property
    def runtime(self) -> str:
        """The OCI runtime podman uses here (``runc``, ``crun``)."""
        if self._runtime is None:
            self._runtime = self("info", "--format", "{{.Host.OCIRuntime.Name}}").stdout.strip()
        return self._runtime

    @property
    def version(self) -> tuple[int, ...]:
        """podman's version, e.g. (4, 3, 1)."""
        text = self("version", "--format", "{{.Client.Version}}").stdout.strip()
        return tuple(int(part) for part in text.split("-")[0].split(".") if part.isdigit())

    def hook_error(self, name: str, done: subprocess.CompletedProcess[str]) -> str:
        """What a user learns of why the hook stopped container ``name``:
        podman's stderr, where runc passes the hook's line on; with crun,
        which throws it away, the failure the hook kept for ``wg-pod status``
        (in the hook's own stderr format)."""
        if self.runtime != "crun":
            return done.stderr
        from wg_pod_hook.state.failures import recent

        return "\n".join(
            f"wg-pod: container {f.container_id[:12]}: {f.message}"
            for f in recent(the_runtime())
            if f.name == name
        )

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], check=check, timeout=timeout, env=self.env)

    def run(
        self,
        *args: str,
        annotations: Mapping[str, str] | None = None,
        image: str = TEST_IMAGE,
        rm: bool = True,
        detach: bool = False,
        check: bool = True,
        timeout: float = 120.0,
        options: Sequence[str] = (),
    ) -> tuple[str, subprocess.CompletedProcess[str]]:
        """``podman run [--rm|-d] --name wgpt-... [--annotation K=V]... IMAGE ARGS``.

        Returns the container name and the completed process.
        """
        name = f"{PREFIX}-{token()}"
        argv = ["run", "--name", name]
        if detach:
            argv.append("-d")
        elif rm:
            argv.append("--rm")
        for key, value in (annotations or {}).items():
            argv += ["--annotation", f"{key}={value}"]
        argv += options
        self.lab.defer(f"podman rm -f {name}", lambda: self.remove(name))
        return name, self(*argv, image, *args, check=check, timeout=timeout)

    def remove(self, name: str) -> None:
        """``podman rm -f``, again while the container is still there: a
        removal that races a restart policy's restart can fail (podman 4.3)."""
        for _ in range(5):
            self("rm", "-f", "--time", "0", name, check=False, timeout=60)
            if self("container", "exists", name, check=False).returncode == 1:
                return
            time.sleep(1)

    def image_exists(self, image: str = TEST_IMAGE) -> bool:
        return self("image", "exists", image, check=False).returncode == 0


HOOK_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def with_resolv_conf(path: Path) -> list[str]:
    """An argv prefix that runs a command in a mount namespace of its own
    whose /etc/resolv.conf is ``path``: a resolver of the test's, and
    nothing of the host's edited (mounts made later still propagate in)."""
    script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, "sh", str(path)]


def venv_command(name: str, module: str) -> list[str]:
    """The console script ``name`` next to the running interpreter (the venv's), else -m;
    with ``SYSTEM_PODMAN``, the installed command."""
    installed = shutil.which(name) if SYSTEM_PODMAN else None
    if installed:
        return [installed]
    exe = Path(sys.executable).parent / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


class HookRunner:
    """Runs ``wg-pod-hook STAGE`` the way the runtime does, against a stand-in.

    The environment is only what the hooks.d definition sets (PATH,
    WG_POD_SETTINGS and the suite's WG_POD_STATE_DIR); the OCI state goes to
    stdin. Every stand-in that got a
    ``createRuntime`` gets a ``poststop`` when the lab closes (before the
    stand-in's namespace goes), unless the test already ran it.
    """

    def __init__(
        self,
        lab: Lab,
        settings: str | os.PathLike[str],
        *,
        remake: Callable[..., Path] | None = None,
        prefix: Sequence[str] = (),
        command: Sequence[str] | None = None,
    ) -> None:
        """``remake(**extra)`` writes settings like ``settings`` with ``extra``
        keys on top (see :meth:`with_settings`); ``prefix`` goes before the
        hook's argv (e.g. :func:`with_resolv_conf`); ``command`` is the hook
        (default: this tree's, from the test virtualenv)."""
        self.lab = lab
        self.settings = settings
        self.remake = remake
        self.prefix = tuple(prefix)
        self.command = tuple(command or venv_command("wg-pod-hook", "wg_pod_hook.hook"))
        self._up: dict[str, tuple[ContainerStandIn, dict[str, str]]] = {}

    def with_settings(self, **extra: object) -> HookRunner:
        """A runner like this one (same backend) with more settings, e.g.
        ``fault_injection_kill_after``, ``log_level`` or ``userspace_command``."""
        assert self.remake is not None, "this runner was made without a settings factory"
        return HookRunner(
            self.lab,
            self.remake(**extra),
            remake=self.remake,
            prefix=self.prefix,
            command=self.command,
        )

    def with_prefix(self, prefix: Sequence[str]) -> HookRunner:
        return HookRunner(
            self.lab, self.settings, remake=self.remake, prefix=prefix, command=self.command
        )

    @property
    def env(self) -> dict[str, str]:
        path = HOOK_PATH_ENV.partition("=")[2]
        from wg_pod_hook import runtime

        env = {"PATH": path, "WG_POD_SETTINGS": str(self.settings)}
        state = the_runtime()
        if not state.is_default:
            env[runtime.STATE_DIR_ENV] = state.state_dir
        return env

    def __call__(
        self,
        stage: str,
        standin: ContainerStandIn,
        annotations: Mapping[str, str],
        *,
        check: bool = False,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        bundle: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``env`` adds to (or replaces part of) the hook's environment;
        ``bundle`` replaces the stand-in's own bundle in the state."""
        status = "creating" if stage == "createRuntime" else "stopped"
        state = standin.oci_state(annotations, bundle, status=status)
        if stage == "createRuntime" and standin.id not in self._up:
            self._up[standin.id] = (standin, dict(annotations))
            self.lab.defer(f"poststop {standin.name}", lambda: self._final_down(standin.id))
        elif stage == "poststop":
            self._up.pop(standin.id, None)
        return run(
            [*self.prefix, *self.command, stage],
            input=state,
            check=check,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )

    def up(
        self,
        standin: ContainerStandIn,
        annotations: Mapping[str, str],
        *,
        ok: bool = True,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """createRuntime; asserts that it succeeded, silently, unless ``ok=False``
        (then the caller looks at the result)."""
        done = self("createRuntime", standin, annotations, **kw)
        if ok:
            assert done.returncode == 0, f"createRuntime exited {done.returncode}: {done.stderr}"
            assert done.stderr == "", done.stderr
        return done

    def down(
        self,
        standin: ContainerStandIn,
        annotations: Mapping[str, str],
        *,
        ok: bool = True,
        **kw: Any,
    ) -> subprocess.CompletedProcess[str]:
        """poststop; asserts exit status 0 (poststop never fails) unless ``ok=False``."""
        done = self("poststop", standin, annotations, **kw)
        if ok:
            assert done.returncode == 0, f"poststop exited {done.returncode}: {done.stderr}"
        return done

    def _final_down(self, container_id: str) -> None:
        entry = self._up.pop(container_id, None)
        if entry is not None:
            standin, annotations = entry
            standin.stop()
            self("poststop", standin, annotations, check=True)


class Daemon:
    """``wg-pod daemon`` in the foreground, as systemd would run it."""

    def __init__(
        self, lab: Lab, settings: str | os.PathLike[str], prefix: Sequence[str] = ()
    ) -> None:
        from tests.lab.base import daemon_lock_holders

        self.socket = Path(the_runtime().daemon_socket)
        self.log = lab.logfile(f"daemon-{time.monotonic_ns()}.log")
        self.path = Path(self.log.name)
        # A socket left by a killed daemon is no sign of this one: removed,
        # unless a daemon runs (holds the lock), whose socket it is.
        holders = daemon_lock_holders()
        if not holders:
            self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [*prefix, *venv_command("wg-pod", "wg_pod_hook.cli"), "--debug", "daemon"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WG_POD_SETTINGS": str(settings)},
        )
        lab.defer(f"stop daemon {self.process.pid}", self.stop)
        if holders:  # the socket is the running one's: this one is to refuse
            what = f"this daemon to refuse beside the one running (PID {holders[0]})"
            wait_for(lambda: self.process.poll() is not None, timeout=15, what=what)
        wait_for(self._listening, timeout=15, what="the daemon's socket")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            code = self.process.returncode
            raise LabError(f"wg-pod daemon exited {code}: {self.path.read_text()}")
        return self.socket.exists()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LabError(f"no VmRSS for {pid}")


def collect_inner_ids(args: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The ids of ``pytest --collect-only -q ARGS`` in this tree, for a tier
    that runs those tests inside (a VM, a machine): collected here on the
    host, ``env`` added to the environment. A failed collection is one id,
    ``collection-failed: <the output's tail>``, so the outer test says why."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {}), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    if proc.returncode != 0 or not ids:
        return [f"collection-failed: {(proc.stdout + proc.stderr).strip()[-2000:]}"]
    return ids
