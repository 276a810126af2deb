"""The Kubernetes node path without a cluster, inside the Debian 13 machine
(tests/platform): containerd's CRI, with ``enable_cdi``, asked over gRPC
what a kubelet asks for a pod (RunPodSandbox, CreateContainer with the
wg-pod CDI device in ``CDI_devices``, StartContainer; then stop and
remove). The container reaches the peer through its tunnel, its
resolv.conf (the pod's, which containerd keeps per sandbox) names the
tunnel's resolver, and ``wg-pod status`` knows it. The pod's network
namespace is its sandbox's: removing the container keeps the tunnel (as
for a podman pod's member), and once the pod is removed the packaged
daemon takes it down, leaving nothing. Collected only inside the machine.

A containerd of the test's own (its root, state, socket, CNI bridge and
config under /run/wgpt-containerd and /var/lib/wgpt-containerd), so the
system's containerd, Docker's, is never touched. No registry: the pod's
sandbox image is the suite's test image with a command that waits, and
both images are imported with ``ctr``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import (
    TEST_IMAGE,
    Lab,
    Peer,
    host_leftovers,
    run,
    the_runtime,
    venv_command,
    wait_for,
)
from tests.platform.inside.cri import Cri, compile_api
from tests.platform.inside.test_daemon_unit import service  # noqa: F401
from wg_pod_hook.state import records

pytestmark = pytest.mark.podman

STATE = Path("/run/wgpt-containerd")
ROOT = Path("/var/lib/wgpt-containerd")
SOCKET = STATE / "containerd.sock"
BRIDGE = "wgpt-cri0"
SANDBOX_IMAGE = "localhost/wgpt-pause:latest"
IMAGE = f"{TEST_IMAGE}:latest"
DEVICE = "wgpt-cri"  # the config's stem: the device's name and the interface's
CONFIG = Path(f"/etc/wg/{DEVICE}.conf")
SPEC = Path("/var/run/cdi/wgpt-cri.json")
WG_POD = venv_command("wg-pod", "wg_pod_hook.cli")

CONTAINERD_CONFIG = f"""\
version = 2
root = "{ROOT}"
state = "{STATE}"
[grpc]
  address = "{SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
  # As in any nested node: oom_score_adj below the machine's own needs a
  # capability nspawn withholds, and the machine's cgroups have no cpu
  # controller for the pod's CPU shares.
  restrict_oom_score_adj = true
  disable_cgroup = true
  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
  sandbox_image = "{SANDBOX_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{STATE}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
"""
# A bridge of the machine's own (its private network), no masquerade: the
# tunnel's UDP leaves from the machine's namespace, not the pod's.
CNI_CONFIG = {
    "cniVersion": "0.4.0",
    "name": "wgpt-cri",
    "plugins": [
        {
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.251.0.0/24"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": f"{STATE}/ipam",
            },
        },
        {"type": "loopback"},
    ],
}


def ctr(*args: str) -> str:
    return run(
        ["ctr", "--address", str(SOCKET), "--namespace", "k8s.io", *args], timeout=120
    ).stdout


def import_images(directory: Path) -> None:
    """The test image, and a sandbox image made of it whose command waits
    (a pod's pause container must keep running)."""
    run(["podman", "rm", "--force", "--ignore", "wgpt-pause"])
    run(["podman", "create", "--name", "wgpt-pause", IMAGE, "true"])
    try:
        change = 'CMD ["sleep", "2147483647"]'
        run(["podman", "commit", "--quiet", "--change", change, "wgpt-pause", SANDBOX_IMAGE])
    finally:
        run(["podman", "rm", "--force", "wgpt-pause"])
    try:
        for image in (IMAGE, SANDBOX_IMAGE):
            archive = directory / "image.tar"
            run(["podman", "save", "--format", "docker-archive", "-o", str(archive), image])
            ctr("images", "import", str(archive))
            archive.unlink()
    finally:
        run(["podman", "rmi", "--force", SANDBOX_IMAGE], check=False)


@pytest.fixture(scope="module")
def cri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cri]:
    """containerd of the test's own, its CRI ready, both images in it."""
    work = tmp_path_factory.mktemp("cri")
    (STATE / "cni").mkdir(parents=True)
    (STATE / "cni" / "10-wgpt.conflist").write_text(json.dumps(CNI_CONFIG))
    (STATE / "config.toml").write_text(CONTAINERD_CONFIG)
    log = open(work / "containerd.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        ["containerd", "--config", str(STATE / "config.toml")], stdout=log, stderr=log
    )
    client = Cri(str(SOCKET), compile_api(work))
    try:
        wait_for(SOCKET.exists, timeout=30, what=f"containerd's {SOCKET}")
        wait_for(client.serving, timeout=30, what="containerd's CRI")
        import_images(work)
        yield client
    finally:
        # What a failed test left; when containerd is not serving, _end_shims.
        with contextlib.suppress(client.errors):
            client.remove_pods()
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        _end_shims()
        run(["ip", "link", "delete", BRIDGE], check=False)
        shutil.rmtree(STATE, ignore_errors=True)
        shutil.rmtree(ROOT, ignore_errors=True)


def _end_shims() -> None:
    """The shims of this containerd that outlived it (a failed create)."""
    mine = f"-address {SOCKET}".encode()
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue  # not a process, or gone
        if argv.startswith(b"/usr/bin/containerd-shim") and mine in argv:
            os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture
def device(lab: Lab, peer: Peer) -> Iterator[str]:
    text = peer.client_config(extra_interface_lines=[f"DNS = {peer.tunnel_v4.ip}"])
    CONFIG.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(CONFIG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        run([*WG_POD, "cdi", "generate", "--output", str(SPEC)])
        yield f"wg-pod.dev/tunnel={DEVICE}"
    finally:
        for each in (CONFIG, SPEC):
            each.unlink(missing_ok=True)


def test_a_pod_asking_containerds_cri_for_the_device_gets_its_tunnel(
    cri: Cri,
    device: str,
    peer: Peer,
    tmp_path: Path,
    service: None,  # noqa: F811 (the packaged daemon, started)
) -> None:
    api = cri.api
    sandbox_config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(
            name="wgpt", uid=f"wgpt-{os.getpid()}", namespace="default"
        ),
        log_directory=str(tmp_path),
    )
    pod = cri("RunPodSandbox", config=sandbox_config).pod_sandbox_id
    try:
        container = cri(
            "CreateContainer",
            pod_sandbox_id=pod,
            config=api.ContainerConfig(
                metadata=api.ContainerMetadata(name="app"),
                image=api.ImageSpec(image=IMAGE),
                command=["sleep", "600"],
                log_path="app.log",
                CDI_devices=[api.CDIDevice(name=device)],
            ),
            sandbox_config=sandbox_config,
        ).container_id
        cri("StartContainer", container_id=container)

        def fetched() -> bool:
            done = cri(
                "ExecSync", container_id=container, cmd=["wget", "-qO-", peer.url_v4], timeout=5
            )
            return done.exit_code == 0 and peer.page in done.stdout.decode()

        wait_for(fetched, timeout=30, what="a fetch through the tunnel in the pod")
        links = cri("ExecSync", container_id=container, cmd=["ip", "-o", "link"], timeout=5)
        assert f": {DEVICE}: " in links.stdout.decode(), links.stdout
        resolv = cri("ExecSync", container_id=container, cmd=["cat", "/etc/resolv.conf"], timeout=5)
        assert f"nameserver {peer.tunnel_v4.ip}" in resolv.stdout.decode(), resolv.stdout
        record = records.load(the_runtime(), container)
        assert record is not None and record.resolv_conf is not None
        assert Path(record.resolv_conf).parent.name == pod, record.resolv_conf
        status = run([*WG_POD, "status", container]).stdout
        assert f"interface: {DEVICE}" in status and f"config: {CONFIG}" in status, status
        cri("StopContainer", container_id=container, timeout=1)
        cri("RemoveContainer", container_id=container)
        assert records.load(the_runtime(), container) is not None, "gone with the pod still up"
    finally:
        cri("StopPodSandbox", pod_sandbox_id=pod)
        cri("RemovePodSandbox", pod_sandbox_id=pod)
    wait_for(
        lambda: host_leftovers() == ([], [], []),
        timeout=20,
        what="the daemon's cleanup after the pod",
    )
