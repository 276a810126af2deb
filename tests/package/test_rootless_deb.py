"""Rootless podman 4.3 on Debian 12, the way Debian 12 runs it for an
ordinary user: slirp4netns, runc, cgroupfs (no systemd here), the hook of
the installed package from the system's hooks.d, a real WireGuard peer
(tests.lab) in its own namespace.

slirp4netns answers ARP only for its own addresses and sends router
advertisements: what the reply path's routing rules and the tunnel's IPv6
default route must hold against (kernel/routes.py).  busybox's wget does
not run in such a container (it crashes in the user namespace); ``nc``
fetches the peer's page.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import REPO, TEST_IMAGE, Lab, Peer, run, wait_for
from tests.lab.users import User
from tests.package.build import Deb

pytestmark = [pytest.mark.root, pytest.mark.podman]

NAME = "wgpt-carol"
PAUSE_PID = "/run/user/{uid}/libpod/tmp/pause.pid"


@pytest.fixture(scope="module")
def carol(installed: Deb) -> Iterator[User]:
    """A user with subuids (useradd gives them) and a runtime directory, as
    a login would make it; removed afterwards with their podman's pause
    process (which podman leaves running for the user's next command)."""
    if shutil.which("newuidmap") is None or shutil.which("slirp4netns") is None:
        pytest.fail("uidmap and slirp4netns are missing: run scripts/setup")
    run(["useradd", "--create-home", "--shell", "/bin/sh", NAME])
    entry = pwd.getpwnam(NAME)
    user = User(NAME, entry.pw_uid, Path(entry.pw_dir))
    runtime_dir = Path(user.runtime_dir)
    try:
        runtime_dir.parent.mkdir(mode=0o755, exist_ok=True)  # no logind here to make it
        runtime_dir.mkdir(mode=0o700)
        os.chown(runtime_dir, user.uid, user.uid)
        user.run("sh", str(REPO / "scripts" / "test-image"), TEST_IMAGE, timeout=300)
        yield user
    finally:
        user.podman("rm", "--all", "--force", "--time", "0", check=False)
        _stop_pause_process(user)
        run(["userdel", "--remove", NAME], check=False)
        shutil.rmtree(runtime_dir, ignore_errors=True)


def _stop_pause_process(user: User) -> None:
    try:
        pid = int(Path(PAUSE_PID.format(uid=user.uid)).read_text())
        if os.stat(f"/proc/{pid}").st_uid != user.uid:
            return
    except (OSError, ValueError):
        return
    os.kill(pid, 15)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="podman's pause")


def fetch(url_host: str) -> str:
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {url_host} 80 | tail -n 1"


def test_a_rootless_podman_4_container_on_slirp4netns_gets_its_tunnel(
    carol: User, lab: Lab, peer: Peer
) -> None:
    """Both families through the tunnel, podman's default routes gone (the
    router advertisements' too: the tunnel's wins), the tunnel's DNS, and
    nothing of the user's left after the container."""
    tunnel = str(peer.tunnel_v4.ip)
    client = peer.add_client(
        allowed_ips=["0.0.0.0/0", "::/0"], extra_interface_lines=[f"DNS = {tunnel}"]
    )
    config = carol.write_config("wg0.conf", client.config)
    script = "; ".join(
        [
            "sleep 1",  # slirp4netns's first router advertisement
            fetch(tunnel),
            fetch(str(peer.tunnel_v6.ip)),
            "cat /etc/resolv.conf",
            # Where traffic for anywhere else goes (documentation addresses).
            "ip -4 route get 192.0.2.1; ip -6 route get 2001:db8::1",
        ]
    )
    done = carol.podman(
        "run",
        "--rm",
        "--annotation",
        f"wg-pod.config={config}",
        "--annotation",
        "wg-pod.delete-default=true",
        TEST_IMAGE,
        "sh",
        "-c",
        script,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(peer.page) == 2, done.stdout
    lines = done.stdout.splitlines()
    assert [x.split()[1] for x in lines if x.startswith("nameserver")] == [tunnel], done.stdout
    ways = [x for x in lines if x.startswith(("192.0.2.1 ", "2001:db8::1 "))]
    assert len(ways) == 2 and all(" dev wg0 " in x for x in ways), done.stdout
    state = Path(carol.runtime_dir) / "wg-pod"
    left = [p.name for p in state.iterdir() if p.suffix == ".json"] if state.is_dir() else []
    assert left == [], left
    processes = run(["pgrep", "-u", str(carol.uid), "wireguard-go"], check=False).stdout
    assert processes == "", processes
