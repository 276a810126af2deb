"""The command line: every subcommand's help, the join flags, status output."""

from __future__ import annotations

import pytest

from wg_pod_hook.cli import _join_annotations, parser
from wg_pod_hook.state.health import LivePeer
from wg_pod_hook.tunnel import status

SUBCOMMANDS = ["join", "leave", "status", "check", "gc", "install", "uninstall", "daemon", "health"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        parser().parse_args([command, "--help"])
    assert done.value.code == 0
    assert f"example: wg-pod {command}" in capsys.readouterr().out


def test_join_flags_become_annotations() -> None:
    args = parser().parse_args(
        [
            "join",
            "web",
            "/etc/wg/wg0.conf",
            "--port-remapping",
            "80:8080",
            "--port-remapping",
            "53/udp:5353",
            "--delete-default",
            "--add-route",
            "10.9.0.0/16:10.250.0.1",
            "--interface",
            "tun0",
            "--dns",
            "off",
            "--kill-switch",
            "on",
        ]
    )
    assert _join_annotations(args) == {
        "wg-pod.config": "/etc/wg/wg0.conf",
        "wg-pod.port-remapping": "80:8080,53/udp:5353",
        "wg-pod.add-route": "10.9.0.0/16:10.250.0.1",
        "wg-pod.delete-default": "true",
        "wg-pod.interface": "tun0",
        "wg-pod.dns": "off",
        "wg-pod.kill-switch": "on",
    }


TUNNEL = status.TunnelStatus(
    container_id="ab" * 32,
    name="web",
    interface="wg0",
    backend="userspace",
    config="/etc/wg/wg0.conf",
    shared_with=None,
    addresses=("10.250.0.2/24",),
    peers=(
        LivePeer(
            public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
            endpoint="198.18.0.1:51820",
            allowed_ips=("10.250.0.0/24",),
            latest_handshake=1000,
            rx_bytes=2048,
            tx_bytes=100,
        ),
    ),
)


def test_status_reads_like_wg_show() -> None:
    text = status.render([TUNNEL], now=1065)
    assert "container: web (abababababab)" in text
    assert "interface: wg0 (userspace backend)" in text
    assert "latest handshake: 1 minute, 5 seconds ago" in text
    assert "transfer: 2.00 KiB received, 100 B sent" in text


def test_status_json_is_versioned_with_ages() -> None:
    data = status.as_json([TUNNEL], now=1065)
    assert data["version"] == 1
    (peer,) = data["tunnels"][0]["peers"]
    assert peer["latest_handshake"] == 1000 and peer["latest_handshake_age"] == 65
    assert status.render([], now=0) == "no tunnels"


def test_a_failed_repair_is_shown_as_down_with_its_reason() -> None:
    failed = status.TunnelStatus(
        container_id="cd" * 32,
        name="web",
        interface="wg0",
        backend="userspace",
        config="/etc/wg/wg0.conf",
        shared_with=None,
        addresses=(),
        peers=(),
        problem="repair failed: create interface wg0: no backend",
        state="down",
        repairs=2,
        failed="create interface wg0: no backend",
        failed_at=0.0,
    )
    text = status.render([failed], now=100.0)
    assert "  state: down: repair failed: create interface wg0: no backend" in text
    assert "(since 1970-01-01 00:00:00 UTC), 2 repairs" in text
    assert "problem:" not in text  # said once, on the state line
    tunnel = status.as_json([failed], now=100.0)["tunnels"][0]
    assert (tunnel["state"], tunnel["failed"]) == ("down", "create interface wg0: no backend")
