"""Plans and nftables rulesets, from annotations, config and settings."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from wg_pod_hook import hooksd
from wg_pod_hook.cli import format_plan
from wg_pod_hook.errors import ConfigError
from wg_pod_hook.model import nft
from wg_pod_hook.model.config import Key, parse_config
from wg_pod_hook.model.names import is_pool_name, is_temp_name, pool_name, pool_prefix, temp_name
from wg_pod_hook.model.oci import Toggle, parse_annotations
from wg_pod_hook.model.plan import automatic_mtu, build_plan, fixed, interface_name
from wg_pod_hook.model.settings import Settings

KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
CID = "0123456789abcdef" * 4
REPO = Path(__file__).resolve().parents[2]


def config(allowed: str = "10.250.0.0/24, fd77::/64", extra: str = "") -> str:
    return (
        f"[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.250.0.2/24, fd77::2/64\n{extra}\n"
        f"[Peer]\nPublicKey = {KEY_B}\nAllowedIPs = {allowed}\nEndpoint = 198.18.0.1:51820\n"
    )


def plan_for(annotations: dict[str, str], text: str | None = None, **settings: object):  # type: ignore[no-untyped-def]
    request = parse_annotations({"wg-pod.config": "/etc/wg/office.conf", **annotations})
    cfg = parse_config(text or config(), "/etc/wg/office.conf")
    return build_plan(CID, 4242, request, cfg, Settings(**settings))  # type: ignore[arg-type]


def test_temp_name_is_short_unique_and_derived() -> None:
    name = temp_name(CID)
    assert len(name.encode()) <= 15
    assert name.startswith("wgp")
    assert name == temp_name(CID)
    assert name != temp_name("f" + CID[1:])


def test_a_pool_name_is_short_fresh_of_its_daemon_and_no_containers() -> None:
    """The warm pool's (tunnel/pool.py): gc and a tunnel's cleanup, which
    go by temporary names, never take one for a container's."""
    names = {pool_name("/run/wg-pod") for _ in range(20)}
    assert len(names) == 20
    for name in names:
        assert len(name.encode()) <= 15
        assert is_pool_name(name) and not is_temp_name(name)
        assert name.startswith(pool_prefix("/run/wg-pod"))
        assert not name.startswith(pool_prefix("/run/wg-pod-tests"))
    assert not is_pool_name(temp_name(CID))


def test_interface_name_rules() -> None:
    assert interface_name(parse_annotations({"wg-pod.config": "/etc/wg/office.conf"})) == "office"
    assert interface_name(parse_annotations({"wg-pod.config": "/etc/wg/a b.conf"})) == "wg0"
    assert interface_name(parse_annotations({"wg-pod.config": "/etc/wg/x" * 3 + ".conf"})) == "x"
    assert (
        interface_name(parse_annotations({"wg-pod.config": "/etc/wg/much-too-long-name.conf"}))
        == "wg0"
    )
    annotated = {"wg-pod.config": "/etc/wg/office.conf", "wg-pod.interface": "tun0"}
    assert interface_name(parse_annotations(annotated)) == "tun0"


def test_basic_plan() -> None:
    plan = plan_for({})
    assert plan.interface == "office"
    assert plan.netns_path == "/proc/4242/ns/net"
    assert plan.mtu is None  # automatic
    assert [str(a) for a in plan.addresses] == ["10.250.0.2/24", "fd77::2/64"]
    assert plan.routes == ()  # the addresses' own prefixes are routed already
    assert plan.delete_default == frozenset()
    assert plan.kill_switch is False
    assert plan.dns is None
    assert KEY_A not in repr(plan)


def test_routes_deduplicated_longest_first() -> None:
    plan = plan_for({}, config("10.250.9.0/24, 10.250.0.0/16, 10.250.9.5/32, 10.250.9.0/24"))
    assert [str(r) for r in plan.routes] == ["10.250.9.5/32", "10.250.9.0/24", "10.250.0.0/16"]


def test_full_tunnel_beside_podman_default_uses_halves() -> None:
    plan = plan_for({}, config("0.0.0.0/0, ::/0"))
    assert {str(r) for r in plan.routes} == {"0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"}
    assert plan.kill_switch is True  # auto: the tunnel carries the default route


def test_reply_path_for_full_tunnels_in_the_main_table() -> None:
    assert plan_for({}, config("0.0.0.0/0")).reply_path == frozenset({4})
    assert plan_for({}, config("0.0.0.0/0, ::/0")).reply_path == frozenset({4, 6})
    assert plan_for({}, config("10.250.9.0/24")).reply_path == frozenset()
    assert plan_for({}, config("0.0.0.0/0", extra="Table = 1234")).reply_path == frozenset()
    assert plan_for({}, config("0.0.0.0/0", extra="Table = off")).reply_path == frozenset()


def test_nft_reply_path_marks_connections_arriving_outside_the_tunnel() -> None:
    ruleset = nft.render(plan_for({"wg-pod.kill-switch": "off"}, config("0.0.0.0/0")))
    assert ruleset is not None
    assert (
        "\tchain reply-in {\n"
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        '\t\tiifname != { "lo", "office" } ct state new ct mark set 51821\n'
        "\t\tct mark 51821 meta mark set 51821\n"
        "\t}\n"
        "\tchain reply-out {\n"
        "\t\ttype route hook output priority mangle; policy accept;\n"
        "\t\tct mark 51821 meta mark set 51821\n"
        "\t}\n"
    ) in ruleset


def test_full_tunnel_with_delete_default_is_the_default_route() -> None:
    plan = plan_for({"wg-pod.delete-default": "true"}, config("0.0.0.0/0, ::/0"))
    assert {str(r) for r in plan.routes} == {"0.0.0.0/0", "::/0"}
    assert plan.delete_default == frozenset({4, 6})


def test_table_off_and_numbered() -> None:
    assert plan_for({}, config(extra="Table = off")).routes == ()
    numbered = plan_for({}, config(extra="Table = 1234"))
    assert numbered.route_table == 1234
    assert numbered.routes


def test_every_routed_prefix_is_guarded() -> None:
    """Unreachable routes for the tunnel's routes and its addresses' subnets
    (in the main table); none where wg-pod adds no routes."""
    nets = [ip_network(n) for n in ("10.250.0.0/24", "fd77::/64", "10.99.0.0/16")]
    plan = plan_for({}, config(allowed="10.250.0.0/24, fd77::/64, 10.99.0.0/16"))
    assert plan.routes == (ip_network("10.99.0.0/16"),)  # the others are the addresses' subnets
    assert sorted(plan.guarded, key=str) == sorted(nets, key=str)
    full = plan_for({}, config(allowed="0.0.0.0/0, ::/0"))
    assert set(full.routes) <= set(full.guarded)
    assert ip_network("128.0.0.0/1") in full.guarded and ip_network("8000::/1") in full.guarded
    numbered = plan_for({}, config(extra="Table = 1234"))
    assert numbered.guarded == numbered.routes  # the subnets are the main table's
    assert plan_for({}, config(extra="Table = off")).guarded == ()


def test_table_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="Table must be"):
        plan_for({}, config(extra="Table = vpn"))


def test_mtu_from_config() -> None:
    assert plan_for({}, config(extra="MTU = 1280")).mtu == 1280


def test_automatic_mtu() -> None:
    assert automatic_mtu([1500, 1400]) == 1320
    assert automatic_mtu([]) == 1420


def test_kill_switch_settings_and_annotation() -> None:
    assert plan_for({}, kill_switch=Toggle.ON).kill_switch
    assert not plan_for({"wg-pod.kill-switch": "off"}, config("0.0.0.0/0")).kill_switch


def test_dns_auto_list_off() -> None:
    text = config(extra="DNS = 10.250.0.1, corp.example")
    auto = plan_for({}, text)
    assert auto.dns is not None
    assert auto.dns.servers == (ip_address("10.250.0.1"),)
    assert auto.dns.search == ("corp.example",)
    assert plan_for({"wg-pod.dns": "off"}, text).dns is None
    listed = plan_for({"wg-pod.dns": "fd77::53"}, text)
    assert listed.dns is not None and listed.dns.servers == (ip_address("fd77::53"),)


def test_nft_port_remapping_ruleset() -> None:
    plan = plan_for({"wg-pod.port-remapping": "80:8080,53/udp:5353"})
    assert nft.render(plan) == (
        "add table inet wg-pod\n"
        "delete table inet wg-pod\n"
        "table inet wg-pod {\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        '\t\tiifname "office" tcp dport 80 redirect to :8080\n'
        '\t\tiifname "office" udp dport 53 redirect to :5353\n'
        "\t}\n"
        "}\n"
    )


def test_nft_nothing_to_do() -> None:
    assert nft.render(plan_for({})) is None


def test_nft_kill_switch_and_dns() -> None:
    plan = plan_for({"wg-pod.kill-switch": "on"}, config(extra="DNS = 10.250.0.1"))
    ruleset = nft.render(plan, (ip_network("10.88.0.0/16"), ip_network("fd77:ff::/64")))
    assert ruleset is not None
    assert "type filter hook output priority filter; policy drop;" in ruleset
    assert 'oifname "office" accept' in ruleset
    assert "ip daddr { 10.88.0.0/16 } accept" in ruleset
    assert "ip6 daddr { fd77:ff::/64 } accept" in ruleset
    assert (
        "meta nfproto ipv4 meta l4proto { tcp, udp } th dport 53 ip daddr != { 10.250.0.1 } drop"
        in ruleset
    )
    assert "meta nfproto ipv6 meta l4proto { tcp, udp } th dport 53 drop" in ruleset
    # Queries to any other server go to the tunnel's (none for IPv6: dropped).
    assert "type nat hook output priority -100; policy accept;" in ruleset
    assert (
        "meta l4proto { tcp, udp } th dport 53 ip daddr != { 10.250.0.1 } dnat ip to 10.250.0.1"
        in ruleset
    )
    assert "dnat ip6" not in ruleset
    masquerade = 'oifname "office" ct status dnat meta l4proto { tcp, udp } th dport 53 masquerade'
    assert masquerade in ruleset


@pytest.mark.parametrize("stage", hooksd.STAGES)
def test_hooksd_templates_match_install(stage: str) -> None:
    template = (REPO / "hooks.d" / hooksd.file_name(stage)).read_text()
    assert json.loads(template.replace("@HOOK@", "/usr/libexec/wg-pod/wg-pod-hook")) == (
        hooksd.definition(stage, "/usr/libexec/wg-pod/wg-pod-hook")
    )


def test_hooksd_definition_is_anchored_and_bounded() -> None:
    definition = hooksd.definition("createRuntime", "/x/wg-pod-hook", "/etc/s.yaml")
    assert definition["when"]["annotations"] == {r"(?i)^wg-pod\.": ".*"}  # test_hooksd.py
    assert definition["hook"]["timeout"] > 0
    assert "WG_POD_SETTINGS=/etc/s.yaml" in definition["hook"]["env"]
    assert definition["hook"]["env"][0].startswith("PATH=")


def test_check_output_shows_the_plan_but_no_private_key() -> None:
    plan = plan_for(
        {"wg-pod.port-remapping": "80:8080", "wg-pod.kill-switch": "on"},
        config(extra="DNS = 10.250.0.1"),
    )
    text = format_plan(plan, nft.render(plan))
    assert "interface:   office (created as wgp" in text
    assert "redirect to :8080" in text
    assert "policy drop" in text and "podman network's own subnets" in text
    assert KEY_B in text  # the peer's public key
    assert KEY_A not in text


# Prefixes that together cover a family are a full tunnel, like 0.0.0.0/0.
SPLIT_DEFAULT = "0.0.0.0/1, 128.0.0.0/1, ::/1, 8000::/1"
KEY_C = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="


def test_split_default_halves_are_a_full_tunnel() -> None:
    plan = plan_for({}, config(SPLIT_DEFAULT))
    assert plan.kill_switch is True  # auto
    assert plan.reply_path == frozenset({4, 6})
    # Already longer than podman's default route: routed as written, once.
    assert sorted(map(str, plan.routes)) == ["0.0.0.0/1", "128.0.0.0/1", "8000::/1", "::/1"]
    assert set(plan.routes) <= set(plan.guarded)
    ruleset = nft.render(plan, (ip_network("10.88.0.0/16"),))
    assert ruleset is not None and "policy drop;" in ruleset and "chain reply-in {" in ruleset
    assert "kill switch: on" in format_plan(plan, ruleset)
    # As for 0.0.0.0/0: off when asked, and only for routes of the main table.
    assert not plan_for({"wg-pod.kill-switch": "off"}, config(SPLIT_DEFAULT)).kill_switch
    assert not plan_for({}, config(SPLIT_DEFAULT, extra="Table = off")).kill_switch
    assert plan_for({}, config(SPLIT_DEFAULT, extra="Table = 1234")).reply_path == frozenset()


def test_any_split_that_covers_a_family_is_a_full_tunnel() -> None:
    quarters = plan_for({}, config("0.0.0.0/2, 64.0.0.0/2, 128.0.0.0/2, 192.0.0.0/2"))
    assert quarters.kill_switch and quarters.reply_path == frozenset({4})
    uneven = plan_for({}, config("0.0.0.0/1, 128.0.0.0/2, 192.0.0.0/2, fd77::/64"))
    assert uneven.kill_switch and uneven.reply_path == frozenset({4})
    v6 = plan_for({}, config("10.250.0.0/24, ::/2, 4000::/2, 8000::/1"))
    assert v6.kill_switch and v6.reply_path == frozenset({6})


def test_a_family_covered_by_two_peers_together_is_a_full_tunnel() -> None:
    text = config("0.0.0.0/1, ::/1") + (
        f"\n[Peer]\nPublicKey = {KEY_C}\nAllowedIPs = 128.0.0.0/1, 8000::/1\n"
        "Endpoint = 198.18.0.3:51820\n"
    )
    plan = plan_for({}, text)
    assert plan.kill_switch is True
    assert plan.reply_path == frozenset({4, 6})


def test_a_near_miss_is_not_a_full_tunnel_until_the_gap_is_covered() -> None:
    gap = plan_for({}, config("0.0.0.0/1, 128.0.0.0/2"))  # 192.0.0.0/2 missing
    assert gap.kill_switch is False and gap.reply_path == frozenset()
    assert plan_for({}, config("0.0.0.0/1, 128.0.0.0/1, ::/1")).reply_path == frozenset({4})
    closed = plan_for({}, config("0.0.0.0/1, 128.0.0.0/2, 192.0.0.0/2"))
    assert closed.kill_switch is True and closed.reply_path == frozenset({4})


def test_split_default_with_delete_default_makes_the_tunnel_the_default_route() -> None:
    """As with 0.0.0.0/0: podman's default routes go and the tunnel gets
    them; the prefixes as written stay routed (the same interface)."""
    plan = plan_for({"wg-pod.delete-default": "true"}, config(SPLIT_DEFAULT))
    assert plan.delete_default == frozenset({4, 6})
    assert {str(r) for r in plan.routes} == {"0.0.0.0/0", "::/0", *SPLIT_DEFAULT.split(", ")}
    assert set(plan.routes) <= set(plan.guarded)
    assert plan.kill_switch is True and plan.reply_path == frozenset({4, 6})
    partial = plan_for({"wg-pod.delete-default": "true"}, config("0.0.0.0/1, 10.99.0.0/16"))
    assert ip_network("0.0.0.0/0") not in partial.routes


def test_only_host_name_endpoints_are_followed() -> None:
    named, literal = Key(bytes([1] * 32)).base64, Key(bytes([2] * 32)).base64
    text = config() + (
        f"[Peer]\nPublicKey = {named}\nAllowedIPs = 10.9.0.0/24\nEndpoint = vpn.example:51821\n"
        f"[Peer]\nPublicKey = {literal}\nAllowedIPs = 10.8.0.0/24\n"
    )
    assert plan_for({}, text).host_name_endpoints == {named: ("vpn.example", 51821)}


# -- What a reload may not change (lifecycle.reload) -------------------------


def test_what_is_fixed_names_each_setting_as_text() -> None:
    assert fixed(plan_for({})) == {
        "interface name": "office",
        "Address": "10.250.0.2/24, fd77::2/64",
        "MTU": "automatic",
        "Table": "main",
        "DNS": "off",
        "kill switch": "off",
        "full tunnel": "none",
    }


@pytest.mark.parametrize(
    "allowed",
    ["10.250.0.0/24", "10.250.0.0/24, 10.99.0.0/16, fd77::/64", "10.250.0.0/25"],
)
def test_allowed_ips_that_leave_the_families_as_they_were_change_nothing_fixed(
    allowed: str,
) -> None:
    assert fixed(plan_for({}, config(allowed))) == fixed(plan_for({}))


@pytest.mark.parametrize(
    ("allowed", "extra", "changed"),
    [
        ("0.0.0.0/0", "", {"kill switch": "on", "full tunnel": "IPv4"}),
        ("0.0.0.0/1, 128.0.0.0/1, ::/0", "", {"kill switch": "on", "full tunnel": "IPv4, IPv6"}),
        ("10.250.0.0/24", "MTU = 1280", {"MTU": "1280"}),
        ("10.250.0.0/24", "DNS = 10.250.0.1, lab", {"DNS": "10.250.0.1, lab"}),
        ("10.250.0.0/24", "Table = 1234", {"Table": "1234"}),
        ("10.250.0.0/24", "Table = off", {"Table": "off"}),
    ],
)
def test_a_change_a_restart_needs_shows_in_what_is_fixed(
    allowed: str, extra: str, changed: dict[str, str]
) -> None:
    before = fixed(plan_for({}))
    after = fixed(plan_for({}, config(allowed, extra)))
    assert {k: v for k, v in after.items() if before[k] != v} == changed
