"""Secrets never leak; 30 parallel starts; a hook killed after any step."""

from __future__ import annotations

import base64
import copy
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.support import (
    fails_cleanly,
    fetch_in,
    wireguard_processes,
    write_config,
)
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    HookRunner,
    Lab,
    Peer,
    link_names,
    run,
    venv_command,
    wait_for,
)
from wg_pod_hook.lifecycle import STEP_NAMES
from wg_pod_hook.names import is_temp_name, temp_name
from wg_pod_hook.records import RECORD_DIR, path_for

pytestmark = pytest.mark.root

SHIMMED = ("nsenter", "nft", "wireguard-go", "ip", "wg")
SHIM = """#!/bin/sh
{{ printf 'argv:'; printf ' %s' "$0" "$@"; printf '\\n'; env | sed 's/^/env: /'; }} >> {log}
exec {real} "$@"
"""


class Syslog:
    """A syslog socket the hook logs to (WG_POD_SYSLOG_SOCKET)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self.running:
            try:
                self.lines.append(self.sock.recv(65536).decode(errors="replace"))
            except TimeoutError:
                continue

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def syslog(lab: Lab) -> Iterator[Syslog]:
    listener = Syslog(lab.tmp / "syslog.sock")
    yield listener
    listener.close()


def key_forms(key_b64: str) -> list[str]:
    raw = base64.b64decode(key_b64)
    return [key_b64, key_b64.rstrip("="), raw.hex(), raw.hex().upper()]


def test_keys_appear_nowhere(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    syslog: Syslog,
    hook: HookRunner,
    backend: str,
) -> None:
    """Run the hook (success and failure) while recording every process it
    spawns (argv and environment, through PATH shims), its syslog at debug
    level, its stderr and every file it writes: no key anywhere."""
    shims = lab.tmp / "shims"
    shims.mkdir()
    spawned = lab.tmp / "spawned.log"
    for tool in SHIMMED:
        real = run(["sh", "-c", f"command -v {tool}"]).stdout.strip()
        shim = shims / tool
        shim.write_text(SHIM.format(log=spawned, real=real))
        shim.chmod(stat.S_IRWXU)
    env = {
        "PATH": f"{shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "WG_POD_SYSLOG_SOCKET": str(syslog.path),
    }
    hook = hook.with_settings(log_level="debug")
    client = peer.add_client(preshared=True, extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    assert client.preshared_key is not None
    keys = key_forms(client.private_key) + key_forms(client.preshared_key)

    good = write_config(config_dir, client.config)
    ok = hook.up(standin, {"wg-pod.config": good, "wg-pod.port-remapping": "80:8080"}, env=env)
    assert ok.returncode == 0, ok.stderr
    assert peer.page in fetch_in(standin, peer.url_v4)
    broken = write_config(
        config_dir, client.config.replace(peer.endpoint_v4, "no-such-host.invalid:51820"), "b.conf"
    )
    other = lab.standin()
    bad = hook.up(other, {"wg-pod.config": broken}, env=env, ok=False)
    assert bad.returncode == 1
    mangled = write_config(
        config_dir, client.config.replace("PrivateKey = ", "PrivateKey = x"), "c.conf"
    )
    worse = hook.up(other, {"wg-pod.config": mangled}, env=env, ok=False)
    assert worse.returncode == 1

    process_views = []
    for pid in wireguard_processes(temp_name(standin.id)):
        process_views.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
        process_views.append(Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace"))
    written = [p.read_text() for p in RECORD_DIR.glob("*.json")] + [standin.resolv_conf.read_text()]
    seen = {
        "spawned processes": spawned.read_text() if spawned.exists() else "",
        "long-lived processes": "\n".join(process_views),
        "syslog": "\n".join(syslog.lines),
        "stderr": ok.stderr + bad.stderr + worse.stderr,
        "files written": "\n".join(written),
    }
    # nft is not spawned: libnftables applies the rules in-process.
    if backend == "userspace":
        assert "argv: " in seen["spawned processes"] and "wireguard-go" in seen["spawned processes"]
    assert "in-process (libnftables)" in seen["syslog"]  # debug messages were captured
    assert "nameserver" in seen["files written"]
    for where, text in seen.items():
        for key in keys:
            assert key not in text, f"a key appears in {where}"


def test_thirty_parallel_starts(
    lab: Lab,
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    standins = [make_standin() for _ in range(30)]
    configs = [
        write_config(config_dir, peer.client_config(), f"c{i}.conf") for i in range(len(standins))
    ]
    with ThreadPoolExecutor(max_workers=len(standins)) as pool:
        results = list(
            pool.map(
                lambda pair: hook.up(pair[0], {"wg-pod.config": pair[1]}, ok=False),
                zip(standins, configs, strict=True),
            )
        )
    failures = [f"#{i}: {r.returncode}: {r.stderr}" for i, r in enumerate(results) if r.returncode]
    assert failures == []
    for standin in standins:
        assert peer.page in fetch_in(standin, peer.url_v4)
    names = {temp_name(s.id) for s in standins}
    assert len(names) == len(standins)
    for standin in standins:
        standin.stop()
        assert hook.down(standin, {}).returncode == 0
        assert not path_for(standin.id).exists()
    assert [n for n in link_names() if is_temp_name(n)] == []
    assert [p for n in names for p in wireguard_processes(n)] == []


@pytest.mark.parametrize("step", STEP_NAMES)
def test_hook_killed_after_a_step_blocks_nothing(
    step: str,
    lab: Lab,
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    crashing = hook.with_settings(fault_injection_kill_after=step)
    healthy = hook
    conf = write_config(config_dir, peer.client_config())
    victim = make_standin()
    assert crashing.up(victim, {"wg-pod.config": conf}, ok=False).returncode == -9

    # Another container starts.
    bystander = make_standin()
    healthy.up(
        bystander,
        {"wg-pod.config": write_config(config_dir, peer.client_config(), "b.conf")},
    )
    assert peer.page in fetch_in(bystander, peer.url_v4)

    # The same container starts again, in a new namespace as podman does.
    victim.stop()
    again = make_standin()
    again.id = victim.id
    healthy.up(again, {"wg-pod.config": conf})
    assert peer.page in fetch_in(again, peer.url_v4)
    assert len(wireguard_processes(temp_name(victim.id))) <= 1


@pytest.mark.parametrize("step", ["create", "move", "record"])
def test_gc_removes_what_a_killed_hook_left(
    step: str,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    crashing = hook.with_settings(fault_injection_kill_after=step)
    conf = write_config(config_dir, peer.client_config())
    assert crashing.up(standin, {"wg-pod.config": conf}, ok=False).returncode == -9
    standin.stop()
    done = run([*venv_command("wg-pod", "wg_pod_hook.cli"), "gc"])
    assert done.returncode == 0
    name = temp_name(standin.id)
    assert name not in link_names()
    assert wireguard_processes(name) == []
    assert not path_for(standin.id).exists()
    assert not Path(f"/var/run/wireguard/{name}.sock").exists()


def test_concurrent_hooks_on_one_namespace_are_serialised(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """Pod members starting together: one creates the tunnel, the rest share it."""
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    members = [standin]
    for _ in range(4):
        member = copy.copy(standin)
        member.id = secrets.token_hex(32)
        members.append(member)
    with ThreadPoolExecutor(max_workers=len(members)) as pool:
        results = list(pool.map(lambda m: hook.up(m, annotations, ok=False), members))
    assert [r.returncode for r in results] == [0] * len(members), [r.stderr for r in results]
    assert sorted(standin.links()) == ["eth0", "lo", "wg0"]
    owners = [m for m in members if json.loads(path_for(m.id).read_text())["shared_with"] is None]
    assert len(owners) == 1
    assert peer.page in fetch_in(standin, peer.url_v4)


# A stand-in for wireguard-go that starts, takes its argv (so it looks like
# one) and never opens its UAPI socket.
SILENT_WIREGUARD_GO = "import time\nwhile True:\n    time.sleep(1)\n"


def silent_wireguard_go(lab: Lab) -> list[str]:
    script = lab.tmp / "silent-wireguard-go.py"
    script.write_text(SILENT_WIREGUARD_GO)
    return [sys.executable, str(script)]


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_wireguard_go_that_never_opens_its_socket_is_stopped(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    silent = hook.with_settings(userspace_command=silent_wireguard_go(lab))
    conf = write_config(config_dir, peer.client_config())
    message = fails_cleanly(silent, standin, {"wg-pod.config": conf})
    assert f"no UAPI socket /var/run/wireguard/{temp_name(standin.id)}.sock after" in message
    assert wireguard_processes(temp_name(standin.id)) == []


@pytest.mark.parametrize("backend", ["userspace"], indirect=True)
def test_a_hook_killed_while_its_wireguard_go_starts_is_cleared_by_the_next_start(
    lab: Lab, peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """Its process is in the record before the hook waits for the socket."""
    silent = hook.with_settings(userspace_command=silent_wireguard_go(lab))
    conf = write_config(config_dir, peer.client_config())
    name = temp_name(standin.id)
    killed = subprocess.Popen(
        [*venv_command("wg-pod-hook", "wg_pod_hook.hook"), "createRuntime"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=silent.env,
    )
    lab.defer("the killed hook", lambda: killed.kill() if killed.poll() is None else None)
    assert killed.stdin is not None
    killed.stdin.write(standin.oci_state({"wg-pod.config": conf}))
    killed.stdin.close()
    wait_for(lambda: bool(wireguard_processes(name)), timeout=10, what="the silent wireguard-go")
    wait_for(lambda: path_for(standin.id).exists(), timeout=5, what="the hook's first record")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=5)
    assert wireguard_processes(name) != []

    hook.up(standin, {"wg-pod.config": conf})
    assert len(wireguard_processes(name)) == 1  # the real one
    assert peer.page in fetch_in(standin, peer.url_v4)
