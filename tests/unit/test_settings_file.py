"""The settings file is held to the configs' rule: root's, writable by no
one else, in directories only root can change (sshd's StrictModes).

It names a command root runs (``userspace_command``) and where configs may
be, so whoever can write it can make the hook run anything.  Making files
owned by root (or by someone else) needs root, as these tests run in CI;
as another user, only the refusal of that user's own file is shown.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lab import the_runtime
from wg_pod_hook import runtime
from wg_pod_hook.errors import SettingsError, describe
from wg_pod_hook.model.settings import Settings, load_settings
from wg_pod_hook.model.trust import MAX_SIZE

NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="making files owned by root or by another user needs root"
)


def write(directory: Path, mode: int = 0o644, text: str = "backend: kernel\n") -> Path:
    path = directory / "wg-pod.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def refusal(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one line the hook prints when ``path`` is its settings file."""
    monkeypatch.setenv("WG_POD_SETTINGS", str(path))
    with pytest.raises(SettingsError) as caught:
        load_settings(the_runtime())
    line = describe(caught.value)
    assert "\n" not in line
    assert line.startswith(f"settings: {path}: ")
    return line


@needs_root
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640, 0o400])
def test_a_file_of_roots_that_only_root_writes_is_read(
    mode: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WG_POD_SETTINGS", str(write(tmp_path, mode)))
    assert load_settings(the_runtime()).backend == "kernel"


def test_a_file_not_owned_by_root_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    # (Not root: the file is this user's already.)
    assert refusal(path, monkeypatch).endswith("settings file is not owned by root")


@needs_root
@pytest.mark.parametrize(
    ("mode", "group"), [(0o664, NOBODY), (0o646, 0), (0o666, 0), (0o620, NOBODY)]
)
def test_a_file_others_may_write_is_refused(
    mode: int, group: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, mode)
    os.chown(path, 0, group)
    assert refusal(path, monkeypatch).endswith("settings file is writable by others (chmod 644)")


@needs_root
def test_group_root_may_write_as_with_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 0o664)
    os.chown(path, 0, 0)
    monkeypatch.setenv("WG_POD_SETTINGS", str(path))
    assert load_settings(the_runtime()).backend == "kernel"


@needs_root
def test_a_directory_others_may_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    path = write(shared)
    shared.chmod(0o777)
    assert refusal(path, monkeypatch).endswith(f"directory {shared} is writable by others")


@needs_root
def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    path = write(theirs)
    os.chown(theirs, NOBODY, NOBODY)
    assert refusal(path, monkeypatch).endswith(f"directory {theirs} is not owned by root")


@needs_root
def test_a_sticky_directory_is_accepted_like_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others cannot rename or remove root's file in a sticky directory."""
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    monkeypatch.setenv("WG_POD_SETTINGS", str(write(sticky)))
    assert load_settings(the_runtime()).backend == "kernel"


@needs_root
def test_a_symlink_is_judged_by_its_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write(tmp_path)
    link = tmp_path / "link.yaml"
    link.symlink_to(good)
    monkeypatch.setenv("WG_POD_SETTINGS", str(link))
    assert load_settings(the_runtime()).backend == "kernel"
    os.chown(good, NOBODY, NOBODY)
    assert refusal(link, monkeypatch).endswith("settings file is not owned by root")


@needs_root
def test_what_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo, 0o600)
    assert refusal(fifo, monkeypatch).endswith("settings file is not a regular file")
    assert refusal(tmp_path, monkeypatch).endswith("settings file is not a regular file")


@needs_root
def test_a_huge_or_binary_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    huge = write(tmp_path, text="#" * (MAX_SIZE + 1))
    assert refusal(huge, monkeypatch).endswith("settings file is larger than 1 MiB")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"backend: \xff\n")
    assert refusal(binary, monkeypatch).endswith("settings file is not UTF-8 text")


def test_an_absent_default_file_means_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WG_POD_SETTINGS", raising=False)
    monkeypatch.setattr(runtime, "DEFAULT_SETTINGS", str(tmp_path / "absent" / "wg-pod.yaml"))
    assert load_settings(the_runtime()) == Settings()


def test_the_runtimes_directories_for_configs_are_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime of another situation (a rootless one, one day) brings its
    own directories for configs."""
    monkeypatch.setattr(runtime, "DEFAULT_SETTINGS", str(tmp_path / "absent" / "wg-pod.yaml"))
    elsewhere = runtime.Runtime("/run/x", root=True, config_dirs=("/home/u/.config/wg-pod",))
    assert load_settings(elsewhere).config_dirs == (Path("/home/u/.config/wg-pod"),)


@needs_root
def test_a_settings_file_names_other_directories_than_the_runtimes(tmp_path: Path) -> None:
    named = write(tmp_path, text="config_dirs: [/srv/wg]\nbackend: kernel\n")
    elsewhere = runtime.Runtime("/run/x", True, str(named), config_dirs=("/home/u/.config/wg",))
    loaded = load_settings(elsewhere)
    assert (loaded.config_dirs, loaded.backend) == ((Path("/srv/wg"),), "kernel")
