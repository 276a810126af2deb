"""``wg-pod doctor`` on this host, with each problem made on purpose: no
TUN device (hidden in a mount namespace of the doctor's own), wg-pod's
definitions in a directory podman does not read (a containers.conf of the
test's naming another), a settings file that does not parse; and the host
as healthy as this machine allows.

Nothing of the host is changed: the definitions go to the lab's temporary
directory, podman reads the test's containers.conf (the suite's, with a
``hooks_dir``), and /dev/net is covered only inside the doctor's own
mount namespace.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import kernel_has_wireguard
from tests.lab import CONTAINERS_CONF, WITHOUT_TUN, Lab, run

pytestmark = pytest.mark.root

DOCTOR = [sys.executable, "-m", "wg_pod_hook.cli", "doctor"]
CHECKS = ["privileges", "backend", "nftables", "podman", "hooks", "settings", "daemon", "cdi"]


def containers_conf(lab: Lab, hooks_dir: Path) -> Path:
    """The suite's containers.conf, with podman reading ``hooks_dir`` only."""
    text = CONTAINERS_CONF.read_text()
    assert "\n[engine]\n" in text
    conf = lab.tmp / f"containers-{hooks_dir.name}.conf"
    conf.write_text(text.replace("\n[engine]\n", f'\n[engine]\nhooks_dir = ["{hooks_dir}"]\n'))
    return conf


def doctor(
    conf: Path,
    settings: Path,
    *args: str,
    prefix: Sequence[str] = (),
) -> tuple[int, dict[str, dict[str, Any]]]:
    """The exit status and the findings by name of ``wg-pod doctor --json``."""
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "WG_POD_SETTINGS": str(settings)}
    done = run([*prefix, *DOCTOR, "--json", *args], env=env, check=False, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    findings = json.loads(done.stdout)
    assert [f["name"] for f in findings] == CHECKS
    return done.returncode, {f["name"]: f for f in findings}


def not_failing_but(findings: dict[str, dict[str, Any]], *failing: str) -> list[str]:
    """The checks that FAIL besides ``failing``."""
    return [n for n, f in findings.items() if f["status"] == "FAIL" and n not in failing]


@pytest.fixture
def auto_settings(make_settings: Callable[..., Path]) -> Path:
    """Settings allowing the test's config dir, with the backend ``auto``
    picks (the kernel's where this kernel has WireGuard, else wireguard-go)."""
    return make_settings(backend="auto")


def test_a_healthy_host_passes_as_far_as_this_machine_allows(
    lab: Lab, hooks_dir: Path, settings: Path
) -> None:
    conf = containers_conf(lab, hooks_dir)
    status, found = doctor(conf, settings, "--hooks-dir", str(hooks_dir))
    assert not_failing_but(found) == [], found
    assert status == 0
    assert found["privileges"]["detail"] == "root (uid 0)"
    assert found["hooks"]["status"] == "ok"
    assert found["hooks"]["detail"] == (
        f"wg-pod's definitions in {hooks_dir}, which podman reads (hooks_dir from {conf})"
    )
    assert found["settings"]["detail"].startswith(f"{settings}: backend userspace, configs in ")
    assert found["podman"]["detail"].startswith("podman ")
    assert "OCI runtime " in found["podman"]["detail"]
    # podman reads the definitions without being told where they are.
    assert doctor(conf, settings)[1]["hooks"]["status"] == "ok"
    # What is optional warns, with a fix, and fails nothing.
    for finding in found.values():
        assert (finding["fix"] is None) == (finding["status"] == "ok"), finding


def test_the_text_is_one_line_a_check(lab: Lab, hooks_dir: Path, settings: Path) -> None:
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(containers_conf(lab, hooks_dir)),
        "WG_POD_SETTINGS": str(settings),
    }
    done = run(DOCTOR, env=env, check=False, timeout=60)
    lines = done.stdout.splitlines()
    assert len(lines) == len(CHECKS) + 1, done.stdout
    assert [line.split()[1] for line in lines[:-1]] == CHECKS
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines[:-1])
    assert lines[-1].startswith(f"{sum(line.startswith('ok ') for line in lines)} ok, ")


def test_no_tun_device_and_no_wireguard_module_fails_the_backend(
    lab: Lab, hooks_dir: Path, auto_settings: Path
) -> None:
    if kernel_has_wireguard():
        pytest.skip("this kernel has WireGuard: auto would pick it without /dev/net/tun")
    conf = containers_conf(lab, hooks_dir)
    status, found = doctor(conf, auto_settings, "--hooks-dir", str(hooks_dir), prefix=WITHOUT_TUN)
    assert status == 1
    backend = found["backend"]
    assert backend["status"] == "FAIL", backend
    assert backend["detail"].startswith("auto: no backend can run here: kernel: ")
    assert "userspace: wireguard-go needs /dev/net/tun: No such file" in backend["detail"]
    assert "/dev/net/tun c 10 200" in backend["fix"]
    assert not_failing_but(found, "backend") == [], found
    assert Path("/dev/net/tun").exists()  # the host's is where it was
    # With the device the same doctor picks wireguard-go, and passes.
    status, found = doctor(conf, auto_settings, "--hooks-dir", str(hooks_dir))
    assert found["backend"]["status"] == "warn"
    assert found["backend"]["detail"].startswith("auto picks userspace (")
    assert status == 0


def test_definitions_where_podman_does_not_look_fail_naming_both(
    lab: Lab, hooks_dir: Path, settings: Path
) -> None:
    elsewhere = lab.tmp / "podman-reads.d"
    elsewhere.mkdir()
    conf = containers_conf(lab, elsewhere)
    status, found = doctor(conf, settings, "--hooks-dir", str(hooks_dir))
    assert status == 1
    hooks = found["hooks"]
    assert hooks["status"] == "FAIL"
    assert (
        f"wg-pod's definitions are in {hooks_dir}, which podman does not read: it reads "
        f"{elsewhere} (hooks_dir from {conf})"
    ) in hooks["detail"]
    assert hooks["fix"].startswith(f"wg-pod install --hooks-dir {elsewhere}")
    assert str(hooks_dir) in hooks["fix"] and str(conf) in hooks["fix"]
    assert not_failing_but(found, "hooks") == [], found
    # Not told where they are, the doctor finds none anywhere.
    status, found = doctor(conf, settings)
    assert status == 1
    assert found["hooks"]["detail"].startswith("no wg-pod definitions found anywhere")


def test_a_bad_settings_file_fails_with_its_file_and_line(
    lab: Lab, hooks_dir: Path, settings: Path
) -> None:
    conf = containers_conf(lab, hooks_dir)
    bad = lab.tmp / "bad-wg-pod.yaml"
    bad.write_text("backend: auto\nlog_level: info\nconfig_dirs: [/etc/wg\n")
    bad.chmod(0o644)
    status, found = doctor(conf, bad, "--hooks-dir", str(hooks_dir))
    assert status == 1
    assert found["settings"]["status"] == "FAIL"
    assert found["settings"]["detail"] == f"{bad}: line 4: not valid YAML"
    assert found["settings"]["fix"] == f"edit {bad}   (README: Settings) or unset WG_POD_SETTINGS"
    missing = lab.tmp / "missing.yaml"
    status, found = doctor(conf, missing, "--hooks-dir", str(hooks_dir))
    assert found["settings"]["detail"] == f"{missing}: settings file does not exist"
    assert status == 1
