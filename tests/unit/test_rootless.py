"""A rootless user's runtime, and what differs in their plans: the link is
born in the container's namespace with its socket, whose mark routes it
past the tunnel and through the kill switch (runtime.py, plan.py, nft.py,
trust.py, namespaces.made_in)."""

from __future__ import annotations

import errno
import os
import pwd
import threading
from pathlib import Path

import pytest

from tests.unit.test_plan import config, plan_for
from wg_pod_hook.errors import ConfigError
from wg_pod_hook.model import nft
from wg_pod_hook.model.config import parse_config
from wg_pod_hook.model.oci import parse_annotations
from wg_pod_hook.model.plan import build_plan
from wg_pod_hook.model.settings import Settings
from wg_pod_hook.model.trust import OVERFLOW_UID, directory_problem, trust_problem
from wg_pod_hook.namespaces import made_in
from wg_pod_hook.runtime import Runtime

CID = "0123456789abcdef" * 4
NOBODY = pwd.getpwnam("nobody")


def test_a_users_runtime_is_under_their_runtime_and_config_directories() -> None:
    mine = Runtime.of_user(NOBODY.pw_uid, root=True)
    home = NOBODY.pw_dir.rstrip("/")
    assert mine.rootless and mine.root and mine.user == NOBODY.pw_uid
    assert mine.state_dir == f"/run/user/{NOBODY.pw_uid}/wg-pod"
    assert mine.config_dirs == (f"{home}/.config/wg-pod",)
    assert mine.settings == f"{home}/.config/wg-pod/wg-pod.yaml"
    assert mine.wireguard_sockets == f"/run/user/{NOBODY.pw_uid}/wg-pod/wireguard"
    assert mine.owner == f"nobody (uid {NOBODY.pw_uid})"
    # A hook that names its settings keeps the rest.
    named = mine.with_settings("/x.yaml")
    assert (named.settings, named.state_dir, named.owner) == ("/x.yaml", mine.state_dir, mine.owner)
    # Root's own is none of this.
    root = Runtime("/run/wg-pod", True)
    assert not root.rootless and root.wireguard_sockets == "/var/run/wireguard"


def test_a_uid_without_a_user_has_no_runtime() -> None:
    unknown = max(entry.pw_uid for entry in pwd.getpwall()) + 12345
    with pytest.raises(ValueError, match=f"uid {unknown} has no entry"):
        Runtime.of_user(unknown, root=False)


def test_a_rootless_tunnel_carries_the_reply_mark_and_both_reply_paths() -> None:
    request = parse_annotations({"wg-pod.config": "/etc/wg/office.conf"})
    cfg = parse_config(config(), "/etc/wg/office.conf")
    plan = build_plan(CID, 42, request, cfg, Settings(), socket_inside=True)
    assert plan.socket_mark == plan.names.reply_mark
    assert plan.reply_path == frozenset({4, 6})
    assert plan_for({}).socket_mark is None  # root's: the socket stays on the host


def test_a_rootless_config_with_its_own_fwmark_is_refused_naming_its_section() -> None:
    request = parse_annotations({"wg-pod.config": "/etc/wg/office.conf"})
    cfg = parse_config(config(extra="FwMark = 0x1234"), "/etc/wg/office.conf")
    with pytest.raises(ConfigError) as info:
        build_plan(CID, 42, request, cfg, Settings(), socket_inside=True)
    assert str(info.value).startswith("/etc/wg/office.conf:1: FwMark:")  # its [Interface]
    assert "remove FwMark" in str(info.value)


def test_the_tunnels_own_packets_pass_the_kill_switch_and_the_dns_redirect() -> None:
    request = parse_annotations(
        {"wg-pod.config": "/etc/wg/office.conf", "wg-pod.delete-default": "true"}
    )
    cfg = parse_config(config("0.0.0.0/0, ::/0", extra="DNS = 10.250.0.1"), "/etc/wg/o.conf")
    plan = build_plan(CID, 42, request, cfg, Settings(), socket_inside=True)
    text = nft.render(plan)
    assert text is not None
    mark = plan.names.reply_mark
    output = text[text.index("chain output") :]
    # Before any drop: the endpoint may listen on port 53.
    assert output.index(f"meta mark {mark} accept") < output.index(" drop\n")
    redirect = text[text.index("chain dns-redirect") : text.index("chain dns-source")]
    assert redirect.index(f"meta mark {mark} return") < redirect.index("dnat")
    # What comes back to the socket is marked too (reverse-path check).
    assert f"meta mark {mark} ct mark set {mark}" in text
    roots = nft.render(plan_for({"wg-pod.delete-default": "true"}, config("0.0.0.0/0, ::/0")))
    assert roots is not None and f"meta mark {mark} accept" not in roots


def test_a_file_of_a_user_is_named_by_its_owner_and_unmapped_directories_are_roots(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wg0.conf"
    path.write_text("")
    info = os.stat(path)
    if info.st_uid == 0:
        assert trust_problem(info, "config file", "chmod 600", "alice (uid 1000)") is None
    else:
        problem = trust_problem(info, "config file", "chmod 600", "alice (uid 1000)")
        assert problem == "config file is not owned by alice (uid 1000)"
    # Seen from a user's namespace, / and /home are the overflow uid's.
    unmapped = os.stat_result((0o40755, 0, 0, 0, OVERFLOW_UID, OVERFLOW_UID, 0, 0, 0, 0))
    real_stat = os.stat

    def stat(p: object, *args: object, **kwargs: object) -> os.stat_result:
        return unmapped if str(p) != str(path) else real_stat(p)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "stat", stat)
        assert directory_problem(path, "alice (uid 1000)", foreign_dirs=True) is None
        assert directory_problem(path, "alice (uid 1000)") == (
            f"directory {path.parent} is not owned by alice (uid 1000)"
        )


def test_work_in_another_namespace_runs_in_a_thread_of_its_own(tmp_path: Path) -> None:
    here = threading.get_ident()
    assert made_in(None, threading.get_ident) == here
    # A file that is no namespace: the thread's setns fails, and the
    # caller gets the kernel's error.
    fd = os.open(tmp_path / "not-a-namespace", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as info:
            made_in(fd, threading.get_ident)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EINVAL
