"""The README's quick start, run as a new user would run it on Debian 12:
every ``sh`` block of its "Quick start" section, in order, each in one
shell that stops at the first failing command. It ends with a container
whose exit address is the tunnel's, and fewer than ten commands get there.

What differs from a user's machine, each for a reason:

- ``sudo`` is dropped: the tier runs as root, and CI machines have no sudo.
- The user's ``wg0.conf`` is a client config of the lab's WireGuard peer
  (a full tunnel, with ``DNS =``), in the directory the later blocks run in.
- The image is the local test image (CI pulls nothing); it has the busybox
  ``sh``, ``wget``, ``cat`` and ``sleep`` the commands use.
- ``http://ifconfig.me/ip`` is an address echo in the peer's namespace,
  reached from the host directly and from the container through the tunnel,
  so the two answers are the host's address and the tunnel's.
- ``wg-pod status`` finds the container's name through podman's API: a
  ``podman system service`` of the test (``CONTAINER_HOST``) stands in for
  the ``podman.socket`` that Debian's podman enables under systemd.

The package is the one this tier built and installed (conftest.py): the
install block's ``make deb`` builds it again from this tree, and apt-get
finds that version installed. The config goes where the README puts it,
``/etc/wireguard/wg0.conf``, and the hook uses the package's own
definitions, settings and state directory; all of it is removed after.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import REPO, TEST_IMAGE, Lab, Peer, assert_host_clean, run, wait_for
from tests.package.build import Deb
from tests.system.test_cli import api  # noqa: F401 (the podman API fixture)

pytestmark = [pytest.mark.root, pytest.mark.podman]

README = REPO / "README.md"
CONFIG = Path("/etc/wireguard/wg0.conf")
CONTAINER = "vpn-test"
STATE = Path("/run/wg-pod")  # the installed hook's: no WG_POD_STATE_DIR in its definition
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ECHO_PORT = 8089
ECHO = """
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Echo).serve_forever()
"""


def quick_start() -> list[str]:
    """The ``sh`` blocks of the README's Quick start section, in order."""
    text = README.read_text()
    section = text[text.index("\n## Quick start\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def commands(block: str) -> list[str]:
    """A block's commands: its lines, continuations joined."""
    return [c for c in block.replace("\\\n", " ").splitlines() if c.strip()]


def test_the_quick_start_has_every_step_in_fewer_than_ten_commands() -> None:
    blocks = quick_start()
    steps = ["apt-get install", "install -D", "wg-pod check", "podman run", "wg-pod status"]
    for step, block in zip(steps, blocks, strict=False):
        assert step in block, (step, block)
    assert len(blocks) == len(steps), blocks
    assert sum(len(commands(b)) for b in blocks) < 10, blocks


@pytest.fixture
def clean_slate() -> Iterator[None]:
    """The quick start's names free on this machine, and freed again after."""
    if CONFIG.exists():
        pytest.skip(f"{CONFIG} exists on this machine, not made by the suite: left alone")
    had_state, had_config_dir = STATE.exists(), CONFIG.parent.exists()
    built_before = (REPO / "build" / "deb").exists()
    podman = ["podman", "container", "exists", CONTAINER]
    if run(podman, check=False).returncode == 0:
        pytest.skip(f"a container {CONTAINER} exists on this machine: left alone")
    try:
        yield
    finally:
        run(["podman", "rm", "-f", "--ignore", "-t", "0", CONTAINER], check=False, timeout=120)
        CONFIG.unlink(missing_ok=True)
        if not had_config_dir:  # made by the quick start's install -D
            shutil.rmtree(CONFIG.parent, ignore_errors=True)
        if not built_before:
            shutil.rmtree(REPO / "build" / "deb", ignore_errors=True)
        assert_host_clean()
        records = sorted(STATE.glob("*.json")) if STATE.exists() else []
        if not had_state:
            shutil.rmtree(STATE, ignore_errors=True)
        assert not records, f"records left after podman rm: {records}"


def test_the_quick_start_puts_a_container_on_the_tunnel(
    installed: Deb,
    lab: Lab,
    peer: Peer,
    api: str,  # noqa: F811 (the fixture imported above)
    clean_slate: None,
) -> None:
    echo_address = str(peer.underlay.inner_v4.ip)
    lab.popen([sys.executable, "-c", ECHO, str(ECHO_PORT)], netns=peer.ns.name, name="address-echo")
    wait_for(
        lambda: bool(
            run(["curl", "-s", f"http://{echo_address}:{ECHO_PORT}/"], check=False).stdout
        ),
        timeout=10,
        what="the address echo",
    )
    client = peer.add_client(
        allowed_ips=["0.0.0.0/0", "::/0"], extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"]
    )
    work = lab.tmp / "user"
    work.mkdir()
    (work / "wg0.conf").write_text(client.config)
    (work / "wg0.conf").chmod(0o600)
    # A user's shell: the system's commands (the package's wg-pod, not the
    # suite's), none of the suite's WG_POD_* settings; podman's machine
    # configuration (CONTAINERS_CONF) as the suite runs it here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WG_POD_")}
    env["PATH"] = SYSTEM_PATH
    env["CONTAINER_HOST"] = api

    outputs = []
    for number, block in enumerate(quick_start(), 1):
        script = (
            block.replace("sudo ", "")
            .replace("docker.io/library/alpine", TEST_IMAGE)
            .replace("http://ifconfig.me/ip", f"http://{echo_address}:{ECHO_PORT}/ip")
        )
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO if number == 1 else work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"block {number} failed:\n{script}\n{done.stdout}{done.stderr}"
        outputs.append(done.stdout)

    checked, verified = outputs[2], outputs[4]
    assert f"ok: {CONFIG} is valid; backend here:" in checked, checked
    assert f"container: {CONTAINER} (" in verified and "state:" in verified, verified
    # The container's exit address is its tunnel address, its resolver the
    # config's; the host's exit address is its own.
    assert client.address_v4 is not None
    inside, host = str(client.address_v4.ip), str(peer.underlay.host_v4.ip)
    lines = verified.splitlines()
    assert inside in lines, verified
    assert f"nameserver {peer.tunnel_v4.ip}" in lines, verified
    assert lines[-1] == host, verified
