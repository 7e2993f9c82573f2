"""The house has layers: no module of `sidecar/` imports one that imports it back, directly or
round a longer circle, and no package (gateway/, http/, lists/, opencode/, sdk/) does either
(issue 14). Read from the source, so an import under TYPE_CHECKING counts too: a circle there is
still a circle in the design."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "sidecar"


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in SOURCE.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The sidecar modules `path` imports (`from sidecar.x import y` counts sidecar.x.y when that is
    a module, sidecar.x otherwise)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return found


def package_of(module: str) -> str:
    """sidecar.http.routes -> sidecar.http; a top-level module stands for itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (SOURCE / parts[-1]).is_dir() else module


def circle(graph: dict[str, set[str]]) -> list[str]:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(exc.args[1])
    return []


MODULE_GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def test_no_module_imports_itself_back() -> None:
    assert circle(MODULE_GRAPH) == []


def test_no_package_imports_itself_back() -> None:
    graph: dict[str, set[str]] = {}
    for module, imported in MODULE_GRAPH.items():
        mine = package_of(module)
        graph.setdefault(mine, set()).update(package_of(other) for other in imported if package_of(other) != mine)
    assert circle(graph) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [({"sidecar.a": {"sidecar.b"}, "sidecar.b": {"sidecar.a"}}, True), ({"sidecar.a": {"sidecar.b"}}, False)],
)
def test_the_check_sees_a_circle(extra: dict[str, set[str]], expected: bool) -> None:
    assert bool(circle(extra)) is expected
