"""Imports flow one way: no import cycle between azimds's packages, and the fleet model, signing
and the store import nothing of the planes, the node or the tools built on them.

The node builds itself out of the planes, so they see it only through the small protocols they
declare (``admin/core.NodeView``, ``guest/events.Writer``); nothing but the CLI and the kit imports
``node``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import azimds

ROOT = Path(azimds.__file__).parent
PACKAGES = ("serving", "node", "host", "config", "guest", "fleet", "store", "signing", "admin")
PACKAGES += ("cli", "kit", "client", "wireserver")
# The model and its storage sit at the bottom: they know no plane, no node, no tool.
FOUNDATIONS = ("fleet", "signing", "store")
ABOVE_THEM = ("guest", "wireserver", "admin", "serving", "node", "cli", "kit")


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "azimds" and len(parts) > 1 else None


def _imported(path: Path) -> set[str]:
    """The azimds modules a file imports, at any depth (a lazy import is still a dependency)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).with_suffix("")
        package = _package_of(".".join(("azimds", *relative.parts)))
        if package in graph:
            for module in _imported(path):
                target = _package_of(module)
                if target in graph and target != package:
                    graph[package].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph, as the packages along it; [] when there is none."""
    done: set[str] = set()

    def visit(package: str, path: list[str]) -> list[str]:
        if package in path:
            return [*path[path.index(package) :], package]
        if package in done:
            return []
        for target in sorted(graph[package]):
            found = visit(target, [*path, package])
            if found:
                return found
        done.add(package)
        return []

    for package in sorted(graph):
        found = visit(package, [])
        if found:
            return found
    return []


def test_every_package_is_in_the_graph() -> None:
    on_disk = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    assert on_disk == set(PACKAGES)


def test_only_the_cli_and_the_kit_import_the_node() -> None:
    graph = package_graph()
    assert {p for p in graph if "node" in graph[p]} == {"cli", "kit"}


def test_packages_import_each_other_one_way() -> None:
    cycle = _cycle(package_graph())
    assert not cycle, " -> ".join(cycle)


def test_the_model_signing_and_the_store_import_no_plane_node_or_tool() -> None:
    graph = package_graph()
    wrong = {
        p: sorted(graph[p] & set(ABOVE_THEM)) for p in FOUNDATIONS if graph[p] & set(ABOVE_THEM)
    }
    assert not wrong


def test_a_cycle_is_found() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []
