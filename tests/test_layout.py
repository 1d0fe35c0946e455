"""The layout the README's module map draws, checked: no import circle, and the database behind one seam
(only the backends, store/sqlite/ and store/postgres/, import a database driver or hold SQL; the rest names
the Store protocol's records).

The same graph is printed by `uv run python tools/import_graph.py` (exit code 1 on a circle).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mcp_memory"
BACKENDS = (PACKAGE / "store" / "sqlite", PACKAGE / "store" / "postgres")
DRIVERS = {"sqlite3", "sqlean", "sqlite_vec", "psycopg", "psycopg_pool", "pgvector"}
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|PRAGMA)\b"
)
# Modules outside the backend that still import it, each for a stated reason. The list only shrinks.
REACHES_THE_BACKEND = {
    "mcp_memory.manager": "builds the SQLite store it hands to the services",
    "mcp_memory.server.app": "refuses a file that is not a memory database before the handshake",
    "mcp_memory.recall.keywords": "the in-memory copies take FTS5's query words, constants and BM25 idf (store/sqlite/fts.py)",
}


def import_graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources() -> dict[str, Path]:
    tool = import_graph()
    return {tool.module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_package_has_no_import_circle() -> None:
    tool = import_graph()
    edges = tool.graph()
    assert len(edges) > 50
    assert tool.circles(edges) == []


def test_the_circle_finder_finds_a_circle() -> None:
    tool = import_graph()
    assert tool.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_backend_imports_a_database_driver() -> None:
    outside = {
        name: sorted(found)
        for name, path in sources().items()
        if not any(backend in path.parents for backend in BACKENDS)
        and (found := {n.split(".")[0] for n in _imported_names(ast.parse(path.read_text()))} & DRIVERS)
    }
    assert outside == {}


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_only_the_backend_holds_sql() -> None:
    outside = {
        name: [text for text in _code_strings(ast.parse(path.read_text())) if SQL.search(text)]
        for name, path in sources().items()
        if not any(backend in path.parents for backend in BACKENDS)
    }
    assert {name: found for name, found in outside.items() if found} == {}


def test_the_sql_check_sees_sql() -> None:
    tree = ast.parse('"""SELECT x FROM docs is fine in a docstring."""\nq = "SELECT id FROM episodes"\n')
    assert [text for text in _code_strings(tree) if SQL.search(text)] == ["SELECT id FROM episodes"]


def test_only_the_listed_modules_reach_into_the_backend() -> None:
    tool = import_graph()
    edges = tool.graph()
    reaching = {
        name
        for name, targets in edges.items()
        if not name.startswith(("mcp_memory.store.sqlite", "mcp_memory.store.postgres"))
        and any(t.startswith(("mcp_memory.store.sqlite", "mcp_memory.store.postgres")) for t in targets)
    }
    assert reaching == set(REACHES_THE_BACKEND)


def test_the_protocol_and_records_stand_apart_from_any_backend() -> None:
    tool = import_graph()
    edges = tool.graph()
    for module in ("mcp_memory.store.protocol", "mcp_memory.store.records"):
        assert not any(
            t.startswith(("mcp_memory.store.sqlite", "mcp_memory.store.postgres")) for t in edges[module]
        )
