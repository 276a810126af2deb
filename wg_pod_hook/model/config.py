"""wg-quick config text -> typed, frozen records.

This is the one place that reads the wg-quick format.  It is pure: it takes
the text (already read by the caller) and the name to blame in errors, and
returns a `WgConfig` or raises `ConfigError(source, line, problem)`.

Anything `wg-quick up` accepts parses here, except a few things wg-quick
and wg let through silently (a single-valued key given twice, two
[Interface] sections, the same peer twice, empty list items, ports above
65535, search domains no resolver would use), and what only works on a
host (no Address, no private key: wg-quick lets PreUp/PostUp supply them,
and wg-pod runs neither), because a container that starts on a config that
does not mean what its author thought is worse than one that does not start.
docs/wg-quick.md lists these differences.  The one PostUp wg-pod understands
is wg-quick(8)'s own way to keep keys out of the config, ``wg set %i
private-key FILE`` (and a peer's ``preshared-key FILE``): it reads the file
through the caller's ``read_key``, and runs nothing.

Key material never leaves this module in text form except through
`Key.base64` / `Key.hex`, which callers use only to hand keys to WireGuard.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from pathlib import PurePosixPath
from typing import TypeVar

from ..errors import ConfigError

__all__ = [
    "Endpoint",
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "InterfaceConfig",
    "Key",
    "KeyReader",
    "Peer",
    "WgConfig",
    "dns_entry",
    "is_host_name",
    "parse_config",
    "parse_key",
    "search_domain_problem",
    "search_list_problem",
    "zone_index_problem",
]

IPAddress = IPv4Address | IPv6Address
IPInterface = IPv4Interface | IPv6Interface
IPNetwork = IPv4Network | IPv6Network

KEY_LEN = 32
_KEY_B64_LEN = 44


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Key:
    """A 32-byte WireGuard key (private, public or preshared).

    Its text forms (`repr`, `str`, f-strings) never show the key, so a key
    that reaches a log line or an error message by accident leaks nothing.
    """

    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != KEY_LEN:
            raise ValueError(f"a WireGuard key is exactly {KEY_LEN} bytes")

    @classmethod
    def from_base64(cls, text: str) -> Key:
        """Decode the form `wg genkey` prints; the error never quotes `text`."""
        # Same acceptance as wg's key_from_base64(): 44 characters, one '='
        # of padding, and canonical (zero) trailing bits.
        if len(text) != _KEY_B64_LEN or not text.endswith("=") or text.endswith("=="):
            raise ValueError("a key is 44 characters of base64 ending in a single '='")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a key must be valid base64") from None
        if len(raw) != KEY_LEN or base64.b64encode(raw).decode("ascii") != text:
            raise ValueError("a key must be the canonical base64 of 32 bytes")
        return cls(raw)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    @property
    def hex(self) -> str:
        """Lower-case hex, the form the WireGuard UAPI expects."""
        return self.raw.hex()

    def __repr__(self) -> str:
        return "Key(<redacted>)"

    __str__ = __repr__


# The preshared key of a peer without one: WireGuard's all-zero key.
NO_KEY = Key(bytes(KEY_LEN))


@dataclass(frozen=True)
class Endpoint:
    """Where a peer is reached: an IP literal or a host name, and a UDP port."""

    host: str  # IP literal without brackets, or a DNS host name
    port: int

    @classmethod
    def of(cls, address: IPAddress, port: int) -> Endpoint:
        """A resolved endpoint, as ``ADDRESS:PORT`` (``[V6]:PORT``) text goes."""
        return cls(str(address), port)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def ip(self) -> IPAddress | None:
        """The address when `host` is a literal; None for a host name."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


@dataclass(frozen=True)
class Peer:
    public_key: Key
    preshared_key: Key | None = field(repr=False)
    allowed_ips: tuple[IPNetwork, ...]  # file order, host bits masked, no duplicates
    endpoint: Endpoint | None
    persistent_keepalive: int | None  # None for absent, "off" or 0
    line: int  # line of the [Peer] header


@dataclass(frozen=True)
class InterfaceConfig:
    private_key: Key = field(repr=False)
    addresses: tuple[IPInterface, ...]
    listen_port: int | None
    fwmark: int | None  # None for absent, "off" or 0
    mtu: int | None
    dns_servers: tuple[IPAddress, ...]
    dns_search: tuple[str, ...]
    table: str  # "auto", "off", a table number or a table name
    ignored_keys: tuple[str, ...]  # keys we do not act on (see WgConfig.warnings)
    line: int  # line of the [Interface] header
    # Where the private key came from, for `wg-pod check` (never the key).
    private_key_source: str = field(default="", compare=False)


@dataclass(frozen=True)
class WgConfig:
    source: str
    interface: InterfaceConfig
    peers: tuple[Peer, ...]
    # Every file it was read from (the config, its key files), each with a
    # stamp of the file as read (configfile.py): what tells a change.
    files: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def warnings(self) -> tuple[str, ...]:
        """One line for each wg-quick key the file uses that wg-pod does not act on."""
        return tuple(f"{self.source}: {_IGNORED[key]}" for key in self.interface.ignored_keys)

    @property
    def host_name_endpoints(self) -> dict[str, Endpoint]:
        """The endpoints that are host names (the daemon follows them), by
        the peer's public key."""
        return {
            peer.public_key.base64: peer.endpoint
            for peer in self.peers
            if peer.endpoint is not None and peer.endpoint.ip is None
        }


_IGNORED = {
    **{
        key: f"{key} is not run by wg-pod (its commands are ignored)"
        for key in ("PreUp", "PostUp", "PreDown", "PostDown")
    },
    "SaveConfig": "SaveConfig is ignored by wg-pod (it never writes the config back)",
    "DNS": "DNS has search domains but no nameserver; wg-quick ignores them then, so does wg-pod",
}


# --------------------------------------------------------------------------
# Value parsers: text -> value, or _Invalid(problem).  The line loop adds
# source and line number.
# --------------------------------------------------------------------------


class _Invalid(Exception):
    """A value is wrong; carries only the problem text."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


_DIGITS = re.compile(r"[0-9]+")
# What C's strtoul(..., 0) reads in full, as wg (FwMark) and ip (MTU, table)
# do: 0x hex, a leading 0 for octal, else decimal.
_STRTOUL0 = re.compile(r"0[xX](?P<hex>[0-9a-fA-F]+)|(?P<oct>0[0-7]*)|(?P<dec>[1-9][0-9]*)")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SHOWABLE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,23}")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_NETWORK = re.compile(r"(?P<ip>[^/]+)(?:/(?P<cidr>[0-9]{1,3}))?")
# A long run of base64 characters in a problem text is most likely a key
# that ended up where we echo values (an Address, an Endpoint, ...).
_KEYLIKE = re.compile(r"[A-Za-z0-9+/=]{32,}")

_U32_MAX = 0xFFFFFFFF


def _shown(name: str) -> str:
    """`name` quoted when it is safe to print, else a placeholder.

    A key name or section name is printed in errors to help the user, but a
    mangled line such as `PrivateKey <key>` (no '=' except the key's own
    padding) turns the key into the "name"; only short identifiers are shown.
    """
    if _SHOWABLE.fullmatch(name):
        return repr(name)
    return "(not shown)"


def _needs(value: str, name: str, expected: str) -> None:
    """The one wording for a key written with nothing after its '='."""
    if not value:
        raise _Invalid(f"{name} needs a value ({expected})")


def _decimal(text: str, low: int, high: int, what: str) -> int:
    # The length cap keeps int() clear of Python's limit on huge digit strings.
    if not _DIGITS.fullmatch(text) or len(text) > 20 or not low <= int(text) <= high:
        raise _Invalid(f"{what} {text!r} is not a number in {low}..{high}")
    return int(text)


def _strtoul0(text: str) -> int | None:
    match = _STRTOUL0.fullmatch(text)
    if match is None or len(text) > 40:
        return None
    if match["hex"] is not None:
        return int(match["hex"], 16)
    if match["oct"] is not None:
        return int(match["oct"], 8)
    return int(match["dec"])


def _no_whitespace(value: str) -> str:
    # wg(8) deletes every blank inside a line before parsing it, so for the
    # keys wg-quick hands to wg, "Endpoint = host : 51820" is valid.
    return "".join(value.split())


def _key(value: str, name: str) -> Key:
    _needs(value, name, "a base64 key from `wg genkey`")
    try:
        return Key.from_base64(_no_whitespace(value))
    except ValueError as exc:
        raise _Invalid(f"{name} is not a valid key: {exc}") from None


def parse_key(text: str, name: str) -> Key:
    """A key as wg reads it from a file or a line (surrounding blanks and
    newline allowed); ValueError with the problem (never the text)."""
    try:
        return _key(text.strip(), name)
    except _Invalid as invalid:
        raise ValueError(invalid.problem) from None


# wg-quick(8)'s way to keep a key out of the config, as its page writes it:
# `PostUp = wg set %i private-key /path/to/key`, and the same for a peer's
# preshared key.  These, with an absolute path, are the only PostUp lines
# wg-pod acts on: it reads the file itself (configfile.py), runs nothing.
_PRIVATE_KEY_HOOK = re.compile(r"wg\s+set\s+%i\s+private-key\s+(/\S+)")
_PRESHARED_KEY_HOOK = re.compile(r"wg\s+set\s+%i\s+peer\s+(\S+)\s+preshared-key\s+(/\S+)")
# Reads the key file a key hook names (path, config line), by the caller's
# rules for where key files may be and who owns them; ValueError with the
# problem (one line, naming the file) when it cannot.
KeyReader = Callable[[str, int], Key]


def _no_key_files(path: str, line: int) -> Key:
    raise _Invalid(f"no key files are read here ({path})")


def _items(value: str, name: str, *, blank_separates: bool) -> list[str]:
    """Split a comma list; wg-quick also splits Address and DNS on blanks."""
    if not value:
        # wg-quick takes an empty Address or DNS as "nothing here".
        return []
    items: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            raise _Invalid(f"{name} has an empty item; expected a comma-separated list")
        items.extend(part.split() if blank_separates else [part])
    return items


def is_host_name(name: str) -> bool:
    """RFC 1123 host name; a trailing dot (fully qualified) is allowed.

    Public because DNS search domains from other sources (annotations) must
    follow the same rule as the config's own.
    """
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_LABEL.fullmatch(label) for label in labels)
        # An all-numeric last label would be read as a (malformed) IPv4 address.
        and not labels[-1].isdigit()
    )


# The search line that wg-pod writes into the container's resolv.conf must
# work with whatever libc the image has.  glibc (res_init.c) splits it on
# blanks and takes everything else literally; '#' and ';' start comments
# only at the start of a line.  musl reads lines into 256 bytes and skips a
# longer line whole; glibc before 2.26 kept the first 6 domains and 255
# characters.  A name with an empty label or one over 63 characters fails
# every lookup it is appended to (ns_name_pton), and '\\' is read there as
# an escape.
MAX_SEARCH_DOMAINS = 6
MAX_SEARCH_CHARS = 247  # "search " + the list + "\n" fits musl's 256-byte line
_SEARCH_FORBIDDEN = frozenset("#;\\")
_LOOKS_NUMERIC = re.compile(r"[0-9.]+")


def _quoted(text: str) -> str:
    """`text` for an error message: never a key-like run, never very long."""
    if _KEYLIKE.search(text):
        return "(not shown)"
    return repr(text) if len(text) <= 64 else repr(text[:60]) + "..."


def search_domain_problem(name: str) -> str | None:
    """Why `name` cannot be a DNS search domain, or None when it can.

    wg-quick hands every DNS= entry that is not an address to resolvconf as
    a search domain, so the rule is the resolver's, not RFC 1123's: labels
    of any printable ASCII (underscores and leading hyphens included), 1..63
    characters each, at most 253 in all, a trailing dot allowed.  Refused:
    blanks and control characters (they split or end the search line), '#'
    and ';' (comment characters in resolv.conf), '\\' (an escape to the
    resolver) and non-ASCII (IDNs go in their xn-- form).  Also refused:
    anything shaped like a key (32 or more base64 characters in a row; a
    key pasted into DNS= by mistake), which wg-pod never writes into a file.
    """
    if _KEYLIKE.search(name):
        return "looks like a key (32 or more base64 characters in a row)"
    if not name.isascii():
        return "is not ASCII (write an internationalised domain in its xn-- form)"
    for char in name:
        if not char.isprintable() or char.isspace() or char in _SEARCH_FORBIDDEN:
            return f"contains {char!r}, which a resolv.conf search domain cannot hold"
    body = name[:-1] if name.endswith(".") else name
    if not 1 <= len(body) <= 253:
        return "is not a search domain of 1..253 characters"
    if not all(1 <= len(label) <= 63 for label in body.split(".")):
        return "has an empty label or one longer than 63 characters"
    return None


def search_list_problem(domains: Sequence[str]) -> str | None:
    """Why these search domains (deduplicated) would not all be used, or None."""
    if len(domains) > MAX_SEARCH_DOMAINS:
        return (
            f"{len(domains)} search domains; at most {MAX_SEARCH_DOMAINS} work with every"
            " libc a container may have (glibc before 2.26 ignores the rest)"
        )
    length = len(" ".join(domains))
    if length > MAX_SEARCH_CHARS:
        return (
            f"search domains {length} characters long in all; at most {MAX_SEARCH_CHARS}"
            " work with every libc a container may have (musl ignores a longer search line)"
        )
    return None


def zone_index_problem(text: str, why: str) -> str | None:
    """Why `text`, which parsed as an address or network, cannot be used:
    it carries an IPv6 zone index (``fe80::1%eth0``); else None.  `why`
    ends the message.

    Python's ipaddress takes a zone (since 3.9) and keeps it in the value
    and its text, but no place wg-pod puts an address has a use for one:
    nftables rules cannot hold it, netlink routes and addresses take none,
    and a name after '%' would be an interface of whichever namespace reads
    it.  So it is refused where the text is read.
    """
    if "%" not in text:
        return None
    return f"{_quoted(text)} has an IPv6 zone index ('%...'); {why}"


def dns_entry(item: str) -> IPAddress | str:
    """A DNS= item as wg-quick files it: a nameserver address or a search domain.

    Raises ValueError with the problem; the item is quoted unless it looks
    like a key.
    """
    try:
        server = ipaddress.ip_address(item)
    except ValueError:
        pass
    else:
        zoned = zone_index_problem(item, "a nameserver address takes none")
        if zoned is not None:
            raise ValueError(zoned)
        return server
    # wg-quick files digits-and-dots and anything with ':' as nameservers.
    if ":" in item or _LOOKS_NUMERIC.fullmatch(item):
        raise ValueError(f"{_quoted(item)} looks like an address but is not a valid one")
    problem = search_domain_problem(item)
    if problem is not None:
        raise ValueError(f"{_quoted(item)} is not an IP address, and as a search domain {problem}")
    return item


def _address(item: str) -> IPInterface:
    try:
        address = ipaddress.ip_interface(item)
    except ValueError:
        raise _Invalid(f"Address {item!r} is not an IP address with an optional /prefix") from None
    zoned = zone_index_problem(item, "an interface address takes none")
    if zoned is not None:
        raise _Invalid(f"Address {zoned}")
    return address


def _allowed_ip(item: str) -> IPNetwork:
    compact = _no_whitespace(item)
    # wg accepts only a /prefix length (no netmask) and no zone index.
    match = _NETWORK.fullmatch(compact)
    zoned = zone_index_problem(compact, "a network takes none")
    try:
        if match is None:
            raise ValueError("malformed")
        address = ipaddress.ip_address(match["ip"])
        cidr = match["cidr"]
        prefix = address.max_prefixlen if cidr is None else int(cidr)
        if prefix > address.max_prefixlen:
            raise ValueError("prefix too long")
    except ValueError:
        raise _Invalid(
            f"AllowedIPs {item!r} is not an IP network (address with an optional /prefix)"
        ) from None
    if zoned is not None:
        raise _Invalid(f"AllowedIPs {zoned}")
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)


def _endpoint(value: str) -> Endpoint:
    value = _no_whitespace(value)
    _needs(value, "Endpoint", "ip:port, [ipv6]:port or host:port")
    expected = "expected ip:port, [ipv6]:port or host:port"
    if value.startswith("["):
        host, close, rest = value[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise _Invalid(f"Endpoint {value!r} is malformed; {expected}")
        port_text = rest[1:]
    else:
        # Like wg, the last ':' separates the port, so an unbracketed IPv6
        # literal (fd00::1:51820) still parses the way wg reads it.
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise _Invalid(f"Endpoint {value!r} has no port; {expected}")
    if not host:
        raise _Invalid(f"Endpoint {value!r} has no host; {expected}")
    port = _decimal(port_text, 1, 65535, "Endpoint port")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        # wg passes the host to getaddrinfo(), which reads a zone into the
        # address's scope id; wg-pod hands WireGuard the bare address (the
        # kernel's netlink attribute as pyroute2 packs it has no scope id).
        zoned = zone_index_problem(
            host, "wg-pod cannot hand one to WireGuard: use an address that needs none"
        )
        if zoned is not None:
            raise _Invalid(f"Endpoint host {zoned}")
        return Endpoint(str(address), port)
    if ":" in host or re.fullmatch(r"[0-9.]+", host) or not is_host_name(host):
        raise _Invalid(f"Endpoint host {host!r} is neither an IP address nor a valid host name")
    return Endpoint(host, port)


def _listen_port(value: str) -> int:
    value = _no_whitespace(value)
    _needs(value, "ListenPort", "a UDP port 0..65535")
    # wg reads the port modulo 65536 (70000 listens on 4464); we refuse it.
    return _decimal(value, 0, 65535, "ListenPort")


def _fwmark(value: str) -> int | None:
    value = _no_whitespace(value)
    _needs(value, "FwMark", "off or a number 0..0xffffffff")
    if value.lower() == "off":
        return None
    mark = _strtoul0(value)
    if mark is None or mark > _U32_MAX:
        raise _Invalid(f"FwMark {value!r} is not off or a number in 0..0xffffffff")
    return mark or None


def _mtu(value: str) -> int | None:
    if not value:
        # wg-quick treats an empty MTU as unset.
        return None
    mtu = _strtoul0(value)
    if mtu is None or not 576 <= mtu <= 65535:
        raise _Invalid(f"MTU {value!r} is not a number in 576..65535")
    return mtu


def _table(value: str) -> str:
    if value.lower() in ("", "auto"):
        return "auto"
    if value.lower() == "off":
        return "off"
    number = _strtoul0(value)
    if number is not None:
        if number > _U32_MAX:
            raise _Invalid(f"Table {value!r} is not a routing table number (0..4294967295)")
        return str(number)
    if _TABLE_NAME.fullmatch(value):
        return value
    raise _Invalid(f"Table {value!r} is not auto, off, a table number or a table name")


def _keepalive(value: str) -> int | None:
    value = _no_whitespace(value)
    _needs(value, "PersistentKeepalive", "off or a number of seconds 0..65535")
    if value.lower() == "off":
        return None
    if not _DIGITS.fullmatch(value) or len(value) > 20 or int(value) > 65535:
        raise _Invalid(f"PersistentKeepalive {value!r} is not off or a number of seconds 0..65535")
    return int(value) or None


def _save_config(value: str) -> bool:
    _needs(value, "SaveConfig", "true or false")
    if value.lower() not in ("true", "false"):
        raise _Invalid(f"SaveConfig {value!r} is not true or false")
    return value.lower() == "true"


# --------------------------------------------------------------------------
# Sections being read
# --------------------------------------------------------------------------


@dataclass
class _Section:
    line: int
    # canonical key -> line of its first occurrence, for "given twice"
    first_seen: dict[str, int] = field(default_factory=dict)


@dataclass
class _InterfaceDraft(_Section):
    private_key: Key | None = field(default=None, repr=False)
    addresses: list[IPInterface] = field(default_factory=list)
    listen_port: int | None = None
    fwmark: int | None = None
    mtu: int | None = None
    dns_servers: list[IPAddress] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    table: str = "auto"
    ignored_keys: list[str] = field(default_factory=list)
    # The file of wg-quick's private-key hook (PostUp), and its line.
    private_key_file: tuple[str, int] | None = None


@dataclass
class _PeerDraft(_Section):
    public_key: Key | None = None
    preshared_key: Key | None = field(default=None, repr=False)
    allowed_ips: list[IPNetwork] = field(default_factory=list)
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None


def _set_private_key(d: _InterfaceDraft, v: str) -> None:
    d.private_key = _key(v, "PrivateKey")


def _add_addresses(d: _InterfaceDraft, v: str) -> None:
    d.addresses.extend(_address(i) for i in _items(v, "Address", blank_separates=True))


def _set_listen_port(d: _InterfaceDraft, v: str) -> None:
    d.listen_port = _listen_port(v)


def _set_fwmark(d: _InterfaceDraft, v: str) -> None:
    d.fwmark = _fwmark(v)


def _set_mtu(d: _InterfaceDraft, v: str) -> None:
    d.mtu = _mtu(v)


def _add_dns(d: _InterfaceDraft, v: str) -> None:
    for item in _items(v, "DNS", blank_separates=True):
        try:
            entry = dns_entry(item)
        except ValueError as exc:
            raise _Invalid(f"DNS entry {exc}") from None
        if isinstance(entry, str):
            d.dns_search.append(entry)
        else:
            d.dns_servers.append(entry)
    problem = search_list_problem(_unique(d.dns_search))
    if problem is not None:
        raise _Invalid(f"DNS has {problem}")


def _set_table(d: _InterfaceDraft, v: str) -> None:
    d.table = _table(v)


def _ignored(name: str) -> Callable[[_InterfaceDraft, str], None]:
    def note(d: _InterfaceDraft, v: str) -> None:
        # An empty PreUp = runs nothing in wg-quick either: nothing to warn about.
        if v and name not in d.ignored_keys:
            d.ignored_keys.append(name)

    return note


def _set_save_config(d: _InterfaceDraft, v: str) -> None:
    # SaveConfig = false asks for nothing, so there is nothing to warn about.
    if _save_config(v) and "SaveConfig" not in d.ignored_keys:
        d.ignored_keys.append("SaveConfig")


def _set_public_key(d: _PeerDraft, v: str) -> None:
    d.public_key = _key(v, "PublicKey")


def _set_preshared_key(d: _PeerDraft, v: str) -> None:
    d.preshared_key = _key(v, "PresharedKey")


def _add_allowed_ips(d: _PeerDraft, v: str) -> None:
    # wg refuses `AllowedIPs =` ("Line unrecognized"), as every key it reads.
    _needs(_no_whitespace(v), "AllowedIPs", "a comma-separated list of IP networks")
    items = _items(v, "AllowedIPs", blank_separates=False)
    d.allowed_ips.extend(_allowed_ip(i) for i in items)


def _set_endpoint(d: _PeerDraft, v: str) -> None:
    d.endpoint = _endpoint(v)


def _set_keepalive(d: _PeerDraft, v: str) -> None:
    d.persistent_keepalive = _keepalive(v)


# canonical name -> (handler, single-valued)
_INTERFACE_KEYS: dict[str, tuple[Callable[[_InterfaceDraft, str], None], bool]] = {
    "PrivateKey": (_set_private_key, True),
    "Address": (_add_addresses, False),
    "ListenPort": (_set_listen_port, True),
    "FwMark": (_set_fwmark, True),
    "MTU": (_set_mtu, True),
    "DNS": (_add_dns, False),
    "Table": (_set_table, True),
    "PreUp": (_ignored("PreUp"), False),
    "PostUp": (_ignored("PostUp"), False),
    "PreDown": (_ignored("PreDown"), False),
    "PostDown": (_ignored("PostDown"), False),
    "SaveConfig": (_set_save_config, True),
}
_PEER_KEYS: dict[str, tuple[Callable[[_PeerDraft, str], None], bool]] = {
    "PublicKey": (_set_public_key, True),
    "PresharedKey": (_set_preshared_key, True),
    "AllowedIPs": (_add_allowed_ips, False),
    "Endpoint": (_set_endpoint, True),
    "PersistentKeepalive": (_set_keepalive, True),
}
_CANONICAL = {name.lower(): name for name in (*_INTERFACE_KEYS, *_PEER_KEYS)}
# The keys wg(8) reads (wg-quick passes them on).  wg deletes every blank in
# a line before matching, so `Allowed IPs = ...` works there; wg-quick's own
# keys (Address, DNS, ...) must be written in one word.
_WG_KEYS = {
    name.lower(): name
    for name in (
        "PrivateKey",
        "ListenPort",
        "FwMark",
        "PublicKey",
        "PresharedKey",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
    )
}


def _key_name(name: str) -> str | None:
    return _CANONICAL.get(name.lower()) or _WG_KEYS.get("".join(name.split()).lower())


def _missing_equals(text: str) -> str | None:
    """The key of a line that reads `Key value`, its '=' left out.

    A key's base64 padding is an '=', so `PrivateKey <key>` looks like a key
    named "PrivateKey <key>" with an empty value.
    """
    words = text.split(None, 1)
    return _CANONICAL.get(words[0].lower()) if len(words) == 2 else None


_T = TypeVar("_T")


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


# --------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------


def parse_config(
    text: str,
    source: str,
    read_key: KeyReader = _no_key_files,
    private_key: tuple[Key, str] | None = None,
) -> WgConfig:
    """Parse wg-quick config `text`; `source` names it in errors (its path).
    `read_key` reads the files its key hooks name; `private_key` (the key
    and where it came from) is used instead of the config's own."""
    return _Parser(source, read_key, private_key).parse(text)


class _Parser:
    def __init__(
        self, source: str, read_key: KeyReader, private_key: tuple[Key, str] | None
    ) -> None:
        self.source = source
        self.read_key = read_key
        self.private_key = private_key
        self.preshared_key_files: list[tuple[Key, str, int]] = []
        self.interface: InterfaceConfig | None = None
        self.interface_line: int | None = None
        self.peers: list[Peer] = []
        # public key -> line of the [Peer] header that has it
        self.peer_lines: dict[bytes, int] = {}

    def error(self, line: int | None, problem: str) -> ConfigError:
        return ConfigError(self.source, line, _KEYLIKE.sub("(not shown)", problem))

    def parse(self, text: str) -> WgConfig:
        text = text.removeprefix("\ufeff")
        section: _InterfaceDraft | _PeerDraft | None = None
        # Split on '\n' only: str.splitlines() also breaks on form feeds and
        # other separators, which would make our line numbers disagree with
        # the user's editor.
        for number, raw in enumerate(text.split("\n"), start=1):
            content = raw.split("#", 1)[0].strip()
            if not content:
                continue
            if content.startswith("["):
                self.close(section)
                section = self.open(content, number)
                continue
            name, equals, value = content.partition("=")
            missing = _missing_equals(name)
            if missing is not None:
                raise self.error(
                    number, f"'=' missing after {missing}; expected '{missing} = value'"
                )
            if not equals:
                raise self.error(
                    number, "expected 'Key = value' or an [Interface] or [Peer] header"
                )
            self.assign(section, name.strip(), value.strip(), number)
        self.close(section)
        if self.interface is None:
            raise self.error(None, "no [Interface] section")
        return WgConfig(self.source, self.interface, self.with_preshared_key_files())

    def with_preshared_key_files(self) -> tuple[Peer, ...]:
        """The peers, with the preshared keys the key hooks name read in."""
        peers = {peer.public_key.raw: peer for peer in self.peers}
        for public_key, path, number in self.preshared_key_files:
            peer = peers.get(public_key.raw)
            if peer is None:
                raise self.error(number, "PostUp names a peer this config does not have")
            if peer.preshared_key is not None:
                raise self.error(
                    number,
                    f"the peer on line {peer.line} has a PresharedKey and a PostUp "
                    "preshared-key: keep one",
                )
            peers[public_key.raw] = replace(peer, preshared_key=self.keyed(path, number))
        return tuple(peers.values())

    def named(self, path: str) -> str:
        """A key hook's path with ``%i`` the interface's name, as wg-quick
        has it: the config file's, less ``.conf``."""
        return path.replace("%i", PurePosixPath(self.source).stem)

    def keyed(self, path: str, number: int) -> Key:
        """The key in the file a key hook names."""
        try:
            return self.read_key(self.named(path), number)
        except _Invalid as invalid:
            raise self.error(number, invalid.problem) from None
        except ValueError as exc:
            raise self.error(number, str(exc)) from None

    def open(self, header: str, number: int) -> _InterfaceDraft | _PeerDraft:
        if not header.endswith("]"):
            raise self.error(number, "malformed section header; expected [Interface] or [Peer]")
        name = header[1:-1].strip()
        if name.lower() == "interface":
            if self.interface_line is not None:
                # wg merges the two (a key given in both: the last wins); we
                # refuse, as for a key given twice in one section.
                raise self.error(
                    number,
                    f"second [Interface] section (first on line {self.interface_line});"
                    " a config has exactly one: move its keys into the first",
                )
            self.interface_line = number
            return _InterfaceDraft(number)
        if name.lower() == "peer":
            return _PeerDraft(number)
        shown = f"[{name}]" if _SHOWABLE.fullmatch(name) else "(name not shown)"
        raise self.error(number, f"unknown section {shown}; expected [Interface] or [Peer]")

    def assign(
        self, section: _InterfaceDraft | _PeerDraft | None, name: str, value: str, number: int
    ) -> None:
        if not name:
            raise self.error(number, "missing key name before '='")
        canonical = _key_name(name)
        if section is None:
            shown = canonical or _shown(name)
            raise self.error(
                number, f"key {shown} outside any section; put it under [Interface] or [Peer]"
            )
        if canonical is None:
            where = "[Interface]" if isinstance(section, _InterfaceDraft) else "[Peer]"
            raise self.error(number, f"unknown key {_shown(name)} in {where}")
        try:
            if isinstance(section, _InterfaceDraft):
                if canonical not in _INTERFACE_KEYS:
                    raise _Invalid(f"{canonical} belongs in a [Peer] section, not [Interface]")
                handler, single = _INTERFACE_KEYS[canonical]
                self.check_once(section, canonical, single, number)
                if canonical != "PostUp" or not self.key_hook(section, value, number):
                    handler(section, value)
            else:
                if canonical not in _PEER_KEYS:
                    raise _Invalid(f"{canonical} belongs in the [Interface] section, not [Peer]")
                peer_handler, single = _PEER_KEYS[canonical]
                self.check_once(section, canonical, single, number)
                peer_handler(section, value)
                if canonical == "PublicKey":
                    self.check_new_peer(section)
        except _Invalid as invalid:
            raise self.error(number, invalid.problem) from None

    def key_hook(self, section: _InterfaceDraft, value: str, number: int) -> bool:
        """Note a PostUp that is wg-quick's key hook; False for any other."""
        private = _PRIVATE_KEY_HOOK.fullmatch(value)
        if private is not None:
            if section.private_key_file is not None:
                raise _Invalid(
                    f"a second PostUp private-key, first on line {section.private_key_file[1]}"
                )
            section.private_key_file = (private[1], number)
            return True
        preshared = _PRESHARED_KEY_HOOK.fullmatch(value)
        if preshared is not None:
            self.preshared_key_files.append(
                (_key(preshared[1], "PostUp's peer"), preshared[2], number)
            )
            return True
        return False

    def check_once(self, section: _Section, canonical: str, single: bool, number: int) -> None:
        first = section.first_seen.setdefault(canonical, number)
        if single and first != number:
            raise _Invalid(f"{canonical} given twice, first on line {first}")

    def check_new_peer(self, peer: _PeerDraft) -> None:
        assert peer.public_key is not None
        earlier = self.peer_lines.setdefault(peer.public_key.raw, peer.line)
        if earlier != peer.line:
            # wg would silently merge the two into one peer.
            raise _Invalid(f"PublicKey repeats the peer on line {earlier}; list each peer once")

    def interface_key(self, section: _InterfaceDraft) -> tuple[Key, str]:
        """The private key and where it comes from: the one given instead
        (wg-pod.private-key), the config's PrivateKey, or the file of its
        PostUp key hook; never two of the config's own."""
        hook = section.private_key_file
        if self.private_key is not None:
            return self.private_key
        if section.private_key is not None and hook is not None:
            raise self.error(
                hook[1],
                f"PrivateKey (line {section.first_seen['PrivateKey']}) and a PostUp "
                "private-key: keep one",
            )
        if section.private_key is not None:
            return section.private_key, f"{self.source}, line {section.first_seen['PrivateKey']}"
        if hook is not None:
            path, number = hook
            return self.keyed(path, number), f"{self.named(path)} (PostUp on line {number})"
        raise self.error(
            section.line,
            "[Interface] has no private key: give it as PrivateKey, as "
            "`PostUp = wg set %i private-key FILE`, or in the annotation wg-pod.private-key=FILE",
        )

    def close(self, section: _InterfaceDraft | _PeerDraft | None) -> None:
        if isinstance(section, _InterfaceDraft):
            private_key, key_source = self.interface_key(section)
            if not section.addresses:
                # A container cannot add an address to its tunnel itself, and
                # wg-pod runs no PostUp that could.
                first = section.first_seen.get("Address")
                raise self.error(
                    first or section.line,
                    ("Address is empty" if first else "[Interface] has no Address")
                    + "; the container needs at least one tunnel address"
                    " (e.g. Address = 10.0.0.2/24)",
                )
            if section.dns_search and not section.dns_servers:
                # wg-quick sets DNS only with a nameserver; search domains
                # alone would leave the container without any.
                section.dns_search.clear()
                section.ignored_keys.append("DNS")
            self.interface = InterfaceConfig(
                private_key=private_key,
                addresses=_unique(section.addresses),
                listen_port=section.listen_port,
                fwmark=section.fwmark,
                mtu=section.mtu,
                dns_servers=_unique(section.dns_servers),
                dns_search=_unique(section.dns_search),
                table=section.table,
                ignored_keys=tuple(section.ignored_keys),
                line=section.line,
                private_key_source=key_source,
            )
        elif isinstance(section, _PeerDraft):
            if section.public_key is None:
                raise self.error(section.line, "[Peer] has no PublicKey (required)")
            self.peers.append(
                Peer(
                    public_key=section.public_key,
                    preshared_key=section.preshared_key,
                    allowed_ips=_unique(section.allowed_ips),
                    endpoint=section.endpoint,
                    persistent_keepalive=section.persistent_keepalive,
                    line=section.line,
                )
            )
