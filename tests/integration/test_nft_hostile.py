"""Every annotation and config field with hostile values, through `nft -c`.

Each value is either refused where it is parsed, with its one-line message,
or it renders a ruleset that nft accepts.  `nft -c -f -` parses and checks a
batch in the kernel without committing it; it runs in a throwaway network
namespace (the lab removes it), so nothing here touches the host's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, ip_address, ip_network

import pytest

from tests.lab import Netns
from wg_pod_hook.errors import AnnotationError, ConfigError
from wg_pod_hook.model import nft
from wg_pod_hook.model.config import parse_config
from wg_pod_hook.model.oci import parse_annotations
from wg_pod_hook.model.plan import DnsPlan, Plan, build_plan
from wg_pod_hook.model.settings import Settings

pytestmark = pytest.mark.root

KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
PSK = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
CID = "0123456789abcdef" * 4
# A config and annotations that make every chain: port remapping, the reply
# path (full tunnel, main table), DNS redirect and restriction, kill switch.
INTERFACE = {"PrivateKey": KEY_A, "Address": "10.250.0.2/24, fd77::2/64", "DNS": "10.250.0.1"}
PEER = {"PublicKey": KEY_B, "AllowedIPs": "0.0.0.0/0, ::/0", "Endpoint": "198.18.0.1:51820"}
ANNOTATIONS = {"wg-pod.kill-switch": "on", "wg-pod.port-remapping": "80:8080"}
LOCAL = (ip_network("10.88.0.0/16"), ip_network("fd77:ff::/64"), ip_network("::ffff:0:0/96"))
LONG_SEARCH = ",".join(f"{c * 30}.{c * 9}" for c in "abcdef")  # 6 domains, 245 characters


@dataclass(frozen=True)
class Case:
    annotations: dict[str, str] = field(default_factory=dict)
    interface: dict[str, str] = field(default_factory=dict)
    peer: dict[str, str] = field(default_factory=dict)
    path: str = "/etc/wg/office.conf"

    def config_text(self) -> str:
        lines = ["[Interface]"]
        lines += [f"{k} = {v}" for k, v in {**INTERFACE, **self.interface}.items()]
        lines += ["[Peer]"]
        lines += [f"{k} = {v}" for k, v in {**PEER, **self.peer}.items()]
        return "\n".join(lines) + "\n"

    def plan(self) -> Plan:
        request = parse_annotations({"wg-pod.config": self.path, **ANNOTATIONS, **self.annotations})
        config = parse_config(self.config_text(), self.path)
        return build_plan(CID, 4242, request, config, Settings())


ACCEPTED = {
    # wg-pod.dns: odd but valid addresses, duplicates, long search domains
    "dns-uppercase-leading-zeros": Case({"wg-pod.dns": "FD00:0000:0000::0053, 10.250.0.1"}),
    "dns-unspecified": Case({"wg-pod.dns": "::, 0.0.0.0"}),
    "dns-ipv4-mapped": Case({"wg-pod.dns": "::ffff:10.250.0.1, ::FFFF:0A00:0001"}),
    "dns-duplicates": Case({"wg-pod.dns": "10.250.0.1, 10.250.0.1, fd77::53, FD77::0053"}),
    "dns-broadcast-multicast": Case({"wg-pod.dns": "255.255.255.255, ff02::1"}),
    "dns-long-search": Case({"wg-pod.dns": f"fd77::53, {LONG_SEARCH}"}),
    "dns-odd-search": Case({"wg-pod.dns": "10.250.0.1, _srv.corp, -lab.example, a%b.example."}),
    "dns-off": Case({"wg-pod.dns": "OFF"}),
    # wg-pod.interface: every character the interface-name rule allows
    "interface-punctuation": Case({"wg-pod.interface": "a=b+c.d-e_f"}),
    "interface-one-char": Case({"wg-pod.interface": "="}),
    "interface-plus": Case({"wg-pod.interface": "+"}),
    "interface-15-chars": Case({"wg-pod.interface": "x" * 15}),
    "interface-digits": Case({"wg-pod.interface": "0"}),
    "interface-lo": Case({"wg-pod.interface": "lo"}),
    "interface-from-stem": Case(path="/etc/wg/a=b+c.d-e.conf"),
    # wg-pod.port-remapping: extreme and zero-padded ports
    "ports-max": Case({"wg-pod.port-remapping": "65535:65535/udp,1:1,65535/tcp:1"}),
    "ports-leading-zeros": Case({"wg-pod.port-remapping": "00080:08080,00053/udp:00053"}),
    # wg-pod.add-route, delete-default, kill-switch: not in the ruleset, but parsed
    "add-route-odd": Case({"wg-pod.add-route": "[FD00:1::1/64]:[::FFFF:a00:1],[::/0]:[fd77::1]"}),
    "add-route-v4": Case({"wg-pod.add-route": "0.0.0.0/0:10.250.0.1,10.1.2.3/8:10.250.0.1"}),
    "delete-default": Case({"wg-pod.delete-default": "YES"}),
    "kill-switch-auto": Case({"wg-pod.kill-switch": "Auto"}),
    # config fields
    "address-odd": Case(interface={"Address": "FD77:0000::0002/64, ::ffff:10.0.0.3/128, ::/0"}),
    "config-dns-odd": Case(interface={"DNS": "FD77::0053, ::, 0.0.0.0, ::ffff:a00:1, corp"}),
    "config-dns-long-search": Case(interface={"DNS": f"10.250.0.1, {LONG_SEARCH}"}),
    "allowed-ips-odd": Case(peer={"AllowedIPs": "::/0, 0.0.0.0/0, ::FFFF:0:0/96, 10.0.0.1/8"}),
    "endpoint-odd": Case(peer={"Endpoint": "[2001:DB8::0001]:65535"}),
    "endpoint-name": Case(peer={"Endpoint": "vpn.example.org.:1"}),
    "numbers-max": Case(
        interface={"ListenPort": "65535", "FwMark": "0xffffffff", "MTU": "65535"},
        peer={"PersistentKeepalive": "65535", "PresharedKey": PSK},
    ),
    "table-number": Case(interface={"Table": "4294967295"}),
    "table-off": Case(interface={"Table": "off"}),
}

ZONE = "has an IPv6 zone index ('%...'); "
REFUSED = {
    "dns-zone": (
        Case({"wg-pod.dns": "fd00::53%x, 10.0.0.1"}),
        f"annotation wg-pod.dns: 'fd00::53%x' {ZONE}a nameserver address takes none",
    ),
    "dns-zone-numeric": (
        Case({"wg-pod.dns": "fe80::53%1"}),
        f"annotation wg-pod.dns: 'fe80::53%1' {ZONE}a nameserver address takes none",
    ),
    "dns-empty-zone": (
        Case({"wg-pod.dns": "fd00::53%"}),
        "annotation wg-pod.dns: 'fd00::53%' looks like an address but is not a valid one",
    ),
    "dns-leading-zero-v4": (
        Case({"wg-pod.dns": "010.0.0.1"}),
        "annotation wg-pod.dns: '010.0.0.1' looks like an address but is not a valid one",
    ),
    "add-route-target-zone": (
        Case({"wg-pod.add-route": "[fd00:1::%x/64]:[fd00::1]"}),
        "annotation wg-pod.add-route: '[fd00:1::%x/64]:[fd00::1]': "
        f"'fd00:1::%x/64' {ZONE}a route target takes none",
    ),
    "add-route-gateway-zone": (
        Case({"wg-pod.add-route": "[fd00:1::/64]:[fe80::1%eth0]"}),
        "annotation wg-pod.add-route: '[fd00:1::/64]:[fe80::1%eth0]': "
        f"'fe80::1%eth0' {ZONE}a gateway takes none",
    ),
    "interface-quote": (
        Case({"wg-pod.interface": 'wg0" accept'}),
        "annotation wg-pod.interface: 'wg0\" accept' is not a valid interface name "
        "(1-15 of A-Z a-z 0-9 _ = + . -, not starting with -)",
    ),
    "interface-16-chars": (
        Case({"wg-pod.interface": "x" * 16}),
        f"annotation wg-pod.interface: '{'x' * 16}' is not a valid interface name "
        "(1-15 of A-Z a-z 0-9 _ = + . -, not starting with -)",
    ),
    "port-too-big": (
        Case({"wg-pod.port-remapping": "65536:80"}),
        "annotation wg-pod.port-remapping: port 65536 is out of range 1-65535",
    ),
    "config-address-zone": (
        Case(interface={"Address": "fd77::2%eth0/64"}),
        f"/etc/wg/office.conf:3: Address 'fd77::2%eth0/64' {ZONE}an interface address takes none",
    ),
    "config-dns-zone": (
        Case(interface={"DNS": "10.250.0.1, fd00::53%x"}),
        f"/etc/wg/office.conf:4: DNS entry 'fd00::53%x' {ZONE}a nameserver address takes none",
    ),
    "config-allowed-ips-zone": (
        Case(peer={"AllowedIPs": "0.0.0.0/0, fd77::%x/64"}),
        f"/etc/wg/office.conf:7: AllowedIPs 'fd77::%x/64' {ZONE}a network takes none",
    ),
    "config-endpoint-zone": (
        Case(peer={"Endpoint": "[fe80::1%eth0]:51820"}),
        f"/etc/wg/office.conf:8: Endpoint host 'fe80::1%eth0' {ZONE}"
        "wg-pod cannot hand one to WireGuard: use an address that needs none",
    ),
}


def nft_check(netns: Netns, ruleset: str) -> str:
    """nft's complaint about `ruleset`, or '' when it accepts it."""
    done = netns.run(["nft", "-c", "-f", "-"], input=ruleset, check=False)
    return "" if done.returncode == 0 else done.stderr


@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_an_accepted_value_renders_a_ruleset_nft_accepts(netns: Netns, case: Case) -> None:
    ruleset = nft.render(case.plan(), LOCAL)
    assert ruleset is not None
    assert "%" not in ruleset
    assert nft_check(netns, ruleset) == ""


@pytest.mark.parametrize(("case", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_value_is_refused_where_it_is_parsed(case: Case, message: str) -> None:
    with pytest.raises((AnnotationError, ConfigError)) as caught:
        case.plan()
    assert str(caught.value) == message


def test_a_zone_that_got_past_the_parsers_is_still_not_written(netns: Netns) -> None:
    # The parsers refuse a zone; the renderer rebuilds every address from
    # its bytes, so a value carrying one (a future parser's slip) renders
    # the bare address, never text nft refuses or misreads.
    servers = (IPv6Address("fd00::53%eth0"), ip_address("10.250.0.1"))
    plan = replace(Case().plan(), dns=DnsPlan(servers, ()))
    local = (ip_network("fd77:ff::%x/64"), ip_network("10.88.0.0/16"))
    ruleset = nft.render(plan, local)
    assert ruleset is not None
    assert "%" not in ruleset
    assert "dnat ip6 to [fd00::53]" in ruleset
    assert nft_check(netns, ruleset) == ""
