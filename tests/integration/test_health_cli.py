"""``wg-pod health`` and ``status`` as an ordinary user, against a real
tunnel: it cannot read the state directory, so it cannot know, and says so
(health: exit 2, status: exit 1, one line each, saying who can read it)
instead of reporting every tunnel healthy or none at all.  So does a user
with no state of their own, who has no rootless tunnels of their own to be
shown through podman unshare.
"""

from __future__ import annotations

import json
import os
import pwd

import pytest

from tests.integration.support import fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Peer, run, venv_command
from wg_pod_hook.runtime import STATE_DIR_ENV

pytestmark = pytest.mark.root

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
WHO = "needs root, or run as the rootless podman user whose tunnels these are"


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
        assert lines[0].endswith(f"({WHO})")

    for args in ([], [standin.id], ["--json"]):
        done = run([*NOBODY, *WG_POD, "status", *args], env=env, check=False)
        assert (done.returncode, done.stdout) == (1, ""), (args, done.stderr)
        assert done.stderr == (
            f"wg-pod: cannot read wg-pod's state {env[STATE_DIR_ENV]}: Permission denied ({WHO})\n"
        )


def test_a_user_with_no_state_of_their_own_is_told_who_can_read_it() -> None:
    """nobody, as a rootless user: wg-pod would look in their runtime
    directory through podman unshare; there is none, and podman is not run."""
    theirs = f"/run/user/{pwd.getpwnam('nobody').pw_uid}/wg-pod"
    assert not os.path.exists(theirs)
    env = {"PATH": os.environ["PATH"]}
    message = f"cannot read wg-pod's state {theirs}: No such file or directory ({WHO})"
    done = run([*NOBODY, *WG_POD, "status"], env=env, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"wg-pod: {message}\n")
    done = run([*NOBODY, *WG_POD, "health"], env=env, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"wg-pod: cannot tell the health: {message}\n"
    done = run([*NOBODY, *WG_POD, "health", "--json"], env=env, check=False)
    assert done.returncode == 2
    assert json.loads(done.stdout)["verdict"] == "unknown"
