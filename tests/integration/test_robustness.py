"""Secrets never leak (the hook by itself and through the daemon); 30
parallel starts; a hook killed after any step."""

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
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from shutil import which

import pytest

from tests.integration.support import (
    WIREGUARD_GO,
    fails_cleanly,
    fetch_in,
    handled_by_the_daemon,
    watched,
    wireguard_processes,
    write_config,
)
from tests.lab import (
    Client,
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    children,
    link_names,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from wg_pod_hook.model.names import is_temp_name, temp_name
from wg_pod_hook.state import failures, health
from wg_pod_hook.state.records import path_for
from wg_pod_hook.tunnel.lifecycle import STEP_NAMES

pytestmark = pytest.mark.root

SHIMMED = ("nsenter", "nft", "wireguard-go", "ip", "wg")
SHIM = """#!/bin/sh
{{ printf 'argv:'; printf ' %s' "$0" "$@"; printf '\\n'; env | sed 's/^/env: /'; }} >> {log}
exec {real} "$@"
"""
REPAIR_DEADLINE = 20.0
WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


class Syslog:
    """A syslog socket the hook and the daemon log to (WG_POD_SYSLOG_SOCKET)."""

    name = "syslog"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {"WG_POD_SYSLOG_SOCKET": str(path)}
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

    def text(self) -> str:
        return "\n".join(list(self.lines))

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


class Journal:
    """journald, where the hook and the daemon log when nothing points them
    elsewhere (/dev/log): the lines tagged wg-pod since it was made."""

    name = "journal"

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.since = int(time.time()) - 1

    def text(self) -> str:
        argv = ["journalctl", "--no-pager", "-o", "cat", "-t", "wg-pod", "--since"]
        return run([*argv, f"@{self.since}"]).stdout


def journald_runs() -> bool:
    return JOURNAL_SOCKET.exists() and os.path.exists("/dev/log") and bool(which("journalctl"))


@pytest.fixture(params=["syslog", "journal"])
def hook_log(request: pytest.FixtureRequest, lab: Lab) -> Iterator[Syslog | Journal]:
    """Where the hook and the daemon log: a socket of the test's, or
    journald (the production path), where it runs."""
    if request.param == "journal":
        if not journald_runs():
            pytest.skip(
                f"journald does not run here (no {JOURNAL_SOCKET}): the same lines are "
                "read from a syslog socket of the test's (the [syslog] variant)"
            )
        yield Journal()
        return
    listener = Syslog(lab.tmp / "syslog.sock")
    yield listener
    listener.close()


class Spawned:
    """PATH shims that log the argv and environment of every tool the hook,
    the daemon or its workers start, then run the real one."""

    def __init__(self, lab: Lab) -> None:
        shims = lab.tmp / "shims"
        shims.mkdir()
        self.log = lab.tmp / "spawned.log"
        for tool in SHIMMED:
            real = run(["sh", "-c", f"command -v {tool}"]).stdout.strip()
            shim = shims / tool
            shim.write_text(SHIM.format(log=self.log, real=real))
            shim.chmod(stat.S_IRWXU)
        self.path = f"{shims}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


class Secrets:
    """The private and preshared keys of a test's configs, in every form
    they could leak in: base64 (as written, and unpadded), hex (the UAPI's
    form, both cases) and the raw bytes."""

    def __init__(self, *keys: str | None) -> None:
        self.forms: list[tuple[str, bytes]] = []
        for key in keys:
            assert key is not None
            raw = base64.b64decode(key)
            self.forms += [
                ("base64", key.encode()),
                ("unpadded base64", key.rstrip("=").encode()),
                ("hex", raw.hex().encode()),
                ("HEX", raw.hex().upper().encode()),
                ("raw bytes", raw),
            ]

    def leaks(self, seen: Mapping[str, str | bytes]) -> list[str]:
        """Where a key appears, and in which form (never the key itself)."""
        found = []
        for where, data in seen.items():
            blob = data.encode() if isinstance(data, str) else data
            forms = sorted({form for form, key in self.forms if key in blob})
            if forms:
                found.append(f"{where} ({', '.join(forms)})")
        return found


def run_dir_files() -> dict[str, bytes]:
    """Every regular file in the state directory (records, failed/,
    health/, locks/, anything else), and the names of everything there."""
    state_dir = Path(the_runtime().state_dir)
    found: dict[str, bytes] = {}
    names = []
    for path in sorted(state_dir.rglob("*")):
        names.append(str(path))
        try:
            if path.is_file() and not path.is_symlink():  # sockets are not regular files
                found[str(path)] = path.read_bytes()
        except FileNotFoundError:  # gone meanwhile: a temp file, a pruned failure
            continue
    found[f"names under {state_dir}"] = "\n".join(names).encode()
    return found


def process_views(pids: Iterable[int | str]) -> dict[str, bytes]:
    """argv and environment of each process still running."""
    found = {}
    for pid in pids:
        for part in ("cmdline", "environ"):
            try:
                found[f"/proc/{pid}/{part}"] = Path(f"/proc/{pid}/{part}").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def mangled_configs(client: Client, peer: Peer) -> dict[str, str]:
    """Configs holding ``client``'s keys that a start refuses: a config
    error at each key (a key that is not one, one whose '=' is missing so
    that it reads as the key's name, a preshared key in hex), and an
    endpoint whose name does not resolve."""
    assert client.preshared_key is not None
    text = client.config
    psk = client.preshared_key
    return {
        "not-a-key.conf": text.replace("PrivateKey = ", "PrivateKey = x"),
        "no-equals.conf": text.replace("PrivateKey = ", "PrivateKey "),
        "hex-psk.conf": text.replace(psk, base64.b64decode(psk).hex()),
        "no-such-host.conf": text.replace(peer.endpoint_v4, "no-such-host.invalid:51820"),
    }


def free_port() -> int:
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def wg_pod_says(hook: HookRunner, *args: str) -> str:
    done = run([*WG_POD, *args], env={**os.environ, **hook.env}, check=False)
    return done.stdout + done.stderr


def test_keys_appear_nowhere(
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook_log: Syslog | Journal,
    hook: HookRunner,
    backend: str,
) -> None:
    """Run the hook by itself (a start, and starts refused for a config
    error or a name that does not resolve) while recording every process
    it spawns (argv and environment, through PATH shims), its log at debug
    level, its stderr and every file under /run/wg-pod (the records, the
    kept failures, the locks): no key anywhere, in any form."""
    spawned = Spawned(lab)
    env = {"PATH": spawned.path, **hook_log.env}
    hook = hook.with_settings(log_level="debug")
    client = peer.add_client(preshared=True, extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    keys = Secrets(client.private_key, client.preshared_key)

    good = write_config(config_dir, client.config)
    ok = hook.up(standin, {"wg-pod.config": good, "wg-pod.port-remapping": "80:8080"}, env=env)
    assert ok.returncode == 0, ok.stderr
    assert peer.page in fetch_in(standin, peer.url_v4)
    other = lab.standin()
    refused = []
    for name, text in mangled_configs(client, peer).items():
        annotations = {"wg-pod.config": write_config(config_dir, text, name)}
        bad = hook.up(other, annotations, env=env, ok=False)
        assert bad.returncode == 1, bad.stderr
        refused.append(bad)
    kept = [f for f in failures.recent(the_runtime()) if f.container_id == other.id]
    assert len(kept) == len(refused) and {f.stage for f in kept} == {"createRuntime"}

    wait_for(
        lambda: "in-process (libnftables)" in hook_log.text(),  # debug lines are captured
        timeout=10,
        what=f"the hook's debug lines in the {hook_log.name}",
    )
    files = run_dir_files()
    assert str(path_for(the_runtime(), standin.id)) in files
    assert [p for p in files if p.startswith(f"{the_runtime().failed}/")]
    seen: dict[str, str | bytes] = {
        "spawned processes": spawned.text(),
        hook_log.name: hook_log.text(),
        "stderr": ok.stderr + "".join(r.stderr for r in refused),
        "resolv.conf": standin.resolv_conf.read_text(),
        "wg-pod status": wg_pod_says(hook, "status", "--json"),
        **files,
        **process_views(wireguard_processes(temp_name(standin.id))),
    }
    # nft is not spawned: libnftables applies the rules in-process.
    if backend == "userspace":
        assert "argv: " in seen["spawned processes"] and "wireguard-go" in spawned.text()
    assert "nameserver" in seen["resolv.conf"]
    leaks = keys.leaks(seen)
    assert not leaks, "a key appears in " + "; ".join(leaks)


def test_keys_appear_nowhere_through_the_daemon(
    lab: Lab,
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook_log: Syslog | Journal,
    hook: HookRunner,
    daemon: Callable[[HookRunner], Daemon],
    backend: str,
) -> None:
    """The same where the daemon does the work: starts the hook hands it,
    a repair of a tunnel whose link was deleted, a repair that fails (its
    config went bad after the start) and keeps its failure, and starts
    refused for a config error.  No key in any file under /run/wg-pod
    (records, failed/, health/, locks/), the metrics, the daemon's log,
    its syslog or journal lines, ``wg-pod status`` and ``health``, the
    hook's stderr, or the argv and environment of any process started
    (the daemon, its workers, every tool through PATH, wireguard-go).
    With ``SYSTEM_PODMAN`` the hook and the daemon are the installed ones."""
    spawned = Spawned(lab)
    port = free_port()
    served = hook.with_settings(log_level="debug", metrics_listen=f"127.0.0.1:{port}")
    # The daemon and the hook alike: the shims on PATH, the log where the test reads it.
    served = served.with_prefix(
        ["env", f"PATH={spawned.path}", *(f"{k}={v}" for k, v in hook_log.env.items())]
    )
    running = daemon(served)
    dns = [f"DNS = {peer.tunnel_v4.ip}"]
    clients = [peer.add_client(preshared=True, extra_interface_lines=dns) for _ in range(3)]
    keys = Secrets(*(key for c in clients for key in (c.private_key, c.preshared_key)))
    repaired, broken, other = (make_standin() for _ in range(3))

    said = []
    for standin, client, name in ((repaired, clients[0], "a.conf"), (broken, clients[1], "b.conf")):
        conf = write_config(config_dir, client.config, name)
        done = served.up(standin, {"wg-pod.config": conf, "wg-pod.interface": "wg0"})
        said.append(done.stderr)
        assert handled_by_the_daemon(running, standin.id, "wg0 up")
        assert peer.page in fetch_in(standin, peer.url_v4)
        watched(standin.id)

    repaired.run(["ip", "link", "del", "wg0"])
    wait_for(
        lambda: (kept := health.read(the_runtime(), repaired.id)) is not None and kept.repairs == 1,
        timeout=REPAIR_DEADLINE,
        what="the daemon's repair",
    )
    assert peer.page in fetch_in(repaired, peer.url_v4, timeout=REPAIR_DEADLINE)

    write_config(config_dir, clients[1].config.replace("PrivateKey = ", "PrivateKey "), "b.conf")
    broken.run(["ip", "link", "del", "wg0"])
    wait_for(
        lambda: any(
            f.container_id == broken.id and f.stage == "repair"
            for f in failures.recent(the_runtime())
        ),
        timeout=REPAIR_DEADLINE,
        what="the failure of a repair with a bad config",
    )

    starts = mangled_configs(clients[2], peer)
    for name, text in starts.items():
        annotations = {"wg-pod.config": write_config(config_dir, text, name)}
        done = served.up(other, annotations, ok=False)
        assert done.returncode == 1, done.stderr
        said.append(done.stderr)
    worker_lines = [
        line
        for line in running.path.read_text().splitlines()
        if f"container {other.id[:12]}: createRuntime:" in line
    ]
    assert len(worker_lines) == len(starts)  # each refused by the daemon's worker
    kept = [f for f in failures.recent(the_runtime()) if f.container_id == other.id]
    assert len(kept) == len(starts)

    short = repaired.id[:12]
    wait_for(
        lambda: f'wg_pod_peer_transmit_bytes_total{{container="{short}"' in scrape_text(port),
        timeout=REPAIR_DEADLINE,
        what="the repaired tunnel's peer in the metrics",
    )
    wait_for(
        lambda: "in-process (libnftables)" in hook_log.text(),  # the workers' debug lines
        timeout=10,
        what=f"the daemon's debug lines in the {hook_log.name}",
    )
    files = run_dir_files()
    for directory in (the_runtime().failed, the_runtime().health):
        assert [p for p in files if p.startswith(f"{directory}/")], f"nothing in {directory}"
    tunnels = [temp_name(s.id) for s in (repaired, broken)]
    pids = [running.process.pid, *children(running.process.pid)]
    seen: dict[str, str | bytes] = {
        "spawned processes": spawned.text(),
        "the daemon's log": running.path.read_text(),
        hook_log.name: hook_log.text(),
        "metrics": scrape_text(port),
        "the hook's stderr": "".join(said),
        "wg-pod status": wg_pod_says(served, "status") + wg_pod_says(served, "status", "--json"),
        "wg-pod health": wg_pod_says(served, "health"),
        **files,
        **process_views([*pids, *(p for name in tunnels for p in wireguard_processes(name))]),
    }
    if backend == "userspace":
        assert "wireguard-go" in seen["spawned processes"]
    assert f'container="{broken.id[:12]}"' in seen["metrics"]
    assert "repair failed" in seen["wg-pod status"]
    leaks = keys.leaks(seen)
    assert not leaks, "a key appears in " + "; ".join(leaks)


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
        assert not path_for(the_runtime(), standin.id).exists()
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
    backend: str,
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
    assert len(wireguard_processes(temp_name(victim.id))) == WIREGUARD_GO[backend]


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
    assert not path_for(the_runtime(), standin.id).exists()
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
    owners = [
        m
        for m in members
        if json.loads(path_for(the_runtime(), m.id).read_text())["shared_with"] is None
    ]
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
    wait_for(
        lambda: path_for(the_runtime(), standin.id).exists(),
        timeout=5,
        what="the hook's first record",
    )
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=5)
    assert wireguard_processes(name) != []

    hook.up(standin, {"wg-pod.config": conf})
    assert len(wireguard_processes(name)) == 1  # the real one
    assert peer.page in fetch_in(standin, peer.url_v4)
