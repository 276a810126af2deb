"""What the hook sees of a container: a stand-in for one, and its config files.

:class:`ContainerStandIn` is a namespace with a process, a veth to the host
and a bundle laid out the way podman lays it out; :class:`ConfigDir`,
:func:`make_config_dir` and :func:`write_settings` make the WireGuard
configs and wg-pod settings the hook reads.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.lab.base import SYSTEM_CONFIG_ROOT, SYSTEM_PODMAN, stop_process, wait_for

if TYPE_CHECKING:  # annotations only: namespaces imports this module (Lab makes stand-ins)
    from tests.lab.namespaces import Lab


class ContainerStandIn:
    """A namespace that looks to the hook like a container podman just created.

    A ``sleep`` process lives in it (``pid``, ``netns_path``), ``eth0`` is a
    veth to the host with ``underlay.inner_v4``/``inner_v6`` and IPv4 + IPv6
    default routes via the host side (like podman's bridge), and ``bundle``
    holds a minimal ``config.json`` that bind-mounts ``resolv_conf`` to
    ``/etc/resolv.conf``, both where podman keeps them (its static and run
    directories for the container).  The process's mount namespace has that
    mount at ``rootfs``'s /etc/resolv.conf, as a runtime leaves it for the
    createRuntime hooks.
    """

    RESOLV_CONF_TEXT = "# written by the wg-pod test lab\nnameserver {ns}\nsearch lab.invalid\n"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.id = secrets.token_hex(32)
        self.ns = lab.netns()
        self.host_ifname, self.underlay = lab.veth(self.ns, "eth0")
        self.run(["ip", "-4", "route", "add", "default", "via", str(self.underlay.host_v4.ip)])
        self.run(["ip", "-6", "route", "add", "default", "via", str(self.underlay.host_v6.ip)])
        # podman's layout: the bundle in the container's static directory,
        # the files it mounts (resolv.conf, hostname) in its run directory.
        self.bundle = lab.tmp / "storage" / "overlay-containers" / self.id / "userdata"
        self.run_dir = lab.tmp / "run" / "overlay-containers" / self.id / "userdata"
        self.rootfs = (self.bundle / "rootfs").resolve()
        for directory in (self.rootfs / "etc", self.run_dir):
            directory.mkdir(parents=True)
        self.resolv_conf = self.run_dir / "resolv.conf"
        self.resolv_conf.write_text(self.RESOLV_CONF_TEXT.format(ns=self.underlay.host_v4.ip))
        (self.run_dir / "hostname").write_text(self.ns.name + "\n")
        # As the runtime leaves it at createRuntime: the process in a mount
        # namespace of its own (``ip netns exec`` makes one), with podman's
        # resolv.conf mounted over the rootfs's.
        mount_point = self.rootfs / "etc" / "resolv.conf"
        mount_point.touch()
        mount_then_sleep = 'mount --bind "$0" "$1" && exec sleep 3600'
        self.process = lab.popen(
            ["sh", "-c", mount_then_sleep, str(self.resolv_conf), str(mount_point)],
            netns=self.ns.name,
            name=f"sleep-{self.ns.name}",
        )
        self.pid = self.process.pid
        # ``ip netns exec`` and sh exec sleep, so the pid is the process in
        # the namespace.
        wait_for(
            lambda: (
                os.path.exists(self.netns_path)
                and os.stat(self.netns_path).st_ino == os.stat(self.ns.path).st_ino
                and self.seen_resolv_conf() == self.resolv_conf.read_text()
            ),
            timeout=5,
            what=f"sleep in {self.ns.name}",
        )
        # What config.json mounts over /etc/resolv.conf: a test may put a
        # file of its own there (as ``-v FILE:/etc/resolv.conf``), or None.
        self.resolv_conf_mount: Path | None = self.resolv_conf
        self.write_config_json({})

    def __repr__(self) -> str:
        return f"ContainerStandIn(ns={self.ns.name}, pid={self.pid})"

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    @property
    def name(self) -> str:
        return self.ns.name

    def seen_resolv_conf(self) -> str:
        """/etc/resolv.conf as the container sees it: through its mount
        namespace (/proc/PID/root)."""
        try:
            return Path(f"/proc/{self.pid}/root{self.rootfs}/etc/resolv.conf").read_text()
        except OSError:
            return ""

    def run(
        self, argv: Sequence[str | os.PathLike[str]], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        return self.ns.run(argv, **kw)

    def routes(self, version: int = 4) -> list[dict[str, Any]]:
        return self.ns.routes(version)

    def stop(self) -> None:
        """What podman does when the container stops: its process ends and
        its network namespace is deleted (before poststop runs)."""
        stop_process(self.process)
        self.ns.delete()

    def default_routes(self, version: int = 4) -> list[dict[str, Any]]:
        """Default routes of the main table that carry traffic (not the
        tunnel's unreachable guard)."""
        return [
            r
            for r in self.routes(version)
            if r.get("dst") == "default" and r.get("table", "main") == "main" and "type" not in r
        ]

    def links(self) -> list[str]:
        return self.ns.links()

    def config_json(self, annotations: Mapping[str, str]) -> dict[str, Any]:
        return {
            "ociVersion": "1.0.2",
            "process": {"args": ["sleep", "3600"], "cwd": "/", "env": ["PATH=/bin:/usr/bin"]},
            "root": {"path": str(self.rootfs)},
            "hostname": self.ns.name,
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                *(
                    {
                        "destination": destination,
                        "type": "bind",
                        "source": str(source),
                        "options": ["bind", "rprivate"],
                    }
                    for destination, source in (
                        ("/etc/resolv.conf", self.resolv_conf_mount),
                        ("/etc/hostname", self.run_dir / "hostname"),
                    )
                    if source is not None
                ),
            ],
            "annotations": dict(annotations),
            "linux": {
                "namespaces": [
                    {"type": "network", "path": self.ns.path},
                    {"type": "mount"},
                    {"type": "pid"},
                ]
            },
        }

    def write_config_json(self, annotations: Mapping[str, str]) -> Path:
        path = self.bundle / "config.json"
        path.write_text(json.dumps(self.config_json(annotations), indent=2))
        return path

    def oci_state(
        self,
        annotations: Mapping[str, str],
        bundle: str | os.PathLike[str] | None = None,
        *,
        status: str = "creating",
    ) -> str:
        """The OCI state JSON the runtime passes on the hook's stdin.

        Also writes the annotations into the bundle's config.json, as podman does.
        """
        if bundle is None:
            self.write_config_json(annotations)
            bundle = self.bundle
        return json.dumps(
            {
                "ociVersion": "1.0.2",
                "id": self.id,
                "status": status,
                "pid": self.pid,
                "bundle": str(bundle),
                "annotations": dict(annotations),
            }
        )


class ConfigDir:
    """A root-owned 0700 directory for WireGuard configs; files are written 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def write(self, name: str, text: str, mode: int = 0o600) -> Path:
        path = self.path / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, mode)  # umask-proof, and also when the file existed
        return path


def make_config_dir(lab: Lab) -> ConfigDir:
    parent = None
    if SYSTEM_PODMAN:
        SYSTEM_CONFIG_ROOT.mkdir(mode=0o700, exist_ok=True)
        parent = str(SYSTEM_CONFIG_ROOT)
    path = Path(tempfile.mkdtemp(prefix="wgpt-conf-", dir=parent))
    os.chmod(path, 0o700)
    lab.defer(f"remove {path}", lambda: shutil.rmtree(path, ignore_errors=True))
    return ConfigDir(path)


def write_settings(
    path: Path, config_dirs: Iterable[str | os.PathLike[str]], **extra: object
) -> Path:
    """Write a wg-pod settings YAML file (JSON is valid YAML, so no PyYAML needed here)."""
    data: dict[str, object] = {
        "config_dirs": [str(d) for d in config_dirs],
        "backend": "userspace",
    }
    data.update(extra)
    lines = [f"{key}: {json.dumps(value)}" for key, value in data.items()]
    path.write_text("# wg-pod test settings\n" + "\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path
