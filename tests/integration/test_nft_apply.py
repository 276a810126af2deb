"""nft.apply in throwaway namespaces, both ways: in-process through
libnftables (a thread that enters the namespace) and the nsenter + nft
fallback; what they applied is read back with ``nft list``."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from ipaddress import ip_network
from typing import TypeVar

import pytest

from tests.lab import Lab, Netns, run
from wg_pod_hook.errors import SetupError
from wg_pod_hook.kernel import nft_apply
from wg_pod_hook.model import nft
from wg_pod_hook.model.config import parse_config
from wg_pod_hook.model.names import TABLE
from wg_pod_hook.model.oci import parse_annotations
from wg_pod_hook.model.plan import build_plan
from wg_pod_hook.model.settings import Settings

pytestmark = pytest.mark.root
T = TypeVar("T")

CONFIG = (
    "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"
    "Address = 10.250.0.2/24, fd77::2/64\nDNS = 10.250.0.1, fd77::53\n"
    "[Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"
    "AllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = 198.18.0.1:51820\n"
)
# What a full-featured container gets: port remapping, the reply path,
# DNS redirect and restriction, the kill switch.
ANNOTATIONS = {
    "wg-pod.config": "/etc/wg/office.conf",
    "wg-pod.port-remapping": "80:8080,53/udp:5353",
    "wg-pod.kill-switch": "on",
    "wg-pod.delete-default": "true",
}
# The last command fails in the kernel: the whole batch must go with it.
REJECTED = "delete table inet wg-pod-no-such\n"


def ruleset() -> str:
    request = parse_annotations(ANNOTATIONS)
    plan = build_plan("0123456789abcdef" * 4, 4242, request, parse_config(CONFIG, "x"), Settings())
    text = nft.render(plan, (ip_network("10.88.0.0/16"), ip_network("fd77:ff::/64")))
    assert text is not None
    return text


@pytest.fixture(params=["libnftables", "nft"])
def applier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """What applies the ruleset: in-process (libnftables), or the fallback
    (nsenter + nft) as taken when python3-nftables is missing."""
    if request.param == "nft":
        monkeypatch.setitem(sys.modules, "nftables", None)  # `import nftables` fails
    else:
        assert nft_apply._libnftables() is not None, "no python3-nftables here: run scripts/setup"
    return str(request.param)


def apply(ns: Netns, ruleset: str) -> None:
    """nft.apply in ``ns``, through an fd opened on it, as the hook does."""
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nft_apply.apply(fd, ruleset)
    finally:
        os.close(fd)


def in_netns(ns: Netns, work: Callable[[Callable[[T], None]], None], timeout: float) -> T:
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return nft_apply.in_netns(fd, work, timeout)
    finally:
        os.close(fd)


def listed(ns: Netns) -> str | None:
    """The wg-pod table as nft lists it, None when there is none."""
    done = run(["nsenter", f"--net={ns.path}", "nft", "list", "table", "inet", TABLE], check=False)
    return done.stdout if done.returncode == 0 else None


def test_the_ruleset_is_applied_and_reads_back(
    netns: Netns, applier: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wg_pod_hook.kernel.nft_apply")
    apply(netns, ruleset())
    table = listed(netns)
    assert table is not None
    assert 'iifname "office" tcp dport 80 redirect to :8080' in table
    assert 'iifname "office" udp dport 53 redirect to :5353' in table
    assert "type filter hook output priority filter; policy drop;" in table
    assert "dnat ip to 10.250.0.1" in table
    assert table.count("chain ") == 6
    if applier == "libnftables":
        assert "in-process (libnftables)" in caplog.text
        assert "run: nsenter" not in caplog.text
    else:
        assert "apply nftables with nsenter and nft: no Python module nftables" in caplog.text
        assert re.search(r"run: nsenter --net=/proc/self/fd/\d+ -- nft -f -", caplog.text)
    # A rerun converges on the same table.
    apply(netns, ruleset())
    assert listed(netns) == table


def test_both_ways_apply_the_same_table(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    in_process, with_nft = lab.netns(), lab.netns()
    apply(in_process, ruleset())
    monkeypatch.setitem(sys.modules, "nftables", None)
    apply(with_nft, ruleset())
    assert listed(in_process) == listed(with_nft) is not None


def test_a_rejected_batch_fails_in_one_line_and_changes_nothing(netns: Netns, applier: str) -> None:
    apply(netns, ruleset())
    before = listed(netns)
    with pytest.raises(SetupError) as info:
        apply(netns, ruleset().replace('"office"', '"other"') + REJECTED)
    message = str(info.value)
    assert message.startswith("apply nftables nft: /dev/stdin:")
    assert "Error: Could not process rule: No such file or directory" in message
    assert "delete table inet wg-pod-no-such" in message  # the failing line, not the first
    assert "\n" not in message and len(info.value.cause) <= 300
    assert listed(netns) == before


def test_a_syntax_error_applies_nothing(netns: Netns, applier: str) -> None:
    with pytest.raises(SetupError) as info:
        apply(netns, ruleset().replace("policy drop", "policy dorp"))
    assert str(info.value).startswith("apply nftables nft: /dev/stdin:")
    assert "policy dorp" in str(info.value)
    assert listed(netns) is None


def test_both_ways_word_a_failure_alike(netns: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = []
    for bad in (ruleset() + REJECTED, ruleset().replace("policy drop", "policy dorp")):
        with pytest.raises(SetupError) as in_process:
            apply(netns, bad)
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "nftables", None)
            with pytest.raises(SetupError) as with_nft:
                apply(netns, bad)
        messages.append(str(in_process.value))
        assert str(in_process.value) == str(with_nft.value)
    assert messages[0] != messages[1]


def test_the_callers_namespace_never_changes(netns: Netns) -> None:
    mine = os.readlink("/proc/thread-self/ns/net")
    theirs = f"net:[{os.stat(netns.path).st_ino}]"
    assert mine != theirs
    apply(netns, ruleset())
    assert os.readlink("/proc/thread-self/ns/net") == mine
    # The work itself ran in theirs.
    seen = in_netns(netns, lambda report: report(os.readlink("/proc/thread-self/ns/net")), 5.0)
    assert seen == theirs
    assert os.readlink("/proc/thread-self/ns/net") == mine
    with pytest.raises(SetupError):
        apply(netns, "no such command\n")
    assert os.readlink("/proc/thread-self/ns/net") == mine


def test_the_deadline_bounds_the_wait(netns: Netns) -> None:
    """The wait ends at its deadline while the work is still blocked: the
    work cannot end before this test lets it, after the wait returned."""
    release, ended = threading.Event(), threading.Event()

    def work(report: Callable[[int], None]) -> None:
        release.wait(30)  # released below; 30 s only if the wait ignored its deadline
        ended.set()

    try:
        with pytest.raises(SetupError) as info:
            in_netns(netns, work, 0.2)
        assert not ended.is_set(), "the wait returned only once the work had ended"
        assert str(info.value) == "apply nftables nft: no answer within 0.2s"
    finally:
        release.set()
    assert ended.wait(10)


def test_the_answer_comes_before_the_tidying_up(netns: Netns) -> None:
    """The caller has the answer while the work is still tidying up (as
    closing libnftables' socket waits for the kernel): the tidying cannot
    end before this test lets it, after the answer came."""
    release, ended = threading.Event(), threading.Event()

    def work(report: Callable[[int], None]) -> None:
        report(7)
        release.wait(30)
        ended.set()

    try:
        assert in_netns(netns, work, 60.0) == 7
        assert not ended.is_set(), "the answer came only once the work had ended"
    finally:
        release.set()
    assert ended.wait(10)


def test_a_failure_in_the_thread_is_raised_in_the_caller(netns: Netns) -> None:
    def work(report: Callable[[int], None]) -> None:
        raise SetupError("apply nftables", "nft", "it failed")

    with pytest.raises(SetupError) as info:
        in_netns(netns, work, 5.0)
    assert str(info.value) == "apply nftables nft: it failed"
