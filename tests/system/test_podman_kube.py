"""A Kubernetes Pod manifest with the annotation in its metadata, run by
``podman kube play`` (the same manifest a CRI-O node takes): podman copies
the pod's annotations to its containers, the first to start sets the
tunnel up in the pod's namespace, the others share it; ``kube down``
leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.lab import (
    REPO,
    RETRYING_WGET,
    TEST_IMAGE,
    ConfigDir,
    Lab,
    Peer,
    Podman,
    assert_host_clean,
    token,
    wait_for,
)

pytestmark = pytest.mark.podman


EXAMPLE = REPO / "packaging" / "kube" / "wg-pod-example.yaml"


def manifest(lab: Lab, name: str, config: Path, script: str) -> Path:
    """The shipped example, with its name, its config, its image and its
    command replaced; its other annotations are its own."""
    pod = yaml.safe_load(EXAMPLE.read_text())
    pod["metadata"]["name"] = name
    assert "wg-pod.config" in pod["metadata"]["annotations"], f"{EXAMPLE} changed shape"
    pod["metadata"]["annotations"]["wg-pod.config"] = str(config)
    pod["spec"]["restartPolicy"] = "Never"
    (container,) = pod["spec"]["containers"]
    container.update(
        image=TEST_IMAGE,
        imagePullPolicy="Never",
        # The test image sets no PATH, and kube play gives none.
        command=["/bin/sh", "-c", script],
        env=[{"name": "PATH", "value": "/usr/sbin:/usr/bin:/sbin:/bin"}],
    )
    path = lab.tmp / f"{name}.yaml"
    path.write_text(json.dumps(pod))  # JSON is YAML
    return path


def test_a_pod_manifest_with_the_annotation_puts_the_pod_on_the_tunnel(
    lab: Lab, peer: Peer, config_dir: ConfigDir, hooked_podman: Podman
) -> None:
    # The example deletes podman's default route: the tunnel is the way out.
    config = config_dir.write("wg0.conf", peer.client_config(allowed_ips=["0.0.0.0/0", "::/0"]))
    name = f"wgpt-{token()}"
    script = f"{RETRYING_WGET.format(url=peer.url_v4)}; ip -o link; ip -4 route; exec sleep 600"
    path = manifest(lab, name, config, script)

    def down() -> None:
        hooked_podman("kube", "down", str(path), check=False)

    lab.defer(f"kube down {name}", down)
    hooked_podman("kube", "play", str(path))
    container = f"{name}-app"  # kube play's name: the pod's, then the example's container's
    wait_for(
        lambda: peer.page in hooked_podman("logs", container, check=False).stdout,
        timeout=40,
        what=f"the page in the logs of {container}",
    )
    logs = hooked_podman("logs", container).stdout
    assert ": wg0: " in logs and "default dev wg0" in logs, logs
    hooked_podman("kube", "down", str(path))
    assert_host_clean()
