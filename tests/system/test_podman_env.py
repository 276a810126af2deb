"""The system-test environment itself: podman, the test image, OCI hooks.

Independent of wg-pod: proves that podman runs rootful containers here with
the test containers.conf, that they have podman's bridge network, and that a
``createRuntime`` hook from ``--hooks-dir`` runs with the state on stdin while
the container's network namespace is already set up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.lab import Lab, Podman

_HOOK_SCRIPT = """
import json, subprocess, sys
state = json.load(sys.stdin)
out = sys.argv[1]
routes = subprocess.run(
    ["nsenter", "--net=/proc/%d/ns/net" % state["pid"], "ip", "-j", "-4", "route"],
    capture_output=True, text=True, check=True,
).stdout
with open(state["bundle"] + "/config.json") as f:
    mounts = {m["destination"]: m.get("source") for m in json.load(f)["mounts"]}
resolv = mounts.get("/etc/resolv.conf")
with open(out, "w") as f:
    json.dump({"argv": sys.argv[2:], "state": state, "routes": json.loads(routes),
               "resolv_conf": resolv, "resolv_conf_text": open(resolv).read()}, f)
"""


def test_podman_runs_the_test_image(podman: Podman) -> None:
    _, proc = podman.run("echo", "hi")
    assert proc.stdout.strip() == "hi"


def test_container_has_podman_default_route(podman: Podman) -> None:
    _, proc = podman.run("ip", "-4", "route")
    defaults = [line for line in proc.stdout.splitlines() if line.startswith("default")]
    assert len(defaults) == 1, proc.stdout
    assert " dev eth0" in defaults[0]


def test_create_runtime_hook_sees_the_configured_netns(lab: Lab, podman: Podman) -> None:
    hooks = lab.tmp / "test-hooks.d"
    hooks.mkdir()
    out = lab.tmp / "hook-output.json"
    (hooks / "wgpt-test.json").write_text(
        json.dumps(
            {
                "version": "1.0.0",
                "hook": {
                    "path": sys.executable,
                    "args": [sys.executable, "-c", _HOOK_SCRIPT, str(out), "createRuntime"],
                    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "timeout": 30,
                },
                "when": {"annotations": {"^wgpt\\.test$": ".+"}},
                "stages": ["createRuntime"],
            }
        )
    )
    hooked = Podman(lab, hooks_dir=hooks)

    # Without the annotation the hook does not run.
    hooked.run("true")
    assert not out.exists()

    hooked.run("true", annotations={"wgpt.test": "yes"})
    result = json.loads(Path(out).read_text())
    assert result["argv"] == ["createRuntime"]
    # At createRuntime runc says "creating", crun "created" (podman 5's default).
    assert result["state"]["status"] == {"runc": "creating", "crun": "created"}[hooked.runtime]
    assert result["state"]["annotations"]["wgpt.test"] == "yes"
    # The resolv.conf podman bind-mounts is named in the bundle's config.json.
    assert result["resolv_conf"].endswith("/resolv.conf")
    if hooked.version < (5,):
        assert "nameserver" in result["resolv_conf_text"]
    else:
        # podman 5 writes it only after createRuntime (and over whatever a
        # hook wrote there): wg-pod mounts its own over it (tunnel/dns.py).
        assert result["resolv_conf_text"] == ""
    # podman (CNI) configured the network before createRuntime hooks run.
    assert any(r["dst"] == "default" for r in result["routes"]), result["routes"]
