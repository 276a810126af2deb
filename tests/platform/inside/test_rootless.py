"""Rootless podman for real, inside the Debian 13 machine (tests/platform):
ordinary users with subuids, crun and pasta, the installed hook from the
system's hooks.d, a real WireGuard peer (tests.lab) in its own namespace.

Two users of the machine's own: one whose containers get their tunnels,
and a second who must neither use nor see the first one's.  pasta takes
the machine's default route as its template, so the machine gets one for
the test's length: a veth into a namespace of the test's own.  Collected
only inside the machine (see tests/platform/conftest.py).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import REPO, RETRYING_WGET, TEST_IMAGE, Lab, Peer, run, token, wait_for
from tests.lab.users import User

pytestmark = pytest.mark.podman

UPLINK_NS = "wgpt-uplink"
UPLINK = ("198.18.200.2/24", "fd77:200::2/64")
UPLINK_GATEWAYS = ("198.18.200.1", "fd77:200::1")
SERVED = "served-by-a-rootless-quadlet-unit"
CONTAINER = "systemd-wgpt-tunnel"  # quadlet's name for the unit's container


def make_user(name: str) -> User:
    """A user with subuids (useradd gives them), lingering: their systemd
    user manager runs, with /run/user/UID, as after a login."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--create-home", "--shell", "/bin/sh", name])
        entry = pwd.getpwnam(name)
    user = User(name, entry.pw_uid, Path(entry.pw_dir))
    Path("/var/lib/systemd/linger").mkdir(parents=True, exist_ok=True)
    Path(f"/var/lib/systemd/linger/{name}").touch()
    run(["systemctl", "start", f"user@{user.uid}.service"], timeout=60)
    user.run("sh", str(REPO / "scripts" / "test-image"), TEST_IMAGE, timeout=300)
    return user


def remove_user(user: User) -> None:
    user.podman("rm", "--all", "--force", "--time", "0", check=False)
    run(["systemctl", "stop", f"user@{user.uid}.service"], check=False, timeout=60)
    Path(f"/var/lib/systemd/linger/{user.name}").unlink(missing_ok=True)
    run(["userdel", "--remove", user.name], check=False)


@pytest.fixture(scope="module")
def uplink() -> Iterator[None]:
    """The machine's default routes, through a veth into a namespace of
    ours that answers nothing: pasta's template, never a way out."""
    run(["ip", "netns", "add", UPLINK_NS])
    try:
        run(
            [
                "ip",
                "link",
                "add",
                "wgpt-uplink",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                UPLINK_NS,
            ]
        )
        for address in UPLINK:
            run(["ip", "address", "add", address, "dev", "wgpt-uplink", "nodad"])
        run(["ip", "link", "set", "wgpt-uplink", "up"])
        run(["ip", "-n", UPLINK_NS, "link", "set", "eth0", "up"])
        for gateway in UPLINK_GATEWAYS:
            run(["ip", "route", "add", "default", "via", gateway, "dev", "wgpt-uplink"])
        yield
    finally:
        run(["ip", "link", "delete", "wgpt-uplink"], check=False)
        run(["ip", "netns", "delete", UPLINK_NS], check=False)


def a_user(name: str) -> Iterator[User]:
    user = make_user(name)
    try:
        yield user
    finally:
        remove_user(user)


@pytest.fixture(scope="module")
def alice(uplink: None) -> Iterator[User]:
    yield from a_user("wgpt-alice")


@pytest.fixture(scope="module")
def bob(uplink: None) -> Iterator[User]:
    yield from a_user("wgpt-bob")


def full_tunnel(peer: Peer) -> str:
    client = peer.add_client(allowed_ips=["0.0.0.0/0", "::/0"])
    return client.config


def annotations(config: Path, *extra: str) -> list[str]:
    return [
        "--annotation",
        f"wg-pod.config={config}",
        "--annotation",
        "wg-pod.delete-default=true",
        *extra,
    ]


def leftovers(user: User) -> list[str]:
    """What of the user's tunnels is still there: wireguard-go processes,
    records, sockets."""
    found = run(["pgrep", "-u", str(user.uid), "-a", "wireguard-go"], check=False).stdout
    state = Path(user.runtime_dir) / "wg-pod"
    for directory in ("records", "wireguard", "resolv"):
        if (state / directory).is_dir():
            found += "".join(
                f"{state / directory / name}\n" for name in os.listdir(state / directory)
            )
    return found.splitlines()


def test_a_rootless_container_reaches_the_peer_through_its_tunnel_in_both_families(
    alice: User, lab: Lab, peer: Peer
) -> None:
    config = alice.write_config("wg0.conf", full_tunnel(peer))
    script = (
        f"wget -qO- -T 10 {peer.url_v4}; wget -qO- -T 10 {peer.url_v6}; "
        "ip route; ip -6 route; ip link show wg0"
    )
    done = alice.podman(
        "run", "--rm", *annotations(config), TEST_IMAGE, "sh", "-c", script, check=False
    )
    assert done.returncode == 0, done.stderr + alice.wg_pod("status", check=False).stdout
    assert done.stdout.count(peer.page) == 2, done.stdout
    defaults = [line for line in done.stdout.splitlines() if line.startswith("default")]
    assert defaults and all("dev wg0" in line for line in defaults), done.stdout
    assert leftovers(alice) == []


def test_the_kill_switch_holds_when_the_link_is_removed_and_status_shows_the_users_tunnel(
    alice: User, bob: User, lab: Lab, peer: Peer
) -> None:
    config = alice.write_config("wg0.conf", full_tunnel(peer))
    name = f"wgpt-{token()}"
    alice.podman("run", "-d", "--name", name, *annotations(config), TEST_IMAGE, "sleep", "600")
    try:
        fetch = RETRYING_WGET.format(url=peer.url_v4)
        assert peer.page in alice.podman("exec", name, "sh", "-c", fetch).stdout
        status = json.loads(alice.wg_pod("status", "--json").stdout)
        (tunnel,) = status["tunnels"]
        assert tunnel["interface"] == "wg0" and tunnel["peers"][0]["latest_handshake"], tunnel
        # The second user sees none of it, and cannot reach the first's state.
        assert json.loads(bob.wg_pod("status", "--json").stdout)["tunnels"] == []
        assert bob.run("ls", f"{alice.runtime_dir}/wg-pod", check=False).returncode != 0

        pid = alice.podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        alice.podman("unshare", "nsenter", "-t", pid, "-n", "ip", "link", "delete", "wg0")
        # Neither into the tunnel's prefixes nor past it to the peer's own
        # address (outside the podman network): nothing leaves.
        for url in (peer.url_v4, f"http://{peer.underlay.inner_v4.ip}:{peer.http_port}/"):
            blocked = alice.podman("exec", name, "wget", "-qO-", "-T", "3", url, check=False)
            assert blocked.returncode != 0 and peer.page not in blocked.stdout, url
        status = json.loads(alice.wg_pod("status", "--json").stdout)
        assert "missing" in (status["tunnels"][0]["problem"] or ""), status
    finally:
        alice.podman("rm", "--force", "--time", "0", name, check=False)
    wait_for(lambda: leftovers(alice) == [], timeout=20, what="the tunnel gone with the container")


@pytest.mark.parametrize("userns", [[], ["--userns=keep-id"]], ids=["default", "keep-id"])
def test_a_rootless_container_sees_the_tunnels_resolv_conf_after_a_restart_too(
    alice: User, lab: Lab, peer: Peer, userns: list[str]
) -> None:
    """podman 5 writes the container's resolv.conf after the hook: the
    hook's own, mounted over it from the user's namespace, is what the
    container reads, and again after ``podman restart``; with keep-id too
    (the container's mount namespace is then a nested user namespace's)."""
    tunnel = str(peer.tunnel_v4.ip)
    client = peer.add_client(
        allowed_ips=["0.0.0.0/0", "::/0"], extra_interface_lines=[f"DNS = {tunnel}"]
    )
    config = alice.write_config("wg0.conf", client.config)
    name = f"wgpt-{token()}"
    alice.podman(
        "run", "-d", "--name", name, *userns, *annotations(config), TEST_IMAGE, "sleep", "600"
    )
    try:
        fetch = RETRYING_WGET.format(url=peer.url_v4)
        assert peer.page in alice.podman("exec", name, "sh", "-c", fetch).stdout
        for after in ("run", "restart"):
            if after == "restart":
                alice.podman("restart", "--time", "0", name)
            resolv = alice.podman("exec", name, "cat", "/etc/resolv.conf").stdout
            lines = resolv.splitlines()
            servers = [x.split()[1] for x in lines if x.startswith("nameserver")]
            assert servers == [tunnel], f"after {after}: {resolv}"
    finally:
        alice.podman("rm", "--force", "--time", "0", name, check=False)
    wait_for(lambda: leftovers(alice) == [], timeout=20, what="the tunnel gone with the container")


def wireguard_go(user: User) -> list[str]:
    return run(["pgrep", "-u", str(user.uid), "wireguard-go"], check=False).stdout.split()


def test_the_users_daemon_repairs_a_killed_wireguard_go(alice: User, lab: Lab, peer: Peer) -> None:
    """``wg-pod install --user --daemon`` starts the user's daemon, a unit of their
    systemd user manager, in their podman's namespaces: it repairs the
    tunnel of a container whose wireguard-go was killed, and ``wg-pod
    health`` shows it healthy again."""
    assert "wg-pod.service" in alice.wg_pod("install", "--user", "--daemon").stdout
    unit = alice.home / ".config" / "systemd" / "user" / "wg-pod.service"
    name = f"wgpt-{token()}"
    try:
        active = alice.run("systemctl", "--user", "is-active", "wg-pod.service", check=False)
        assert active.stdout.strip() == "active", active.stdout + active.stderr
        config = alice.write_config("wg0.conf", full_tunnel(peer))
        alice.podman("run", "-d", "--name", name, *annotations(config), TEST_IMAGE, "sleep", "600")
        fetch = RETRYING_WGET.format(url=peer.url_v4)
        assert peer.page in alice.podman("exec", name, "sh", "-c", fetch).stdout
        (killed,) = wireguard_go(alice)
        run(["kill", "-KILL", killed])
        wait_for(
            lambda: wireguard_go(alice) not in ([], [killed]),
            timeout=30,
            what="the daemon's repair: a new wireguard-go",
        )
        done = alice.podman("exec", name, "sh", "-c", fetch, check=False)
        assert peer.page in done.stdout, done.stderr
        wait_for(
            lambda: alice.wg_pod("health", check=False).returncode == 0,
            timeout=30,
            what="wg-pod health: healthy",
        )
    finally:
        alice.podman("rm", "--force", "--time", "0", name, check=False)
        alice.wg_pod("uninstall", "--user", "--daemon", check=False)
    assert not unit.exists()
    wait_for(lambda: leftovers(alice) == [], timeout=20, what="the tunnel gone with the container")


def test_another_users_config_and_roots_are_refused_in_one_line(
    alice: User, bob: User, lab: Lab, peer: Peer
) -> None:
    alices = alice.write_config("wg0.conf", full_tunnel(peer))
    roots = Path("/etc/wg") / f"wgpt-{token()}.conf"
    roots.parent.mkdir(mode=0o700, exist_ok=True)
    roots.write_text(full_tunnel(peer))
    roots.chmod(0o600)
    try:
        for user, config in ((bob, alices), (alice, roots)):
            done = user.podman(
                "run", "--rm", *annotations(Path(config)), TEST_IMAGE, "true", check=False
            )
            assert done.returncode != 0, f"{user.name} started a container with {config}"
            failure = json.loads(user.wg_pod("status", "--json").stdout)["failures"][0]
            message = failure["message"]
            assert str(config) in message and "\n" not in message, message
            assert re.search(
                r"not inside an allowed directory|cannot reach config file", message
            ), message
            print(f"{user.name}, {config}: {message}")
    finally:
        roots.unlink()
    assert leftovers(alice) == [] and leftovers(bob) == []


def seen(user: User) -> str:
    """What the user's unit and its container show, for a failure's message."""
    commands = [
        ("systemctl", "--user", "status", "--no-pager", "wgpt-tunnel.service"),
        ("podman", "logs", CONTAINER),
        ("podman", "exec", CONTAINER, "ip", "address"),
        (
            "podman",
            "unshare",
            "sh",
            "-c",
            f"nsenter -t $(podman inspect -f '{{{{.State.Pid}}}}' {CONTAINER}) -n nft list ruleset",
        ),
        ("wg-pod", "status"),
    ]
    out = []
    for command in commands:
        done = user.run(*command, check=False)
        out.append(f"$ {' '.join(command)}\n{done.stdout}{done.stderr}")
    return "\n".join(out)


def test_a_quadlet_user_unit_starts_and_restarts_with_its_tunnel(
    alice: User, lab: Lab, peer: Peer
) -> None:
    """``systemctl --user`` of a lingering user, quadlet's ``Annotation=``
    lines: the container fetches through its tunnel, and serves 8080 as
    port 80 of the tunnel (wg-pod.port-remapping), after a restart too."""
    client = peer.add_client(allowed_ips=["0.0.0.0/0", "::/0"])
    assert client.address_v4 is not None
    config = alice.write_config("wg0.conf", client.config)
    script = (
        f"wget -qO- -T 10 {peer.url_v4} && mkdir -p /www && echo {SERVED} > /www/index.html "
        "&& exec httpd -f -p 8080 -h /www"
    )
    units = alice.home / ".config" / "containers" / "systemd"
    unit = units / "wgpt-tunnel.container"
    alice.run("mkdir", "-p", str(units))
    unit.write_text(
        "[Container]\n"
        f"Image={TEST_IMAGE}\n"
        f"Exec=sh -c '{script}'\n"
        f"Annotation=wg-pod.config={config}\n"
        "Annotation=wg-pod.delete-default=true\n"
        "Annotation=wg-pod.port-remapping=80:8080\n"
        "StopTimeout=1\n"  # httpd as PID 1 ignores SIGTERM
        # A user's units wait for the system's network-online.target, which
        # nothing in the machine brings up: 90 s for each start.
        "[Quadlet]\nDefaultDependencies=false\n"
    )
    os.chown(unit, alice.uid, alice.uid)
    systemctl = ("systemctl", "--user")
    try:
        alice.run(*systemctl, "daemon-reload")
        for action in ("start", "restart"):
            alice.run(*systemctl, action, "wgpt-tunnel.service")
            served = None
            for _ in range(60):
                served = peer.try_fetch(f"http://{client.address_v4.ip}/")
                if served is not None:
                    break
                time.sleep(0.5)
            assert served == f"{SERVED}\n", f"nothing served after {action}:\n" + seen(alice)
            assert peer.page in alice.podman("logs", CONTAINER).stdout, seen(alice)
        alice.run(*systemctl, "stop", "wgpt-tunnel.service")
    finally:
        alice.run(*systemctl, "stop", "wgpt-tunnel.service", check=False)
        unit.unlink()
        alice.run(*systemctl, "daemon-reload", check=False)
    wait_for(lambda: leftovers(alice) == [], timeout=20, what="the tunnel gone with the unit")
