"""The package's import graph: which of its modules import which, and any circle among them.

Run: `uv run python tools/import_graph.py [--show] [--runtime]`. Exit code 1 when there is a circle (each is
printed), 0 otherwise; `--show` prints every module's imports of the package. Every import counts, those inside
functions and those only a type checker sees (`if TYPE_CHECKING:`) included: a module that names its caller's
type depends on it as much as one that imports it at run time. `--runtime` leaves the type checker's out.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "mcp_memory"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(tree: ast.AST, modules: set[str], here: str, runtime: bool = False) -> set[str]:
    """The package's modules this module imports (a name imported from a package counts when it is a module)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if runtime and isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith(PACKAGE)
        ):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(here)
    return {name for name in found if name in modules}


def graph(runtime: bool = False) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
    modules = set(paths)
    return {name: imported(ast.parse(path.read_text()), modules, name, runtime) for name, path in paths.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))  # a deep chain of imports; given back after
    try:
        for node in sorted(edges):
            if node not in index:
                connect(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", action="store_true", help="print each module's imports of the package")
    parser.add_argument("--runtime", action="store_true", help="leave out imports under TYPE_CHECKING")
    args = parser.parse_args()
    edges = graph(args.runtime)
    if args.show:
        for name in sorted(edges):
            print(f"{name}: {', '.join(sorted(edges[name])) or '-'}")
    found = circles(edges)
    for component in found:
        print("circle: " + " <-> ".join(component))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(found)} circle(s)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
