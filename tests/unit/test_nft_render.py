"""nft.render writes rule text only from typed values, in canonical form:
addresses rebuilt from their bytes (no zone index, whatever the value
carries), ports and marks as range-checked ints, protocols as fixed words,
interface names only when they follow the interface-name rule.

That `nft -c` accepts what is rendered from hostile annotations and config
values is shown in tests/integration/test_nft_hostile.py (it needs root).
"""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import pytest

from wg_pod_hook.errors import SetupError
from wg_pod_hook.model import nft
from wg_pod_hook.model.config import parse_config
from wg_pod_hook.model.oci import PortRemap, parse_annotations
from wg_pod_hook.model.plan import DnsPlan, Plan, build_plan
from wg_pod_hook.model.settings import Settings

KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
CONFIG = (
    f"[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.250.0.2/24, fd77::2/64\n"
    "DNS = 10.250.0.1, fd77::53\n"
    f"[Peer]\nPublicKey = {KEY_B}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = 198.18.0.1:51820\n"
)
LOCAL = (ip_network("10.88.0.0/16"), ip_network("fd77:ff::/64"))
# What a rendered rule may hold: no '%', ';', '#', '$', '@' or backslash.
RULE = re.compile(r'[A-Za-z0-9 _.:/,{}\[\]!=+\-"]*')


def full_plan() -> Plan:
    """Every chain: port remapping, the reply path, DNS redirect and
    restriction, the kill switch."""
    request = parse_annotations(
        {
            "wg-pod.config": "/etc/wg/office.conf",
            "wg-pod.port-remapping": "80:8080,53/udp:5353",
            "wg-pod.kill-switch": "on",
        }
    )
    config = parse_config(CONFIG, "/etc/wg/office.conf")
    return build_plan("0123456789abcdef" * 4, 4242, request, config, Settings())


def rendered(plan: Plan, local: tuple[IPv4Network | IPv6Network, ...] = LOCAL) -> str:
    text = nft.render(plan, local)
    assert text is not None
    return text


def test_every_chain_is_rendered_from_safe_characters() -> None:
    text = rendered(full_plan())
    for chain in ("prerouting", "reply-in", "reply-out", "dns-redirect", "dns-source", "output"):
        assert f"chain {chain} {{" in text
    for line in text.splitlines():
        # Chain headers are fixed text (with their own ';').
        if not line.strip().startswith("type "):
            assert RULE.fullmatch(line.strip()), line


def test_a_zone_index_in_a_typed_address_never_reaches_the_text() -> None:
    # The parsers refuse one; the renderer drops it besides, rebuilding each
    # address from its bytes.
    plan = replace(
        full_plan(),
        dns=DnsPlan((IPv6Address("fd00::53%x"), ip_address("10.250.0.1")), ()),
    )
    local = (IPv6Network("fd77:ff::%eth0/64"), ip_network("10.88.0.0/16"))
    text = rendered(plan, local)
    assert "%" not in text
    assert "ip6 daddr != { fd00::53 } dnat ip6 to [fd00::53]" in text
    assert "ip6 daddr { fd77:ff::/64 } accept" in text


def test_addresses_are_written_in_canonical_form() -> None:
    servers = (ip_address("FD00:0000::0053"), ip_address("::ffff:10.0.0.1"), ip_address("::"))
    text = rendered(replace(full_plan(), dns=DnsPlan(servers, ())))
    # Python 3.13 writes the mapped address as ::ffff:10.0.0.1, 3.11 as ::ffff:a00:1.
    mapped = str(ip_address("::ffff:10.0.0.1"))
    assert f"ip6 daddr != {{ fd00::53, {mapped}, :: }}" in text
    assert "dnat ip6 to [fd00::53]" in text


@pytest.mark.parametrize(
    "name",
    ['wg0" accept; flush ruleset; "', "wg 0", "-wg0", "", "a" * 16, "..", "wg\\0", "wg0%x"],
)
def test_an_interface_name_outside_the_rule_is_refused(name: str) -> None:
    with pytest.raises(SetupError) as caught:
        nft.render(replace(full_plan(), interface=name), LOCAL)
    assert str(caught.value).startswith("render nftables interface name: not 1-15 of ")


@pytest.mark.parametrize("name", ["a=b+c.d-e_f", "+", "=", "0", "x" * 15, "wg.0"])
def test_every_name_the_rule_allows_is_quoted_as_is(name: str) -> None:
    assert f'oifname "{name}" accept' in rendered(replace(full_plan(), interface=name))


@pytest.mark.parametrize(
    ("remap", "what"),
    [
        (PortRemap(80, 8080, "tcp; flush ruleset"), "port remapping: protocol is not tcp or udp"),
        (PortRemap(80, 8080, "sctp"), "port remapping: protocol is not tcp or udp"),
        (PortRemap(0, 8080, "tcp"), "port: not a number in 1..65535"),
        (PortRemap(80, 65536, "udp"), "port: not a number in 1..65535"),
        (PortRemap(True, 80, "udp"), "port: not a number in 1..65535"),
        (PortRemap("80; drop", 80, "udp"), "port: not a number in 1..65535"),  # type: ignore[arg-type]
    ],
)
def test_a_port_remap_outside_its_types_is_refused(remap: PortRemap, what: str) -> None:
    with pytest.raises(SetupError) as caught:
        nft.render(replace(full_plan(), port_remaps=(remap,)), LOCAL)
    assert str(caught.value) == f"render nftables {what}"


def test_the_largest_ports_are_written_as_numbers() -> None:
    text = rendered(replace(full_plan(), port_remaps=(PortRemap(65535, 1, "udp"),)))
    assert 'iifname "office" udp dport 65535 redirect to :1' in text


def test_an_address_given_as_text_is_refused() -> None:
    plan = replace(full_plan(), dns=DnsPlan(("10.0.0.1; flush ruleset",), ()))  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=r"^render nftables address: not an IPv4 or IPv6"):
        nft.render(plan, LOCAL)


def test_the_table_and_the_reply_mark_are_the_tunnels_names() -> None:
    """Every name comes from the plan's (names.py), none from nft.py."""
    names = full_plan().names._replace(table="wg-pod-second", reply_mark=51822)
    text = rendered(replace(full_plan(), names=names))
    assert text.startswith("add table inet wg-pod-second\ndelete table inet wg-pod-second\n")
    assert "table inet wg-pod-second {" in text
    assert "ct mark set 51822" in text and "51821" not in text
    assert nft.removal("wg-pod-second") == (
        "add table inet wg-pod-second\ndelete table inet wg-pod-second\n"
    )


@pytest.mark.parametrize("table", ['wg-pod" ; flush ruleset', "", "Wg", "wg pod", "x" * 33])
def test_a_table_name_outside_the_rule_is_refused(table: str) -> None:
    names = full_plan().names._replace(table=table)
    with pytest.raises(SetupError, match="table name"):
        nft.render(replace(full_plan(), names=names), LOCAL)
    with pytest.raises(SetupError, match="table name"):
        nft.removal(table)


def test_the_kill_switch_lets_out_what_add_route_routes_outside_the_tunnel() -> None:
    """A LAN routed by hand (``wg-pod.add-route``) stays reachable with the
    kill switch on; a target inside the podman network's subnet merges into
    it (an anonymous set refuses overlapping intervals)."""
    request = parse_annotations(
        {
            "wg-pod.config": "/etc/wg/office.conf",
            "wg-pod.kill-switch": "on",
            "wg-pod.add-route": "192.168.1.0/24:10.88.0.1,10.88.5.0/24:10.88.0.1,"
            "[fd00:1::/64]:[fd77:ff::1]",
        }
    )
    config = parse_config(CONFIG, "/etc/wg/office.conf")
    plan = build_plan("0123456789abcdef" * 4, 4242, request, config, Settings())
    text = rendered(plan)
    assert "ip daddr { 10.88.0.0/16, 192.168.1.0/24 } accept" in text
    assert "ip6 daddr { fd00:1::/64, fd77:ff::/64 } accept" in text
    # Without the extra routes: the podman network alone.
    assert "ip daddr { 10.88.0.0/16 } accept" in rendered(full_plan())
