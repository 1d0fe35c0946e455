"""The SQLite layer on real files: migrations, pragmas, the embedder check, the driver choice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlean
import sqlite_vec

from mcp_memory.errors import EmbedderMismatch, StoreError
from mcp_memory.store.records import Filters, NewEpisode, SessionRecord
from mcp_memory.store.sqlite.migrations import MIGRATIONS
from mcp_memory.store.sqlite.store import Store
from tests.helpers import SEEDED_AT, seed_store


def episode(
    content: str, *, producer: str = "u", ts: float = 1_700_000_000.0, key: str | None = None
) -> NewEpisode:
    return NewEpisode(
        producer_id=producer,
        producer_role="user",
        produced_for_id=None,
        content=content,
        memory_type="message",
        importance=0.5,
        metadata_json="{}",
        timestamp="2023-11-14T22:13:20.000000+00:00",
        ts_epoch=ts,
        content_hash=content,
        dedup_key=key,
    )


def open_store(path: Path, name: str = "test-embedder", dimension: int = 4) -> Store:
    return Store(path, embedder_name=name, dimension=dimension)


def seed(store: Store) -> None:
    seed_store(store)


def insert(store: Store, episodes: list[NewEpisode], vectors: np.ndarray | None = None):
    return store.insert_episodes(
        "g", "s", episodes, vectors, index_vectors=True,
        created_at="2024-01-01T00:00:00+00:00", retry_window_start="2023-12-31T23:55:00+00:00",
    ).items  # fmt: skip


def test_every_migration_applies_in_order_from_an_empty_database(tmp_path: Path) -> None:
    store = open_store(tmp_path / "new" / "dir" / "m.db")
    assert store.schema_version == len(MIGRATIONS)
    tables = {
        row[0] for row in store.read("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")
    }
    assert {"meta", "groups", "sessions", "episodes", "episodes_fts", "episode_vectors"} <= tables
    store.close()


def test_reopening_a_migrated_database_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    open_store(path).close()
    store = open_store(path)
    assert store.schema_version == len(MIGRATIONS)
    store.close()


def test_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    assert store.read("PRAGMA journal_mode")[0][0] == "wal"
    assert store.read("PRAGMA foreign_keys")[0][0] == 1
    assert store.read("PRAGMA busy_timeout")[0][0] >= 1000
    store.close()


def test_a_database_from_a_newer_version_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = sqlean.connect(str(path))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="upgrade mcp-memory"):
        open_store(path)


def test_a_different_embedder_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    open_store(path, "model-a", 4).close()
    with pytest.raises(EmbedderMismatch, match="model-a.*4 dims.*model-b.*8 dims.*mcp-memory reindex"):
        open_store(path, "model-b", 8)


def test_reset_vectors_records_the_new_embedder_and_queues_every_episode(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = open_store(path, "model-a", 4)
    seed(store)
    insert(store, [episode("one"), episode("two")], np.eye(4, dtype=np.float32)[:2])
    store.close()
    store = Store(path, embedder_name="model-b", dimension=8, check_embedder=False)
    assert store.reset_vectors("model-b", 8) == 2
    assert len(store.pending_vectors(10)) == 2
    store.close()
    open_store(path, "model-b", 8).close()


def test_keyword_and_vector_search_apply_filters_inside_the_query(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    seed(store)
    many = [episode(f"apple pie number {i}", ts=1_700_000_000 + i) for i in range(300)]
    insert(store, many, np.tile(np.array([1, 0, 0, 0], dtype=np.float32), (300, 1)))
    late = insert(store, [episode("apple crumble", ts=1_800_000_000)], np.array([[0, 1, 0, 0]], np.float32))
    only_late = Filters(since=1_799_000_000)
    assert [i for i, _ in store.keyword_search("g", '"apple"', only_late, 5)] == [late[0].id]
    query = np.array([1, 0, 0, 0], dtype=np.float32)
    assert [i for i, _ in store.vector_search("g", query, only_late, 5)] == [late[0].id]
    store.close()


def test_deleting_episodes_removes_their_keyword_and_vector_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    seed(store)
    ids = [
        r.id
        for r in insert(store, [episode("red kite"), episode("blue kite")], np.eye(4, dtype=np.float32)[:2])
    ]
    assert store.delete_episodes("g", [ids[0]], None) == 1
    found = store.read("SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH 'content : kite'")
    assert [tuple(r) for r in found] == [(ids[1],)]
    assert [tuple(r) for r in store.read("SELECT rowid FROM episode_vectors")] == [(ids[1],)]
    store.close()


def test_a_retried_insert_with_the_same_key_returns_the_existing_row(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    seed(store)
    first = insert(store, [episode("hello", key="k1")])
    again = insert(store, [episode("hello", key="k1")])
    assert again[0].id == first[0].id and again[0].duplicate
    assert store.read("SELECT count(*) FROM episodes")[0][0] == 1
    store.close()


def test_a_failed_batch_writes_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    seed(store)
    bad = episode("")  # violates CHECK (length(content) > 0)
    with pytest.raises(sqlean.IntegrityError):
        insert(store, [episode("fine"), bad])
    assert store.read("SELECT count(*) FROM episodes")[0][0] == 0
    assert store.read("SELECT count(*) FROM episodes_fts")[0][0] == 0
    store.close()


def test_without_any_driver_that_loads_extensions_the_error_says_what_to_do(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["sqlean"] = None  # as if sqlean.py were not installed
        from mcp_memory.store.sqlite.store import Store
        from mcp_memory.errors import ExtensionLoadError
        try:
            Store({str(tmp_path / "m.db")!r}, embedder_name="x", dimension=4)
        except ExtensionLoadError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    import sqlite3

    probe = sqlite3.connect(":memory:")
    if hasattr(probe, "enable_load_extension"):
        pytest.fail(
            "this Python's sqlite3 can load extensions; the test needs one that cannot (as on our machines)"
        )
    assert "pip install sqlean.py" in out


def test_a_version_one_database_with_data_upgrades_to_the_latest_schema(tmp_path: Path) -> None:
    from mcp_memory.store.sqlite.migrations import m001_initial

    path = tmp_path / "old.db"
    conn = sqlean.connect(str(path), isolation_level=None)
    m001_initial(conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO groups VALUES ('g', '[\"u\"]', '[]', NULL, '{}', '2024-01-01T00:00:00+00:00')")
    conn.close()
    store = open_store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.vector_revision("g") == 0
    store.insert_session(
        SessionRecord(group_id="g", session_id="s", configuration={}, overrides={}, created_at=SEEDED_AT)
    )
    batch = store.insert_episodes(
        "g", "s", [episode("kept")], np.eye(4, dtype=np.float32)[:1], index_vectors=True,
        created_at="2024-01-01T00:00:00+00:00", retry_window_start="2023-12-31T23:55:00+00:00",
    )  # fmt: skip
    assert (batch.revision_before, batch.revision_after) == (0, 1)
    store.close()


def test_each_turn_is_indexed_with_its_neighbours_and_deleted_text_leaves_every_column(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "m.db")
    seed(store)
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    ids = [r.id for r in insert(store, [episode(f"{w} said") for w in words])]

    def matching(expression: str) -> list[int]:
        return sorted(
            r[0]
            for r in store.read("SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?", (expression,))
        )

    assert matching("before : alpha") == ids[1:4]  # the three turns after it hold it as context before
    assert matching("after : charlie") == ids[0:2]  # the two turns before it hold it as context after
    store.delete_episodes("g", [ids[2]], None)
    assert matching("charlie") == []
    assert matching("before : bravo") == [ids[3], ids[4]]  # contexts closed over the gap
    later = insert(store, [episode("foxtrot said")])
    assert matching("after : foxtrot") == [ids[3], ids[4]]
    assert matching("before : delta") == [ids[4], later[0].id]
    store.close()


def test_the_tasks_and_summary_counts_tables_exist_from_an_empty_database(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    tables = {row[0] for row in store.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"tasks", "summary_counts"} <= tables
    store.close()


def test_a_version_four_database_with_data_upgrades_to_tasks_and_summary_counts(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    store = open_store(path)
    seed(store)
    kept = insert(store, [episode("kept across the upgrade")], np.eye(4, dtype=np.float32)[:1])
    store.close()
    conn = sqlean.connect(str(path), isolation_level=None)  # back to version 4, as an older release left it
    conn.execute("DROP TABLE tasks")
    conn.execute("DROP TABLE summary_counts")
    conn.execute("DROP TABLE rolling_summaries")  # m008's
    conn.execute("DROP TRIGGER episodes_fts_changes_delete")  # m009's
    conn.execute("DROP TABLE fts_changes")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)  # a trigger names the vector table, and dropping a column checks triggers
    conn.execute("ALTER TABLE episodes DROP COLUMN effective_importance")  # m007's
    conn.execute("ALTER TABLE episodes DROP COLUMN updated_at")  # m011's
    conn.execute("DROP INDEX episodes_group_step")  # m012's
    conn.execute("ALTER TABLE episodes DROP COLUMN step")
    conn.execute("ALTER TABLE episodes DROP COLUMN message")
    conn.execute("DROP TABLE session_leases")  # m014
    conn.execute("ALTER TABLE groups DROP COLUMN owner")  # m015
    conn.execute("PRAGMA user_version = 4")
    conn.close()

    store = open_store(path)
    assert store.schema_version == len(MIGRATIONS) >= 6
    assert [e.content for e in store.recent_episodes("g", "s", 10)] == ["kept across the upgrade"]
    assert [i for i, _ in store.keyword_search("g", '"upgrade"', Filters(), 5)] == [kept[0].id]
    now = datetime.now(UTC)
    info = store.create_task(
        kind="summary",
        group_id="g",
        session_id="s",
        owner="me",
        now=now,
        lease_until=now + timedelta(seconds=30),
    )
    assert (found := store.get_task(info.task_id)) is not None and found.status == "processing"
    assert store.reserve_lightweight("g", "s", 3) is True
    assert store.lightweight_used("g", "s") == 1
    store.delete_session("g", "s")  # the session's counters go with it
    assert store.read("SELECT count(*) FROM summary_counts")[0][0] == 0
    store.close()


def test_a_new_vector_table_keeps_small_chunks_for_each_group(tmp_path: Path) -> None:
    """vec0 gives every partition (group) chunks of its own: at its default of 1,024 rows a group of 250
    took 1.5 MB, so new tables use VECTOR_CHUNK_SIZE."""
    from mcp_memory.store.sqlite.migrations import VECTOR_CHUNK_SIZE

    store = open_store(tmp_path / "m.db")
    try:
        [[sql]] = store.read("SELECT sql FROM sqlite_master WHERE name = 'episode_vectors'")
        assert f"chunk_size={VECTOR_CHUNK_SIZE}" in sql and VECTOR_CHUNK_SIZE == 256
    finally:
        store.close()


def test_a_version_twelve_change_log_learns_each_changes_group(tmp_path: Path) -> None:
    """m013: the entries already logged get their episode's group, and deletions log their group from then on."""
    path = tmp_path / "v12.db"
    store = open_store(path)
    seed(store)
    kept = insert(store, [episode("logged before the upgrade")], np.eye(4, dtype=np.float32)[:1])
    store.close()
    conn = sqlean.connect(str(path), isolation_level=None)  # back to version 12: a log without groups
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)  # dropping a column checks the triggers, one of which names the vector table
    conn.execute("DROP INDEX fts_changes_group")
    conn.execute("DROP TRIGGER episodes_fts_changes_delete")
    conn.execute("ALTER TABLE fts_changes DROP COLUMN group_id")
    conn.execute(
        "CREATE TRIGGER episodes_fts_changes_delete AFTER DELETE ON episodes BEGIN "
        "INSERT INTO fts_changes(episode_id) VALUES (old.id); END"
    )
    conn.execute("DROP TABLE session_leases")  # m014
    conn.execute("ALTER TABLE groups DROP COLUMN owner")  # m015
    conn.execute("PRAGMA user_version = 12")
    conn.close()

    store = open_store(path)
    try:
        assert store.schema_version == len(MIGRATIONS) == 15
        assert store.keyword_changes("g", 0, 10) and store.keyword_changes("other", 0, 10) == []
        assert {row[0] for row in store.read("SELECT group_id FROM fts_changes")} == {"g"}
        store.delete_episodes("g", [kept[0].id], None)
        head, _ = store.keyword_log("g")
        assert (head, kept[0].id) in store.keyword_changes("g", head - 1, 10)
    finally:
        store.close()
