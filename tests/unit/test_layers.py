"""The package's layers, as docs/how-it-works.md's table lays them out: a module
imports only from its own layer and the layers below it (base, then
model/ and state/, kernel/, tunnel/, the entry points on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "wg_pod_hook"
BASE = {"errors", "runtime", "namespaces", "logs", "__init__"}
# Each layer, and the layers it may import from.
MAY_IMPORT = {
    "base": {"base"},
    "model": {"base", "model"},
    "state": {"base", "state"},
    "kernel": {"base", "model", "state", "kernel"},
    "tunnel": {"base", "model", "state", "kernel", "tunnel"},
    "entry": {"base", "model", "state", "kernel", "tunnel", "entry"},
}


def layer(module: str) -> str:
    """The layer of ``wg_pod_hook.X[.Y...]``."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in BASE:
        return "base"
    if parts[0] in ("model", "state", "kernel", "tunnel"):
        return parts[0]
    return "entry"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[str]:
    """Every wg_pod_hook module ``path`` imports, lazy imports included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "wg_pod_hook":
                continue
            # ``from . import x``: the module x where there is one
            found += [
                f"{source}.{a.name}" if is_module(f"{source}.{a.name}") else source
                for a in node.names
            ]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "wg_pod_hook"]
    return found


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_a_module_imports_only_from_its_layer_and_below(path: Path) -> None:
    mine = layer(module_name(path))
    wrong = [m for m in imports(path) if layer(m) not in MAY_IMPORT[mine]]
    assert wrong == [], f"{mine} imports from above: {wrong}"


def test_the_check_reads_relative_and_lazy_imports() -> None:
    """What it reads of a module it knows: the tunnel's status imports the
    backends relatively, and the CLI imports the daemon inside a function."""
    assert "wg_pod_hook.kernel.backends" in imports(PACKAGE / "tunnel" / "status.py")
    assert "wg_pod_hook.daemon" in imports(PACKAGE / "cli.py")
