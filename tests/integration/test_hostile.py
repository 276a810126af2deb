"""Hostile input: each refused with one clear line, nothing left behind.

The hook runs as root on input that whoever creates containers controls:
config paths, annotation values and the OCI state.  Every case runs twice:
the hook alone, and with a daemon running, which the hook hands the state
to; its answer must be the hook's own, and must be the daemon's: a hook
that gets no answer does the work itself and prints the same line, so
each case through the daemon also finds the work in the daemon's log.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.support import (
    assert_nothing_left,
    fails_cleanly,
    fetch_in,
    handled_by_the_daemon,
)
from tests.lab import (
    ConfigDir,
    ContainerStandIn,
    Daemon,
    HookRunner,
    Lab,
    Peer,
    children,
    run,
    venv_command,
    wait_for,
)

pytestmark = pytest.mark.root


@pytest.fixture
def backend() -> str:
    """Validation comes before any backend work: one backend is enough."""
    return "userspace"


@pytest.fixture(params=["hook alone", "through the daemon"], autouse=True)
def way(request: pytest.FixtureRequest, lab: Lab, hook: HookRunner) -> Daemon | None:
    """The daemon the hook hands its stage to; None: the hook alone."""
    if request.param == "through the daemon":
        return Daemon(lab, hook.settings, hook.prefix)
    return None


def said_by_the_daemon(way: Daemon | None, line: str) -> None:
    """Through the daemon, the hook's line is the daemon's answer: its
    worker logged the same refusal ("container ID: createRuntime: WHY")."""
    if way is None:
        return
    container, _, rest = line.removeprefix("wg-pod: container ").partition(": ")
    why = rest.removesuffix(" (journalctl -t wg-pod)")
    assert handled_by_the_daemon(way, container, f"createRuntime: {why}"), way.path.read_text()


def place_config(case: str, lab: Lab, config_dir: ConfigDir, text: str) -> str:
    """Put a valid config where ``case`` says; returns the annotation value."""
    if case == "relative path":
        return "etc/wg/wg0.conf"
    if case == "outside the allowed directories":
        outside = lab.tmp / "elsewhere.conf"
        outside.write_text(text)
        outside.chmod(0o600)
        return str(outside)
    if case == "symlink escaping the allowed directory":
        outside = lab.tmp / "target.conf"
        outside.write_text(text)
        outside.chmod(0o600)
        link = config_dir / "link.conf"
        link.symlink_to(outside)
        return str(link)
    if case == "directory":
        (config_dir / "dir.conf").mkdir()
        return str(config_dir / "dir.conf")
    if case == "fifo":
        os.mkfifo(config_dir / "fifo.conf", 0o600)
        return str(config_dir / "fifo.conf")
    if case == "missing file":
        return str(config_dir / "missing.conf")
    path = config_dir.write("wg0.conf", text)
    if case == "not owned by root":
        os.chown(path, 65534, 65534)
    elif case == "writable by others":
        path.chmod(0o602)
    elif case == "readable by group":
        path.chmod(0o640)
    elif case == "readable by others":
        path.chmod(0o604)
    return str(path)


CONFIG_CASES = {
    "relative path": "must be an absolute path",
    "outside the allowed directories": "not inside an allowed directory",
    "symlink escaping the allowed directory": "not inside an allowed directory",
    "directory": "not a regular file",
    "fifo": "not a regular file",
    "missing file": "does not exist",
    "not owned by root": "not owned by root",
    "writable by others": "writable by others",
    "readable by group": "readable by group or others",
    "readable by others": "readable by group or others",
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_path_refused(
    case: str,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    way: Daemon | None,
) -> None:
    value = place_config(case, lab, config_dir, peer.client_config())
    message = fails_cleanly(hook, standin, {"wg-pod.config": value})
    assert CONFIG_CASES[case] in message
    said_by_the_daemon(way, message)
    print(f"{case}: {message}")


def test_readable_config_accepted_when_the_settings_allow_it(
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    way: Daemon | None,
) -> None:
    hook = hook.with_settings(allow_readable_configs=True)
    path = config_dir.write("wg0.conf", peer.client_config())
    path.chmod(0o644)
    hook.up(standin, {"wg-pod.config": str(path)})
    if way is not None:
        assert handled_by_the_daemon(way, standin.id, "wg0 up"), way.path.read_text()
    assert peer.page in fetch_in(standin, peer.url_v4)


ANNOTATION_CASES = {
    "command in a port list": ("wg-pod.port-remapping", "80;reboot", "is not IFPORT"),
    "newline": ("wg-pod.interface", "wg0\nreboot", "control or non-ASCII"),
    "NUL": ("wg-pod.add-route", "10.9.0.0/16:10.250.0.1\x00", "control or non-ASCII"),
    "huge value": ("wg-pod.add-route", "10.9.0.0/16:10.250.0.1," * 500, "longer than 4096"),
    "non-ASCII": ("wg-pod.interface", "wgé", "control or non-ASCII"),
    "leading dash": ("wg-pod.interface", "-h", "not a valid interface name"),
    "nft injection": ("wg-pod.interface", 'x" accept', "not a valid interface name"),
    "unknown annotation": ("wg-pod.exec", "reboot", "unknown annotation"),
}


@pytest.mark.parametrize("case", ANNOTATION_CASES)
def test_annotation_refused(
    case: str,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    way: Daemon | None,
) -> None:
    key, value, expected = ANNOTATION_CASES[case]
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    message = fails_cleanly(hook, standin, {"wg-pod.config": conf, key: value})
    assert key in message and expected in message
    assert "\x00" not in message
    said_by_the_daemon(way, message)
    print(f"{case}: {message}")


def raw_hook(hook: HookRunner, state: str) -> tuple[int, str]:
    done = run(
        [*venv_command("wg-pod-hook", "wg_pod_hook.hook"), "createRuntime"],
        input=state,
        env=hook.env,
        check=False,
    )
    return done.returncode, done.stderr


STATE_CASES = {
    "not JSON": (lambda s: "this is not json", "not valid JSON"),
    "truncated JSON": (lambda s: s[: len(s) // 2], "not valid JSON"),
    "no id": (lambda s: json.dumps({**json.loads(s), "id": None}), "no valid container id"),
    "id with a path": (
        lambda s: json.dumps({**json.loads(s), "id": "../../etc/passwd"}),
        "no valid container id",
    ),
    "pid not a process": (
        lambda s: json.dumps({**json.loads(s), "pid": 2**22 + 12345}),
        "open network namespace",
    ),
    "pid in the host namespace": (
        lambda s: json.dumps({**json.loads(s), "pid": os.getpid()}),
        "uses the host network namespace",
    ),
}


@pytest.mark.parametrize("case", STATE_CASES)
def test_oci_state_refused(
    case: str,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    way: Daemon | None,
) -> None:
    mangle, expected = STATE_CASES[case]
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    code, stderr = raw_hook(hook, mangle(standin.oci_state({"wg-pod.config": conf})))
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1 and expected in stderr
    assert_nothing_left(standin)
    said_by_the_daemon(way, stderr.strip())
    print(f"{case}: {stderr.strip()}")


def the_spare(daemon: Daemon) -> int:
    """The daemon's one worker, forked ahead of the next request."""
    found: list[int] = []

    def one() -> bool:
        found[:] = children(daemon.process.pid)
        return len(found) == 1

    wait_for(one, timeout=10, what="the daemon's spare worker")
    return found[0]


@pytest.mark.parametrize("how", ["non-root user", "user namespace"])
def test_rootless_is_refused(
    how: str,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    way: Daemon | None,
) -> None:
    """Through the daemon this is the hook alone by construction: a hook
    that finds itself without root's privileges (hook.refusal) refuses before it
    would ask, and a non-root user could not reach the socket anyway (its
    0700 directory; test_handoff tests that guard and SO_PEERCRED).  The
    variant stays for what only it can show: the daemon heard nothing.  A
    hook that asked first would, in a user namespace mapping root, be
    served as root and have its tunnel set up."""
    spare = None if way is None else the_spare(way)
    conf = str(config_dir.write("wg0.conf", peer.client_config()))
    state = standin.oci_state({"wg-pod.config": conf})
    hook_argv = venv_command("wg-pod-hook", "wg_pod_hook.hook")
    wrap = (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if how == "non-root user"
        else ["unshare", "--user", "--map-root-user"]
    )
    done = run([*wrap, *hook_argv, "createRuntime"], input=state, env=hook.env, check=False)
    assert done.returncode == 1
    assert "wg-pod needs root or rootless podman" in done.stderr
    assert ("as a non-root user" if how == "non-root user" else "a user namespace of root's") in (
        done.stderr
    )
    assert_nothing_left(standin)
    if way is not None:
        assert children(way.process.pid) == [spare], "a request reached the daemon"
        heard = way.path.read_text()
        assert standin.id[:12] not in heard and "refused" not in heard, heard
    print(f"{how}: {done.stderr.strip()}")
