"""Annotations that look like wg-pod's but are not quite right, under real
podman: the hooks.d definitions send every ``wg-pod.*`` key (any case) to
the hook, which refuses the container instead of letting it start without
its tunnel and without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import ConfigDir, Lab, Peer, Podman, assert_host_clean, run
from wg_pod_hook.model.names import TABLE

pytestmark = pytest.mark.podman

UNKNOWN = "annotation %s: unknown annotation; "


def _marker(lab: Lab) -> tuple[Path, list[str]]:
    """A file the container's command creates in a bind mount: it exists on
    the host only when the command ran; and the ``-v`` option for it."""
    out = lab.tmp / "out"
    out.mkdir(exist_ok=True)
    return out / "started", ["-v", f"{out}:/out"]


def _nothing_left(podman: Podman, name: str) -> None:
    assert_host_clean()
    assert TABLE not in run(["nft", "list", "tables"]).stdout
    assert name not in podman("ps", "-a", "--format", "{{.Names}}").stdout.split()


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("wg-pod.confg", "CONF", f"{UNKNOWN % 'wg-pod.confg'}did you mean wg-pod.config?"),
        ("wg-pod.config", "", "annotation wg-pod.config: empty value"),
        ("wg-pod.Config", "CONF", f"{UNKNOWN % 'wg-pod.Config'}keys are lower case: did you"),
    ],
    ids=["typo", "empty", "case"],
)
def test_a_misspelt_or_empty_annotation_stops_the_container(
    lab: Lab,
    peer: Peer,
    config_dir: ConfigDir,
    hooked_podman: Podman,
    key: str,
    value: str,
    said: str,
) -> None:
    conf = config_dir.write("wg0.conf", peer.client_config())
    marker, volume = _marker(lab)
    name, done = hooked_podman.run(
        "touch",
        "/out/started",
        annotations={key: value.replace("CONF", str(conf))},
        options=volume,
        check=False,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert not marker.exists(), "the container's command ran"
    message = hooked_podman.hook_error(name, done)
    assert said in message, message
    _nothing_left(hooked_podman, name)


def test_a_refused_container_is_removed_cleanly(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    """Without --rm the refused container stays (created, never started);
    ``podman rm`` runs the poststop hook, which does not fail the removal."""
    conf = config_dir.write("wg0.conf", peer.client_config())
    marker, volume = _marker(lab)
    name, done = hooked_podman.run(
        "touch",
        "/out/started",
        annotations={"wg-pod.confg": str(conf)},
        options=volume,
        rm=False,
        check=False,
    )
    assert done.returncode != 0 and not marker.exists()
    assert name in hooked_podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    removed = hooked_podman("rm", name, check=False)
    assert removed.returncode == 0, removed.stderr
    assert "wg-pod" not in removed.stderr, removed.stderr
    _nothing_left(hooked_podman, name)


def test_other_annotations_do_not_run_the_hook(lab: Lab, hooked_podman: Podman) -> None:
    """The control: keys that only contain ``wg-pod.`` are not wg-pod's, and
    the command does run (so the marker above would show it ran)."""
    marker, volume = _marker(lab)
    annotations = {"io.podman.x": "wg-pod.config", "org.example.wg-pod.config": "/etc/wg/x"}
    name, _ = hooked_podman.run("touch", "/out/started", annotations=annotations, options=volume)
    assert marker.exists()
    _nothing_left(hooked_podman, name)
