"""The namespace lock without root: a file of its own under the records'
directory (a temporary one here), named after the namespace, removed by
its holder; this process's own namespace stands in for a container's."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import the_runtime
from wg_pod_hook.errors import SetupError
from wg_pod_hook.state import locks
from wg_pod_hook.state.locks import keys_lock, namespace_lock, sweep_locks

pytestmark = pytest.mark.usefixtures("state_dir")


@pytest.fixture
def netns_fd() -> Iterator[int]:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


def lock_path(state_dir: Path) -> Path:
    info = os.stat("/proc/self/ns/net")
    return state_dir / "locks" / f"netns-{info.st_dev}-{info.st_ino}"


def test_the_lock_is_a_root_only_file_named_after_the_namespace_and_goes_with_its_holder(
    state_dir: Path, netns_fd: int
) -> None:
    with namespace_lock(the_runtime(), netns_fd):
        path = lock_path(state_dir)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.stat().st_uid == path.parent.stat().st_uid == os.geteuid()
    assert not path.exists()
    assert list(path.parent.iterdir()) == []


class SleepClock:
    """The lock's clock in a test: only its sleeps move it on, so what it
    measures is the wait itself, however slow the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_second_hook_waits_for_the_first_then_gives_up(
    netns_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = SleepClock()
    with namespace_lock(the_runtime(), netns_fd), monkeypatch.context() as m:
        m.setattr(locks, "time", clock)
        with (
            pytest.raises(SetupError, match="lock network namespace: another hook holds it"),
            namespace_lock(the_runtime(), netns_fd, deadline=0.2),
        ):
            pass
    # Its deadline, not before, and not more than a poll's step after.
    assert 0.2 <= clock.now - 1000.0 < 0.25
    with namespace_lock(the_runtime(), netns_fd, deadline=0.2):  # free again
        pass


def test_the_keys_lock_is_one_for_all_namespaces_and_goes_with_its_holder(
    state_dir: Path, netns_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held across namespaces (a namespace's lock does not stand in its
    way), named in the error of the hook that waited too long."""
    monkeypatch.setattr(locks, "time", SleepClock())
    with keys_lock(the_runtime()), namespace_lock(the_runtime(), netns_fd):
        path = state_dir / "locks" / "keys"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with (
            pytest.raises(SetupError, match="lock private keys: another hook holds it"),
            keys_lock(the_runtime(), deadline=0.2),
        ):
            pass
    assert list(path.parent.iterdir()) == []


def test_hooks_one_after_the_other_never_overlap(state_dir: Path, netns_fd: int) -> None:
    """Each holder removes the file as it lets go; one that waited on that
    file starts again on the new one, so two never hold the lock at once."""
    inside: list[int] = []
    overlaps: list[int] = []
    errors: list[BaseException] = []

    def hook(number: int) -> None:
        try:
            for _ in range(15):
                with namespace_lock(the_runtime(), netns_fd, deadline=20):
                    inside.append(number)
                    if len(inside) > 1:
                        overlaps.append(number)
                    time.sleep(0.001)
                    inside.remove(number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hook, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and overlaps == []
    assert list(lock_path(state_dir).parent.iterdir()) == []


def test_a_file_a_killed_holder_left_is_used_and_swept(state_dir: Path, netns_fd: int) -> None:
    with namespace_lock(the_runtime(), netns_fd):
        pass
    left = lock_path(state_dir)
    left.touch(mode=0o600)  # as a holder killed before it removed its file
    with namespace_lock(the_runtime(), netns_fd, deadline=0.2):
        pass
    assert not left.exists()
    left.touch(mode=0o600)
    assert sweep_locks(the_runtime()) == [left.name]
    assert not left.exists()


def test_the_sweep_leaves_a_held_lock_alone(state_dir: Path, netns_fd: int) -> None:
    with namespace_lock(the_runtime(), netns_fd):
        assert sweep_locks(the_runtime()) == []
        assert lock_path(state_dir).exists()
    assert sweep_locks(the_runtime()) == []


def test_a_lock_directory_open_to_others_is_closed_again(state_dir: Path, netns_fd: int) -> None:
    directory = state_dir / "locks"
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    with namespace_lock(the_runtime(), netns_fd):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_lock_directory_of_another_user_is_refused(state_dir: Path, netns_fd: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    directory = state_dir / "locks"
    directory.mkdir(parents=True, mode=0o700)
    os.chown(directory, 65534, 65534)
    with (
        pytest.raises(SetupError, match=f"lock {directory}: owned by uid 65534, not by root"),
        namespace_lock(the_runtime(), netns_fd),
    ):
        pass


def test_a_symlink_in_place_of_the_lock_file_is_not_followed(
    state_dir: Path, netns_fd: int, tmp_path: Path
) -> None:
    with namespace_lock(the_runtime(), netns_fd):
        pass
    target = tmp_path / "elsewhere"
    lock_path(state_dir).symlink_to(target)
    with (
        pytest.raises(SetupError, match="lock network namespace"),
        namespace_lock(the_runtime(), netns_fd, deadline=0.2),
    ):
        pass
    assert not target.exists()
