"""Damaged and hostile database files: refused with one line that says what to do, and never modified.

Each case is checked twice: opening a `Store` on it (fast), and starting the installed console script on
it (the real path: stdout stays empty, stderr ends with one `mcp-memory: ...` line, no traceback).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mcp_memory.errors import EmbedderMismatch, StoreError
from mcp_memory.models import GroupInfo
from mcp_memory.store.sqlite.store import Store
from tests.helpers import SEEDED_AT

Maker = Callable[[Path], Path]


def store_on(path: Path, name: str = "hashing-384", dimension: int = 384) -> Store:
    return Store(path, embedder_name=name, dimension=dimension, embedder_kind="hashing")


def ours(tmp_path: Path, name: str = "hashing-384", dimension: int = 384) -> Path:
    path = tmp_path / "ours.db"
    store = store_on(path, name, dimension)
    store.insert_group(GroupInfo(group_id="g", user_ids=["u"], agent_ids=[], created_at=SEEDED_AT))
    store.close()
    return path


def a_folder(tmp_path: Path) -> Path:
    (tmp_path / "folder.db").mkdir()
    return tmp_path / "folder.db"


def random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "random.db"
    path.write_bytes(os.urandom(8192))
    return path


def truncated(tmp_path: Path) -> Path:
    data = ours(tmp_path).read_bytes()
    path = tmp_path / "truncated.db"
    path.write_bytes(data[: len(data) // 2])
    return path


def header_only(tmp_path: Path) -> Path:
    path = tmp_path / "header.db"
    path.write_bytes(ours(tmp_path).read_bytes()[:100])
    return path


def another_application(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes(body) VALUES ('do not touch')")
    return path


def another_application_with_a_meta_table(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 42")
        conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('embedder_name', 'x')")
    return path


def another_embedder(tmp_path: Path) -> Path:
    return ours(tmp_path, name="all-MiniLM-L6-v2", dimension=384)


def another_dimension(tmp_path: Path) -> Path:
    return ours(tmp_path, name="hashing-384", dimension=256)


CASES: dict[str, tuple[Maker, str]] = {
    "a folder": (a_folder, "is a folder; pass --db with a file path"),
    "random bytes": (random_bytes, "is not an SQLite database"),
    "a truncated file": (truncated, "is damaged"),
    "only the header left": (header_only, "is damaged"),
    "another application's database": (another_application, "another application's SQLite database"),
    "another application's with a meta table": (
        another_application_with_a_meta_table,
        "another application's SQLite database",
    ),
    "another embedder": (another_embedder, "--embedder hashing"),
    "another dimension": (another_dimension, "(256 dims)"),
}


def snapshot(folder: Path) -> list[tuple[str, bytes | None]]:
    return sorted(
        (str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")
    )


@pytest.mark.parametrize("case", CASES)
def test_a_store_refuses_the_file_with_advice_and_leaves_it_as_it_was(tmp_path: Path, case: str) -> None:
    make, advice = CASES[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(StoreError, match=advice.replace("(", r"\(").replace(")", r"\)")):
        store_on(path)
    assert snapshot(tmp_path) == before


def test_an_empty_file_becomes_a_new_database_marked_as_ours(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = store_on(path)
    assert store.read("PRAGMA application_id")[0][0] == 0x4D43506D
    store.close()


def test_a_database_from_before_the_application_id_is_still_recognised_as_ours(tmp_path: Path) -> None:
    path = ours(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 0")
    store_on(path).close()


def test_a_mismatched_embedder_is_refused_before_any_migration_touches_an_older_file(tmp_path: Path) -> None:
    path = ours(tmp_path, name="all-MiniLM-L6-v2")
    with sqlite3.connect(path) as conn:  # as if written by an older mcp-memory
        conn.execute("PRAGMA user_version = 9")
    before = path.read_bytes()
    with pytest.raises(EmbedderMismatch):
        store_on(path)
    assert path.read_bytes() == before


def console_script() -> Path:
    return Path(sys.executable).parent / "mcp-memory"


def start(
    db: Path, *, wrapper: tuple[str, ...] = (), command: str = "serve"
) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(db.parent),
        "PATH": os.environ.get("PATH", os.defpath),
        "MCP_MEMORY_EMBEDDER": "hashing",
    }
    return subprocess.run(
        [*wrapper, str(console_script()), "--db", str(db), command],
        input="", capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def assert_refused_in_one_line(run: subprocess.CompletedProcess[str], advice: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stdout == "", "stdout carries only the protocol"
    assert "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("mcp-memory: ") and advice in last, run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "stats"])
@pytest.mark.parametrize("case", CASES)
def test_the_console_script_refuses_the_file_in_one_line_and_leaves_it_as_it_was(
    tmp_path: Path, case: str, command: str
) -> None:
    make, advice = CASES[case]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    assert_refused_in_one_line(start(path, command=command), advice)
    assert snapshot(tmp_path) == before


WITHOUT_PRIVILEGES = ("unshare", "--user")  # the same uid, with no capability: file modes apply, even to root


@pytest.mark.slow
def test_a_read_only_database_file_is_refused_in_one_line(tmp_path: Path) -> None:
    path = ours(tmp_path)
    path.chmod(0o444)
    before = snapshot(tmp_path)
    assert_refused_in_one_line(start(path, wrapper=WITHOUT_PRIVILEGES), "is read-only for this user")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_database_in_a_read_only_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    path = ours(folder)
    folder.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        assert_refused_in_one_line(start(path, wrapper=WITHOUT_PRIVILEGES), "is read-only for this user")
        assert snapshot(tmp_path) == before
    finally:
        folder.chmod(0o755)
