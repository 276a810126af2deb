"""The hook as rootless podman runs it, without podman: as uid 0 of an
ordinary user's user namespace, for a "container" whose network namespace
that user namespace owns.  Once per backend: wireguard-go on the host, the
kernel's WireGuard in the VM (tests/vm), where a user namespace may create
a ``wireguard`` link once root has loaded the module.

The user is made up for the test: a uid no account has, a line for it in
a copy of /etc/passwd mounted over the real one for the hook alone, a home
and a runtime directory of its own.  The hook runs under the system's
Python: the suite's interpreter may live where the user cannot read.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.support import fetch_in
from tests.lab import (
    REPO,
    Lab,
    Netns,
    Peer,
    Underlay,
    run,
    stop_process,
    token,
    wait_for,
)

pytestmark = pytest.mark.root

SYSTEM_PYTHON = "/usr/bin/python3"
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass
class RootlessContainer:
    uid: int
    home: Path
    passwd: Path
    process: subprocess.Popen[str]
    ns: Netns
    bundle: Path
    uplink: Underlay  # host_*: the peer's side

    @property
    def pid(self) -> int:
        return self.process.pid

    def hook(self, stage: str, annotations: dict[str, str], *, gone: bool = False) -> str:
        """The installed hook's work, as rootless podman's runtime runs it:
        in the container's user namespace, or (``gone``: the container
        ended) in a new one of the same user, as podman's cleanup would;
        its stderr, when it fails."""
        state = {
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": "stopped" if gone else "created",
            "pid": 0 if gone else self.pid,
            "bundle": str(self.bundle),
            "annotations": annotations,
        }
        into = (
            [*as_user(self.uid), "unshare", "--user", "--map-root-user", "--"]
            if gone
            else ["nsenter", "-t", str(self.pid), "-U", "--"]
        )
        path = os.pathsep.join([str(REPO), str(SITE / "site-packages")])
        # Their passwd entry, for the hook alone: a mount namespace of its own.
        script = 'mount --bind "$0" /etc/passwd && exec "$@"'
        done = run(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                script,
                str(self.passwd),
                *into,
                "env",
                "-i",
                f"PYTHONPATH={path}",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                SYSTEM_PYTHON,
                "-m",
                "wg_pod_hook.hook",
                stage,
            ],
            input=json.dumps(state),
            check=False,
        )
        return "" if done.returncode == 0 else done.stderr or f"exit {done.returncode}"

    @property
    def id(self) -> str:
        return f"{self.uid:064x}"


def as_user(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def free_uid() -> int:
    for uid in range(4242, 5242):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid in 4242..5241")


@pytest.fixture
def container(lab: Lab, peer: Peer) -> Iterator[RootlessContainer]:
    uid = free_uid()
    top = Path(tempfile.mkdtemp(prefix="wgpt-rootless-"))
    os.chmod(top, 0o755)
    lab.defer(f"remove {top}", lambda: shutil.rmtree(top, ignore_errors=True))
    home, bundle = top / "home", top / "bundle"
    for directory in (home, home / ".config", home / ".config" / "wg-pod", bundle):
        directory.mkdir(mode=0o700)
        os.chown(directory, uid, uid)
    passwd = top / "passwd"
    passwd.write_text(
        Path("/etc/passwd").read_text() + f"wgpt-rootless:x:{uid}:{uid}::{home}:/bin/sh\n"
    )
    os.chmod(passwd, 0o644)
    runtime_dir = Path(f"/run/user/{uid}")
    runtime_dir.parent.mkdir(mode=0o755, exist_ok=True)
    runtime_dir.mkdir(mode=0o700)
    os.chown(runtime_dir, uid, uid)
    lab.defer(f"remove {runtime_dir}", lambda: shutil.rmtree(runtime_dir, ignore_errors=True))
    # The user's "container": a process in a user namespace of theirs (uid 0
    # there is them) and a network namespace that user namespace owns.
    process = lab.popen(
        [
            *as_user(uid),
            "unshare",
            "--user",
            "--map-root-user",
            "--net",
            "sleep",
            "600",
        ],
        name=f"rootless-{uid}",
    )
    wait_for(
        lambda: (
            os.readlink(f"/proc/{process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
            and os.readlink(f"/proc/{process.pid}/exe").endswith("sleep")
        ),
        timeout=5,
        what="the user's namespaces",
    )
    ns = Netns(f"wgpt-{token()}")
    run(["ip", "netns", "attach", ns.name, str(process.pid)])
    lab.defer(f"detach netns {ns.name}", ns.delete)
    ns.run(["ip", "link", "set", "lo", "up"])
    # Its uplink, as pasta or slirp4netns would give it: a link straight to
    # the peer's namespace (the host forwards nothing between namespaces).
    link = lab.underlay()
    peer_side = f"wgpt{token()}u"
    run(["ip", "link", "add", peer_side, "type", "veth", "peer", "name", "eth0", "netns", ns.name])
    run(["ip", "link", "set", peer_side, "netns", peer.ns.name])
    for address in (link.host_v4, link.host_v6):
        peer.ns.run(["ip", "address", "add", str(address), "dev", peer_side, "nodad"])
    peer.ns.run(["ip", "link", "set", peer_side, "up"])
    for address in (link.inner_v4, link.inner_v6):
        ns.run(["ip", "address", "add", str(address), "dev", "eth0", "nodad"])
    ns.run(["ip", "link", "set", "eth0", "up"])
    ns.run(["ip", "-4", "route", "add", "default", "via", str(link.host_v4.ip)])
    ns.run(["ip", "-6", "route", "add", "default", "via", str(link.host_v6.ip)])
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": str(top)},
        "linux": {"namespaces": [{"type": "network", "path": f"/proc/{process.pid}/ns/net"}]},
    }
    (bundle / "config.json").write_text(json.dumps(config))
    os.chown(bundle / "config.json", uid, uid)
    yield RootlessContainer(uid, home, passwd, process, ns, bundle, link)


def test_a_rootless_users_hook_sets_up_the_tunnel_in_their_namespace(
    container: RootlessContainer, peer: Peer, backend: str, lab: Lab
) -> None:
    """The link is born in the container's namespace (the host's is
    root's) with its socket, which the reply mark routes past the tunnel:
    traffic in both families through it; after the container, its
    poststop leaves nothing of the user's."""
    configs = container.home / ".config" / "wg-pod"
    write_as(container.uid, configs / "wg-pod.yaml", f"backend: {backend}\n", 0o644)
    endpoint = f"{container.uplink.host_v4.ip}:{peer.listen_port}"
    text = peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"], endpoint=endpoint)
    config = write_as(container.uid, configs / "wg0.conf", text, 0o600)
    annotations = {"wg-pod.config": str(config), "wg-pod.delete-default": "true"}
    assert container.hook("createRuntime", annotations) == ""
    kind = container.ns.run(["ip", "-d", "link", "show", "wg0"]).stdout
    assert ("wireguard" in kind) == (backend == "kernel"), kind
    for url in (peer.url_v4, peer.url_v6):
        assert peer.page in fetch_in(container.ns, url), url
    state = Path(f"/run/user/{container.uid}/wg-pod")
    assert [p.name for p in state.glob("*.json")] == [f"{container.id}.json"]

    stop_process(container.process)
    run(["ip", "netns", "del", container.ns.name])
    assert container.hook("poststop", annotations, gone=True) == ""
    assert list(state.glob("*.json")) == []
    wait_for(
        lambda: run(["pgrep", "-u", str(container.uid)], check=False).stdout == "",
        timeout=10,
        what="no process of the user's left",
    )


def write_as(uid: int, path: Path, text: str, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chown(path, uid, uid)
    return path
