"""The CDI door: ``wg-pod cdi generate`` writes a device per allowed
config, and ``podman run --device wg-pod.dev/tunnel=NAME`` (podman reads
CDI since 3.2) puts the container on that tunnel, without a wg-pod
annotation and without hooks.d; annotations may add options, and a
container whose annotations wake hooks.d's hook too gets one tunnel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lab import (
    RETRYING_WGET,
    ConfigDir,
    Lab,
    Peer,
    Podman,
    assert_host_clean,
    run,
    the_runtime,
    token,
    venv_command,
)

pytestmark = pytest.mark.podman

# podman 4.3 reads CDI specs from /etc/cdi and /var/run/cdi only (no
# cdi_spec_dirs setting yet): the test's spec goes into the runtime one,
# under a name of its own, with device names of its own.
CDI_RUN_DIR = Path("/var/run/cdi")


def generate(lab: Lab, settings: Path) -> Path:
    spec = CDI_RUN_DIR / f"wgpt-{token()}.json"
    lab.defer(f"remove {spec}", lambda: spec.unlink(missing_ok=True))
    env = {**os.environ, "WG_POD_SETTINGS": str(settings)}
    runtime = the_runtime()
    if not runtime.is_default:
        env["WG_POD_STATE_DIR"] = runtime.state_dir
    done = run(
        [
            *venv_command("wg-pod", "wg_pod_hook.cli"),
            "cdi",
            "generate",
            "--output",
            str(spec),
            "--settings",
            str(settings),
        ],
        env=env,
    )
    assert f"wrote {spec}" in done.stdout, done.stdout
    return spec


@pytest.fixture
def device(lab: Lab, peer: Peer, config_dir: ConfigDir, settings: Path) -> tuple[str, Path]:
    """A config of a name of its own (the device's, and the interface's) and
    the CDI spec that offers it."""
    name = f"t{token(6)}"
    config = config_dir.write(f"{name}.conf", peer.client_config())
    generate(lab, settings)
    return f"wg-pod.dev/tunnel={name}", config


def test_a_container_asking_for_the_device_fetches_through_its_tunnel(
    peer: Peer, podman: Podman, device: tuple[str, Path]
) -> None:
    """No annotation, no hooks.d of ours: the device alone."""
    qualified, _config = device
    script = " && ".join(
        [RETRYING_WGET.format(url=peer.url_v4), RETRYING_WGET.format(url=peer.url_v6), "ip -o link"]
    )
    _, done = podman.run("sh", "-c", script, options=["--device", qualified])
    assert done.stdout.count(peer.page) == 2, done.stdout + done.stderr
    assert f": {qualified.rpartition('=')[2]}: " in done.stdout  # named after its config
    assert_host_clean()


def test_annotations_add_options_and_hooks_d_leaves_the_container_to_the_device(
    peer: Peer, hooked_podman: Podman, device: tuple[str, Path]
) -> None:
    """wg-pod.* annotations wake hooks.d's hook as well: it leaves the
    container to the device's, which takes them as options."""
    qualified, _config = device
    _, done = hooked_podman.run(
        "sh",
        "-c",
        "ip -4 route; " + RETRYING_WGET.format(url=peer.url_v4),
        options=["--device", qualified],
        annotations={"wg-pod.interface": "tun7", "wg-pod.dns": "off"},
    )
    assert peer.page in done.stdout, done.stdout + done.stderr
    assert " dev tun7" in done.stdout
    assert_host_clean()


def test_a_device_and_an_annotation_naming_another_config_are_refused(
    peer: Peer, config_dir: ConfigDir, podman: Podman, device: tuple[str, Path]
) -> None:
    qualified, config = device
    other = config_dir.write("other.conf", peer.client_config())
    name, done = podman.run(
        "true",
        options=["--device", qualified],
        annotations={"wg-pod.config": str(other)},
        check=False,
    )
    assert done.returncode != 0
    said = podman.hook_error(name, done)
    assert (
        f"annotation wg-pod.config: '{other}', but the container's wg-pod device gives "
        f"{config}: ask for one tunnel" in said
    ), said
    assert_host_clean()
