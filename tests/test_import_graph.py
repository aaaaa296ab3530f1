"""The package's import graph: no cycles, and no module imports another's private names.

Every ``import leaf...`` / ``from leaf... import ...`` of every module under src/leaf counts,
also the ones inside functions (imported on first use), since those are dependencies too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "leaf"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or "") of ``path``'s leaf imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.startswith("leaf")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("leaf"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, "") if submodule in known else (node.module, alias.name))
    return found


def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {
        name: {target for target, _ in imports(path, known) if target != name}
        for name, path in modules().items()
    }


def test_no_import_cycles():
    edges, cycles = graph(), []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_names_imported_across_modules():
    known = set(modules())
    private = [
        f"{name} imports {target}.{imported}"
        for name, path in modules().items()
        for target, imported in imports(path, known)
        if imported.startswith("_") and imported != "__version__" and target != name
    ]
    assert not private, "\n".join(private)


def test_the_graph_sees_lazy_imports():
    """The checker is not blind: leaf.cli imports leaf.predict inside a function."""
    assert "leaf.predict" in graph()["leaf.cli"]
