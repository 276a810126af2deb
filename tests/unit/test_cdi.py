"""The CDI spec (cdi.py), and how the hook takes a device's config: from its
arguments, with the container's annotations adding options, and hooks.d's
hook leaving such a container to the device's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from wg_pod_hook import cdi, hook
from wg_pod_hook.errors import AnnotationError
from wg_pod_hook.model.bundle import read_bundle
from wg_pod_hook.model.oci import ContainerState, with_device

HOOK = "/usr/bin/wg-pod-hook"
KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="


def configs(tmp_path: Path) -> list[Path]:
    first, second = tmp_path / "a", tmp_path / "b"
    for directory, names in (
        (first, ["wg0.conf", "office.conf", "notes.txt"]),
        (second, ["wg0.conf", "home.conf", "-bad.conf"]),
    ):
        directory.mkdir()
        for name in names:
            (directory / name).write_text(f"[Interface]\nPrivateKey = {KEY}\n")
    (first / "dir.conf").mkdir()
    return [first, second, tmp_path / "missing"]


def test_each_allowed_config_is_a_device_named_by_its_stem(tmp_path: Path) -> None:
    dirs = configs(tmp_path)
    assert cdi.devices(dirs) == {
        "home": dirs[1] / "home.conf",
        "office": dirs[0] / "office.conf",
        "wg0": dirs[0] / "wg0.conf",  # the first directory's, as the hook looks first there
    }


def test_the_spec_has_what_cdi_requires_and_is_the_same_each_time(tmp_path: Path) -> None:
    dirs = configs(tmp_path)
    devices = cdi.devices(dirs)
    document = cdi.spec(devices, HOOK, "/etc/wg-pod/wg-pod.yaml")
    # CDI: a known version, vendor.tld/class kind, names by its rule, and
    # edits that are hooks of known names with an absolute path.
    assert document["cdiVersion"] in ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0")
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*\.[a-z]+/[a-z0-9][a-z0-9_.-]*", document["kind"])
    assert set(document) == {"cdiVersion", "kind", "devices"}
    for device in document["devices"]:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", device["name"])
        assert set(device) == {"name", "containerEdits"}
        hooks = device["containerEdits"]["hooks"]
        assert [h["hookName"] for h in hooks] == ["createRuntime", "poststop"]
        for entry in hooks:
            assert entry["path"] == HOOK and entry["timeout"] == 90
            assert entry["args"] == [
                "wg-pod-hook",
                entry["hookName"],
                "--config",
                str(devices[device["name"]]),
            ]
            assert "WG_POD_SETTINGS=/etc/wg-pod/wg-pod.yaml" in entry["env"]
    text = cdi.render(document)
    again = cdi.spec(cdi.devices(reversed(dirs[:2])), HOOK, "/etc/wg-pod/wg-pod.yaml")
    assert cdi.render(again).replace(str(dirs[1] / "wg0"), str(dirs[0] / "wg0")) == text
    assert KEY not in text and "PrivateKey" not in text


def test_the_spec_is_written_whole_and_readable_by_all(tmp_path: Path) -> None:
    target = tmp_path / "cdi" / "wg-pod.json"
    cdi.write(target, '{"x": 1}\n')
    cdi.write(target, '{"x": 2}\n')
    assert json.loads(target.read_text()) == {"x": 2}
    assert target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["wg-pod.json"]


def state(annotations: dict[str, str]) -> ContainerState:
    return ContainerState("a" * 64, "creating", 42, None, annotations)


def test_the_devices_config_is_the_containers_and_annotations_add_options() -> None:
    given = with_device(state({"wg-pod.delete-default": "true"}), "/etc/wg/wg0.conf")
    assert given.annotations == {
        "wg-pod.delete-default": "true",
        "wg-pod.config": "/etc/wg/wg0.conf",
    }
    same = with_device(state({"wg-pod.config": "/etc/wg/wg0.conf"}), "/etc/wg/wg0.conf")
    assert same.annotations == {"wg-pod.config": "/etc/wg/wg0.conf"}


def test_an_annotation_naming_another_config_is_refused() -> None:
    with pytest.raises(AnnotationError) as refused:
        with_device(state({"wg-pod.config": "/etc/wg/vpn.conf"}), "/etc/wg/wg0.conf")
    assert str(refused.value) == (
        "annotation wg-pod.config: '/etc/wg/vpn.conf', but the container's wg-pod device "
        "gives /etc/wg/wg0.conf: ask for one tunnel, by the device or by the annotation"
    )


def bundle_with_hooks(tmp_path: Path, *argvs: list[str]) -> PurePosixPath:
    hooks = [{"path": HOOK, "args": argv} for argv in argvs]
    (tmp_path / "config.json").write_text(json.dumps({"hooks": {"createRuntime": hooks}}))
    return PurePosixPath(tmp_path)


def test_a_bundle_tells_a_devices_hook_from_hooks_ds(tmp_path: Path) -> None:
    hooks_d = ["wg-pod-hook", "createRuntime"]
    device = cdi.hook_args("createRuntime", Path("/etc/wg/wg0.conf"))
    assert read_bundle(bundle_with_hooks(tmp_path, hooks_d, device)).device_hook
    assert not read_bundle(bundle_with_hooks(tmp_path, hooks_d)).device_hook
    assert not read_bundle(bundle_with_hooks(tmp_path, ["other-hook", "--config", "x"])).device_hook


@pytest.mark.parametrize(
    "argv",
    [[], ["createRuntime", "--config"], ["createRuntime", "--conf", "/x"], ["prestart"]],
)
def test_the_hook_takes_a_stage_and_maybe_a_config(argv: list[str]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from wg_pod_hook import hook; sys.exit(hook.main(sys.argv[1:]))",
            *argv,
        ],
        input="",
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "usage: wg-pod-hook {createRuntime|poststop} [--config PATH] < OCI-state\n"
    )
    assert hook.STAGES == ("createRuntime", "poststop")
