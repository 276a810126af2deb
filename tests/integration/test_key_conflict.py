"""One private key towards one peer serves one tunnel: a second container
started with the same config is refused, naming the first (the peer keeps
one endpoint per key, so both would flap)."""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable

import pytest

from tests.integration.support import assert_nothing_left, fails_cleanly, fetch_in, write_config
from tests.lab import ConfigDir, ContainerStandIn, HookRunner, Peer, run, venv_command

pytestmark = pytest.mark.root


def check(conf: str, settings: str) -> tuple[int, str]:
    done = run(
        [*venv_command("wg-pod", "wg_pod_hook.cli"), "check", conf],
        env={**os.environ, "WG_POD_SETTINGS": settings},
        check=False,
    )
    return done.returncode, done.stderr


def test_a_second_container_with_the_same_key_and_peer_is_refused(
    peer: Peer,
    standin: ContainerStandIn,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    hook.up(standin, annotations)
    second = make_standin()
    message = fails_cleanly(hook, second, annotations)
    assert f"check key {annotations['wg-pod.config']}: its private key is already in use" in message
    assert f"by container {standin.id[:12]} (tunnel wg0) towards peer {peer.public_key}" in message
    assert peer.page in fetch_in(standin, peer.url_v4)  # the first one is unharmed

    code, stderr = check(annotations["wg-pod.config"], str(hook.settings))
    assert code == 1 and f"in use by container {standin.id[:12]}" in stderr

    standin.stop()
    hook.down(standin, annotations)
    hook.up(second, annotations)
    assert peer.page in fetch_in(second, peer.url_v4)
    assert check(annotations["wg-pod.config"], str(hook.settings))[0] == 1
    second.stop()
    hook.down(second, annotations)
    assert check(annotations["wg-pod.config"], str(hook.settings)) == (0, "")


def test_the_same_key_towards_another_peer_is_allowed(
    make_peer: Callable[..., Peer],
    standin: ContainerStandIn,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    """One provider key on two servers."""
    first, second = make_peer(), make_peer()
    text = first.client_config()
    other_text = text.replace(first.public_key, second.public_key).replace(
        first.endpoint_v4, second.endpoint_v4
    )
    assert other_text != text
    hook.up(standin, {"wg-pod.config": write_config(config_dir, text, "wg0.conf")})
    other = make_standin()
    hook.up(other, {"wg-pod.config": write_config(config_dir, other_text, "wg1.conf")})
    assert "wg1" in other.links()


def test_two_containers_starting_at_once_with_one_key_exactly_one_runs(
    peer: Peer,
    make_standin: Callable[[], ContainerStandIn],
    config_dir: ConfigDir,
    hook: HookRunner,
) -> None:
    """Each checks again at its last step, under one lock for all hooks,
    and completes its record there: the second to get there sees the
    first's.  Exactly one runs (which one is the race's), and the other is
    refused naming it."""
    annotations = {"wg-pod.config": write_config(config_dir, peer.client_config())}
    pair = [make_standin(), make_standin()]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda s: hook.up(s, annotations, ok=False), pair))
    assert sorted(d.returncode for d in done) == [0, 1], [d.stderr for d in done]
    outcomes = sorted(zip(pair, done, strict=True), key=lambda each: each[1].returncode)
    (winner, won), (loser, lost) = outcomes
    assert won.stderr == ""
    assert len(lost.stderr.strip().splitlines()) == 1, lost.stderr
    assert lost.stderr.startswith(f"wg-pod: container {loser.id[:12]}: check key ")
    assert (
        f"its private key is already in use by container {winner.id[:12]} (tunnel wg0) "
        f"towards peer {peer.public_key}"
    ) in lost.stderr
    assert peer.page in fetch_in(winner, peer.url_v4)
    assert_nothing_left(loser)
