"""``wg-pod health`` as an ordinary user, against a real tunnel: it cannot
read the state directory, so it cannot know, and says so (exit 2, one line)
instead of reporting every tunnel healthy.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.support import fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Peer, run, venv_command

pytestmark = pytest.mark.root

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def backend() -> str:
    return "userspace"


def test_an_ordinary_user_gets_exit_2_not_healthy(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    hook.up(standin, {"wg-pod.config": write_config(config_dir, peer.client_config())})
    assert peer.page in fetch_in(standin, peer.url_v4)
    env = {**os.environ, **hook.env}
    as_root = run([*WG_POD, "health", standin.id], env=env, check=False)
    assert (as_root.returncode, as_root.stdout.strip()) == (0, f"{standin.id[:12]}: up")

    for args in ([], [standin.id]):
        done = run([*NOBODY, *WG_POD, "health", *args], env=env, check=False)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("wg-pod: cannot tell the health: ")
        assert "Permission denied" in lines[0]
