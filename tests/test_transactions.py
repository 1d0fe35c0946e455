"""Transactions under faults: a failed COMMIT rolls back, nested savepoints survive errors, nothing is
acknowledged that another connection cannot read."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import sqlean
import sqlite_vec

from mcp_memory.errors import StoreError
from mcp_memory.models import GroupInfo
from mcp_memory.store.sqlite.store import Store
from tests.helpers import SEEDED_AT, seed_store


def open_store(path: Path) -> Store:
    return Store(path, embedder_name="test-embedder", dimension=4)


def count_from_another_connection(path: Path, sql: str) -> int:
    with closing(sqlean.connect(str(path))) as conn:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        return int(conn.execute(sql).fetchone()[0])


def group_row(group_id: str) -> GroupInfo:
    return GroupInfo(group_id=group_id, user_ids=["u"], agent_ids=[], created_at=SEEDED_AT)


def failing_commit(conn: object) -> None:
    """A write whose COMMIT fails: a deferred foreign key points at a session that does not exist."""
    conn.execute("PRAGMA defer_foreign_keys = ON")  # type: ignore[attr-defined]
    conn.execute(  # type: ignore[attr-defined]
        "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, content, "
        "memory_type, importance, timestamp, ts_epoch, created_at, content_hash) "
        "VALUES ('g', 'no such session', 1, 'u', 'user', 'lost?', 'message', 0.5, "
        "'2024-01-01T00:00:00+00:00', 0, '2024-01-01T00:00:00+00:00', 'h')"
    )


def test_a_failed_commit_is_rolled_back_and_later_writes_on_the_thread_are_really_committed(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "m.db")
    seed_store(store)
    with pytest.raises(sqlean.IntegrityError):
        store.write(failing_commit)
    assert not store._conn().in_transaction  # noqa: SLF001 - the state the bug left behind
    assert store.insert_group(group_row("after"))
    assert (
        count_from_another_connection(store.path, "SELECT count(*) FROM groups WHERE group_id = 'after'") == 1
    )
    assert count_from_another_connection(store.path, "SELECT count(*) FROM episodes") == 0


def test_nested_savepoints_roll_back_only_their_own_part_and_have_unique_names(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    with store.atomic() as conn:
        conn.execute("INSERT INTO meta(key, value) VALUES ('outer', '1')")
        with store.atomic():
            conn.execute("INSERT INTO meta(key, value) VALUES ('kept', '1')")
            with pytest.raises(ValueError), store.atomic():
                conn.execute("INSERT INTO meta(key, value) VALUES ('inner', '1')")
                raise ValueError("the innermost part fails")
    keys = {row[0] for row in store.read("SELECT key FROM meta")}
    assert {"outer", "kept"} <= keys
    assert "inner" not in keys


def test_an_error_that_rolled_back_the_whole_transaction_is_not_masked_by_the_savepoint_cleanup(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "m.db")

    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.atomic() as conn:
        conn.execute("INSERT INTO meta(key, value) VALUES ('outer', '1')")
        with store.atomic():
            conn.execute("ROLLBACK")  # as SQLite does by itself on SQLITE_FULL or an I/O error
            raise Boom
    assert not store._conn().in_transaction  # noqa: SLF001
    assert store.get_meta("outer") is None
    store.set_meta("after", "1")
    assert count_from_another_connection(store.path, "SELECT count(*) FROM meta WHERE key = 'after'") == 1


def test_a_transaction_that_sqlite_rolled_back_is_reported_not_acknowledged(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")

    def swallow(conn: object) -> None:
        conn.execute("INSERT INTO meta(key, value) VALUES ('first', '1')")  # type: ignore[attr-defined]
        conn.execute("ROLLBACK")  # type: ignore[attr-defined]

    with pytest.raises(StoreError, match="rolled back"):
        store.write(swallow)
    assert store.get_meta("first") is None


@pytest.mark.slow
@pytest.mark.reliability
def test_a_full_disk_fails_writes_cleanly_and_the_next_write_after_freeing_space_is_committed(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "small"
    folder.mkdir()
    run = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "--propagation", "private",
         sys.executable, "-m", "tests.faults.disk_full", str(folder)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["errors"], "the tmpfs never filled up"
    assert all("full" in error for error in report["errors"]), report["errors"]
    assert not report["left_open"]
    assert report["integrity"] == "ok"
    # every acknowledged write is there, nothing that failed is, and the write after freeing space landed
    assert report["stored"] == sorted([*report["acknowledged"], report["after"]])
