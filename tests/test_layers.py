"""The package's house rules, checked on its source: wings import only wings below them, and no import circles.

Read from the source with :mod:`ast` (nothing is imported), so a rule broken
in a module no test imports is still caught. Imports under ``TYPE_CHECKING``
count for the floors (a type named from a higher floor is a dependency on
it all the same) but not for circles (they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "audit_plugin"

FLOORS: dict[str, float] = {
    "exceptions": 0,
    "masking": 0,  # secrets masked out of every text shown (exceptions use it)
    "model": 1,
    "integrity": 2,
    "storage": 3,
    "hookspecs": 3,  # the extension contract, beside the backend contract it names
    "privacy": 4,
    "telemetry": 5,
    "trail": 6,
    "hooks": 7,
    "__init__": 7.5,  # the public face: what users import (integrations may use it too)
    "integrations": 8,
    "jetstream": 8,
    "sinks": 8,
    "reading": 9,
    "testing": 10,
    "web": 10,
    "cli": 11,
}
"""Each wing (or top-level module) and its floor; a module may import only from its own floor or below."""

MAX_TOP_LEVEL_MODULES = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, bool]]:
    """``(imported audit_plugin module, under TYPE_CHECKING)`` for every import in ``path``.

    ``from package import name`` imports the module ``package.name`` if there
    is one, else ``package`` itself.
    """
    tree = ast.parse(path.read_text(), str(path))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "audit_plugin" or name.startswith("audit_plugin."):
                yield name, id(node) in guarded


def known_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolved(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name is (``from audit_plugin.x import y``: ``y`` if a module, else ``x``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def graph(*, with_type_checking: bool) -> dict[str, set[str]]:
    modules = known_modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, type_only in imports(path, modules):
            target = resolved(imported, modules)
            if target is not None and target != name and (with_type_checking or not type_only):
                edges[name].add(target)
    return edges


def test_every_wing_has_a_floor() -> None:
    assert {wing(name) for name in known_modules()} <= set(FLOORS)


def test_no_wing_imports_a_higher_one() -> None:
    upward = [
        f"{source} ({wing(source)}) imports {target} ({wing(target)})"
        for source, targets in graph(with_type_checking=True).items()
        for target in targets
        if FLOORS[wing(target)] > FLOORS[wing(source)]
    ]
    assert upward == []


def test_the_viewer_does_not_import_the_command_line() -> None:
    assert [
        (source, target)
        for source, targets in graph(with_type_checking=True).items()
        if wing(source) == "web"
        for target in targets
        if wing(target) == "cli"
    ] == []


def test_no_import_circles() -> None:
    edges = graph(with_type_checking=False)
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_at_most_a_handful_of_modules_directly_in_the_package() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("wing_name", sorted(name for name in FLOORS if (PACKAGE / name).is_dir()))
def test_each_wing_says_what_it_owns(wing_name: str) -> None:
    init = PACKAGE / wing_name / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{wing_name}/__init__.py has no docstring"


def test_the_public_face_imports_its_names_when_first_used() -> None:
    code = (
        "import sys, audit_plugin\n"
        "assert 'sqlalchemy' not in sys.modules and 'audit_plugin.trail' not in sys.modules\n"
        "import audit_plugin.integrity.proof_bundle\n"
        "assert 'sqlalchemy' not in sys.modules  # checking a proof bundle needs no database parts\n"
        "from audit_plugin import MessageAuditTrail, AuditError, hookspecs\n"
        "assert MessageAuditTrail.__module__ == 'audit_plugin.trail' and hookspecs.PROJECT_NAME == 'audit_plugin'\n"
        "assert sorted(audit_plugin.__all__) == sorted(n for n in audit_plugin.__all__ if hasattr(audit_plugin, n))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
