"""wg_pod_hook.kernel._pyroute2 loads only the pyroute2 modules the hook needs,
and what it loads still works."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import wg_pod_hook.kernel._pyroute2 as p
heavy = [m for m in ("pyroute2.ndb", "pyroute2.ipdb", "pyroute2.conntrack",
                     "pyroute2.nftables", "pyroute2.ipvs", "pyroute2.iwutil") if m in sys.modules]
print("heavy:", heavy)
with p.IPRoute() as ipr:
    print("links:", len(ipr.get_links()) > 0)
print("wireguard:", p.WireGuard.__module__)
import pyroute2
print("full:", pyroute2.NDB.__name__, "pyroute2.ndb" in sys.modules)
"""


def _probe(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_loads_no_heavy_pyroute2_module_and_still_works() -> None:
    out = _probe(PROBE)
    assert "heavy: []" in out
    assert "links: True" in out
    assert "wireguard: pyroute2.netlink.generic.wireguard" in out
    # Whoever imports pyroute2 itself afterwards still gets the whole library.
    assert "full: NDB True" in out


def test_the_setup_imports_neither_iproute_nor_asyncio() -> None:
    """The setup's requests go through rtnl.py: IPRoute (and asyncio with
    it) is loaded only when a call needs it."""
    out = _probe(
        "import sys, wg_pod_hook.tunnel.lifecycle, wg_pod_hook.tunnel.teardown; "
        "print('loaded', [m for m in ('pyroute2.iproute.linux', 'asyncio') if m in sys.modules])"
    )
    assert "loaded []" in out


@pytest.mark.parametrize("module", ["wg_pod_hook.kernel.netlink", "wg_pod_hook.hook"])
def test_hook_modules_do_not_import_pyroute2_ndb(module: str) -> None:
    out = _probe(f"import sys, {module}; print('ndb' , 'pyroute2.ndb' in sys.modules)")
    assert "ndb False" in out
