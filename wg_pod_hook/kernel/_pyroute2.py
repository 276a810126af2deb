"""The few pyroute2 classes the hook needs, loaded without pyroute2's
package ``__init__``.

``import pyroute2`` imports every module of the library (NDB, IPDB,
conntrack, nftables, IPVS, nl80211, ...): about 50 ms of the hook's
start-up on these machines, paid on every container start.  Python only
runs a package's ``__init__`` when the package is first imported; if the
package is already in ``sys.modules`` its submodules load on their own.  So
the packages on the way to the modules we need (``pyroute2``,
``pyroute2.iproute``) are registered as empty package modules, and their
real ``__init__`` runs later, on first access to a name it would have
defined, so any other user of ``pyroute2`` in the same process still sees
the whole library.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

_LAZY_PACKAGES = ("pyroute2", "pyroute2.iproute")


def _register_lazy(name: str) -> None:
    if name in sys.modules:
        return  # already imported for real (or already registered): nothing to save
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"cannot find package {name}")
    module = importlib.util.module_from_spec(spec)
    state = {"loaded": False}

    def __getattr__(attr: str) -> Any:  # PEP 562: names __init__ would define
        if attr.startswith("__") or state["loaded"]:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}")
        # ``from pyroute2 import config`` asks for the attribute first:
        # a submodule is imported on its own, without the __init__.
        if importlib.util.find_spec(f"{name}.{attr}") is not None:
            return importlib.import_module(f"{name}.{attr}")
        state["loaded"] = True
        del module.__dict__["__getattr__"]
        assert spec.loader is not None
        spec.loader.exec_module(module)
        return getattr(module, attr)

    module.__dict__["__getattr__"] = __getattr__
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


for _name in _LAZY_PACKAGES:
    _register_lazy(_name)

from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # noqa: E402
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.generic.wireguard import WireGuard

# Loaded on first use: IPRoute brings asyncio and the request machinery
# along (some 100 ms), which the setup's own requests do without (rtnl.py).
_ON_FIRST_USE = {
    "IPRoute": "pyroute2.iproute.linux",
    "WireGuard": "pyroute2.netlink.generic.wireguard",
}


def __getattr__(attr: str) -> Any:
    if attr not in _ON_FIRST_USE:
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    value = getattr(importlib.import_module(_ON_FIRST_USE[attr]), attr)
    globals()[attr] = value
    return value


def preload() -> None:
    """Load them now: for a process whose forks may need them (the daemon)."""
    for attr in _ON_FIRST_USE:
        __getattr__(attr)


__all__ = ["IPRoute", "NetlinkError", "WireGuard", "ifaddrmsg", "ifinfmsg", "rtmsg"]
