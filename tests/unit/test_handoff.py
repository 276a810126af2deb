"""The hook's request and the daemon's answer, as bytes (handoff.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wg_pod_hook import handoff
from wg_pod_hook.runtime import Runtime

STATE = json.dumps({"ociVersion": "1.0.2", "id": "a" * 64, "pid": 42, "annotations": {"k": "ü"}})


def test_a_request_round_trips() -> None:
    data = handoff.encode_request("createRuntime", "/etc/wg-pod/x.yaml", 12.5, None, STATE)
    assert handoff.decode_request(data) == (
        "createRuntime",
        "/etc/wg-pod/x.yaml",
        12.5,
        None,
        STATE,
    )
    device = handoff.encode_request("poststop", None, None, "/etc/wg/wg0.conf", STATE)
    assert handoff.decode_request(device) == ("poststop", None, None, "/etc/wg/wg0.conf", STATE)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        # The version before the device's config: the hook then does the work itself.
        b"wg-pod-hook/1\0createRuntime\0\0" + b"0.0\0{}",
        b"wg-pod-hook/2\0createRuntime\0\0not-a-number\0\0{}",
        b"wg-pod-hook/2\0createRuntime\0\0" + b"0.0\0{}",
        b"wg-pod-hook/2\0\xff\xfe\0\0" + b"0.0\0\0{}",
    ],
)
def test_anything_else_is_not_a_request(data: bytes) -> None:
    with pytest.raises(ValueError):
        handoff.decode_request(data)


def test_an_answer_round_trips() -> None:
    line = "wg-pod: container 0123456789ab: config /etc/wg/x.conf: line 3: ..."
    assert handoff.decode_answer(handoff.encode_answer(1, line)) == (1, line)
    assert handoff.decode_answer(handoff.encode_answer(0, None)) == (0, None)


def test_no_daemon_means_no_answer() -> None:
    nowhere = Runtime("/nonexistent", root=True)
    assert handoff.ask("createRuntime", STATE, nowhere) is None


def test_the_hook_on_its_way_to_the_daemon_imports_almost_nothing() -> None:
    """Every module the thin hook imports costs every container start."""
    code = (
        "import sys; before = set(sys.modules); import wg_pod_hook.hook; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-I", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=handoff.__file__.rsplit("/", 2)[0],
        ).stdout.split()
    )
    light = {"wg_pod_hook", "wg_pod_hook.hook", "wg_pod_hook.handoff", "wg_pod_hook.runtime"}
    assert loaded <= {*light, "_socket"}, loaded
