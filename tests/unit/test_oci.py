"""OCI state and annotation parsing: what container creators control."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import PurePosixPath

import pytest

from wg_pod_hook.errors import AnnotationError, StateError
from wg_pod_hook.model.oci import (
    DnsChoice,
    ExtraRoute,
    PortRemap,
    Toggle,
    parse_annotations,
    parse_state,
)

CID = "a" * 64


def state(**overrides: object) -> str:
    raw: dict[str, object] = {
        "ociVersion": "1.0.2",
        "id": CID,
        "status": "creating",
        "pid": 4242,
        "bundle": "/run/bundle",
        "annotations": {"wg-pod.config": "/etc/wg/wg0.conf"},
    }
    raw.update(overrides)
    return json.dumps(raw)


def test_state_parsed() -> None:
    parsed = parse_state(state())
    assert parsed.id == CID
    assert parsed.pid == 4242
    assert parsed.bundle == PurePosixPath("/run/bundle")
    assert parsed.annotations["wg-pod.config"] == "/etc/wg/wg0.conf"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not valid JSON"),
        ('{"id": "abc"', "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (state(id="../../etc"), "no valid container id"),
        (state(id=""), "no valid container id"),
        (state(pid="12"), "invalid pid"),
        (state(pid=-1), "invalid pid"),
        (state(pid=True), "invalid pid"),
        (state(bundle="relative"), "invalid bundle"),
        (state(annotations={"wg-pod.config": 3}), "malformed annotations"),
    ],
)
def test_bad_state(text: str, message: str) -> None:
    with pytest.raises(StateError, match=message):
        parse_state(text)


def test_minimal_request_defaults() -> None:
    request = parse_annotations({"wg-pod.config": "/etc/wg/wg0.conf", "other": "x"})
    assert request.config_path == PurePosixPath("/etc/wg/wg0.conf")
    assert request.interface is None
    assert request.port_remaps == ()
    assert request.delete_default is False
    assert request.add_routes == ()
    assert request.dns == DnsChoice("auto")
    assert request.kill_switch is None


def test_full_request() -> None:
    request = parse_annotations(
        {
            "wg-pod.config": "/etc/wg/wg0.conf",
            "wg-pod.interface": "tun-a",
            "wg-pod.port-remapping": "80:8080, 53/udp:5353,443/tcp:8443/tcp",
            "wg-pod.delete-default": "YES",
            "wg-pod.add-route": "10.9.0.0/16:10.250.0.1,[fd00:1::/64]:[fd77::1]",
            "wg-pod.dns": "10.250.0.1, fd77::1, corp.example",
            "wg-pod.kill-switch": "On",
        }
    )
    assert request.interface == "tun-a"
    assert request.port_remaps == (
        PortRemap(80, 8080, "tcp"),
        PortRemap(53, 5353, "udp"),
        PortRemap(443, 8443, "tcp"),
    )
    assert request.delete_default is True
    assert request.add_routes == (
        ExtraRoute(ip_network("10.9.0.0/16"), ip_address("10.250.0.1")),
        ExtraRoute(ip_network("fd00:1::/64"), ip_address("fd77::1")),
    )
    assert request.dns == DnsChoice(
        "list", (ip_address("10.250.0.1"), ip_address("fd77::1")), ("corp.example",)
    )
    assert request.kill_switch is Toggle.ON


def test_dns_annotation_search_domains_follow_the_config_rule() -> None:
    # The same rule as DNS = in the config: the resolver's, not RFC 1123's.
    request = parse_annotations(
        {"wg-pod.config": "/etc/wg/wg0.conf", "wg-pod.dns": "10.0.0.1, my_search.domain"}
    )
    assert request.dns == DnsChoice("list", (ip_address("10.0.0.1"),), ("my_search.domain",))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("wg-pod.config", "etc/wg/wg0.conf", "absolute"),
        ("wg-pod.colour", "x", "unknown annotation"),
        ("wg-pod.interface", "this-name-is-too-long", "not a valid interface name"),
        ("wg-pod.interface", "a b", "not a valid interface name"),
        ("wg-pod.interface", "..", "not a valid interface name"),
        ("wg-pod.interface", "-help", "not a valid interface name"),
        ("wg-pod.interface", 'wg0"; flush ruleset', "not a valid interface name"),
        ("wg-pod.port-remapping", "80;reboot", "IFPORT"),
        ("wg-pod.port-remapping", "80:", "IFPORT"),
        ("wg-pod.port-remapping", "80:8080,", "empty item"),
        ("wg-pod.port-remapping", "0:80", "out of range"),
        ("wg-pod.port-remapping", "80:70000", "out of range"),
        ("wg-pod.port-remapping", "80/sctp:80", "tcp or udp"),
        ("wg-pod.port-remapping", "80/tcp:80/udp", "same protocol"),
        ("wg-pod.port-remapping", "80:81,80:82", "remapped twice"),
        ("wg-pod.port-remapping", "-80:81", "IFPORT"),
        ("wg-pod.delete-default", "maybe", "not a boolean"),
        ("wg-pod.add-route", "10.0.0.0/8", "TARGET:GATEWAY"),
        ("wg-pod.add-route", "10.0.0.0/8:[fd77::1]", "IP version"),
        ("wg-pod.add-route", "fd00::/8:fd77::1", "TARGET:GATEWAY"),
        ("wg-pod.add-route", "10.0.0.0/33:10.0.0.1", "10.0.0.0/33"),
        ("wg-pod.dns", "10.0.0.1,corp;evil.example", "contains ';'"),
        ("wg-pod.dns", "10.0.0", "looks like an address"),
        ("wg-pod.dns", "corp.example", "at least one nameserver"),
        ("wg-pod.dns", "10.0.0.1," + ",".join(f"d{i}.example" for i in range(7)), "at most 6"),
        ("wg-pod.dns", "10.0.0.1,corp example", "contains ' '"),
        ("wg-pod.kill-switch", "sometimes", "auto, on, off"),
        ("wg-pod.interface", "wg\n0", "control"),
        ("wg-pod.interface", "wg\x000", "control"),
        ("wg-pod.interface", "wgé", "non-ASCII"),
        ("wg-pod.port-remapping", "80:8080," * 1000, "longer than"),
    ],
)
def test_bad_annotation(key: str, value: str, message: str) -> None:
    annotations = {"wg-pod.config": "/etc/wg/wg0.conf", key: value}
    with pytest.raises(AnnotationError, match=message) as caught:
        parse_annotations(annotations)
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_annotation_required() -> None:
    with pytest.raises(AnnotationError, match=r"wg-pod\.config: missing"):
        parse_annotations({"wg-pod.interface": "wg1"})


# Every key that starts with "wg-pod." in any case reaches the hook (see
# hooks.d/); one that is not exactly a known key is refused, not ignored.
@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("wg-pod.confg", "did you mean wg-pod.config?"),
        ("wg-pod.cofnig", "did you mean wg-pod.config?"),
        ("wg-pod.interfce", "did you mean wg-pod.interface?"),
        ("wg-pod.killswitch", "did you mean wg-pod.kill-switch?"),
        ("wg-pod.port-remap", "did you mean wg-pod.port-remapping?"),
        ("wg-pod.delete-defaults", "did you mean wg-pod.delete-default?"),
        ("wg-pod.add-routes", "did you mean wg-pod.add-route?"),
        ("wg-pod.Config", "keys are lower case: did you mean wg-pod.config?"),
        ("WG-POD.CONFIG", "keys are lower case: did you mean wg-pod.config?"),
        ("Wg-Pod.dns", "keys are lower case: did you mean wg-pod.dns?"),
        ("wg-pod.Confg", "did you mean wg-pod.config?"),
        ("wg-pod.colour", "known: wg-pod.config, wg-pod.interface"),
        ("wg-pod.", "known: wg-pod.config"),
    ],
)
def test_a_key_that_is_almost_ours_is_refused_naming_the_nearest(key: str, hint: str) -> None:
    # Alone (the config key misspelt) and beside a correct config key.
    for given in ({key: "/etc/wg/wg0.conf"}, {"wg-pod.config": "/etc/wg/wg0.conf", key: "x"}):
        with pytest.raises(AnnotationError) as caught:
            parse_annotations(given)
        message = str(caught.value)
        assert message.startswith(f"annotation {key}: unknown annotation; "), message
        assert hint in message, message
        assert "\n" not in message
        assert caught.value.key == key


def test_a_case_only_difference_says_so_and_a_typo_does_not() -> None:
    with pytest.raises(AnnotationError, match="lower case"):
        parse_annotations({"wg-pod.Config": "/etc/wg/wg0.conf"})
    with pytest.raises(AnnotationError) as caught:
        parse_annotations({"wg-pod.confg": "/etc/wg/wg0.conf"})
    assert "lower case" not in str(caught.value)


@pytest.mark.parametrize("key", ["wg-pod.confg" + "x" * 5000, "wg-pod.con\nfig", "wg-pod.é\x1b[2J"])
def test_an_unknown_key_is_shown_short_and_on_one_line(key: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_annotations({"wg-pod.config": "/etc/wg/wg0.conf", key: "v" * 5000})
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    assert len(message) < 300, message
    assert "v" * 20 not in message  # the value is never echoed


def test_keys_of_others_are_left_alone() -> None:
    request = parse_annotations(
        {"wg-pod.config": "/etc/wg/wg0.conf", "io.x": "", "x.wg-pod.confg": "y", "wg-pod": ""}
    )
    assert request.annotations == (("wg-pod.config", "/etc/wg/wg0.conf"),)


@pytest.mark.parametrize(
    "key",
    [
        "wg-pod.config",
        "wg-pod.interface",
        "wg-pod.port-remapping",
        "wg-pod.delete-default",
        "wg-pod.add-route",
        "wg-pod.dns",
        "wg-pod.kill-switch",
    ],
)
@pytest.mark.parametrize("value", ["", " ", " \t "])
def test_an_empty_value_is_refused_naming_the_key(key: str, value: str) -> None:
    annotations = {"wg-pod.config": "/etc/wg/wg0.conf", key: value}
    with pytest.raises(AnnotationError) as caught:
        parse_annotations(annotations)
    assert str(caught.value) == f"annotation {key}: empty value"


def test_an_empty_config_value_is_refused_not_reported_missing() -> None:
    with pytest.raises(AnnotationError, match=r"^annotation wg-pod\.config: empty value$"):
        parse_annotations({"wg-pod.config": "", "wg-pod.interface": "wg1"})


# -- IPv6 zone indexes in wg-pod.dns and wg-pod.add-route (issue 20) --------
# Python's ipaddress takes `fd00::53%x` and keeps the zone in its text; a
# nameserver, a route target or a gateway has no use for one.

ZONE = "has an IPv6 zone index ('%...'); "
NAMESERVER = "a nameserver address takes none"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("wg-pod.dns", "fd00::53%x,10.0.0.1", f"'fd00::53%x' {ZONE}{NAMESERVER}"),
        ("wg-pod.dns", "10.0.0.1,fe80::1%eth0", f"'fe80::1%eth0' {ZONE}{NAMESERVER}"),
        (
            "wg-pod.add-route",
            "[fd00:1::%x/64]:[fd00::1]",
            f"'[fd00:1::%x/64]:[fd00::1]': 'fd00:1::%x/64' {ZONE}a route target takes none",
        ),
        (
            "wg-pod.add-route",
            "10.1.0.0/16:10.0.0.1,[fd00:1::/64]:[fe80::1%eth0]",
            f"'[fd00:1::/64]:[fe80::1%eth0]': 'fe80::1%eth0' {ZONE}a gateway takes none",
        ),
    ],
)
def test_a_zone_index_is_refused_naming_the_annotation(key: str, value: str, problem: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        parse_annotations({"wg-pod.config": "/etc/wg/wg0.conf", key: value})
    assert str(caught.value) == f"annotation {key}: {problem}"


def test_odd_but_valid_annotation_addresses_are_canonical_values() -> None:
    request = parse_annotations(
        {
            "wg-pod.config": "/etc/wg/wg0.conf",
            "wg-pod.dns": "FD00:0000::0053, ::, ::ffff:10.0.0.1, 0.0.0.0",
            "wg-pod.add-route": "[FD00:1::1/64]:[::FFFF:a00:1],[::/0]:[fd77::1]",
        }
    )
    assert [str(s) for s in request.dns.servers] == ["fd00::53", "::", "::ffff:a00:1", "0.0.0.0"]
    assert [(str(r.target), str(r.gateway)) for r in request.add_routes] == [
        ("fd00:1::/64", "::ffff:a00:1"),
        ("::/0", "fd77::1"),
    ]


def test_the_private_key_annotation_names_an_absolute_path() -> None:
    config = {"wg-pod.config": "/etc/wg/wg0.conf"}
    assert parse_annotations(config).private_key_path is None
    given = parse_annotations({**config, "wg-pod.private-key": " /run/credentials/web/wg0.key "})
    assert given.private_key_path == PurePosixPath("/run/credentials/web/wg0.key")
    with pytest.raises(AnnotationError, match=r"wg-pod\.private-key: must be an absolute path"):
        parse_annotations({**config, "wg-pod.private-key": "wg0.key"})
