"""The daemon's unit text, its install into a directory, and sd_notify."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from wg_pod_hook import units
from wg_pod_hook.errors import SetupError


def test_the_unit_runs_the_given_wg_pod_and_keeps_its_children() -> None:
    text = units.service("/opt/wg-pod/bin/wg-pod")
    lines = text.splitlines()
    assert "ExecStart=/opt/wg-pod/bin/wg-pod daemon" in lines
    assert "Type=notify" in lines and "KillMode=process" in lines
    assert "WantedBy=multi-user.target" in lines


def test_install_and_uninstall_in_a_directory(tmp_path: Path) -> None:
    written = units.install(tmp_path / "units", "/usr/bin/wg-pod")
    assert written == tmp_path / "units" / units.NAME
    assert written.read_text() == units.service("/usr/bin/wg-pod")
    assert units.uninstall(tmp_path / "units") == written
    assert not written.exists()
    assert units.uninstall(tmp_path / "units") is None


def test_install_wants_an_absolute_path(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="must be absolute"):
        units.install(tmp_path, "wg-pod")
    assert not (tmp_path / units.NAME).exists()


def test_ready_tells_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        units.ready()
        assert listener.recv(64) == b"READY=1"


def test_ready_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    units.ready()


def test_the_module_prints_the_unit_for_the_makefile(capsys: pytest.CaptureFixture[str]) -> None:
    assert units.main(["/usr/bin/wg-pod"]) == 0
    assert capsys.readouterr().out == units.service("/usr/bin/wg-pod")
    assert units.main(["wg-pod"]) == 2
