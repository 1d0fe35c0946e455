"""Save and load on PostgreSQL (store/postgres/transfer.py): a SQLite export imported through the services
exports again from PostgreSQL the same, field by field but for the mapped ids; a second import (or one of
PostgreSQL's own export) adds nothing; an export is one snapshot while others write; and records come out
in SQLite's bytewise order.

Every test runs on a throwaway PostgreSQL database (slow).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.models import GroupInfo
from mcp_memory.store.postgres.store import PostgresStore
from mcp_memory.store.protocol import Store
from mcp_memory.store.records import SessionRecord
from mcp_memory.store.sqlite.store import Store as SQLiteStore
from mcp_memory.transfer.write import ImportResult
from tests.postgres import fresh_database
from tests.test_transfer import by_kind, expected_after_import, manager_on
from tests.transfer_data import TABLES, fill, read_export

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GROUPS = ["ana", "team"]
KINDS = {
    "groups": "group", "sessions": "session", "memories": "memory", "facts": "fact",
    "rolling_summaries": "rolling_summary", "summary_counts": "summary_count",
}  # fmt: skip
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
async def origin(tmp_path: Path) -> list[dict[str, Any]]:
    """A SQLite database filled through the services, exported to origin.jsonl: its lines."""
    async with manager_on(tmp_path / "origin.db") as manager:
        await fill(manager)
        await manager.transfer.export_memories(tmp_path / "origin.jsonl")
    return read_export(tmp_path / "origin.jsonl")


def on_postgres(url: str) -> MemoryManager:
    return MemoryManager(Config(db_url=url, embedder="hashing"))


async def import_into(url: str, path: Path) -> ImportResult:
    async with on_postgres(url) as manager:
        result = await manager.transfer.import_memories(path)
        assert manager.store.pending_count() == 0  # the import embedded what it brought
    return result


async def export_from(url: str, path: Path) -> list[dict[str, Any]]:
    async with on_postgres(url) as manager:
        await manager.transfer.export_memories(path, GROUPS)
    return read_export(path)


async def other_memories(url: str) -> None:
    """Rows of the database's own first, so imported memories and facts get other ids than they had."""
    async with on_postgres(url) as manager:
        await manager.groups.create_group("other", ["olga"])
        await manager.sessions.open_session("other", "s")
        await manager.memories.add_memories(
            "other", "s", [{"content": f"note {i}", "producer": "olga"} for i in range(5)]
        )
        await manager.facts.add_fact("other", "Olga", "plays", "chess")


def rows(url: str) -> dict[str, list[str]]:
    """Every row an import could write, as JSON text in a stable order, and the keyword change feed."""
    with psycopg.connect(url) as conn:
        found = {
            table: [r[0] for r in conn.execute(f"SELECT to_jsonb(t)::text AS r FROM {table} t ORDER BY r")]
            for table in (*TABLES, "keyword_rows")
        }
        found["changes"] = [str(r) for r in conn.execute("SELECT group_id, seq FROM changes ORDER BY 1, 2")]
    return found


def without_time(header: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in header.items() if k not in ("exported_at", "database_id")}


def tallies(result: ImportResult) -> dict[str, tuple[int, int]]:
    kinds = ("groups", "sessions", "memories", "facts", "rolling_summaries")
    return {kind: (getattr(result, kind).added, getattr(result, kind).existing) for kind in kinds}


async def test_a_sqlite_export_imported_into_postgres_exports_again_the_same(
    origin: list[dict[str, Any]], pg: str, tmp_path: Path
) -> None:
    await other_memories(pg)
    result = await import_into(pg, tmp_path / "origin.jsonl")
    memories = origin[0]["counts"]["memories"]
    assert tallies(result) == {
        "groups": (2, 0), "sessions": (5, 0), "memories": (memories, 0), "facts": (4, 0),
        "rolling_summaries": (1, 0),
    }  # fmt: skip
    copy = await export_from(pg, tmp_path / "copy.jsonl")
    assert without_time(copy[0]) == without_time(origin[0])
    assert copy[0]["database_id"] != origin[0]["database_id"]
    assert by_kind(copy, "memory")[0]["id"] != by_kind(origin, "memory")[0]["id"]  # ids were mapped
    expected = expected_after_import(origin, copy)
    assert [line["kind"] for line in copy[1:]] == [line["kind"] for line in expected]
    for got, wanted in zip(copy[1:], expected, strict=True):
        assert got == wanted


async def test_a_second_import_into_postgres_adds_nothing(
    origin: list[dict[str, Any]], pg: str, tmp_path: Path
) -> None:
    await import_into(pg, tmp_path / "origin.jsonl")
    first = await export_from(pg, tmp_path / "first.jsonl")
    before = rows(pg)
    memories, facts = origin[0]["counts"]["memories"], origin[0]["counts"]["facts"]
    nothing_new = {
        "groups": (0, 2), "sessions": (0, 5), "memories": (0, memories), "facts": (0, facts),
        "rolling_summaries": (0, 0),
    }  # fmt: skip
    assert tallies(await import_into(pg, tmp_path / "origin.jsonl")) == nothing_new
    assert rows(pg) == before  # not a row written, not a keyword row refreshed
    assert tallies(await import_into(pg, tmp_path / "first.jsonl")) == nothing_new  # its own export
    assert rows(pg) == before
    again = await export_from(pg, tmp_path / "again.jsonl")
    assert again[0]["counts"] == first[0]["counts"] and again[1:] == first[1:]


async def test_an_export_of_postgres_is_one_snapshot_while_others_write(
    origin: list[dict[str, Any]], pg: str, tmp_path: Path
) -> None:
    await import_into(pg, tmp_path / "origin.jsonl")
    async with on_postgres(pg) as manager:
        with closing(manager.store.export_records(GROUPS)) as records:
            kind, counts = next(records)  # the snapshot is taken here
            await manager.memories.add_memories(
                "ana", "chat", [{"content": "written during the export", "producer": "ana"}]
            )
            await manager.facts.add_fact("ana", "Ana", "works at", "the harbour")
            await manager.sessions.delete_session("team", "standup")
            rest = list(records)
        after = manager.store.export_records(GROUPS)
        later = next(after)[1]
        after.close()
    assert kind == "counts" and counts == origin[0]["counts"]
    assert Counter(k for k, _ in rest) == {KINDS[name]: n for name, n in counts.items() if n}
    contents = [line["content"] for k, line in rest if k == "memory"]
    assert "written during the export" not in contents and "I shipped the export" in contents
    standup, added = 2, 2  # the deleted session's memories; the new memory and the new fact's
    assert (later["memories"], later["facts"]) == (counts["memories"] - standup + added, counts["facts"] + 1)


def export_order(store: Store) -> tuple[list[str], list[tuple[str, str]]]:
    """The groups to export, and each group and session line of their export as (kind, id)."""
    ids = ["Bob", "_x", "ana", "émile", "Zoe"]
    for group_id in ids:
        store.insert_group(GroupInfo(group_id=group_id, user_ids=["u"], agent_ids=[], created_at=T0))
    for session_id in ("b", "B", "-a", "a"):  # all made at one time: ordered by id
        record = SessionRecord(
            group_id="ana", session_id=session_id, configuration={}, overrides={}, created_at=T0
        )
        store.insert_session(record)
    with closing(store.export_records(ids)) as records:
        lines = [(kind, line) for kind, line in records if kind != "counts"]
    order = [(kind, str(line.get("session_id", line["group_id"]))) for kind, line in lines]
    return store.export_group_ids(), order


def test_records_come_out_in_sqlite_bytewise_order(pg: str, tmp_path: Path) -> None:
    sqlite = SQLiteStore(tmp_path / "order.db", embedder_name="contract-4", dimension=4)
    try:
        expected = export_order(sqlite)
    finally:
        sqlite.close()
    assert expected[0] == ["Bob", "Zoe", "_x", "ana", "émile"]
    assert [name for kind, name in expected[1] if kind == "session"] == ["-a", "B", "a", "b"]
    store = PostgresStore(pg, embedder_name="contract-4", dimension=4)
    try:
        assert export_order(store) == expected
    finally:
        store.close()
