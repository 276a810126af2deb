"""The Debian package: built from this tree, lintian-clean, installed with
apt-get, and the podman system tests run against the INSTALLED hook (the
definitions from /usr/share/containers/oci/hooks.d, see conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab import REPO, run, the_runtime
from tests.package.conftest import HOOK, INSTALLED_HOOKS_DIR, PACKAGE, STAGES, Deb

# The podman system tests, collected here again: their ``hooked_podman``
# uses this directory's ``hooks_dir``, i.e. the installed definitions.
from tests.system.test_podman_hook import (  # noqa: F401
    test_broken_config_does_not_start_and_leaves_nothing,
    test_container_fetches_the_peer_page_through_the_tunnel,
    test_delete_default_in_a_real_container,
    test_port_remapping_in_a_real_container,
)
from tests.system.test_podman_leaks import (  # noqa: F401
    test_dns_in_a_real_container,
    test_kill_switch_in_a_real_container,
)
from tests.system.test_podman_restarts import (  # noqa: F401
    test_restart_policy_keeps_the_tunnel,
    test_restart_stop_and_start_converge,
)

pytestmark = [pytest.mark.root, pytest.mark.podman]

PRIVATE = "/usr/lib/wg-pod"
UNIT = "/lib/systemd/system/wg-pod.service"


def installed_python(code: str) -> str:
    """Run ``code`` the way the installed launchers run wg-pod."""
    prelude = f"import sys; sys.path.insert(0, {PRIVATE!r}); "
    return run(["/usr/bin/python3", "-I", "-c", prelude + code]).stdout.strip()


def test_lintian_is_clean(deb: Deb) -> None:
    proc = run(["lintian", "-I", "--pedantic", str(deb.path)], check=False, timeout=300)
    tags = [line for line in proc.stdout.splitlines() if line[:3] in ("E: ", "W: ", "I: ", "P: ")]
    assert tags == [], "\n".join(tags)
    assert proc.returncode == 0, proc.stderr


def test_installed_files(installed: Deb) -> None:
    listed = set(run(["dpkg-query", "-L", PACKAGE]).stdout.split())
    for path in (
        HOOK,
        "/usr/bin/wg-pod",
        f"{PRIVATE}/wg_pod_hook/hook.py",
        f"{PRIVATE}/pyroute2/__init__.py",
        "/usr/share/man/man8/wg-pod.8.gz",
        "/usr/share/man/man5/wg-pod.yaml.5.gz",
        "/usr/share/doc/wg-pod/examples/wg-pod-example.container",
        "/usr/share/doc/wg-pod/examples/wg-pod-example.service",
        "/etc/wg-pod/wg-pod.yaml",
        UNIT,
        # Completion, where each shell looks on Debian.
        "/usr/share/bash-completion/completions/wg-pod",
        "/usr/share/zsh/vendor-completions/_wg-pod",
        "/usr/share/fish/vendor_completions.d/wg-pod.fish",
        *(str(INSTALLED_HOOKS_DIR / f"wg-pod-{stage}.json") for stage in STAGES),
    ):
        assert path in listed, path
    # The console scripts of the wheel are not shipped: only the launchers.
    assert not any(p.startswith("/usr/lib/python3") for p in listed)
    assert "/usr/bin/wg-pod-hook" not in listed
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", PACKAGE]).stdout
    assert "/etc/wg-pod/wg-pod.yaml" in conffiles
    for page in ("wg-pod", "wg-pod.yaml"):
        assert run(["man", "-w", page]).stdout.strip().startswith("/usr/share/man/")


def test_installed_definitions_are_the_templates(installed: Deb) -> None:
    for stage in STAGES:
        data = json.loads((INSTALLED_HOOKS_DIR / f"wg-pod-{stage}.json").read_text())
        template = json.loads((REPO / "hooks.d" / f"wg-pod-{stage}.json").read_text())
        assert data["hook"]["path"] == HOOK
        template["hook"]["path"] = HOOK
        assert data == template


def test_installed_code_uses_the_private_pyroute2(installed: Deb) -> None:
    found = installed_python(
        "import pyroute2, wg_pod_hook, yaml; from importlib.metadata import version; "
        "print(pyroute2.__file__, wg_pod_hook.__file__, version('pyroute2'), yaml.__file__)"
    ).split()
    assert found[0].startswith(f"{PRIVATE}/pyroute2/")
    assert found[1].startswith(f"{PRIVATE}/wg_pod_hook/")
    assert found[2].startswith("0.9.")
    assert found[3].startswith("/usr/lib/python3/dist-packages/")  # python3-yaml


def test_installed_settings_are_the_defaults(installed: Deb) -> None:
    """The conffile has every key commented out: it reads as the defaults."""
    assert (
        installed_python(
            "from wg_pod_hook.model.settings import Settings, load_settings; "
            "from wg_pod_hook.runtime import Runtime; "
            "s = load_settings(Runtime.of_process()); print(s == Settings(), s.source)"
        )
        == "True /etc/wg-pod/wg-pod.yaml"
    )


def test_installed_commands_run(installed: Deb) -> None:
    from wg_pod_hook import __version__

    assert run(["/usr/bin/wg-pod", "--version"]).stdout.strip() == f"wg-pod {__version__}"
    usage = run([HOOK], check=False, env={"PATH": "/usr/bin:/bin"})
    assert usage.returncode == 2 and "usage: wg-pod-hook" in usage.stderr


def test_installed_hook_does_the_work_itself_without_the_site_module(
    installed: Deb, tmp_path: Path
) -> None:
    """The hook's launcher starts Python with -S; without a daemon it adds
    the site directories itself, where python3-yaml is, for the settings."""
    from wg_pod_hook import runtime

    with open(HOOK) as f:
        assert f.readline().split()[1:] == ["-IS"]
    # The suite's own state directory: the package's daemon, where it runs,
    # serves /run/wg-pod, and this hook must not hand its work to it.
    suite = the_runtime()
    assert not Path(suite.hook_socket).exists(), "a daemon runs: the hook would hand its work over"
    settings = tmp_path / "wg-pod.yaml"
    settings.write_text(f"config_dirs: [{tmp_path}]\n")
    (tmp_path / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "hooks": {}}))
    container_id = "c0ffee" * 10 + "abcd"
    state = {
        "ociVersion": "1.0.2",
        "id": container_id,
        "status": "creating",
        "pid": 1,
        "bundle": str(tmp_path),
        "annotations": {"wg-pod.config": str(tmp_path / "missing.conf")},
    }
    done = run(
        [HOOK, "createRuntime"],
        input=json.dumps(state),
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "WG_POD_SETTINGS": str(settings),
            runtime.STATE_DIR_ENV: suite.state_dir,
        },
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"wg-pod: container {container_id[:12]}: config: {tmp_path}/missing.conf: "
        "config file does not exist (journalctl -t wg-pod)\n"
    )


def test_installed_daemon_unit_is_enabled(installed: Deb) -> None:
    """The package enables the daemon's unit (it starts it, too, where
    systemd runs: tests/platform checks that on Debian 13)."""
    from wg_pod_hook import units

    assert Path(UNIT).read_text() == units.service("/usr/bin/wg-pod")
    wants = Path("/etc/systemd/system/multi-user.target.wants") / units.NAME
    assert wants.is_symlink(), "postinst did not enable wg-pod.service"
    assert str(wants.readlink()) == UNIT
