"""Settings: defaults, types, and YAML's surprises refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import the_runtime
from wg_pod_hook.errors import SettingsError
from wg_pod_hook.model.oci import Toggle
from wg_pod_hook.model.settings import Settings, load_settings, parse_settings


def test_empty_file_gives_defaults() -> None:
    assert parse_settings("", "s.yaml") == Settings()


def test_the_packaged_file_gives_defaults_without_loading_the_yaml_parser() -> None:
    """Every line of packaging/wg-pod.yaml is a comment: a standalone hook
    reading it must not pay PyYAML's import (~10 ms of each start), yet a
    comment in a file with settings stays YAML's."""
    packaged = Path(__file__).resolve().parents[2] / "packaging" / "wg-pod.yaml"
    code = (
        "import sys\n"
        "from wg_pod_hook.model.settings import Settings, parse_settings\n"
        f"s = parse_settings(open({str(packaged)!r}).read(), 'wg-pod.yaml')\n"
        "assert s == Settings() and s.source == 'wg-pod.yaml', s\n"
        "assert 'yaml' not in sys.modules, 'yaml imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert parse_settings(
        "# a comment\n  # indented\n\nbackend: userspace  # why\n", "s"
    ).backend == ("userspace")


def test_all_keys() -> None:
    settings = parse_settings(
        "config_dirs: [/srv/wg]\nbackend: userspace\nuserspace_command: [boringtun]\n"
        "log_level: debug\nkill_switch: 'on'\nallow_readable_configs: true\n"
        "endpoint_refresh_after: 30\nreload_on_change: true\n",
        "s.yaml",
    )
    assert settings.config_dirs == (Path("/srv/wg"),)
    assert settings.backend == "userspace"
    assert settings.userspace_command == ("boringtun",)
    assert settings.log_level == "debug"
    assert settings.kill_switch is Toggle.ON
    assert settings.allow_readable_configs is True
    assert settings.endpoint_refresh_after == 30
    assert settings.reload_on_change is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: blue", "colour: unknown setting"),
        ("backend: wireguard", "backend: must be one of"),
        ("kill_switch: no", "kill_switch: must be one of"),  # YAML reads `no` as false
        ("allow_readable_configs: 'yes'", "must be true or false"),
        ("reload_on_change: 1", "reload_on_change: must be true or false"),
        ("config_dirs: [relative]", "absolute"),
        ("config_dirs: 22:22", "non-empty list"),
        ("config_dirs: []", "non-empty list"),
        ("- a\n- b", "mapping"),
        ("backend: [", "not valid YAML"),
        ("endpoint_refresh_after: 0", "endpoint_refresh_after: must be a number of seconds"),
        ("endpoint_refresh_after: true", "endpoint_refresh_after: must be a number of seconds"),
        ("fault_injection_kill_after: 3", "must be the name of a setup step"),
    ],
)
def test_bad_settings(text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        parse_settings(text, "/etc/wg-pod/wg-pod.yaml")
    assert str(caught.value).startswith("/etc/wg-pod/wg-pod.yaml")


def test_named_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WG_POD_SETTINGS", str(tmp_path / "missing.yaml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(the_runtime())


def test_loads_named_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("backend: kernel\n")
    monkeypatch.setenv("WG_POD_SETTINGS", str(path))
    assert load_settings(the_runtime()).backend == "kernel"
