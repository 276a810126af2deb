"""A settings file someone other than root can write stops the hook.

The settings name a command the hook runs as root (``userspace_command``)
and the directories configs may come from: the file is held to the
configs' rule (root's, writable by no one else, in directories only root
can change).  Each case runs with the hook alone and through the daemon,
which loads the settings the hook names: one line, nothing run, nothing
left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.support import fails_cleanly, fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, Daemon, HookRunner, Lab, Peer

pytestmark = pytest.mark.root

NOBODY = 65534


@pytest.fixture
def backend() -> str:
    """The userspace backend is the one that runs ``userspace_command``."""
    return "userspace"


@pytest.fixture(params=["hook alone", "through the daemon"])
def way(request: pytest.FixtureRequest, lab: Lab, hook: HookRunner) -> Daemon | None:
    """The daemon the hook hands its stage to; None: the hook alone."""
    if request.param == "through the daemon":
        return Daemon(lab, hook.settings)  # its own settings are fine; the hook's are not
    return None


def test_a_group_writable_settings_file_stops_the_container(
    way: Daemon | None,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    conf = write_config(config_dir, peer.client_config())
    settings = Path(hook.settings)
    os.chown(settings, 0, NOBODY)
    settings.chmod(0o664)

    message = fails_cleanly(hook, standin, {"wg-pod.config": conf})

    assert f"settings: {settings}: settings file is writable by others (chmod 644)" in message
    settings.chmod(0o644)  # mended: the same container starts
    hook.up(standin, {"wg-pod.config": conf})
    assert peer.page in fetch_in(standin, peer.url_v4)


def test_a_command_in_a_settings_file_of_another_user_is_never_run(
    way: Daemon | None,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    marker = lab.tmp / "ran-as-root"
    hostile = hook.with_settings(userspace_command=["/bin/sh", "-c", f"touch {marker}"])
    os.chown(hostile.settings, NOBODY, NOBODY)
    conf = write_config(config_dir, peer.client_config())

    message = fails_cleanly(hostile, standin, {"wg-pod.config": conf})

    assert f"settings: {hostile.settings}: settings file is not owned by root" in message
    assert not marker.exists()


def test_a_settings_file_in_a_directory_others_may_write_is_refused(
    way: Daemon | None,
    lab: Lab,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    shared = lab.tmp / "shared"
    shared.mkdir()
    moved = shared / "wg-pod.yaml"
    Path(hook.settings).rename(moved)
    shared.chmod(0o777)  # anyone could put a file of root's aside and another in place
    conf = write_config(config_dir, peer.client_config())

    message = fails_cleanly(HookRunner(lab, moved), standin, {"wg-pod.config": conf})

    assert f"settings: {moved}: directory {shared} is writable by others" in message
