"""``wg-pod doctor`` without the host: the checks from what was seen (frozen
records), the one-line rendering and the JSON, the exit status rule, and
podman's hooks directories resolved from containers.conf texts written
here (containers/common's order: the system's, the admin's and their
drop-ins, rootless files, the user's, ``$CONTAINERS_CONF`` alone,
``$CONTAINERS_CONF_OVERRIDE`` last).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from wg_pod_hook import cdi, doctor, hooksd
from wg_pod_hook.doctor import (
    BackendSeen,
    CdiSpec,
    Daemon,
    Definition,
    Finding,
    HooksDirs,
    Nftables,
    Podman,
    RootlessSetup,
    Status,
)
from wg_pod_hook.errors import SettingsError
from wg_pod_hook.model.settings import Settings, parse_settings
from wg_pod_hook.runtime import Runtime

PODMAN_DEFAULT = Path("/usr/share/containers/oci/hooks.d")
HOOK = sys.executable  # some executable, as a definition's hook path

# --- rendering and the exit status ---

FINDINGS = [
    Finding("privileges", Status.OK, "root (uid 0)"),
    Finding("daemon", Status.WARN, "not running (optional)", "wg-pod install --daemon"),
    Finding("hooks", Status.FAIL, "definitions in /a, podman reads /b", "wg-pod install"),
]


def test_report_is_one_line_a_check_with_its_fix_and_a_count() -> None:
    lines = doctor.report(FINDINGS).splitlines()
    assert lines == [
        "ok    privileges  root (uid 0)",
        "warn  daemon      not running (optional); fix: wg-pod install --daemon",
        "FAIL  hooks       definitions in /a, podman reads /b; fix: wg-pod install",
        "1 ok, 1 warn, 1 FAIL (warn is optional and does not fail)",
    ]


def test_json_is_a_list_of_name_status_detail_fix() -> None:
    data = json.loads(json.dumps(doctor.as_json(FINDINGS)))
    assert data[0] == {"name": "privileges", "status": "ok", "detail": "root (uid 0)", "fix": None}
    assert [d["status"] for d in data] == ["ok", "warn", "FAIL"]
    assert all(set(d) == {"name", "status", "detail", "fix"} for d in data)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([Status.OK, Status.OK], 0),
        ([Status.OK, Status.WARN], 0),  # a warn is optional: it never fails
        ([Status.WARN, Status.FAIL], 1),
        ([Status.FAIL], 1),
        ([], 0),
    ],
)
def test_exit_status_fails_only_on_fail(statuses: list[Status], expected: int) -> None:
    findings = [Finding(f"c{i}", s, "x") for i, s in enumerate(statuses)]
    assert doctor.exit_status(findings) == expected


def test_every_non_ok_finding_of_the_checks_has_a_fix() -> None:
    every = [
        doctor.backend("auto", [NO_KERNEL, NO_TUN]),
        doctor.backend("auto", [NO_KERNEL, USERSPACE]),
        doctor.nftables(Nftables("no module", None, None)),
        doctor.podman("podman not found on PATH"),
        doctor.hooks(HooksDirs((PODMAN_DEFAULT,)), {}),
        doctor.daemon(Daemon(False), _runtime()),
        doctor.cdi_finding(CdiSpec(Path("/etc/cdi/wg-pod.json"), False)),
        doctor.privileges(1000, _rootless(runtime_dir_ok=False)),
    ]
    assert all(f.status is not Status.OK and f.fix for f in every), every


# --- the checks ---


KERNEL = BackendSeen("kernel", "module wireguard")
NO_KERNEL = BackendSeen("kernel", None, "no wireguard module in this kernel")
USERSPACE = BackendSeen("userspace", "/usr/bin/wireguard-go")
NO_TUN = BackendSeen(
    "userspace", None, "wireguard-go needs /dev/net/tun: No such file or directory"
)
NO_GO = BackendSeen("userspace", None, "wireguard-go is not installed")


def test_auto_picks_the_kernel_when_its_module_is_there() -> None:
    found = doctor.backend("auto", [KERNEL, USERSPACE])
    assert found == Finding(
        "backend",
        Status.OK,
        "auto picks kernel (module wireguard); userspace: /usr/bin/wireguard-go",
    )


def test_auto_falls_back_to_wireguard_go_with_a_warn() -> None:
    found = doctor.backend("auto", [NO_KERNEL, USERSPACE])
    assert found.status is Status.WARN
    assert found.detail == (
        "auto picks userspace (/usr/bin/wireguard-go): kernel: no wireguard module in this kernel"
    )
    assert found.fix == (
        "a kernel with WireGuard (Linux 5.6 and later have it)"
        "   (optional: the kernel's WireGuard is faster)"
    )


def test_no_backend_without_module_and_tun_fails_naming_the_device() -> None:
    found = doctor.backend("auto", [NO_KERNEL, NO_TUN])
    assert found.status is Status.FAIL
    assert found.detail == (
        "auto: no backend can run here: kernel: no wireguard module in this kernel; "
        "userspace: wireguard-go needs /dev/net/tun: No such file or directory"
    )
    assert found.fix is not None and found.fix.startswith(
        "a kernel with WireGuard (Linux 5.6 and later have it), or: mkdir"
    )
    assert "mknod -m 666 /dev/net/tun c 10 200" in found.fix


def test_no_backend_without_module_and_wireguard_go_says_install_it() -> None:
    found = doctor.backend("auto", [NO_KERNEL, NO_GO])
    assert found.status is Status.FAIL
    assert (
        found.fix
        == "a kernel with WireGuard (Linux 5.6 and later have it), or: apt install wireguard-go"
    )


def test_a_backend_the_settings_name_is_the_only_one_taken() -> None:
    assert doctor.backend("kernel", [NO_KERNEL, USERSPACE]).status is Status.FAIL
    assert doctor.backend("kernel", [KERNEL, NO_TUN]).status is Status.OK
    assert doctor.backend("userspace", [NO_KERNEL, USERSPACE]).status is Status.OK
    found = doctor.backend("userspace", [KERNEL, NO_TUN])
    assert (found.status, found.detail) == (
        Status.FAIL,
        "userspace (settings): no backend can run here: "
        "userspace: wireguard-go needs /dev/net/tun: No such file or directory",
    )


def test_a_rootless_user_is_told_root_loads_the_module() -> None:
    unloaded = BackendSeen(
        "kernel",
        None,
        "module wireguard is not loaded, and a user namespace cannot load it "
        "(root: modprobe wireguard)",
    )
    found = doctor.backend("auto", [unloaded, USERSPACE], rootless=True)
    assert found.fix is not None and "as root: a user namespace never loads it" in found.fix


def test_the_backends_probe_themselves() -> None:
    """Each backend of backends.NAMES, in their order, through available()."""
    seen = doctor.look_backends(_runtime())
    assert [s.name for s in seen] == ["kernel", "userspace"]
    assert all((s.runs_on is None) != (s.problem is None) for s in seen)


def test_nftables_without_libnftables_warns_with_nft_and_fails_without() -> None:
    assert doctor.nftables(Nftables(None, None, None)).status is Status.OK
    slower = doctor.nftables(Nftables("no Python module nftables", "/usr/sbin/nft", "/bin/nsenter"))
    assert slower.status is Status.WARN and "nsenter and /usr/sbin/nft" in slower.detail
    none = doctor.nftables(Nftables("no Python module nftables", None, "/bin/nsenter"))
    assert none.status is Status.FAIL and "no nft on the hook's PATH" in none.detail


def test_podman_version_and_runtime() -> None:
    found = doctor.podman(Podman("4.3.1", "runc", "1.1.5", "/usr/bin/runc"))
    assert (found.status, found.detail) == (
        Status.OK,
        "podman 4.3.1, OCI runtime runc 1.1.5 (/usr/bin/runc)",
    )
    crun = doctor.podman(Podman("5.4.2", "crun", "1.21", "/usr/bin/crun"))
    assert crun.status is Status.OK and "journalctl -t wg-pod" in crun.detail
    assert doctor.podman(Podman("3.4.4", "runc", "1.1", "")).status is Status.WARN
    broken = doctor.podman("podman info failed: cannot read containers.conf")
    assert broken.status is Status.FAIL and broken.fix is not None


def test_settings_error_is_its_one_line_with_file_and_line(tmp_path: Path) -> None:
    source = str(tmp_path / "wg-pod.yaml")
    with pytest.raises(SettingsError) as caught:
        parse_settings("backend: auto\nlog_level: [\n", source)
    runtime = _runtime(settings=source)
    found = doctor.settings_finding(runtime, caught.value)
    assert found.status is Status.FAIL
    assert found.detail == f"{source}: line 3: not valid YAML"
    assert found.fix == f"edit {source}   (README: Settings) or unset WG_POD_SETTINGS"


def test_settings_ok_names_the_file_or_the_defaults(tmp_path: Path) -> None:
    source = str(tmp_path / "wg-pod.yaml")
    loaded = parse_settings("backend: userspace\nconfig_dirs: [/etc/wg]\n", source)
    found = doctor.settings_finding(_runtime(settings=source), loaded)
    assert (found.status, found.detail) == (
        Status.OK,
        f"{source}: backend userspace, configs in /etc/wg",
    )
    default = doctor.settings_finding(_runtime(), Settings())
    assert default.detail.startswith("no /etc/wg-pod/wg-pod.yaml: the defaults (backend auto")


def test_no_daemon_is_a_warn_saying_what_the_hook_does_without_it() -> None:
    found = doctor.daemon(Daemon(False), _runtime())
    assert found.status is Status.WARN
    assert "each hook sets its tunnel up itself" in found.detail
    assert doctor.daemon(Daemon(True), _runtime()).status is Status.OK
    rootless = doctor.daemon(Daemon(False), _runtime(user=1000))
    assert rootless.fix == "wg-pod install --user --daemon"


def _runtime(settings: str | None = None, user: int | None = None) -> Runtime:
    return Runtime("/tmp/wg-pod-doctor-unit", user is None, settings, user=user)


def _rootless(**changes: object) -> RootlessSetup:
    values: dict[str, object] = {
        "user": "alice",
        "runtime_dir": Path("/run/user/1000"),
        "runtime_dir_ok": True,
        "subids": True,
        "config_dir": Path("/home/alice/.config/wg-pod"),
        "config_dir_problem": None,
    }
    values.update(changes)
    return RootlessSetup(**values)  # type: ignore[arg-type]


def test_privileges_root_and_a_rootless_users_setup() -> None:
    assert doctor.privileges(0, None) == Finding("privileges", Status.OK, "root (uid 0)")
    ready = doctor.privileges(1000, _rootless())
    assert ready.status is Status.OK and "rootless podman user alice" in ready.detail
    no_run = doctor.privileges(1000, _rootless(runtime_dir_ok=False))
    assert no_run.status is Status.FAIL and no_run.fix is not None
    assert "loginctl enable-linger alice" in no_run.fix
    no_dir = doctor.privileges(1000, _rootless(config_dir_problem="no /home/alice/.config/wg-pod"))
    assert no_dir.status is Status.FAIL and no_dir.fix is not None and "mkdir" in no_dir.fix
    assert doctor.privileges(1000, _rootless(subids=False)).status is Status.WARN


# --- CDI ---


def _spec(tmp_path: Path, configs: dict[str, Path]) -> Path:
    spec = tmp_path / "cdi" / "wg-pod.json"
    cdi.write(spec, cdi.render(cdi.spec(configs, HOOK)))
    return spec


def test_cdi_spec_names_its_devices_and_their_configs(tmp_path: Path) -> None:
    (tmp_path / "wg").mkdir()
    config = tmp_path / "wg" / "wg0.conf"
    config.write_text("[Interface]\n")
    seen = doctor.look_cdi(_spec(tmp_path, {"wg0": config}), [tmp_path / "wg"])
    assert seen.devices == (("wg0", config),)
    found = doctor.cdi_finding(seen)
    assert (found.status, found.detail) == (Status.OK, f"{seen.path}: wg0 ({config})")


def test_cdi_device_whose_config_is_gone_fails(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"wg0": tmp_path / "gone.conf"})
    found = doctor.cdi_finding(doctor.look_cdi(spec, []))
    assert found.status is Status.FAIL and "wg0" in found.detail
    assert found.fix == "wg-pod cdi generate"


def test_cdi_warns_of_configs_without_a_device_and_of_no_spec(tmp_path: Path) -> None:
    (tmp_path / "wg").mkdir()
    (tmp_path / "wg" / "wg1.conf").write_text("[Interface]\n")
    found = doctor.cdi_finding(doctor.look_cdi(_spec(tmp_path, {}), [tmp_path / "wg"]))
    assert found.status is Status.WARN and "no device yet for wg1" in found.detail
    absent = doctor.cdi_finding(doctor.look_cdi(tmp_path / "none.json", []))
    assert absent.status is Status.WARN and absent.fix == "wg-pod cdi generate"


def test_a_cdi_spec_that_does_not_parse_fails(tmp_path: Path) -> None:
    spec = tmp_path / "wg-pod.json"
    spec.write_text("{not: [json")
    assert doctor.cdi_finding(doctor.look_cdi(spec, [])).status is Status.FAIL


# --- podman's hooks directories, from containers.conf ---


class Confs:
    """A /usr/share/containers and an /etc/containers of a test's own."""

    def __init__(self, root: Path) -> None:
        self.usr = root / "usr"
        self.etc = root / "etc"
        self.home = root / "home"
        for d in (self.usr, self.etc, self.home):
            d.mkdir()

    def write(self, relative: str, hooks_dir: str | None = None, text: str = "") -> Path:
        base = {"usr": self.usr, "etc": self.etc, "home": self.home}[relative.split("/")[0]]
        path = base.joinpath(*relative.split("/")[1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        if hooks_dir is not None:
            text += f"[engine]\nhooks_dir = {hooks_dir}\n"
        path.write_text(text)
        return path

    def read(self, env: dict[str, str] | None = None, uid: int = 0) -> HooksDirs:
        files = doctor.containers_conf_files(env or {}, uid, str(self.home), self.usr, self.etc)
        return doctor.podman_hooks_dirs(files, rootless=uid != 0)


@pytest.fixture
def confs(tmp_path: Path) -> Confs:
    return Confs(tmp_path)


def test_unset_hooks_dir_is_containers_commons_default(confs: Confs) -> None:
    confs.write("usr/containers.conf", text='[engine]\nruntime = "runc"\n#hooks_dir = ["/x"]\n')
    reads = confs.read()
    assert reads == HooksDirs((PODMAN_DEFAULT,), None, None, (confs.usr / "containers.conf",))


def test_the_admins_file_overrides_the_systems(confs: Confs) -> None:
    confs.write("usr/containers.conf", '["/usr/hooks"]')
    etc = confs.write("etc/containers.conf", '["/etc/hooks", "/more/hooks"]')
    assert confs.read() == HooksDirs(
        (Path("/etc/hooks"), Path("/more/hooks")),
        str(etc),
        None,
        (confs.usr / "containers.conf", etc),
    )


def test_drop_ins_are_read_in_name_order_after_the_file(confs: Confs) -> None:
    confs.write("etc/containers.conf", '["/etc/hooks"]')
    confs.write("etc/containers.conf.d/20-b.conf", '["/b"]')
    confs.write("etc/containers.conf.d/10-a.conf", '["/a"]')
    confs.write("etc/containers.conf.d/30-c.conf.disabled", '["/c"]')
    reads = confs.read()
    assert reads.dirs == (Path("/b"),)
    assert reads.source == str(confs.etc / "containers.conf.d" / "20-b.conf")


def test_append_extends_for_this_file_and_later_ones(confs: Confs) -> None:
    confs.write("usr/containers.conf", '["/usr/hooks"]')
    confs.write("etc/containers.conf", '["/etc/hooks", {append=true}]')
    confs.write("etc/containers.conf.d/10.conf", '["/more"]')
    assert confs.read().dirs == (Path("/usr/hooks"), Path("/etc/hooks"), Path("/more"))


def test_containers_conf_alone_is_read_and_the_override_last(confs: Confs, tmp_path: Path) -> None:
    confs.write("etc/containers.conf", '["/etc/hooks"]')
    mine = confs.write("home/mine.conf", '["/mine"]')
    assert confs.read({"CONTAINERS_CONF": str(mine)}).dirs == (Path("/mine"),)
    override = confs.write("home/override.conf", '["/override"]')
    env = {"CONTAINERS_CONF": str(mine), "CONTAINERS_CONF_OVERRIDE": str(override)}
    reads = confs.read(env)
    assert (reads.dirs, reads.source) == ((Path("/override"),), str(override))
    with pytest.raises(FileNotFoundError, match="CONTAINERS_CONF="):
        confs.read({"CONTAINERS_CONF": str(tmp_path / "missing.conf")})


def test_a_file_without_hooks_dir_changes_nothing(confs: Confs) -> None:
    confs.write("etc/containers.conf", '["/etc/hooks"]')
    confs.write("etc/containers.conf.d/50.conf", text='[network]\nnetwork_backend = "cni"\n')
    assert confs.read().dirs == (Path("/etc/hooks"),)


def test_rootless_files_count_for_a_rootless_user_only(confs: Confs) -> None:
    confs.write("etc/containers.conf", '["/etc/hooks"]')
    confs.write("etc/containers.rootless.conf", '["/rootless"]')
    confs.write("etc/containers.rootless.conf.d/1000/10.conf", '["/alice"]')
    confs.write("home/.config/containers/containers.conf.d/10.conf", '["/mine"]')
    assert confs.read(uid=1000).dirs == (Path("/mine"),)
    confs.write("home/.config/containers/containers.conf.d/10.conf", text="")
    assert confs.read(uid=1000).dirs == (Path("/alice"),)
    assert confs.read(uid=1001).dirs == (Path("/rootless"),)
    assert confs.read(uid=0).dirs == (Path("/etc/hooks"),)


def test_an_empty_hooks_dir_is_libpods_two_for_root_and_none_rootless(confs: Confs) -> None:
    confs.write("etc/containers.conf", "[]")
    assert confs.read().dirs == (PODMAN_DEFAULT, Path("/etc/containers/oci/hooks.d"))
    assert confs.read(uid=1000).dirs == ()


def test_a_file_podman_cannot_read_is_the_problem(confs: Confs) -> None:
    bad = confs.write("etc/containers.conf", text="[engine\nhooks_dir = 1\n")
    reads = confs.read()
    assert reads.problem is not None and reads.problem.startswith(f"{bad}: not valid TOML")
    confs.write("etc/containers.conf", '"/not/a/list"')
    assert confs.read().problem == f"{bad}: hooks_dir must be a list"
    found = doctor.hooks(confs.read(), {})
    assert found.status is Status.FAIL and str(bad) in found.detail


# --- whether podman reads wg-pod's definitions ---


def _installed(directory: Path, hook: str = HOOK, settings: str | None = None) -> Path:
    hooksd.install(directory, hook, settings)
    return directory


def test_definitions_in_a_directory_podman_reads(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "hooks.d", settings="/etc/wg-pod/wg-pod.yaml")
    found = doctor.hooks(
        HooksDirs((ours,), "/etc/containers/containers.conf"),
        doctor.look_definitions([ours]),
        "/etc/wg-pod/wg-pod.yaml",
    )
    assert found == Finding(
        "hooks",
        Status.OK,
        f"wg-pod's definitions in {ours}, which podman reads "
        "(hooks_dir from /etc/containers/containers.conf)",
    )


def test_definitions_in_a_directory_podman_does_not_read_fail_naming_both(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "ours")
    read = tmp_path / "podmans"
    found = doctor.hooks(
        HooksDirs((read,), "/tmp/containers.conf"), doctor.look_definitions([ours, read])
    )
    assert found.status is Status.FAIL
    assert f"wg-pod's definitions are in {ours}, which podman does not read" in found.detail
    assert f"it reads {read} (hooks_dir from /tmp/containers.conf)" in found.detail
    assert found.fix == (
        f"wg-pod install --hooks-dir {read}   (or add {ours} to hooks_dir in [engine] of "
        "/tmp/containers.conf)"
    )


def test_no_definitions_anywhere_fails(tmp_path: Path) -> None:
    found = doctor.hooks(HooksDirs((PODMAN_DEFAULT,)), doctor.look_definitions([tmp_path]))
    assert found.status is Status.FAIL
    assert found.detail.startswith("no wg-pod definitions found anywhere (podman reads ")
    assert found.fix == "wg-pod install"


def test_a_definition_whose_hook_is_gone_fails(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "hooks.d", hook=str(tmp_path / "old-venv" / "wg-pod-hook"))
    found = doctor.hooks(HooksDirs((ours,)), doctor.look_definitions([ours]))
    assert found.status is Status.FAIL
    assert "old-venv/wg-pod-hook, which is missing or not executable" in found.detail


def test_one_stage_missing_fails(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "hooks.d")
    (ours / hooksd.file_name("poststop")).unlink()
    found = doctor.hooks(HooksDirs((ours,)), doctor.look_definitions([ours]))
    assert found.status is Status.FAIL and "wg-pod-poststop.json" in found.detail


def test_a_definition_that_does_not_parse_fails(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "hooks.d")
    (ours / hooksd.file_name("createRuntime")).write_text("{")
    found = doctor.hooks(HooksDirs((ours,)), doctor.look_definitions([ours]))
    assert found.status is Status.FAIL and "podman refuses every container" in found.detail


def test_the_last_directory_podman_reads_masks_the_earlier(tmp_path: Path) -> None:
    good = _installed(tmp_path / "good")
    stale = _installed(tmp_path / "stale", hook=str(tmp_path / "gone"))
    seen = doctor.look_definitions([good, stale])
    assert doctor.hooks(HooksDirs((stale, good)), seen).status is Status.OK
    assert doctor.hooks(HooksDirs((good, stale)), seen).status is Status.FAIL


def test_the_settings_the_hook_reads_are_named_when_not_these(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "hooks.d", settings="/srv/wg-pod.yaml")
    found = doctor.hooks(HooksDirs((ours,)), doctor.look_definitions([ours]), "/etc/x.yaml")
    assert found.status is Status.OK
    assert "the hook reads settings /srv/wg-pod.yaml" in found.detail
    assert "WG_POD_SETTINGS=/srv/wg-pod.yaml wg-pod doctor" in found.detail


def test_podman_reading_no_directory_fails() -> None:
    found = doctor.hooks(HooksDirs((), "/home/alice/.config/containers/containers.conf"), {})
    assert found.status is Status.FAIL and "reads no hooks directory" in found.detail


def test_read_definition_of_what_wg_pod_install_writes(tmp_path: Path) -> None:
    ours = _installed(tmp_path / "hooks.d", settings="/etc/wg-pod/wg-pod.yaml")
    definition = doctor.read_definition(ours / hooksd.file_name("createRuntime"))
    assert definition == Definition(
        ours / "wg-pod-createRuntime.json", HOOK, True, "/etc/wg-pod/wg-pod.yaml"
    )
