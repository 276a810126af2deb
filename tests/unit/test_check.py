"""`wg-pod check` resolves host-name endpoints as the hook does, and says so."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from wg_pod_hook import cli
from wg_pod_hook.errors import SetupError, describe
from wg_pod_hook.model import nft
from wg_pod_hook.model.config import Endpoint, parse_config
from wg_pod_hook.model.oci import parse_annotations
from wg_pod_hook.model.plan import Plan, build_plan
from wg_pod_hook.model.settings import Settings
from wg_pod_hook.tunnel.resolve import device_setup, resolve_endpoint

KEY_A = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
KEY_B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_C = "BMBBmXiFRDFLkeCokZkk4d0UOsSBaZhkXitFI8L2s1U="
KEY_D = "gusxWaB8hvUMeUyyGfxg8B9iYrqnnl+8TwiziIb1Txk="
# RFC 2606: never resolves, anywhere.
UNRESOLVABLE = "wg-pod-check.invalid"


def localhost_v4() -> str:
    """What the resolver on this machine says for localhost (IPv4 first, as wg)."""
    infos = socket.getaddrinfo("localhost", 51820, type=socket.SOCK_DGRAM)
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def config_text(*endpoints: str | None) -> str:
    lines = ["[Interface]", f"PrivateKey = {KEY_A}", "Address = 10.250.0.2/24"]
    for key, endpoint in zip((KEY_B, KEY_C, KEY_D), endpoints, strict=False):
        lines += ["[Peer]", f"PublicKey = {key}", "AllowedIPs = 10.250.0.0/24"]
        if endpoint is not None:
            lines.append(f"Endpoint = {endpoint}")
    return "\n".join(lines) + "\n"


def plan_of(text: str) -> Plan:
    request = parse_annotations({"wg-pod.config": "/etc/wg/office.conf"})
    config = parse_config(text, "/etc/wg/office.conf")
    return build_plan("c" * 64, 4242, request, config, Settings())


def endpoint_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("endpoint:")]


def test_the_plan_shows_where_host_names_resolve_to() -> None:
    plan = plan_of(config_text("localhost:51820", "198.51.100.7:4500", None))

    text = cli.format_plan(plan, nft.render(plan), device_setup(plan).peers)

    assert endpoint_lines(text) == [
        f"endpoint:    localhost:51820 (resolves to {localhost_v4()} now;"
        " the hook resolves it at each start)",
        "endpoint:    198.51.100.7:4500",
        "endpoint:    (none)",
    ]
    assert KEY_A not in text


def test_without_resolution_host_names_show_as_written() -> None:
    plan = plan_of(config_text("localhost:51820"))
    assert endpoint_lines(cli.format_plan(plan, nft.render(plan))) == [
        "endpoint:    localhost:51820"
    ]


def test_an_unresolvable_name_is_the_hooks_error() -> None:
    plan = plan_of(config_text("localhost:51820", f"{UNRESOLVABLE}:51820"))
    with pytest.raises(SetupError) as caught:
        device_setup(plan)
    assert (caught.value.step, caught.value.obj) == ("resolve endpoint", UNRESOLVABLE)
    with pytest.raises(SetupError) as direct:
        resolve_endpoint(Endpoint(UNRESOLVABLE, 51820))
    assert str(caught.value) == str(direct.value)


# The command itself reads the config as the hook does: a root-owned file in
# an allowed directory, so this part needs root (as `wg-pod check` does).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="config files must be owned by root")


@pytest.fixture
def allowed_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the settings (in WG_POD_SETTINGS) allow configs in."""
    configs = tmp_path / "wg"
    configs.mkdir()
    settings = tmp_path / "wg-pod.yaml"
    settings.write_text(f"config_dirs: [{configs}]\n")
    monkeypatch.setenv("WG_POD_SETTINGS", str(settings))
    return configs


def write(directory: Path, text: str) -> Path:
    path = directory / "office.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


@needs_root
def test_check_command_resolves_endpoints(
    allowed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(allowed_dir, config_text("localhost:51820", "[fd00::1]:51820"))

    assert cli.main(["check", str(path)]) == 0

    out = capsys.readouterr().out
    assert endpoint_lines(out) == [
        f"endpoint:    localhost:51820 (resolves to {localhost_v4()} now;"
        " the hook resolves it at each start)",
        "endpoint:    [fd00::1]:51820",
    ]
    assert KEY_A not in out


@needs_root
def test_check_command_fails_on_an_unresolvable_name_as_the_hook(
    allowed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(allowed_dir, config_text(f"{UNRESOLVABLE}:51820"))

    assert cli.main(["check", str(path)]) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    with pytest.raises(SetupError) as hook_error:
        resolve_endpoint(Endpoint(UNRESOLVABLE, 51820))
    assert captured.err == f"wg-pod: {describe(hook_error.value)}\n"


@needs_root
def test_check_command_reports_a_config_edge_with_file_and_line(
    allowed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(allowed_dir, f"[Interface]\nPrivateKey = {KEY_A}\nDNS = 10.0.0.1\n")

    assert cli.main(["check", str(path)]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"wg-pod: config: {path}:1: [Interface] has no Address;")
    assert KEY_A not in err


@needs_root
def test_check_command_warns_about_what_wg_pod_does_not_do(
    allowed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config_text("198.51.100.7:4500").replace(
        "Address = 10.250.0.2/24\n",
        "Address = 10.250.0.2/24\nPreUp =\nPostUp = echo up\nSaveConfig = true\n",
    )
    path = write(allowed_dir, text)

    assert cli.main(["check", str(path)]) == 0

    warnings = [line for line in capsys.readouterr().err.splitlines() if str(path) in line]
    assert len(warnings) == 2, warnings
    assert warnings[0].endswith(f"{path}: PostUp is not run by wg-pod (its commands are ignored)")
    assert warnings[1].endswith(
        f"{path}: SaveConfig is ignored by wg-pod (it never writes the config back)"
    )


@needs_root
def test_check_command_says_where_the_key_comes_from_never_the_key(
    allowed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config's own line; the annotation's file, which wins; a key file
    by the configs' rules (here readable by others: refused, named)."""
    path = write(allowed_dir, config_text("198.51.100.7:4500"))
    key = allowed_dir / "office.key"
    key.write_text(KEY_D + "\n")
    key.chmod(0o600)

    assert cli.main(["check", str(path)]) == 0
    assert f"private key: from {path}, line 2\n" in capsys.readouterr().out
    given = f"wg-pod.private-key={key}"
    assert cli.main(["check", str(path), "--annotation", given]) == 0
    out = capsys.readouterr().out
    assert f"private key: from {key} (wg-pod.private-key)\n" in out
    assert KEY_A not in out and KEY_D not in out

    key.chmod(0o640)
    assert cli.main(["check", str(path), "--annotation", given]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"wg-pod: annotation wg-pod.private-key: key file {key} "
        "is readable by group or others (chmod 600)\n"
    )
