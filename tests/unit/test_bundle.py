"""Which resolv.conf wg-pod may write: the engine's (podman's, Docker's)
per-container files only (bundle.made_by_engine), and its own file per
container, opened without following links (dns)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path, PurePosixPath

import pytest

from wg_pod_hook.errors import SetupError
from wg_pod_hook.model.bundle import Bundle, container_file_owner, made_by_engine, read_bundle
from wg_pod_hook.runtime import Runtime
from wg_pod_hook.state import records
from wg_pod_hook.state.records import NetnsId, TunnelRecord
from wg_pod_hook.tunnel import dns


class Storage:
    """podman's layout under ``root``: static and run directories per container."""

    def __init__(self, root: Path) -> None:
        self.static = root / "var" / "overlay-containers"
        self.run = root / "run" / "overlay-containers"

    def container(self, resolv_source: Path | None = None) -> tuple[str, Path]:
        """A container with a bundle whose config.json mounts ``resolv_source``
        (default: its own resolv.conf in its run directory)."""
        cid = secrets.token_hex(32)
        bundle = self.static / cid / "userdata"
        run_dir = self.run / cid / "userdata"
        bundle.mkdir(parents=True)
        run_dir.mkdir(parents=True)
        (run_dir / "resolv.conf").write_text("nameserver 10.88.0.1\n")
        (run_dir / "hostname").write_text("x\n")
        source = resolv_source or run_dir / "resolv.conf"
        mounts = [
            {"destination": "/etc/resolv.conf", "source": str(source)},
            {"destination": "/etc/hostname", "source": str(run_dir / "hostname")},
        ]
        (bundle / "config.json").write_text(json.dumps({"mounts": mounts}))
        return cid, bundle


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path)


def spec_of(bundle: Path) -> Bundle:
    return read_bundle(PurePosixPath(bundle))


def test_the_container_own_resolv_conf_is_podmans(storage: Storage) -> None:
    cid, bundle = storage.container()
    spec = spec_of(bundle)
    assert spec.resolv_conf == storage.run / cid / "userdata" / "resolv.conf"
    assert spec.storage_dirs == {storage.static.resolve(), storage.run.resolve()}
    assert made_by_engine(spec, spec.resolv_conf, cid)
    assert dns.check_resolv_conf(spec, cid) == spec.resolv_conf


def test_a_host_file_is_not(storage: Storage, tmp_path: Path) -> None:
    host = tmp_path / "etc" / "resolv.conf"
    host.parent.mkdir()
    host.write_text("nameserver 192.0.2.53\n")
    cid, bundle = storage.container(resolv_source=host)
    spec = spec_of(bundle)
    assert not made_by_engine(spec, host, cid)
    with pytest.raises(SetupError, match=f"write DNS {host}: mounted over .*wg-pod.dns=off"):
        dns.check_resolv_conf(spec, cid)


def test_no_mount_says_what_to_do(storage: Storage) -> None:
    cid, _ = storage.container()
    with pytest.raises(
        SetupError, match=r"no resolv.conf from its engine \(as with --network none\)"
    ):
        dns.check_resolv_conf(Bundle(), cid)


def test_another_container_of_the_same_storage_is_podmans(storage: Storage) -> None:
    """A pod's infra container (or ``--network container:X``)."""
    infra, _ = storage.container()
    shared = storage.run / infra / "userdata" / "resolv.conf"
    cid, bundle = storage.container(resolv_source=shared)
    assert made_by_engine(spec_of(bundle), shared, cid)


def test_an_id_without_a_bundle_is_not(storage: Storage) -> None:
    stranger = storage.run / secrets.token_hex(32) / "userdata" / "resolv.conf"
    stranger.parent.mkdir(parents=True)
    stranger.write_text("")
    cid, bundle = storage.container(resolv_source=stranger)
    assert not made_by_engine(spec_of(bundle), stranger, cid)


def test_another_storage_is_not(storage: Storage, tmp_path: Path) -> None:
    other, _ = Storage(tmp_path / "elsewhere").container()
    foreign = tmp_path / "elsewhere" / "run" / "overlay-containers" / other / "userdata"
    cid, bundle = storage.container(resolv_source=foreign / "resolv.conf")
    assert not made_by_engine(spec_of(bundle), foreign / "resolv.conf", cid)


def test_symlinked_storage_directories_are_resolved(tmp_path: Path) -> None:
    """/var/lib/containers on another disk behind a symlink still counts."""
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    cid, bundle = Storage(tmp_path / "link").container()
    spec = spec_of(bundle)
    assert spec.resolv_conf is not None and made_by_engine(spec, spec.resolv_conf, cid)


def test_without_a_podman_bundle_nothing_is_podmans(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")
    (bundle / "config.json").write_text(
        json.dumps({"mounts": [{"destination": "/etc/resolv.conf", "source": str(resolv)}]})
    )
    spec = spec_of(bundle)
    assert spec.storage_dirs == frozenset()
    assert not made_by_engine(spec, resolv, "0" * 64)


class DockerStorage:
    """Docker's layout under ``root``: a directory per container beside its
    config.v2.json, and containerd's bundle named by the same id."""

    def __init__(self, root: Path) -> None:
        self.containers = root / "var" / "lib" / "docker" / "containers"
        self.tasks = root / "run" / "containerd" / "io.containerd.runtime.v2.task" / "moby"

    def container(self, resolv_source: Path | None = None) -> tuple[str, Path]:
        cid = secrets.token_hex(32)
        own = self.containers / cid
        own.mkdir(parents=True)
        (own / "config.v2.json").write_text("{}")
        for name, text in (("resolv.conf", "nameserver 192.0.2.53\n"), ("hostname", "x\n")):
            (own / name).write_text(text)
        bundle = self.tasks / cid
        bundle.mkdir(parents=True)
        mounts = [
            {
                "destination": "/etc/resolv.conf",
                "source": str(resolv_source or own / "resolv.conf"),
            },
            {"destination": "/etc/hostname", "source": str(own / "hostname")},
        ]
        (bundle / "config.json").write_text(
            json.dumps({"mounts": mounts, "root": {"path": "rootfs"}})
        )
        return cid, bundle


def test_dockers_own_resolv_conf_is_its_engines(tmp_path: Path) -> None:
    docker = DockerStorage(tmp_path)
    cid, bundle = docker.container()
    spec = spec_of(bundle)
    assert spec.storage_dirs == {docker.containers.resolve()}
    assert spec.resolv_conf == docker.containers / cid / "resolv.conf"
    assert dns.check_resolv_conf(spec, cid) == spec.resolv_conf
    assert dns.is_own(spec.resolv_conf, cid)
    dns.write_in_place(spec.resolv_conf, "nameserver 10.250.0.1\n")
    assert spec.resolv_conf.read_text() == "nameserver 10.250.0.1\n"


def test_docker_shares_another_containers_file_but_not_a_strangers(tmp_path: Path) -> None:
    """``--network container:X`` mounts X's resolv.conf; an id Docker keeps
    no config for is no container of its."""
    docker = DockerStorage(tmp_path)
    other, _ = docker.container()
    shared = docker.containers / other / "resolv.conf"
    cid, bundle = docker.container(resolv_source=shared)
    assert made_by_engine(spec_of(bundle), shared, cid)
    stranger = docker.containers / secrets.token_hex(32) / "resolv.conf"
    stranger.parent.mkdir()
    stranger.write_text("")
    cid, bundle = docker.container(resolv_source=stranger)
    assert not made_by_engine(spec_of(bundle), stranger, cid)


def test_containerds_pod_files_are_its_engines(tmp_path: Path) -> None:
    """containerd's CRI mounts the pod's (sandbox's) files into each of its
    containers and names the pod in an annotation; another pod's are not
    this container's."""
    sandboxes = tmp_path / "var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes"
    pod, other, cid = (secrets.token_hex(32) for _ in range(3))
    for each in (pod, other):
        (sandboxes / each).mkdir(parents=True)
        (sandboxes / each / "resolv.conf").write_text("nameserver 192.0.2.53\n")
    bundle = tmp_path / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / cid
    bundle.mkdir(parents=True)

    def spec_mounting(owner: str) -> Bundle:
        mounts = [
            {"destination": "/etc/resolv.conf", "source": str(sandboxes / owner / "resolv.conf")}
        ]
        annotations = {"io.kubernetes.cri.sandbox-id": pod}
        (bundle / "config.json").write_text(
            json.dumps({"mounts": mounts, "annotations": annotations})
        )
        return spec_of(bundle)

    spec = spec_mounting(pod)
    assert spec.pod_id == pod and spec.storage_dirs == {sandboxes.resolve()}
    assert dns.check_resolv_conf(spec, cid) == sandboxes / pod / "resolv.conf"
    assert not dns.is_own(sandboxes / pod / "resolv.conf", cid)  # the pod's: written in place
    assert not made_by_engine(spec_mounting(other), sandboxes / other / "resolv.conf", cid)


def test_the_pod_annotation_counts_for_containerds_layout_alone(tmp_path: Path) -> None:
    """A container that names another's id as its pod (any engine lets its
    user write annotations) gains no file of that other's in Docker's or
    podman's layout."""
    docker = DockerStorage(tmp_path)
    other, _ = docker.container()
    (docker.containers / other / "config.v2.json").unlink()  # only its files
    cid, bundle = docker.container(resolv_source=docker.containers / other / "resolv.conf")
    spec = json.loads((bundle / "config.json").read_text())
    spec["annotations"] = {"io.kubernetes.cri.sandbox-id": other}
    (bundle / "config.json").write_text(json.dumps(spec))
    assert not made_by_engine(spec_of(bundle), docker.containers / other / "resolv.conf", cid)


RUN = "/run/containers/storage/overlay-containers/"


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        (RUN + "a" * 64 + "/userdata/resolv.conf", "a" * 64),
        (RUN + "a" * 63 + "/userdata/resolv.conf", None),
        (RUN + "A" * 64 + "/userdata/resolv.conf", None),
        (RUN + "a" * 64 + "/other/resolv.conf", None),
        ("/etc/resolv.conf", None),
        ("/var/lib/docker/containers/" + "a" * 64 + "/resolv.conf", "a" * 64),
        ("/var/lib/docker/other/" + "a" * 64 + "/resolv.conf", None),
        ("/run/containerd/io.containerd.runtime.v2.task/moby/" + "a" * 64 + "/config.json", None),
        (
            "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/" + "b" * 64 + "/hosts",
            "b" * 64,
        ),
        ("/var/lib/containerd/other/sandboxes/" + "b" * 64 + "/hosts", None),
    ],
)
def test_the_shape_of_an_engines_per_container_files(path: str, owner: str | None) -> None:
    found = container_file_owner(Path(path))
    assert (found[1] if found else None) == owner


def test_writes_follow_no_link_and_stay_in_podmans_files(storage: Storage, tmp_path: Path) -> None:
    cid, _ = storage.container()
    podmans = storage.run / cid / "userdata" / "resolv.conf"
    dns.write_in_place(podmans, "nameserver 10.250.0.1\n")
    assert podmans.read_text() == "nameserver 10.250.0.1\n"

    host = tmp_path / "host-resolv.conf"
    host.write_text("host\n")
    with pytest.raises(SetupError, match="not a file of a container engine's storage"):
        dns.write_in_place(host, "x\n")  # e.g. a record from before this rule

    for make_link in (os.symlink, os.link):
        podmans.unlink()
        make_link(host, podmans)
        with pytest.raises(SetupError, match=f"write DNS {podmans}"):
            dns.write_in_place(podmans, "x\n")
        with pytest.raises(SetupError, match=f"write DNS {podmans}"):
            dns.read(podmans)
    assert host.read_text() == "host\n"


@pytest.mark.parametrize(
    "written",
    [b"\xff\xfe not text", b"nameserver 10.0.0.1\n\0\0", b"# " + b"x" * (dns.MAX_SIZE + 1)],
    ids=["not-utf8", "nul-bytes", "huge"],
)
def test_a_resolv_conf_that_is_not_plausible_text_reads_as_empty(
    storage: Storage, written: bytes
) -> None:
    """The container can write into podman's file from the moment it
    exists: what is not text of a plausible size is replaced whole, never
    a reason to fail."""
    cid, _ = storage.container()
    podmans = storage.run / cid / "userdata" / "resolv.conf"
    podmans.write_bytes(written)
    assert dns.read(podmans) == ""
    dns.write_in_place(podmans, "nameserver 10.250.0.1\n")
    assert podmans.read_bytes() == b"nameserver 10.250.0.1\n"


def test_the_root_filesystem_is_resolved_and_relative_to_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (tmp_path / "merged").mkdir()
    (bundle / "link").symlink_to(tmp_path / "merged")
    for path, rootfs in [
        ("rootfs", bundle / "rootfs"),
        (str(bundle / "link"), tmp_path / "merged"),
        ("", None),
    ]:
        (bundle / "config.json").write_text(json.dumps({"root": {"path": path}}))
        assert spec_of(bundle).rootfs == rootfs
    (bundle / "config.json").write_text(json.dumps({"root": "rootfs"}))
    assert spec_of(bundle).rootfs is None


def test_only_a_container_own_resolv_conf_gets_wg_pods_file_mounted_over_it(
    storage: Storage,
) -> None:
    """Pod members and ``--network container:`` ones share the file of the
    container they join, which podman does not write again."""
    owner, _ = storage.container()
    member, bundle = storage.container(storage.run / owner / "userdata" / "resolv.conf")
    shared = spec_of(bundle).resolv_conf
    assert shared is not None
    assert dns.is_own(shared, owner)
    assert not dns.is_own(shared, member)


@pytest.fixture
def podmans(storage: Storage) -> tuple[str, Path]:
    """A container's id and the resolv.conf podman made for it."""
    cid, _ = storage.container()
    return cid, storage.run / cid / "userdata" / "resolv.conf"


def test_wg_pods_own_file_is_written_whole_readable_and_never_through_a_link(
    podmans: tuple[str, Path], tmp_path: Path
) -> None:
    runtime = Runtime(str(tmp_path / "state"), root=True)
    cid, podmans_file = podmans
    own = dns.write_own(runtime, cid, "nameserver 10.250.0.1\n" * 3, like=podmans_file)
    assert own == dns.own_file(runtime, cid)
    assert os.stat(own).st_mode & 0o777 == 0o644
    inode = os.stat(own).st_ino
    dns.write_own(runtime, cid, "nameserver 10.250.0.2\n", like=podmans_file)
    assert own.read_text() == "nameserver 10.250.0.2\n"  # whole,
    assert os.stat(own).st_ino == inode  # and in place: its mount shows it

    host = tmp_path / "host-file"
    host.write_text("host\n")
    own.unlink()
    own.symlink_to(host)
    with pytest.raises(SetupError, match=f"write DNS {own}"):
        dns.write_own(runtime, cid, "x\n", like=podmans_file)
    assert host.read_text() == "host\n"


def test_put_back_shows_podmans_text_and_sweep_keeps_only_files_with_a_record(
    podmans: tuple[str, Path], tmp_path: Path
) -> None:
    runtime = Runtime(str(tmp_path / "state"), root=True)
    cid, podmans_file = podmans
    own = dns.write_own(runtime, cid, "nameserver 10.250.0.1\n", like=podmans_file)
    record = TunnelRecord(
        container_id=cid,
        interface="wg0",
        config="/etc/wg/wg0.conf",
        netns=NetnsId("/run/netns/x", 1, 2),
        created=0.0,
        resolv_conf=str(podmans_file),
        own_resolv_conf=True,
    )
    dns.put_back(runtime, record)
    assert own.read_text() == "nameserver 10.88.0.1\n"
    assert podmans_file.read_text() == "nameserver 10.88.0.1\n"  # never written

    orphan = dns.write_own(runtime, "f" * 64, "x\n", like=podmans_file)
    records.write(runtime, record)
    assert dns.sweep(runtime) == [orphan]
    assert own.exists()
    dns.remove_own(runtime, cid)
    assert not own.exists()
