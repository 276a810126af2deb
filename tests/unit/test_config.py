"""Unit tests for wg_pod_hook.model.config: the wg-quick parser and its records."""

from __future__ import annotations

import base64
import binascii
import re
import traceback
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

import pytest

from wg_pod_hook.errors import ConfigError
from wg_pod_hook.model.config import (
    MAX_SEARCH_CHARS,
    Endpoint,
    InterfaceConfig,
    Key,
    Peer,
    WgConfig,
    dns_entry,
    is_host_name,
    parse_config,
    search_domain_problem,
    search_list_problem,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config"
GOOD = sorted((FIXTURES / "good").glob("*.conf"))
BAD = sorted((FIXTURES / "bad").glob("*.conf"))

# Anything shaped like a key, including a truncated one.
KEY_TOKEN = re.compile(r"[A-Za-z0-9+/]{40,43}=?")
EXPECT = re.compile(r"# expect: (?P<line>none|[0-9]+): (?P<problem>.+)")


def key_tokens(text: str) -> list[str]:
    return KEY_TOKEN.findall(text)


def secrets_in(text: str) -> set[str]:
    """Every form of every key-like token in `text` that must never be shown."""
    forms: set[str] = set()
    for token in key_tokens(text):
        forms.add(token)
        # A shortened or re-padded key still leaks; any long slice counts.
        forms.update(token[i : i + 16] for i in range(0, len(token) - 16))
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4))
        except binascii.Error:
            continue
        forms.add(raw.hex())
        forms.add(raw.hex()[:32])
    return forms


def assert_no_secret(rendered: str, secrets: set[str]) -> None:
    leaked = [s for s in secrets if s in rendered]
    assert not leaked, f"key material in {rendered!r}"


def renderings(config: WgConfig) -> Iterator[str]:
    yield repr(config)
    yield str(config)
    yield repr(config.interface)
    yield str(config.interface)
    yield repr(config.interface.private_key)
    yield str(config.interface.private_key)
    yield f"{config.interface.private_key}"
    for peer in config.peers:
        yield repr(peer)
        yield str(peer)
        for key in (peer.public_key, peer.preshared_key):
            yield repr(key)
            yield str(key)
            yield f"{key}"


def error_renderings(error: ConfigError) -> Iterator[str]:
    yield str(error)
    yield repr(error)
    yield error.problem
    yield repr(error.args)
    yield "".join(traceback.format_exception(error))


def parse_error(text: str, source: str = "wg0.conf") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return info.value


# --------------------------------------------------------------------------
# A full, realistic config into exact records
# --------------------------------------------------------------------------


def full_fixture() -> tuple[str, list[Key]]:
    text = (FIXTURES / "good" / "full.conf").read_text()
    keys = [Key.from_base64(token) for token in key_tokens(text)]
    assert len(keys) == 5
    return text, keys


def test_full_config_parses_into_exact_records() -> None:
    text, (private, hub, hub_psk, exit_node, exit_psk) = full_fixture()

    config = parse_config(text, "/etc/wg/wg0.conf")

    assert config == WgConfig(
        source="/etc/wg/wg0.conf",
        interface=InterfaceConfig(
            private_key=private,
            addresses=(
                ip_interface("10.77.0.2/24"),
                ip_interface("fd77::2/64"),
                ip_interface("10.77.1.2/32"),
            ),
            listen_port=51820,
            fwmark=None,
            mtu=1380,
            dns_servers=(ip_address("10.77.0.1"), ip_address("fd77::1")),
            dns_search=("corp.example.org", "lab.example.org"),
            table="off",
            ignored_keys=("PostUp", "PostDown", "SaveConfig"),
            line=2,
        ),
        peers=(
            Peer(
                public_key=hub,
                preshared_key=hub_psk,
                allowed_ips=(
                    ip_network("10.77.0.0/24"),
                    ip_network("fd77::/64"),
                    ip_network("10.88.0.0/16"),
                ),
                endpoint=Endpoint("2001:db8::1", 51820),
                persistent_keepalive=25,
                line=17,
            ),
            Peer(
                public_key=exit_node,
                preshared_key=exit_psk,
                allowed_ips=(ip_network("0.0.0.0/0"), ip_network("::/0")),
                endpoint=Endpoint("vpn.example.org", 4500),
                persistent_keepalive=None,
                line=25,
            ),
        ),
    )
    assert hub_psk != exit_psk
    assert str(config.peers[0].endpoint) == "[2001:db8::1]:51820"
    assert str(config.peers[1].endpoint) == "vpn.example.org:4500"
    assert config.peers[0].endpoint is not None
    assert config.peers[0].endpoint.ip == ip_address("2001:db8::1")
    assert config.peers[1].endpoint is not None
    assert config.peers[1].endpoint.ip is None


def test_bom_and_crlf_are_tolerated() -> None:
    text, _ = full_fixture()
    windows = "\ufeff" + text.replace("\n", "\r\n")
    assert parse_config(windows, "x.conf") == parse_config(text, "x.conf")


def test_line_numbers_follow_newlines_only() -> None:
    # A form feed is not a line break for an editor; it must not shift lines.
    text, _ = full_fixture()
    error = parse_error(text.replace("ListenPort = 51820", "ListenPort = 51820\f\nMTU = 1"))
    assert (error.line, error.problem) == (7, "MTU '1' is not a number in 576..65535")


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_every_good_fixture_parses(path: Path) -> None:
    text = path.read_text()

    # Key hooks' files: one key for any (configfile.py reads the real ones).
    config = parse_config(text, str(path), read_key=lambda _path, _line: Key.from_base64(PRIVATE))

    assert config.source == str(path)
    header_lines = [
        number
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip().lower().startswith(("[peer]", "[ peer ]"))
    ]
    assert [peer.line for peer in config.peers] == header_lines
    # Every key of the text is parsed (a key hook's comes from its file).
    tokens = key_tokens(text)
    hooked = "private-key /" in text
    parsed = ([] if hooked else [config.interface.private_key.base64]) + [
        key.base64
        for peer in config.peers
        for key in (peer.public_key, peer.preshared_key)
        if key is not None
    ]
    assert sorted(parsed) == sorted(tokens)
    for rendered in renderings(config):
        assert_no_secret(rendered, secrets_in(text))


def test_good_fixture_details() -> None:
    def load(name: str) -> WgConfig:
        return parse_config((FIXTURES / "good" / name).read_text(), name)

    spacing = load("spacing-and-empty-values.conf")
    assert spacing.interface.addresses == tuple(
        ip_interface(a)
        for a in ("10.0.0.2/24", "fd00::2/64", "10.0.1.2/32", "10.0.2.2/32", "10.0.3.2/32")
    )
    assert spacing.interface.dns_servers == (
        ip_address("1.1.1.1"),
        ip_address("2606:4700:4700::1111"),
    )
    assert spacing.interface.dns_search == ("example.com",)
    assert spacing.interface.mtu is None
    assert spacing.interface.table == "auto"
    assert spacing.interface.fwmark == 16
    assert spacing.interface.listen_port == 0
    # Empty PreUp = / PostDown = run nothing in wg-quick: no warning.
    assert spacing.interface.ignored_keys == ()
    assert spacing.warnings == ()
    assert spacing.peers[0].persistent_keepalive is None
    assert spacing.peers[0].allowed_ips == tuple(
        ip_network(n) for n in ("10.1.0.0/16", "10.2.0.0/16", "fd01::/48")
    )

    hooks = load("table-and-hooks.conf")
    assert hooks.interface.table == "1234"
    assert hooks.interface.ignored_keys == ("PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig")
    assert hooks.peers[0].endpoint == Endpoint("vpn.example.net", 443)
    assert hooks.peers[1].endpoint is None
    assert hooks.peers[1].preshared_key is None

    unbracketed = load("unbracketed-ipv6-endpoint.conf")
    assert unbracketed.peers[0].endpoint == Endpoint("fd00:1::1", 51820)
    assert str(unbracketed.peers[0].endpoint) == "[fd00:1::1]:51820"

    minimal = load("minimal.conf")
    assert minimal.interface.addresses == (ip_interface("10.0.0.2/32"),)
    assert minimal.interface.ignored_keys == ()
    assert minimal.peers == ()


# --------------------------------------------------------------------------
# Smaller behaviours
# --------------------------------------------------------------------------

PRIVATE = base64.b64encode(bytes(range(32))).decode()
PUBLIC = base64.b64encode(bytes(range(32, 64))).decode()


def one_peer(**peer: str) -> str:
    lines = ["[Interface]", f"PrivateKey = {PRIVATE}", "Address = 10.0.0.2/24"]
    lines += ["[Peer]", f"PublicKey = {PUBLIC}"]
    lines += [f"{key} = {value}" for key, value in peer.items()]
    return "\n".join(lines) + "\n"


def interface(**keys: str) -> str:
    lines = ["[Interface]", f"PrivateKey = {PRIVATE}", "Address = 10.0.0.2/24"]
    lines += [f"{key} = {value}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("192.0.2.1:51820", Endpoint("192.0.2.1", 51820)),
        ("[FD77::0001]:1", Endpoint("fd77::1", 1)),
        ("[192.0.2.1]:65535", Endpoint("192.0.2.1", 65535)),
        ("vpn.example.org.:51820", Endpoint("vpn.example.org.", 51820)),
        ("a-1.b2:51820", Endpoint("a-1.b2", 51820)),
    ],
)
def test_endpoint_forms(value: str, expected: Endpoint) -> None:
    assert parse_config(one_peer(Endpoint=value), "x").peers[0].endpoint == expected


@pytest.mark.parametrize(
    "value", ["192.0.2.1:0", "192.0.2.1:", "host:port", "1.2.3:51820", "a..b:1", "[::1:1", ":1"]
)
def test_endpoint_rejects(value: str) -> None:
    assert parse_error(one_peer(Endpoint=value)).line == 6


@pytest.mark.parametrize(
    ("value", "expected"),
    [("off", None), ("0", None), ("0x10", 16), ("010", 8), ("4294967295", 2**32 - 1)],
)
def test_fwmark_reads_like_wg(value: str, expected: int | None) -> None:
    assert parse_config(interface(FwMark=value), "x").interface.fwmark == expected


@pytest.mark.parametrize(
    ("value", "expected"), [("auto", "auto"), ("OFF", "off"), ("main", "main"), ("0x10", "16")]
)
def test_table_values(value: str, expected: str) -> None:
    assert parse_config(interface(Table=value), "x").interface.table == expected


def test_save_config_false_is_not_worth_a_warning() -> None:
    assert parse_config(interface(SaveConfig="false"), "x").interface.ignored_keys == ()


def test_duplicates_in_lists_are_dropped_in_order() -> None:
    config = parse_config(
        interface(Address="10.0.0.2/24, 10.0.0.3", DNS="a.example, 9.9.9.9, a.example"),
        "x",
    )
    assert config.interface.addresses == (ip_interface("10.0.0.2/24"), ip_interface("10.0.0.3"))
    assert config.interface.dns_search == ("a.example",)


def test_huge_numbers_are_config_errors() -> None:
    assert parse_error(interface(ListenPort="9" * 5000)).line == 4
    assert parse_error(interface(MTU="9" * 5000)).line == 4


# --------------------------------------------------------------------------
# Keys never show
# --------------------------------------------------------------------------


def test_key_round_trip_and_forms() -> None:
    raw = bytes(range(32))
    key = Key.from_base64(base64.b64encode(raw).decode())
    assert key.raw == raw
    assert key.base64 == base64.b64encode(raw).decode()
    assert key.hex == raw.hex()
    for text in (repr(key), str(key), f"{key}", f"{key!r}", repr([key]), repr({"k": key})):
        assert_no_secret(text, secrets_in(key.base64) | {key.hex})


@pytest.mark.parametrize(
    "text",
    [
        PRIVATE[:-1],  # no padding
        PRIVATE[:-2] + "==",  # 31 bytes
        PRIVATE[:10] + "!" + PRIVATE[11:],  # not base64
        PRIVATE[:42] + "B=",  # non-zero trailing bits
        "é" * 43 + "=",
        "",
    ],
)
def test_key_errors_never_quote_the_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        Key.from_base64(text)
    secrets = secrets_in(text) | ({text[:20]} if text else set())
    assert_no_secret("".join(traceback.format_exception(info.value)), secrets)


def test_key_refuses_wrong_length_raw() -> None:
    with pytest.raises(ValueError):
        Key(b"\0" * 31)


def mutations(text: str) -> Iterator[str]:
    """Typos a user might make, one line at a time."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        variants = [
            line.replace("=", " ", 1),  # forgot the '='
            line.replace("=", ""),  # no '=' at all
            line.replace(" = ", " = x", 1),  # stray character before the value
            line[:-2] if line.endswith("=") else line + "!",  # truncated / garbage
            line.replace(" = ", "", 1),  # key and value run together
            line.replace("[", "", 1),  # broken header
            line.replace(" = ", ": ", 1),  # wrong separator
            line.replace(" = ", " = A", 1)[:-1],  # shifted key
        ]
        for variant in variants:
            yield "\n".join([*lines[:i], variant, *lines[i + 1 :]])
        yield "\n".join([*lines[: i + 1], line, *lines[i + 1 :]])  # repeated line
        yield "\n".join([*lines[:i], "Address = " + line.partition("=")[2], *lines[i + 1 :]])


def test_no_error_ever_shows_a_key() -> None:
    text, _ = full_fixture()
    secrets = secrets_in(text)
    failures = 0
    for variant in mutations(text):
        try:
            config = parse_config(variant, "wg0.conf")
        except ConfigError as error:
            failures += 1
            assert error.line is None or 1 <= error.line <= len(variant.split("\n"))
            for rendered in error_renderings(error):
                assert_no_secret(rendered, secrets)
        else:
            for rendered in renderings(config):
                assert_no_secret(rendered, secrets)
    assert failures > 50


def test_records_built_by_hand_do_not_show_keys() -> None:
    text, (private, hub, psk, *_) = full_fixture()
    config = parse_config(text, "x")
    peer = replace(config.peers[0], public_key=hub, preshared_key=psk)
    iface = replace(config.interface, private_key=private)
    secrets = secrets_in(text)
    for rendered in (repr(peer), str(peer), repr(iface), str(iface)):
        assert_no_secret(rendered, secrets)


# --------------------------------------------------------------------------
# One fixture per failure mode
# --------------------------------------------------------------------------


def test_there_are_many_failure_fixtures() -> None:
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_fixture(path: Path) -> None:
    text = path.read_text()
    expect = EXPECT.fullmatch(text.split("\n", 1)[0])
    assert expect is not None, "first line must be '# expect: <line>: <problem>'"

    error = parse_error(text, str(path))

    line = None if expect["line"] == "none" else int(expect["line"])
    assert (error.line, error.source) == (line, str(path))
    assert expect["problem"] in error.problem
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")
    for rendered in error_renderings(error):
        assert_no_secret(rendered, secrets_in(text))


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.org", True),
        ("example.org.", True),
        ("a-1.b2", True),
        ("x" * 63 + ".org", True),
        ("x" * 64 + ".org", False),
        ("-a.org", False),
        ("a-.org", False),
        ("a..org", False),
        ("under_score.org", False),
        ("1.2.3.4", False),
        ("", False),
        (".", False),
    ],
)
def test_is_host_name(name: str, valid: bool) -> None:
    assert is_host_name(name) is valid


# --------------------------------------------------------------------------
# Config edges from files other projects wrote (issue 11)
# --------------------------------------------------------------------------


def test_search_domains_are_whatever_wg_quick_hands_to_resolvconf() -> None:
    config = parse_config((FIXTURES / "good" / "dns-search-domains.conf").read_text(), "x")
    assert config.interface.dns_servers == (ip_address("10.0.0.1"),)
    assert config.interface.dns_search == (
        "my_search.domain",
        "_srv.corp.example",
        "-lab.example",
        "corp.example.",
        "LOCAL",
        "a-" * 31 + "a.example",
    )


LABEL_63 = "-".join(["x" * 31, "y" * 31])  # no run of 32 that looks like a key


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("my_search.domain", None),
        ("-lab.example", None),
        ("corp.example.", None),
        (".".join([LABEL_63] * 3) + "." + LABEL_63[:61], None),  # 253 characters
        ("a b", "contains ' '"),
        ("a\tb", "contains '\\t'"),
        ("a\x7fb", "contains '\\x7f'"),
        ("a#b", "contains '#'"),
        ("a;b", "contains ';'"),
        ("a\\.b", "contains '\\\\'"),
        ("bücher.example", "is not ASCII"),
        ("", "is not a search domain of 1..253 characters"),
        (".", "is not a search domain of 1..253 characters"),
        (".".join([LABEL_63] * 3) + "." + LABEL_63[:62], "1..253 characters"),
        ("a-" + LABEL_63 + ".example", "longer than 63"),
        ("x" * 31 + ".example", None),
        ("x" * 32 + ".example", "looks like a key"),
        (PRIVATE, "looks like a key"),
        (PRIVATE[:-1], "looks like a key"),
        ("a..b", "an empty label"),
        (".example", "an empty label"),
    ],
)
def test_search_domain_problem(name: str, problem: str | None) -> None:
    assert len(LABEL_63) == 63
    found = search_domain_problem(name)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_search_list_fits_every_libc() -> None:
    six = [f"d{i}.example" for i in range(6)]
    assert search_list_problem(six) is None
    assert "7 search domains; at most 6" in (search_list_problem([*six, "d6.example"]) or "")
    # "search " + the list + "\n" must fit musl's 256-byte line buffer.
    fits = [LABEL_63[:61] + ".example"] * 3 + ["b" * 28]  # 3 * 69 + 28 + 3 blanks = 238
    fits[-1] += "c" * (MAX_SEARCH_CHARS - len(" ".join(fits)))
    assert len(" ".join(fits)) == MAX_SEARCH_CHARS == 247
    assert search_list_problem(fits) is None
    too_long = [*fits[:-1], fits[-1] + "c"]
    assert "248 characters long in all; at most 247" in (search_list_problem(too_long) or "")


def test_search_list_limit_counts_each_domain_once() -> None:
    text = interface(DNS="10.0.0.1 " + " ".join(["a.example"] * 10 + ["b.example"] * 5))
    assert parse_config(text, "x").interface.dns_search == ("a.example", "b.example")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", ip_address("10.0.0.1")),
        ("fd00::53", ip_address("fd00::53")),
        ("my_search.domain", "my_search.domain"),
    ],
)
def test_dns_entry(text: str, expected: object) -> None:
    assert dns_entry(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [("10.0.0", "looks like an address"), ("fd00::1::2", "looks like an address")],
)
def test_dns_entry_rejects(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        dns_entry(text)


# wg(8) reads these and refuses each with an empty value ("Line unrecognized").
WG_KEYS_IN_INTERFACE = ["PrivateKey", "ListenPort", "FwMark"]
WG_KEYS_IN_PEER = ["PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive"]


@pytest.mark.parametrize("key", [*WG_KEYS_IN_INTERFACE, "SaveConfig", *WG_KEYS_IN_PEER])
def test_every_empty_value_has_one_wording(key: str) -> None:
    if key in WG_KEYS_IN_PEER:
        lines = [
            "[Interface]",
            f"PrivateKey = {PRIVATE}",
            "Address = 10.0.0.2/24",
            "[Peer]",
            f"PublicKey = {PUBLIC}",
        ]
    else:
        lines = ["[Interface]", f"PrivateKey = {PRIVATE}", "Address = 10.0.0.2/24"]
    lines = [line for line in lines if not line.startswith(f"{key} =")]
    lines.append(f"{key} =")
    error = parse_error("\n".join(lines) + "\n")
    assert error.line == len(lines)
    assert re.fullmatch(rf"{key} needs a value \([^)]+\)", error.problem), error.problem


@pytest.mark.parametrize("key", ["MTU", "Table", "DNS", "Address", "PreUp", "PostDown"])
def test_empty_wg_quick_keys_mean_unset_as_in_wg_quick(key: str) -> None:
    config = parse_config(interface(**{key: ""}), "x")
    assert config.interface.addresses == (ip_interface("10.0.0.2/24"),)
    assert config.interface.ignored_keys == ()
    assert (config.interface.mtu, config.interface.table) == (None, "auto")
    assert (config.interface.dns_servers, config.interface.dns_search) == ((), ())


@pytest.mark.parametrize("key", sorted({*WG_KEYS_IN_INTERFACE, *WG_KEYS_IN_PEER, "Address", "DNS"}))
@pytest.mark.parametrize("value", [PRIVATE, "10.0.0.1", "off"])
def test_a_missing_equals_is_named(key: str, value: str) -> None:
    text = f"[Interface]\nPrivateKey = {PRIVATE}\n{key.lower()}   {value}\n"
    error = parse_error(text)
    assert (error.line, error.problem) == (3, f"'=' missing after {key}; expected '{key} = value'")
    for rendered in error_renderings(error):
        assert_no_secret(rendered, secrets_in(PRIVATE))


def test_wg_key_names_may_hold_blanks_as_in_wg() -> None:
    text = (FIXTURES / "good" / "spaced-key-names.conf").read_text()
    private, public, psk = (Key.from_base64(token) for token in key_tokens(text))
    config = parse_config(text, "x")
    assert config.interface.private_key == private
    assert config.interface.listen_port == 51820
    assert config.peers == (
        Peer(
            public_key=public,
            preshared_key=psk,
            allowed_ips=(ip_network("10.0.0.0/24"),),
            endpoint=Endpoint("192.0.2.1", 51820),
            persistent_keepalive=25,
            line=7,
        ),
    )


@pytest.mark.parametrize("line", ["Pre Up = echo", "M T U = 1420", "Add ress = 10.0.0.3"])
def test_wg_quick_key_names_may_not(line: str) -> None:
    # wg-quick matches its own keys as written and hands the rest to wg,
    # which refuses them.
    error = parse_error(interface() + line + "\n")
    assert (error.line, error.problem) == (4, "unknown key (not shown) in [Interface]")


def test_no_private_key_names_the_three_ways_to_give_it() -> None:
    error = parse_error("[Interface]\nAddress = 10.0.0.2/24\nPostUp = wg set wg0 private-key k\n")
    assert error.line == 1
    assert error.problem == (
        "[Interface] has no private key: give it as PrivateKey, as "
        "`PostUp = wg set %i private-key FILE`, or in the annotation wg-pod.private-key=FILE"
    )


OTHER = base64.b64encode(bytes(range(64, 96))).decode()


class KeyFiles:
    """A key reader for the parser: the keys of some paths, and the reads."""

    def __init__(self, **keys: str) -> None:
        self.keys = {f"/etc/wireguard/{name}.key": value for name, value in keys.items()}
        self.read: list[tuple[str, int]] = []

    def __call__(self, path: str, line: int) -> Key:
        self.read.append((path, line))
        if path not in self.keys:
            raise ValueError(f"key file {path}: does not exist")
        return Key.from_base64(self.keys[path])


def test_wg_quicks_key_hooks_read_their_files_and_are_not_warned_about() -> None:
    """wg-quick(8)'s form, %i the interface's name (the config's, less
    .conf); the preshared key of a peer named by its public key."""
    files = KeyFiles(wg0=PRIVATE, psk=OTHER)
    text = (
        "[Interface]\nAddress = 10.0.0.2/24\nPostUp = wg set %i private-key /etc/wireguard/%i.key\n"
        f"PostUp = wg set %i peer {PUBLIC} preshared-key /etc/wireguard/psk.key\n"
        f"[Peer]\nPublicKey = {PUBLIC}\nAllowedIPs = 10.0.0.0/24\n"
    )
    config = parse_config(text, "/etc/wireguard/wg0.conf", read_key=files)
    assert config.interface.private_key == Key.from_base64(PRIVATE)
    assert config.interface.private_key_source == "/etc/wireguard/wg0.key (PostUp on line 3)"
    assert config.peers[0].preshared_key == Key.from_base64(OTHER)
    assert config.warnings == ()
    assert files.read == [("/etc/wireguard/wg0.key", 3), ("/etc/wireguard/psk.key", 4)]
    other = parse_config(
        interface(PostUp="wg set %i up"), "/etc/wireguard/wg0.conf", read_key=files
    )
    assert other.warnings == (
        "/etc/wireguard/wg0.conf: PostUp is not run by wg-pod (its commands are ignored)",
    )
    assert other.interface.private_key_source == "/etc/wireguard/wg0.conf, line 2"


@pytest.mark.parametrize(
    ("extra", "line", "problem"),
    [
        (
            "PostUp = wg set %i private-key /etc/wireguard/wg0.key\n",
            4,
            "PrivateKey (line 2) and a PostUp private-key: keep one",
        ),
        (
            "PostUp = wg set %i private-key /etc/wireguard/nothing.key\n"
            "PostUp = wg set %i private-key /etc/wireguard/wg0.key\n",
            5,
            "a second PostUp private-key, first on line 4",
        ),
        (
            f"PostUp = wg set %i peer {OTHER} preshared-key /etc/wireguard/psk.key\n",
            4,
            "PostUp names a peer this config does not have",
        ),
    ],
    ids=["private-key-twice", "hook-twice", "unknown-peer"],
)
def test_a_key_given_two_ways_or_for_no_peer_is_refused(
    extra: str, line: int, problem: str
) -> None:
    files = KeyFiles(wg0=PRIVATE, psk=OTHER)
    text = interface() + extra + f"[Peer]\nPublicKey = {PUBLIC}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/wireguard/wg0.conf", read_key=files)
    assert (info.value.line, info.value.problem) == (line, problem)


def test_a_key_file_that_cannot_be_read_fails_at_its_line() -> None:
    text = (
        "[Interface]\nAddress = 10.0.0.2/24\nPostUp = wg set %i private-key /etc/wireguard/x.key\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/wireguard/wg0.conf", read_key=KeyFiles())
    assert str(info.value) == (
        "/etc/wireguard/wg0.conf:3: key file /etc/wireguard/x.key: does not exist"
    )


def test_a_key_given_instead_wins_and_no_key_file_is_read() -> None:
    files = KeyFiles()
    text = interface(PostUp="wg set %i private-key /etc/wireguard/wg0.key")
    given = (Key.from_base64(OTHER), "/run/credentials/web.service/wg0.key (wg-pod.private-key)")
    config = parse_config(text, "/etc/wireguard/wg0.conf", read_key=files, private_key=given)
    assert (config.interface.private_key, config.interface.private_key_source) == given
    assert files.read == []


def test_an_address_is_required() -> None:
    error = parse_error(f"[Interface]\nPrivateKey = {PRIVATE}\nDNS = 10.0.0.1\n", "/etc/wg/a.conf")
    assert str(error) == (
        "/etc/wg/a.conf:1: [Interface] has no Address; the container needs at least one"
        " tunnel address (e.g. Address = 10.0.0.2/24)"
    )
    error = parse_error(f"[Interface]\nPrivateKey = {PRIVATE}\nAddress = \n", "/etc/wg/a.conf")
    assert str(error).startswith("/etc/wg/a.conf:3: Address is empty; the container needs")
    # An empty Address next to a real one is fine, as in wg-quick.
    config = parse_config(
        f"[Interface]\nAddress =\nPrivateKey = {PRIVATE}\nAddress = fd00::2\n", "x"
    )
    assert config.interface.addresses == (ip_interface("fd00::2"),)


def test_warnings_name_what_is_not_done() -> None:
    config = parse_config(
        (FIXTURES / "good" / "table-and-hooks.conf").read_text(), "/etc/wg/t.conf"
    )
    assert config.warnings == (
        "/etc/wg/t.conf: PreUp is not run by wg-pod (its commands are ignored)",
        "/etc/wg/t.conf: PostUp is not run by wg-pod (its commands are ignored)",
        "/etc/wg/t.conf: PreDown is not run by wg-pod (its commands are ignored)",
        "/etc/wg/t.conf: PostDown is not run by wg-pod (its commands are ignored)",
        "/etc/wg/t.conf: SaveConfig is ignored by wg-pod (it never writes the config back)",
    )


def test_second_interface_is_refused_not_merged() -> None:
    text = interface(ListenPort="1") + "[Interface]\nListenPort = 2\n"
    error = parse_error(text)
    assert (error.line, error.problem) == (
        5,
        "second [Interface] section (first on line 1); a config has exactly one:"
        " move its keys into the first",
    )


@pytest.mark.parametrize("port", ["65536", "70000", "131071"])
def test_ports_wg_would_wrap_are_refused(port: str) -> None:
    # wg reads ListenPort modulo 65536 (70000 listens on 4464).
    error = parse_error(interface(ListenPort=port))
    assert (error.line, error.problem) == (4, f"ListenPort {port!r} is not a number in 0..65535")


def test_search_domains_without_a_nameserver_are_ignored_as_in_wg_quick() -> None:
    config = parse_config((FIXTURES / "good" / "dns-search-only.conf").read_text(), "/w.conf")
    assert (config.interface.dns_servers, config.interface.dns_search) == ((), ())
    assert config.interface.ignored_keys == ("DNS",)
    assert config.warnings == (
        "/w.conf: DNS has search domains but no nameserver;"
        " wg-quick ignores them then, so does wg-pod",
    )


@pytest.mark.parametrize("mangled", [PRIVATE, PRIVATE[:-1], PRIVATE[3:-3], "x" + PRIVATE])
def test_a_key_in_dns_is_refused_and_not_shown(mangled: str) -> None:
    # It would otherwise be a search domain, written into the container's
    # resolv.conf and printed by wg-pod check.
    error = parse_error(interface(DNS=f"10.0.0.1, {mangled}"))
    assert error.line == 4
    assert "looks like a key" in error.problem
    for rendered in error_renderings(error):
        assert_no_secret(rendered, secrets_in(PRIVATE))
    with pytest.raises(ValueError) as caught:
        dns_entry(mangled)
    assert_no_secret(str(caught.value), secrets_in(PRIVATE))


# --------------------------------------------------------------------------
# IPv6 zone indexes (issue 20): Python's ipaddress takes `fd00::53%x`, and
# its text keeps the zone; no place wg-pod writes an address into has a use
# for one (nftables rules, netlink, WireGuard), so each field refuses it.
# --------------------------------------------------------------------------

ZONED = [
    ("Address", interface(Address="fd77::2%eth0/64"), 4, "Address 'fd77::2%eth0/64'"),
    ("DNS", interface(DNS="10.0.0.1, fd00::53%x"), 4, "DNS entry 'fd00::53%x'"),
    ("DNS-link-local", interface(DNS="fe80::53%1"), 4, "DNS entry 'fe80::53%1'"),
    ("AllowedIPs", one_peer(AllowedIPs="10.0.0.0/8, fd00::%x/64"), 6, "AllowedIPs 'fd00::%x/64'"),
    ("AllowedIPs-host", one_peer(AllowedIPs="fd00::1%lo"), 6, "AllowedIPs 'fd00::1%lo'"),
    ("Endpoint", one_peer(Endpoint="[fe80::1%eth0]:51820"), 6, "Endpoint host 'fe80::1%eth0'"),
    ("Endpoint-bare", one_peer(Endpoint="fe80::1%eth0:51820"), 6, "Endpoint host 'fe80::1%eth0'"),
]


@pytest.mark.parametrize(
    ("text", "line", "start"), [z[1:] for z in ZONED], ids=[z[0] for z in ZONED]
)
def test_an_ipv6_zone_index_is_refused_naming_the_line(text: str, line: int, start: str) -> None:
    error = parse_error(text, "/etc/wg/wg0.conf")
    assert error.line == line
    assert error.problem.startswith(f"{start} has an IPv6 zone index ('%...'); ")
    assert str(error).startswith(f"/etc/wg/wg0.conf:{line}: ")
    assert "\n" not in str(error)


def test_an_endpoint_zone_index_says_why_wg_pod_differs_from_wg() -> None:
    # wg itself takes [fe80::1%eth0]:51820 (getaddrinfo reads the zone into
    # the scope id); wg-pod hands WireGuard the bare address, so it refuses.
    error = parse_error(one_peer(Endpoint="[fe80::1%eth0]:51820"))
    assert error.problem == (
        "Endpoint host 'fe80::1%eth0' has an IPv6 zone index ('%...');"
        " wg-pod cannot hand one to WireGuard: use an address that needs none"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fd00::53%x", "'fd00::53%x' has an IPv6 zone index ('%...'); {}"),
        ("FE80::1%eth0", "'FE80::1%eth0' has an IPv6 zone index ('%...'); {}"),
        ("fd00::53%", "'fd00::53%' looks like an address but is not a valid one"),
    ],
)
def test_dns_entry_refuses_a_zone_index(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        dns_entry(text)
    assert str(caught.value) == problem.format("a nameserver address takes none")


def test_odd_but_valid_addresses_parse_to_their_canonical_values() -> None:
    config = parse_config(
        interface(Address="FD77:0000::0002/64, ::ffff:10.0.0.3/128", DNS="FD00::0053, ::, 0.0.0.0")
        + f"[Peer]\nPublicKey = {PUBLIC}\nAllowedIPs = ::/0, ::FFFF:0:0/96\n"
        "Endpoint = [2001:DB8::0001]:65535\n",
        "x",
    )
    iface, (peer,) = config.interface, config.peers
    assert [str(a) for a in iface.addresses] == ["10.0.0.2/24", "fd77::2/64", "::ffff:a00:3/128"]
    assert [str(s) for s in iface.dns_servers] == ["fd00::53", "::", "0.0.0.0"]
    assert [str(n) for n in peer.allowed_ips] == ["::/0", "::ffff:0:0/96"]
    assert peer.endpoint == Endpoint("2001:db8::1", 65535)
