"""OCI state and wg-pod annotations -> typed records (pure).

The runtime hands the hook the container state on stdin; podman copies the
user's ``--annotation`` values into it.  Everything a container creator
controls is parsed and validated here, before anything touches the system.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from ipaddress import ip_address, ip_network
from pathlib import PurePosixPath

from ..errors import AnnotationError, StateError
from .config import IPAddress, IPNetwork, dns_entry, search_list_problem, zone_index_problem

PREFIX = "wg-pod."
CONFIG = "wg-pod.config"
INTERFACE = "wg-pod.interface"
PORT_REMAPPING = "wg-pod.port-remapping"
DELETE_DEFAULT = "wg-pod.delete-default"
ADD_ROUTE = "wg-pod.add-route"
DNS = "wg-pod.dns"
KILL_SWITCH = "wg-pod.kill-switch"
PRIVATE_KEY = "wg-pod.private-key"
KNOWN = (
    CONFIG,
    INTERFACE,
    PORT_REMAPPING,
    DELETE_DEFAULT,
    ADD_ROUTE,
    DNS,
    KILL_SWITCH,
    PRIVATE_KEY,
)
# The keys podman sends the hook for (hooks.d/*.json, hooksd.py): "wg-pod."
# in any case, so that a misspelt key or an empty value is refused here
# rather than starting a container without its tunnel.  A Go regexp, which
# podman searches (unanchored) in each key; Python's re reads it the same.
KEY_PATTERN = r"(?i)^wg-pod\."
_OURS = re.compile(KEY_PATTERN)
# How much of an unknown key an error shows.
_SHOWN_KEY = 64

# Annotation values come from whoever may create containers; nothing longer
# than this is a plausible list of ports, routes or servers.
MAX_VALUE = 4096

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# wg-quick's rule for interface names, less a leading dash (no tool we
# call should ever see a name that reads as an option).
_IFNAME = re.compile(r"[A-Za-z0-9_=+.][A-Za-z0-9_=+.-]{0,14}")
_PORT_SPEC = re.compile(r"(\d{1,5})(?:/([a-z]+))?")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


class Toggle(Enum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class PortRemap:
    """Traffic arriving on the tunnel at ``if_port`` goes to ``container_port``."""

    if_port: int
    container_port: int
    protocol: str  # "tcp" or "udp"


@dataclass(frozen=True)
class ExtraRoute:
    target: IPNetwork
    gateway: IPAddress


@dataclass(frozen=True)
class DnsChoice:
    """``wg-pod.dns``: ``mode`` is "auto", "off" or "list"."""

    mode: str = "auto"
    servers: tuple[IPAddress, ...] = ()
    search: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """What the container's creator asked for through annotations."""

    config_path: PurePosixPath
    interface: str | None = None
    port_remaps: tuple[PortRemap, ...] = ()
    delete_default: bool = False
    add_routes: tuple[ExtraRoute, ...] = ()
    dns: DnsChoice = DnsChoice()
    kill_switch: Toggle | None = None  # None: the settings' default
    # A file with the private key, used instead of the config's.
    private_key_path: PurePosixPath | None = None
    # The wg-pod.* annotations as given, sorted: what a repair asks for again.
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ContainerState:
    id: str
    status: str
    pid: int
    bundle: PurePosixPath | None
    annotations: Mapping[str, str]


def parse_state(text: str) -> ContainerState:
    """Parse the OCI state JSON the runtime writes to the hook's stdin."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise StateError(f"OCI state on stdin is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise StateError("OCI state on stdin is not a JSON object")
    cid = raw.get("id")
    if not isinstance(cid, str) or not _ID.fullmatch(cid):
        raise StateError("OCI state has no valid container id")
    pid = raw.get("pid", 0)
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
        raise StateError(f"OCI state of {cid[:12]} has an invalid pid")
    bundle = raw.get("bundle")
    if bundle is not None and (not isinstance(bundle, str) or not bundle.startswith("/")):
        raise StateError(f"OCI state of {cid[:12]} has an invalid bundle path")
    annotations = raw.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise StateError(f"OCI state of {cid[:12]} has malformed annotations")
    status = raw.get("status", "")
    return ContainerState(
        id=cid,
        status=status if isinstance(status, str) else "",
        pid=pid,
        bundle=PurePosixPath(bundle) if bundle else None,
        annotations=annotations,
    )


def parse_annotations(annotations: Mapping[str, str]) -> Request:
    """Validate every ``wg-pod.*`` annotation into a Request."""
    ours = {k: v for k, v in annotations.items() if _OURS.match(k)}
    for key in sorted(ours):
        _check_key(key)
        _check_value(key, ours[key])
    if CONFIG not in ours:
        raise AnnotationError(CONFIG, "missing; it names the WireGuard config file")
    path = ours[CONFIG].strip()
    if not path.startswith("/"):
        raise AnnotationError(CONFIG, "must be an absolute path")

    kill_switch = None
    if KILL_SWITCH in ours:
        kill_switch = parse_toggle(KILL_SWITCH, ours[KILL_SWITCH])
    private_key = ours[PRIVATE_KEY].strip() if PRIVATE_KEY in ours else None
    if private_key is not None and not private_key.startswith("/"):
        raise AnnotationError(PRIVATE_KEY, "must be an absolute path")
    return Request(
        config_path=PurePosixPath(path),
        interface=parse_interface_name(INTERFACE, ours[INTERFACE]) if INTERFACE in ours else None,
        port_remaps=parse_port_remapping(PORT_REMAPPING, ours.get(PORT_REMAPPING, "")),
        delete_default=parse_bool(DELETE_DEFAULT, ours.get(DELETE_DEFAULT, "false")),
        add_routes=parse_add_routes(ADD_ROUTE, ours.get(ADD_ROUTE, "")),
        dns=parse_dns(DNS, ours.get(DNS, "auto")),
        kill_switch=kill_switch,
        private_key_path=PurePosixPath(private_key) if private_key else None,
        annotations=tuple(sorted(ours.items())),
    )


def _check_key(key: str) -> None:
    """A key of ours that is not exactly a known one: refused, naming the
    nearest known key (``wg-pod.confg``: did you mean wg-pod.config?)."""
    if key in KNOWN:
        return
    shown = _shown_key(key)
    if key.lower() in KNOWN:
        hint = f"keys are lower case: did you mean {key.lower()}?"
    else:
        # Compared without the prefix, which every candidate shares.
        suffixes = {k.removeprefix(PREFIX): k for k in KNOWN}
        near = difflib.get_close_matches(key[len(PREFIX) :].lower(), suffixes, n=1)
        hint = f"did you mean {suffixes[near[0]]}?" if near else f"known: {', '.join(KNOWN)}"
    raise AnnotationError(shown, f"unknown annotation; {hint}")


def _shown_key(key: str) -> str:
    """The key as an error may show it: one short line."""
    if len(key) <= _SHOWN_KEY and key.isascii() and key.isprintable():
        return key
    cut = key[:_SHOWN_KEY]
    return repr(cut).encode("ascii", "backslashreplace").decode() + (
        "..." if len(key) > _SHOWN_KEY else ""
    )


def _check_value(key: str, value: str) -> None:
    if len(value) > MAX_VALUE:
        raise AnnotationError(key, f"value longer than {MAX_VALUE} characters")
    if not value.strip():
        raise AnnotationError(key, "empty value")
    if not value.isascii() or not value.isprintable():
        raise AnnotationError(key, "value has control or non-ASCII characters")


def parse_bool(key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise AnnotationError(key, f"{value!r} is not a boolean (true/false/yes/no/1/0/on/off)")


def parse_toggle(key: str, value: str) -> Toggle:
    try:
        return Toggle(value.strip().lower())
    except ValueError:
        raise AnnotationError(key, f"{value!r} is not one of auto, on, off") from None


def is_interface_name(name: str) -> bool:
    return _IFNAME.fullmatch(name) is not None and name not in {".", ".."}


def parse_interface_name(key: str, value: str) -> str:
    name = value.strip()
    if not is_interface_name(name):
        raise AnnotationError(
            key,
            f"{value!r} is not a valid interface name "
            "(1-15 of A-Z a-z 0-9 _ = + . -, not starting with -)",
        )
    return name


def _items(key: str, value: str) -> list[str]:
    if not value.strip():
        return []
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise AnnotationError(key, "empty item in comma list")
    return items


def _port(key: str, text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise AnnotationError(key, f"port {port} is out of range 1-65535")
    return port


def parse_port_remapping(key: str, value: str) -> tuple[PortRemap, ...]:
    """``IFPORT[/PROTO]:CPORT[/PROTO],...``; a protocol named on one side
    applies to both, since nftables redirects within one protocol."""
    remaps: list[PortRemap] = []
    for item in _items(key, value):
        sides = item.split(":")
        matches = [_PORT_SPEC.fullmatch(side) for side in sides]
        if len(sides) != 2 or None in matches:
            raise AnnotationError(key, f"{item!r} is not IFPORT[/PROTO]:CPORT[/PROTO]")
        (if_port, if_proto), (c_port, c_proto) = (m.groups() for m in matches if m)
        protos = {p for p in (if_proto, c_proto) if p}
        if not protos <= {"tcp", "udp"}:
            raise AnnotationError(key, f"{item!r}: protocol must be tcp or udp")
        if len(protos) > 1:
            raise AnnotationError(key, f"{item!r}: both sides must use the same protocol")
        remap = PortRemap(
            _port(key, if_port), _port(key, c_port), protos.pop() if protos else "tcp"
        )
        if any((r.if_port, r.protocol) == (remap.if_port, remap.protocol) for r in remaps):
            raise AnnotationError(key, f"{remap.if_port}/{remap.protocol} is remapped twice")
        remaps.append(remap)
    return tuple(remaps)


def _bracketed_pair(key: str, item: str) -> tuple[str, str]:
    """Split ``A:B`` where IPv6 parts are written ``[...]``."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+):(\[[^\]]+\]|[^:\[\]]+)", item)
    if not m:
        raise AnnotationError(key, f"{item!r} is not TARGET:GATEWAY (IPv6 in brackets)")
    return m.group(1).strip("[]"), m.group(2).strip("[]")


def parse_add_routes(key: str, value: str) -> tuple[ExtraRoute, ...]:
    routes: list[ExtraRoute] = []
    for item in _items(key, value):
        target_text, gateway_text = _bracketed_pair(key, item)
        try:
            target = ip_network(target_text, strict=False)
            gateway = ip_address(gateway_text)
        except ValueError as exc:
            raise AnnotationError(key, f"{item!r}: {exc}") from None
        for text, why in ((target_text, "a route target"), (gateway_text, "a gateway")):
            zoned = zone_index_problem(text, f"{why} takes none")
            if zoned is not None:
                raise AnnotationError(key, f"{item!r}: {zoned}")
        if target.version != gateway.version:
            raise AnnotationError(key, f"{item!r}: target and gateway differ in IP version")
        routes.append(ExtraRoute(target, gateway))
    return tuple(routes)


def parse_dns(key: str, value: str) -> DnsChoice:
    word = value.strip().lower()
    if word in {"auto", "off"}:
        return DnsChoice(mode=word)
    servers: list[IPAddress] = []
    search: list[str] = []
    for item in _items(key, value):
        # The same rule as the config's DNS = (wg-quick's and the resolver's).
        try:
            entry = dns_entry(item)
        except ValueError as exc:
            raise AnnotationError(key, str(exc)) from None
        if isinstance(entry, str):
            search.append(entry)
        else:
            servers.append(entry)
    problem = search_list_problem(tuple(dict.fromkeys(search)))
    if problem is not None:
        raise AnnotationError(key, problem)
    if not servers and not search:
        raise AnnotationError(key, "expected auto, off or a list of servers and domains")
    if not servers:
        # The list replaces the container's nameservers; domains alone would
        # leave it with none.
        raise AnnotationError(key, "search domains need at least one nameserver in the list")
    return DnsChoice(mode="list", servers=tuple(servers), search=tuple(search))


def with_device(state: ContainerState, config: str) -> ContainerState:
    """The state of a container that asked for a wg-pod CDI device: the
    device's config is its ``wg-pod.config``, and its annotations may add
    the other options; one that names another config is refused."""
    asked = state.annotations.get(CONFIG)
    if asked is not None and asked.strip() != config:
        raise AnnotationError(
            CONFIG,
            f"{asked.strip()!r}, but the container's wg-pod device gives {config}: "
            "ask for one tunnel, by the device or by the annotation",
        )
    return replace(state, annotations={**state.annotations, CONFIG: config})
