"""The tunnel record: one typed shape, checked once when read; a record that
does not parse is reported, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.lab import the_runtime
from wg_pod_hook.namespaces import netns_cookie
from wg_pod_hook.state import records
from wg_pod_hook.state.records import NetnsId, ProcessId, RecordError, TunnelRecord

CID = "c" * 64


@pytest.fixture(autouse=True)
def _made(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)


def full_record() -> TunnelRecord:
    return TunnelRecord(
        container_id=CID,
        interface="wg0",
        config="/etc/wg/wg0.conf",
        netns=NetnsId("/run/netns/x", 4, 4026532000),
        created=1.5,
        complete=True,
        container_pid=42,
        temp_name="wgp0123456789ab",
        backend="userspace",
        process=ProcessId(43, 1000),
        moved=True,
        removed_routes=({"family": 2, "dst_len": 0, "gateway": "10.88.0.1", "table": 254},),
        reply_path=(4,),
        nftables=True,
        resolv_conf="/run/x/resolv.conf",
        resolv_conf_original="nameserver 10.88.0.1\n",
        public_key="A" * 43 + "=",
        peer_public_keys=("B" * 43 + "=",),
    )


def test_round_trip_with_a_version() -> None:
    record = full_record()
    records.write(the_runtime(), record)
    data = json.loads(records.path_for(the_runtime(), CID).read_text())
    assert data["version"] == records.VERSION
    assert data["process"] == {"pid": 43, "start": 1000}
    assert records.load(the_runtime(), CID) == record


def test_version_1_records_still_read() -> None:
    """Records written before the version field, by a running system that
    was upgraded: flat process fields, written once at the end."""
    v1 = {
        "container_id": CID,
        "container_pid": 42,
        "netns": {"path": "/run/netns/x", "dev": 4, "ino": 4026532000},
        "interface": "wg0",
        "temp_name": "wgp0123456789ab",
        "config": "/etc/wg/wg0.conf",
        "nftables": False,
        "resolv_conf": None,
        "resolv_conf_original": None,
        "removed_routes": [],
        "reply_path": [],
        "created": 1.5,
        "backend": "userspace",
        "process_pid": 43,
        "process_start": 1000,
    }
    records.path_for(the_runtime(), CID).write_text(json.dumps(v1))
    record = records.load(the_runtime(), CID)
    assert record is not None
    assert record.process == ProcessId(43, 1000)
    assert record.complete and record.moved


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"version": 9}, "unknown version 9"),
        ({"netns": {"path": "/x"}}, "netns: needs path, dev and ino"),
        ({"interface": ""}, "interface: missing"),
        ({"nftables": "yes"}, "nftables: wrong type str"),
        ({"container_pid": True}, "container_pid: wrong type bool"),
        ({"reply_path": [5]}, "reply_path: IP versions are 4 and 6"),
        ({"removed_routes": [{"dst": ["x"]}]}, "removed_routes: not a list of route specs"),
        ({"process": {"pid": 0, "start": 1}}, "process: needs a pid and a start time"),
        ({"container_id": "d" * 64}, "holds container dddddddddddd"),
    ],
)
def test_a_broken_record_says_what_is_wrong(change: dict[str, object], problem: str) -> None:
    data = {**full_record().to_json(), **change}
    records.path_for(the_runtime(), CID).write_text(json.dumps(data))
    with pytest.raises(RecordError, match=problem):
        records.load(the_runtime(), CID)
    assert records.read(the_runtime(), CID) is None  # what hooks use: never a crash
    assert records.broken_ids(the_runtime()) == [CID]
    assert records.read_all(the_runtime()) == []


def test_unreadable_json_is_a_broken_record() -> None:
    records.path_for(the_runtime(), CID).write_text("{half")
    with pytest.raises(RecordError, match=f"record {records.path_for(the_runtime(), CID)}: "):
        records.load(the_runtime(), CID)


def test_no_record_is_none() -> None:
    assert records.load(the_runtime(), CID) is None
    assert records.all_ids(the_runtime()) == []


def test_netns_identity() -> None:
    mine = os.stat("/proc/self/ns/net")
    alive = NetnsId("/proc/self/ns/net", mine.st_dev, mine.st_ino)
    assert alive.alive()
    assert not NetnsId("/proc/self/ns/net", mine.st_dev, mine.st_ino + 1).alive()
    assert not NetnsId("/nonexistent", mine.st_dev, mine.st_ino).alive()
    assert alive.same(NetnsId("/elsewhere", mine.st_dev, mine.st_ino))


def test_records_hold_no_private_key_fields() -> None:
    assert not any("private" in name or "preshared" in name for name in full_record().to_json())


def test_a_writers_temporary_file_is_no_record_and_an_orphan_once_it_died(
    state_dir: Path,
) -> None:
    records.write(the_runtime(), full_record())
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = state_dir / f".tmp-{'b' * 64}-{dead.pid}.json"
    orphan.write_text("{")
    live = state_dir / f".tmp-{'c' * 64}-{os.getpid()}.json"
    live.write_text("{")
    assert records.all_ids(the_runtime()) == [CID]
    assert records.orphaned_temporaries(the_runtime()) == [orphan]


# -- Version 3: the namespace's cookie and the container process's start ------


def version_3_record() -> TunnelRecord:
    return replace(
        full_record(),
        netns=NetnsId("/run/netns/x", 4, 4026532000, cookie=4711),
        container_start=123456,
    )


def test_round_trip_with_the_namespace_cookie_and_the_container_start() -> None:
    record = version_3_record()
    records.write(the_runtime(), record)
    data = json.loads(records.path_for(the_runtime(), CID).read_text())
    assert data["version"] == 4
    assert data["netns"] == {"path": "/run/netns/x", "dev": 4, "ino": 4026532000, "cookie": 4711}
    assert data["container_start"] == 123456
    assert records.load(the_runtime(), CID) == record
    assert record.container() == ProcessId(42, 123456)


def test_version_2_records_still_read() -> None:
    """Written before the cookie and the start time, by a running system
    that was upgraded: read, with neither (the pid alone names no process)."""
    data = full_record().to_json()
    data["version"] = 2
    del data["container_start"]
    del data["netns"]["cookie"]
    records.path_for(the_runtime(), CID).write_text(json.dumps(data))
    record = records.load(the_runtime(), CID)
    assert record == full_record()
    assert record is not None and record.netns.cookie is None and record.container_start is None
    assert record.container() is None


# -- Version 4: what a reload may not change, and the files read ------------


def test_round_trip_with_what_is_fixed_and_the_files_read() -> None:
    record = replace(
        version_3_record(),
        fixed={"Address": "10.0.0.2/32", "MTU": "automatic"},
        sources={"/etc/wg/wg0.conf": "1:2:3:4", "/etc/wg/wg0.key": "1:5:45:6"},
    )
    records.write(the_runtime(), record)
    data = json.loads(records.path_for(the_runtime(), CID).read_text())
    assert data["fixed"] == {"Address": "10.0.0.2/32", "MTU": "automatic"}
    assert records.load(the_runtime(), CID) == record


def test_version_3_records_still_read_without_what_a_reload_needs() -> None:
    data = version_3_record().to_json()
    data["version"] = 3
    del data["sources"]
    records.path_for(the_runtime(), CID).write_text(json.dumps(data))
    record = records.load(the_runtime(), CID)
    assert record == version_3_record()
    assert record is not None and record.fixed is None and record.sources == {}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"fixed": {"MTU": 1420}}, "fixed: not a map of strings"),
        ({"sources": ["/etc/wg/wg0.conf"]}, "sources: wrong type list"),
        ({"netns": {"path": "/x", "dev": 1, "ino": 2, "cookie": True}}, "cookie is a number"),
        ({"container_start": 1.5}, "container_start: wrong type float"),
    ],
)
def test_a_broken_identity_says_what_is_wrong(change: dict[str, object], problem: str) -> None:
    records.path_for(the_runtime(), CID).write_text(
        json.dumps({**version_3_record().to_json(), **change})
    )
    with pytest.raises(RecordError, match=problem):
        records.load(the_runtime(), CID)


def test_one_namespace_has_one_cookie_where_both_records_have_one() -> None:
    known = NetnsId("/run/netns/a", 4, 100, cookie=7)
    assert known.same(NetnsId("/elsewhere", 4, 100, cookie=7))
    # A later namespace that got the freed one's inode number.
    assert not known.same(NetnsId("/run/netns/a", 4, 100, cookie=8))
    assert not known.same(NetnsId("/run/netns/a", 4, 101, cookie=7))
    # An older record, or a kernel before 5.14: the inode is all there is.
    assert known.same(NetnsId("/run/netns/a", 4, 100))
    assert NetnsId("/run/netns/a", 4, 100).same(known)


def test_a_namespace_with_the_inode_of_the_record_but_another_cookie_is_not_alive() -> None:
    path = "/proc/self/ns/net"
    mine = os.stat(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        cookie = netns_cookie(fd)
        if cookie is None:
            pytest.skip(f"this kernel ({os.uname().release}) has no SO_NETNS_COOKIE (5.14)")
        assert NetnsId.of(path, fd) == NetnsId(path, mine.st_dev, mine.st_ino, cookie)
    finally:
        os.close(fd)
    assert NetnsId(path, mine.st_dev, mine.st_ino, cookie).alive()
    assert not NetnsId(path, mine.st_dev, mine.st_ino, cookie + 1).alive()
    assert NetnsId(path, mine.st_dev, mine.st_ino).alive()  # no cookie to compare


def test_the_container_process_is_named_by_pid_and_start_time() -> None:
    start = records.process_start_time(os.getpid())
    assert start is not None
    mine = replace(full_record(), container_pid=os.getpid(), container_start=start)
    assert mine.container() == ProcessId(os.getpid(), start)
    assert ProcessId(os.getpid(), start).alive()
    later = replace(mine, container_start=start + 1)  # what a recycled pid looks like
    assert later.container() is not None and not later.container().alive()
    assert replace(mine, container_start=None).container() is None
    assert replace(mine, container_pid=None).container() is None


def test_the_followed_endpoints_round_trip() -> None:
    record = replace(full_record(), followed={"B" * 43 + "=": ("vpn.example", 51820)})
    records.write(the_runtime(), record)
    data = json.loads(records.path_for(the_runtime(), CID).read_text())
    assert data["followed"] == {"B" * 43 + "=": ["vpn.example", 51820]}
    assert records.load(the_runtime(), CID) == record


def test_a_record_without_followed_endpoints_says_it_does_not_know() -> None:
    """An older wg-pod's record: None (the daemon reads the config), not {}."""
    records.write(the_runtime(), full_record())
    assert json.loads(records.path_for(the_runtime(), CID).read_text())["followed"] is None
    loaded = records.load(the_runtime(), CID)
    assert loaded is not None and loaded.followed is None


@pytest.mark.parametrize(
    "followed",
    [{"k": ["vpn.example"]}, {"k": ["vpn.example", "51820"]}, {"k": ["vpn", True]}, ["x"]],
)
def test_broken_followed_endpoints_are_refused(followed: object) -> None:
    records.path_for(the_runtime(), CID).write_text(
        json.dumps({**full_record().to_json(), "followed": followed})
    )
    with pytest.raises(RecordError, match="followed"):
        records.load(the_runtime(), CID)
