"""Shared fixtures: the network lab (tests/lab), config dirs, settings, podman.

Integration and system tests need root (network namespaces, netlink,
rootful podman); they are skipped, saying so, only when not run as root.
A missing tool is never a reason to skip: scripts/setup installs them all,
so the lab fails with a message pointing at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.lab import (
    CONTAINERS_CONF,
    INSTALLED_HOOKS_DIR,
    SUITE_STATE_DIR,
    SYSTEM_PODMAN,
    TEST_IMAGE,
    ConfigDir,
    ContainerStandIn,
    Lab,
    Netns,
    Peer,
    Podman,
    daemon_lock_holders,
    make_config_dir,
    run,
    socket_servers,
    the_runtime,
    use_state_dir,
    venv_command,
    write_settings,
)
from wg_pod_hook.runtime import STATE_DIR_ENV

TESTS = Path(__file__).resolve().parent
_ROOT_DIRS = {"integration": "root", "system": "podman", "vm": "root", "platform": "root"}

# Everything started from the tests (podman, the hook via podman) uses the
# test-only podman configuration; nothing under /etc is edited. Inside the
# platform machine (SYSTEM_PODMAN, see tests/lab/base.py) podman runs as
# configured there.
if not SYSTEM_PODMAN:
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    # And a state directory of the suite's own (records, sockets, locks):
    # a packaged daemon serving /run/wg-pod is none of its business. The
    # hooks podman runs get it from the definitions `wg-pod install` writes.
    os.environ.setdefault(STATE_DIR_ENV, str(SUITE_STATE_DIR))


@pytest.fixture(scope="session", autouse=True)
def _no_kept_state_left() -> Iterator[None]:
    """The suite's own state directory starts absent, as on a fresh
    machine (what an aborted run left goes first), and goes with the
    session. Inside the platform machine, where the suite uses the
    installation's /run/wg-pod, what the product keeps beside the records
    for the containers the tests make fail or watch (the hook's kept
    failures, the daemon's health looks, the namespaces' locks) goes with
    the session, and so do those directories when the session made them."""
    state = the_runtime()
    if os.geteuid() == 0 and Path(state.state_dir) == SUITE_STATE_DIR:
        shutil.rmtree(SUITE_STATE_DIR, ignore_errors=True)
        yield
        shutil.rmtree(SUITE_STATE_DIR, ignore_errors=True)
        return
    # The namespaces' lock files too (a hook killed on purpose leaves its own).
    dirs = tuple(Path(d) for d in (state.failed, state.health, state.locks))
    existed = {d: d.exists() for d in dirs}
    before = {p for d in dirs if d.exists() for p in d.iterdir()}
    yield
    if os.geteuid() != 0:
        return
    for directory in dirs:
        if not directory.exists():
            continue
        for path in set(directory.iterdir()) - before:
            path.unlink(missing_ok=True)
        if not existed[directory] and not any(directory.iterdir()):
            directory.rmdir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = os.geteuid() == 0
    skip = pytest.mark.skip(
        reason="needs root (network namespaces, netlink, rootful podman): run sudo ./scripts/test"
    )
    for item in items:
        try:
            top = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        marker = _ROOT_DIRS.get(top)
        if marker is not None:
            item.add_marker(marker)
            if marker == "podman":
                item.add_marker("root")
        if not is_root and (item.get_closest_marker("root") or item.get_closest_marker("podman")):
            item.add_marker(skip)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Root tiers refuse to start beside a wg-pod daemon this session did
    not start on the suite's state directory (an orphan of an aborted run;
    inside the platform machine, the package's wg-pod.service): every
    Daemon() test would fail beside it, and the hooks would hand their work
    to its code. It is left running: the message says how to stop it. A
    packaged daemon on /run/wg-pod is none of the suite's business outside
    the machine."""
    if os.geteuid() != 0 or session.config.option.collectonly:
        return
    if not any(item.get_closest_marker("root") for item in session.items):
        return
    problem = foreign_daemon()
    if problem is not None:
        raise pytest.UsageError(problem)


def foreign_daemon() -> str | None:
    """What is wrong, in one message, when a wg-pod daemon runs on the
    suite's state directory: the process holding the daemon's lock on it,
    or serving its sockets (found without connecting to them)."""
    state = the_runtime()
    locks = daemon_lock_holders()
    sockets = {path: socket_servers(path) for path in (state.hook_socket, state.daemon_socket)}
    described = []
    for pid in sorted({*locks, *(pid for pids in sockets.values() for pid in pids)}):
        served = [path for path, pids in sockets.items() if pid in pids]
        what = ", ".join(
            ([f"holds the lock on {state.state_dir}"] if pid in locks else [])
            + ([f"serves {' and '.join(served)}"] if served else [])
        )
        if pid == 0:
            described.append(f"a process in another PID namespace {what}")
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            unit = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:  # ended meanwhile
            argv, unit = "ended meanwhile", ""
        stop = "systemctl stop wg-pod.service" if "/wg-pod.service" in unit else f"kill {pid}"
        described.append(f"PID {pid} ({argv.strip()}) {what}: stop it with `{stop}`")
    if not described:
        return None
    return (
        "a wg-pod daemon this test session did not start is running; the root tiers "
        "refuse to run beside it (Daemon() tests would fail, hooks would go to its "
        "code) and leave it alone: " + "; ".join(described) + ", then run again"
    )


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Owns every namespace, veth and process of one test; removes them at teardown."""
    with Lab() as the_lab:
        yield the_lab


@pytest.fixture
def netns(lab: Lab) -> Netns:
    """An empty network namespace ``wgpt-<rand>`` with ``lo`` up."""
    return lab.netns()


@pytest.fixture
def peer(lab: Lab) -> Peer:
    """A WireGuard peer with an HTTP server on its tunnel addresses."""
    return lab.peer()


@pytest.fixture
def make_peer(lab: Lab) -> Callable[..., Peer]:
    """Factory for more peers: ``make_peer(listen_port=51820, http=True)``."""
    return lab.peer


@pytest.fixture
def standin(lab: Lab) -> ContainerStandIn:
    """A namespace with a sleeping process, a veth and default routes like podman's."""
    return lab.standin()


@pytest.fixture
def make_standin(lab: Lab) -> Callable[[], ContainerStandIn]:
    return lab.standin


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's state directory (runtime.py) for one test: ``wg-pod``
    in ``tmp_path``, not made yet."""
    return use_state_dir(monkeypatch, tmp_path / "wg-pod")


@pytest.fixture
def config_dir(lab: Lab) -> ConfigDir:
    """A root-owned 0700 temp dir; ``config_dir.write(name, text)`` writes 0600 files."""
    return make_config_dir(lab)


@pytest.fixture
def settings(lab: Lab, config_dir: ConfigDir) -> Path:
    """Path of a settings YAML allowing ``config_dir``, backend userspace (for WG_POD_SETTINGS)."""
    return write_settings(lab.tmp / "wg-pod.yaml", [config_dir.path])


@pytest.fixture
def make_settings(lab: Lab, config_dir: ConfigDir) -> Callable[..., Path]:
    """``make_settings(**extra)``: settings like ``settings`` plus/overriding keys."""

    def make(**extra: object) -> Path:
        path = Path(tempfile.mkstemp(dir=lab.tmp, prefix="wg-pod-", suffix=".yaml")[1])
        extra.setdefault("config_dirs", [str(config_dir.path)])
        config_dirs = extra.pop("config_dirs")
        assert isinstance(config_dirs, list)
        return write_settings(path, config_dirs, **extra)

    return make


@pytest.fixture(scope="session")
def podman_ready() -> None:
    """Fails (never skips) when the test image is missing: scripts/setup builds it."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    env = (
        dict(os.environ)
        if SYSTEM_PODMAN
        else {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    )
    proc = run(["podman", "image", "exists", TEST_IMAGE], check=False, env=env)
    if proc.returncode != 0:
        pytest.fail(f"image {TEST_IMAGE} missing: run scripts/setup")
    # The image carries the key of the recipe it was built from.
    want = run([str(TESTS.parent / "scripts" / "test-image"), "--key"]).stdout.strip()
    label = '{{index .Config.Labels "wg-pod.test-image"}}'
    have = run(["podman", "image", "inspect", "--format", label, TEST_IMAGE], env=env)
    if have.stdout.strip() != want:
        pytest.fail(
            f"image {TEST_IMAGE} is not this recipe's (label {have.stdout.strip()!r}, "
            f"scripts/test-image --key {want!r}): run scripts/setup"
        )


@pytest.fixture
def podman(lab: Lab, podman_ready: None) -> Podman:
    """podman with the test containers.conf and the default hooks dirs."""
    return Podman(lab)


@pytest.fixture
def hooks_dir(lab: Lab, settings: Path) -> Path:
    """A hooks dir filled by ``wg-pod install --hooks-dir DIR --settings SETTINGS``;
    with ``SYSTEM_PODMAN``, podman's own, where the package installed the hook."""
    if SYSTEM_PODMAN:
        for stage in ("createRuntime", "poststop"):
            definition = INSTALLED_HOOKS_DIR / f"wg-pod-{stage}.json"
            assert definition.is_file(), f"{definition} missing: is the package installed?"
        return INSTALLED_HOOKS_DIR
    path = lab.tmp / "hooks.d"
    path.mkdir()
    proc = subprocess.run(
        [
            *venv_command("wg-pod", "wg_pod_hook.cli"),
            "install",
            "--hooks-dir",
            str(path),
            "--settings",
            str(settings),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"wg-pod install failed: {proc.stderr.strip()}"
    return path


@pytest.fixture
def hooked_podman(lab: Lab, podman_ready: None, hooks_dir: Path) -> Podman:
    """podman that uses only the wg-pod hooks installed in ``hooks_dir``; with
    ``SYSTEM_PODMAN``, podman with no hooks configuration of the test at all."""
    return Podman(lab, hooks_dir=None if SYSTEM_PODMAN else hooks_dir)
