"""OCI state and annotation parsing: what container creators control."""

from __future__ import annotations

import json
from ipaddress import ip_address, ip_network
from pathlib import PurePosixPath

import pytest

from wg_pod_hook.errors import AnnotationError, StateError
from wg_pod_hook.oci import (
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
