"""``wg-pod health`` never says healthy when it cannot know.

0 only when every tunnel examined is known healthy (none at all: 0); 1 when
one is not, or the named container has no tunnel; 2 with one line when the
state directory, a record or a health file cannot be read, or a record
vanished while it read.  The state directory is a temporary one here; a
tunnel whose namespace is gone reads as down unless the daemon's kept
health (fresh) says otherwise, so nothing here needs root or a tunnel.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.lab import the_runtime
from wg_pod_hook import cli, podman
from wg_pod_hook.podman import ContainerInfo, NoSuchContainer, PodmanError
from wg_pod_hook.state import health, records
from wg_pod_hook.state.health import Health, State
from wg_pod_hook.state.records import NetnsId, TunnelRecord

WEB = "a1" * 32
DB = "b2" * 32
MEMBER = "c3" * 32


pytestmark = pytest.mark.usefixtures("state_dir")


@pytest.fixture(autouse=True)
def _names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podman, "names", lambda url=None: {WEB: "web", MEMBER: "member"})


def tunnel(container_id: str, state: State | None = None, shared_with: str | None = None) -> None:
    """A record (its namespace gone: down by itself) and, with ``state``,
    what a daemon that looked just now keeps."""
    records.write(
        the_runtime(),
        TunnelRecord(
            container_id=container_id,
            interface="wg0",
            config="/etc/wg/wg0.conf",
            netns=NetnsId("/run/netns/wgpt-gone", 1, 1),
            created=time.time(),
            shared_with=shared_with,
            complete=True,
        ),
    )
    if state is not None:
        now = time.time()
        health.write(the_runtime(), Health(container_id, state, since=now, checked=now))


def wg_pod_health(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["health", *args])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def unreadable(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """``directory`` answers as /run/wg-pod does to an ordinary user (root
    reads any directory, so chmod cannot show it)."""
    listdir = os.listdir

    def denied(path: str | os.PathLike[str] = ".") -> list[str]:
        if Path(path) == directory:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return listdir(path)

    monkeypatch.setattr(os, "listdir", denied)


def test_no_state_directory_is_no_tunnels(capsys: pytest.CaptureFixture[str]) -> None:
    assert wg_pod_health(capsys) == (0, "no tunnels", "")


def test_an_empty_state_directory_is_no_tunnels(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir.mkdir()
    assert wg_pod_health(capsys) == (0, "no tunnels", "")


def test_healthy_tunnels_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    tunnel(WEB, State.UP)
    tunnel(DB, State.IDLE)
    assert wg_pod_health(capsys) == (0, f"web: up\n{DB[:12]}: idle", "")


def test_a_down_tunnel_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    tunnel(WEB, State.UP)
    tunnel(DB)
    assert wg_pod_health(capsys) == (1, f"web: up\n{DB[:12]}: down", "")


def test_an_unreadable_state_directory_exits_2(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    unreadable(monkeypatch, state_dir)
    assert wg_pod_health(capsys) == (
        2,
        "",
        f"wg-pod: cannot tell the health: cannot read wg-pod's state {state_dir}: "
        "Permission denied (needs root, or run as the rootless podman user whose tunnels "
        "these are)",
    )


def test_a_state_directory_that_is_not_one_exits_2(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir.write_text("")
    code, out, err = wg_pod_health(capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"wg-pod: cannot tell the health: cannot read wg-pod's state {state_dir}: Not a directory"
    )


def test_a_record_that_does_not_parse_exits_2(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    records.path_for(the_runtime(), DB).write_text("{not json")
    code, out, err = wg_pod_health(capsys)
    assert (code, out) == (2, "")
    assert err.startswith(
        f"wg-pod: cannot tell the health: record {records.path_for(the_runtime(), DB)}: "
    )
    assert "\n" not in err


@pytest.mark.parametrize("damage", ["not JSON", "wrong fields", "a directory"])
def test_a_health_file_that_cannot_be_read_exits_2(
    damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    path = health.path_for(the_runtime(), WEB)
    path.unlink()
    if damage == "not JSON":
        path.write_text("\xff{")
    elif damage == "wrong fields":
        path.write_text('{"state": "up"}')
    else:
        path.mkdir()
    code, out, err = wg_pod_health(capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"wg-pod: cannot tell the health: health {path}: ")
    assert "\n" not in err


def test_a_record_that_vanishes_while_read_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    listed = records.list_ids(the_runtime())
    records.remove(the_runtime(), WEB)  # its container stopped between the listing and the reading
    monkeypatch.setattr(records, "list_ids", lambda runtime: listed)
    assert wg_pod_health(capsys) == (
        2,
        "",
        f"wg-pod: cannot tell the health: the record of {WEB[:12]} vanished while it was read",
    )


def named(monkeypatch: pytest.MonkeyPatch, container_id: str | Exception) -> None:
    def inspect(name_or_id: str, url: str | None = None) -> ContainerInfo:
        if isinstance(container_id, Exception):
            raise container_id
        return ContainerInfo(container_id, name_or_id, 1, True, None, None)

    monkeypatch.setattr(podman, "inspect", inspect)


def test_a_named_container_without_a_tunnel_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    named(monkeypatch, DB)
    assert wg_pod_health(capsys, "db") == (1, "", "wg-pod: db has no wg-pod tunnel")
    named(monkeypatch, NoSuchContainer("no container 'db'"))
    assert wg_pod_health(capsys, "db") == (1, "", "wg-pod: no container 'db'")


def test_a_named_container_exits_2_when_the_directory_cannot_be_read(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    named(monkeypatch, WEB)
    assert wg_pod_health(capsys, "web") == (0, "web: up", "")
    unreadable(monkeypatch, state_dir)
    code, out, err = wg_pod_health(capsys, "web")
    assert (code, out) == (2, "")
    assert err.endswith(
        "Permission denied (needs root, or run as the rootless podman user whose tunnels these are)"
    )


def test_a_named_container_exits_2_when_podman_cannot_say_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.UP)
    named(monkeypatch, PodmanError("podman API: connection refused"))
    assert wg_pod_health(capsys, "web") == (
        2,
        "",
        "wg-pod: cannot tell the health: podman API: connection refused",
    )


def test_a_pod_member_answers_with_the_tunnel_it_shares(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel(WEB, State.STALE)
    tunnel(MEMBER, shared_with=WEB)
    named(monkeypatch, MEMBER)
    shares = f"(shares the tunnel of {WEB[:12]})"
    assert wg_pod_health(capsys, "member") == (1, f"member: stale {shares}\nweb: stale", "")
    tunnel(WEB, State.UP)
    assert wg_pod_health(capsys, "member") == (0, f"member: up {shares}\nweb: up", "")
    assert wg_pod_health(capsys) == (0, f"web: up\nmember: up {shares}", "")


def test_json_gives_each_state_and_the_verdict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    tunnel(WEB, State.UP)
    tunnel(MEMBER, shared_with=WEB)
    code, out, err = wg_pod_health(capsys, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "version": 1,
        "verdict": "healthy",
        "exit_status": 0,
        "reason": None,
        "tunnels": [
            {
                "container_id": WEB,
                "name": "web",
                "state": "up",
                "healthy": True,
                "shared_with": None,
            },
            {
                "container_id": MEMBER,
                "name": "member",
                "state": "up",
                "healthy": True,
                "shared_with": WEB,
            },
        ],
    }
    tunnel(DB)
    code, out, _ = wg_pod_health(capsys, "--json")
    data = json.loads(out)
    assert (code, data["verdict"], data["exit_status"]) == (1, "unhealthy", 1)
    assert [(t["name"], t["state"], t["healthy"]) for t in data["tunnels"]] == [
        ("web", "up", True),
        (None, "down", False),
        ("member", "up", True),
    ]

    named(monkeypatch, DB[::-1])
    code, out, err = wg_pod_health(capsys, "db", "--json")
    assert (code, err) == (1, "wg-pod: db has no wg-pod tunnel")
    assert json.loads(out)["reason"] == "db has no wg-pod tunnel"
    named(monkeypatch, NoSuchContainer("no container 'db'"))
    code, out, err = wg_pod_health(capsys, "db", "--json")
    assert (code, err) == (1, "wg-pod: no container 'db'")
    assert json.loads(out) == {
        "version": 1,
        "verdict": "unhealthy",
        "exit_status": 1,
        "reason": "no container 'db'",
        "tunnels": [],
    }
