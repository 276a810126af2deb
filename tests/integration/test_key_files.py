"""Keys kept out of the config: wg-quick's key hooks (``PostUp = wg set %i
private-key FILE``, and a peer's ``preshared-key FILE``) and the annotation
wg-pod.private-key, each read by the configs' rules; a key file that breaks
them stops the container with one line naming it, and leaves nothing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.integration.support import assert_nothing_left, fails_cleanly, fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Peer, run, the_runtime, venv_command
from wg_pod_hook.state import records

pytestmark = pytest.mark.root

KEY_LINE = re.compile(r"^(PrivateKey|PresharedKey) = .*\n", re.MULTILINE)


def without_keys(config: str) -> str:
    return KEY_LINE.sub("", config)


def with_interface_lines(config: str, *lines: str) -> str:
    return config.replace("[Interface]\n", "[Interface]\n" + "".join(f"{x}\n" for x in lines), 1)


def test_wg_quicks_key_hooks_give_the_private_and_the_preshared_key(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    """The tunnel carries traffic only with both keys right; `%i` is the
    config's name; `wg-pod check` says where the key comes from."""
    client = peer.add_client(preshared=True)
    assert client.preshared_key is not None
    key = config_dir.write("wg7.key", client.private_key + "\n")
    psk = config_dir.write("wg7.psk", client.preshared_key + "\n")
    text = with_interface_lines(
        without_keys(client.config),
        f"PostUp = wg set %i private-key {config_dir.path}/%i.key",
        f"PostUp = wg set %i peer {client.peer_public_key} preshared-key {psk}",
    )
    config = write_config(config_dir, text, "wg7.conf")
    hook.up(standin, {"wg-pod.config": config})
    assert peer.page in fetch_in(standin, peer.url_v4)
    env = {**os.environ, "WG_POD_SETTINGS": str(hook.settings)}
    check = run([*venv_command("wg-pod", "wg_pod_hook.cli"), "check", config], env=env, check=False)
    assert f"private key: from {key} (PostUp on line 2)" in check.stdout, check.stdout
    assert client.private_key not in check.stdout + check.stderr


def test_the_annotation_gives_the_key_of_a_config_without_one(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    client = peer.add_client()
    key = config_dir.write("web.key", client.private_key + "\n")
    config = write_config(config_dir, without_keys(client.config))
    hook.up(standin, {"wg-pod.config": config, "wg-pod.private-key": str(key)})
    assert peer.page in fetch_in(standin, peer.url_v4)
    # Both files, for the daemon to notice a change (reload_on_change).
    record = records.load(the_runtime(), standin.id)
    assert record is not None and set(record.sources) == {config, str(key)}


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("readable", "is readable by group or others (chmod 600)"),
        ("outside", "is not inside an allowed directory"),
        ("missing", "does not exist"),
        ("not-a-key", "is not a base64 key from `wg genkey`"),
    ],
)
def test_a_key_file_that_breaks_the_rules_stops_the_container_and_leaves_nothing(
    how: str,
    problem: str,
    peer: Peer,
    standin: ContainerStandIn,
    config_dir: ConfigDir,
    hook: HookRunner,
    tmp_path: Path,
) -> None:
    client = peer.add_client()
    key = config_dir.path / "wg0.key"
    if how == "readable":
        config_dir.write("wg0.key", client.private_key + "\n", mode=0o644)
    elif how == "outside":
        key = tmp_path / "wg0.key"
        key.write_text(client.private_key + "\n")
        key.chmod(0o600)
    elif how == "not-a-key":
        config_dir.write("wg0.key", "PrivateKey = not a key\n")
    text = with_interface_lines(
        without_keys(client.config), f"PostUp = wg set %i private-key {key}"
    )
    message = fails_cleanly(hook, standin, {"wg-pod.config": write_config(config_dir, text)})
    assert f"wg0.conf:2: key file {key} {problem}" in message, message
    assert client.private_key not in message
    assert_nothing_left(standin)


def test_a_private_key_annotation_that_is_not_a_path_is_refused(
    peer: Peer, standin: ContainerStandIn, config_dir: ConfigDir, hook: HookRunner
) -> None:
    config = write_config(config_dir, peer.client_config())
    annotations = {"wg-pod.config": config, "wg-pod.private-key": "wg0.key"}
    message = fails_cleanly(hook, standin, annotations)
    assert "annotation wg-pod.private-key: must be an absolute path" in message
