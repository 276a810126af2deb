"""A container that cannot get its tunnel: what the user sees, per runtime.

runc passes the hook's one line on to ``podman run``'s stderr; crun
(podman 5's default) throws it away and says only ``crun: error executing
hook ... (exit code: 1)``. Either way ``wg-pod status`` names the container
and the cause, without podman's API and without a key in sight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.lab import ConfigDir, Lab, Podman, genkey, run, the_runtime, venv_command

pytestmark = pytest.mark.podman

WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")


def test_wg_pod_status_names_a_container_that_failed_to_start(
    lab: Lab, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    key = genkey()
    conf = config_dir.write("broken.conf", f"[Interface]\nPrivateKey = {key}\nListenPort = 70000\n")
    marker = lab.tmp / "started"
    name, done = hooked_podman.run(
        "sh", "-c", f"touch {marker}", annotations={"wg-pod.config": str(conf)}, check=False
    )
    assert done.returncode != 0
    assert not marker.exists()
    if hooked_podman.runtime == "crun":
        assert "error executing hook" in done.stderr, done.stderr
        assert "wg-pod: container" not in done.stderr  # what makes status needed
    else:
        assert "wg-pod: container " in done.stderr and f"{conf}:3" in done.stderr

    # No podman API here: the name is the one the hook kept.
    env = {**os.environ, "CONTAINER_HOST": "unix:///nonexistent/podman.sock"}
    human = run([*WG_POD, "status", name], env=env).stdout
    assert f"container: {name} (" in human, human
    assert "failed to start: config: " in human and f"{conf}:3" in human, human
    data = json.loads(run([*WG_POD, "status", "--json"], env=env).stdout)
    assert data["version"] == 1
    ours = [f for f in data["failures"] if f["name"] == name]
    assert len(ours) == 1, data["failures"]
    (failure,) = ours
    assert len(failure["container_id"]) == 64
    assert failure["stage"] == "createRuntime"
    assert f"{conf}:3" in failure["message"] and "ListenPort" in failure["message"]
    kept = "".join(p.read_text() for p in Path(the_runtime().failed).iterdir())
    everything = human + json.dumps(data) + kept
    assert key not in everything
