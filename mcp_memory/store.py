"""The SQLite layer: the only module that imports a SQLite driver or sqlite-vec.

One database file holds groups, sessions and episodes, an FTS5 keyword index and a
sqlite-vec `vec0` vector index partitioned by group. WAL, foreign keys and a busy
timeout let several server processes share the file; writes take the write lock up
front (`BEGIN IMMEDIATE`) and are retried while another process holds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mcp_memory import fact_table, fts, maintenance
from mcp_memory.errors import EmbedderMismatch, ExtensionLoadError, StoreError
from mcp_memory.schema import MIGRATIONS, vector_table_sql
from mcp_memory.vector_cache import VectorRows

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5_000
LOCK_RETRY_BUDGET_S = 60.0
EPISODE_COLUMNS = (
    "id, group_id, session_id, sequence, producer_id, producer_role, produced_for_id, content, "
    "memory_type, importance, metadata, timestamp, created_at, content_hash, retrieval_count, "
    "last_accessed_at, indexed"
)
INDEXED, PENDING, NOT_INDEXED = 1, 0, -1
TIERS = ("recent", "long_term", "pending_vectors", "not_vector_indexed")


@dataclass(frozen=True)
class NewEpisode:
    """An episode ready to be written: validated and normalised by the caller."""

    producer_id: str
    producer_role: str
    produced_for_id: str | None
    content: str
    memory_type: str
    importance: float
    metadata_json: str
    timestamp: str
    ts_epoch: float
    content_hash: str
    dedup_key: str | None


@dataclass(frozen=True)
class Filters:
    """Conditions every recalled episode must meet; applied inside each search."""

    session_id: str | None = None
    # With session_id: memories of these types from every session of the group match too
    # (a session's recall also finds the group's summaries).
    group_wide_types: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    producer: str | None = None
    role: str | None = None
    memory_types: tuple[str, ...] | None = None
    metadata: tuple[tuple[str, Any], ...] = ()
    min_importance: float | None = None


@dataclass(frozen=True)
class Inserted:
    """What happened to one episode of an insert: its id, sequence and whether it already existed."""

    id: int
    sequence: int
    duplicate: bool


@dataclass(frozen=True)
class InsertBatch:
    """The outcome of one insert transaction and the group's vector revision around it."""

    items: list[Inserted]
    revision_before: int
    revision_after: int


def _driver() -> ModuleType:
    """The first SQLite driver that can load extensions: the standard library's, else sqlean."""
    import sqlite3

    if _can_load_extensions(sqlite3):
        return sqlite3
    try:
        import sqlean  # type: ignore[import-untyped]
    except ImportError:
        raise ExtensionLoadError(
            "this Python's sqlite3 cannot load extensions and the sqlean.py package is not installed; "
            "install it with `pip install sqlean.py` (Linux, macOS) or use a Python whose sqlite3 supports "
            "enable_load_extension (python.org and Windows builds do)"
        ) from None
    if not _can_load_extensions(sqlean):
        raise ExtensionLoadError("neither sqlite3 nor sqlean can load the sqlite-vec extension here")
    return sqlean


def _can_load_extensions(module: ModuleType) -> bool:
    try:
        conn = module.connect(":memory:")
    except Exception:  # noqa: BLE001 - any failure means "not this driver"
        return False
    try:
        _load_vec(conn)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        conn.close()


def _load_vec(conn: Any) -> None:
    import sqlite_vec

    conn.enable_load_extension(True)
    try:
        sqlite_vec.load(conn)
    finally:
        conn.enable_load_extension(False)


def recorded_embedder(path: Path) -> tuple[str, int] | None:
    """The embedder name and dimension a database was built with, read without changing the file."""
    if not Path(path).exists():
        return None
    db = _driver()
    try:
        conn = db.connect(f"file:{Path(path).as_posix()}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except db.Error:
        return None
    if "embedder_name" not in rows:
        return None
    return rows["embedder_name"], int(rows["embedder_dimension"])


def vector_blob(vector: np.ndarray) -> bytes:
    """The float32 little-endian bytes sqlite-vec reads."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class Store:
    """A SQLite database of memories; every method is synchronous and thread-safe."""

    def __init__(
        self, path: Path, *, embedder_name: str, dimension: int, check_embedder: bool = True
    ) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder for the database {self.path}: {exc.strerror}; "
                "pass --db (or MCP_MEMORY_DB) with a path in a folder you can write"
            ) from None
        self.dimension = dimension
        self._db = _driver()
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._migrate()
            self._check_embedder(embedder_name, dimension, check_embedder)
        except self._db.DatabaseError as exc:
            self.close()
            raise StoreError(
                f"cannot use the database {self.path}: {exc}; if the file is not an mcp-memory database "
                "(or is damaged), move it aside and start again, or pass another --db"
            ) from None

    # -- connections and transactions -------------------------------------------------

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._open_connection()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _open_connection(self) -> Any:
        try:
            conn = self._db.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=5)
        except self._db.Error as exc:
            raise StoreError(f"cannot open the database at {self.path}: {exc}") from None
        _load_vec(conn)
        conn.row_factory = self._db.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _retry(self, fn: Any) -> Any:
        """Run `fn`, retrying while another process holds the lock, within LOCK_RETRY_BUDGET_S."""
        deadline = time.monotonic() + LOCK_RETRY_BUDGET_S
        delay = 0.01
        while True:
            try:
                return fn()
            except self._db.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"the database {self.path} stayed locked by another process for "
                        f"{LOCK_RETRY_BUDGET_S:.0f} s; nothing was written, try again"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[Any]:
        """A write transaction (BEGIN IMMEDIATE), or a savepoint when already inside one."""
        conn = self._conn()
        if conn.in_transaction:
            conn.execute("SAVEPOINT nested")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK TO nested")
                conn.execute("RELEASE nested")
                raise
            conn.execute("RELEASE nested")
            return
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._retry(lambda: conn.execute("COMMIT"))

    def write(self, fn: Any) -> Any:
        """Run `fn(conn)` in one write transaction, retried as a whole while the file is locked."""

        def attempt() -> Any:
            with self.atomic() as conn:
                return fn(conn)

        return self._retry(attempt)

    def read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        return self._retry(lambda: self._conn().execute(sql, params).fetchall())

    def close(self) -> None:
        """Close every connection this store opened; later calls fail with StoreError."""
        self._closed = True
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(Exception):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- schema -------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return int(self.read("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        def step(conn: Any) -> bool:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"the database {self.path} has schema version {version}, newer than this mcp-memory "
                    f"knows ({len(MIGRATIONS)}); upgrade mcp-memory"
                )
            if version == len(MIGRATIONS):
                return False
            log.info("migrating %s to schema version %d", self.path, version + 1)
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            return True

        while self.write(step):
            pass

    def _check_embedder(self, name: str, dimension: int, strict: bool) -> None:
        def check(conn: Any) -> tuple[str, int] | None:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "embedder_name" not in rows:
                conn.execute("INSERT INTO meta(key, value) VALUES ('embedder_name', ?)", (name,))
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('embedder_dimension', ?)", (str(dimension),)
                )
                _create_vector_table(conn, dimension)
                return None
            return rows["embedder_name"], int(rows["embedder_dimension"])

        recorded = self.write(check)
        if strict and recorded is not None and recorded != (name, dimension):
            raise EmbedderMismatch(
                f"the database {self.path} was built with embedder {recorded[0]!r} ({recorded[1]} dims) "
                f"but this server uses {name!r} ({dimension} dims); start with the embedder it was built "
                f"with (MCP_MEMORY_EMBEDDER and MCP_MEMORY_EMBEDDING_MODEL), or run "
                f"`mcp-memory reindex --db {self.path}` to re-embed every memory with the new one"
            )

    def reset_vectors(self, name: str, dimension: int) -> int:
        """Drop the vector index, record a new embedder, and mark every indexable episode pending."""

        def reset(conn: Any) -> int:
            conn.execute("DROP TRIGGER IF EXISTS episodes_vectors_delete")
            conn.execute("DROP TABLE IF EXISTS episode_vectors")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'embedder_name'", (name,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'embedder_dimension'", (str(dimension),))
            _create_vector_table(conn, dimension)
            return conn.execute(f"UPDATE episodes SET indexed = {PENDING} WHERE indexed = {INDEXED}").rowcount

        self.dimension = dimension
        return int(self.write(reset))

    # -- groups and sessions ------------------------------------------------------------

    def insert_group(self, row: dict[str, Any]) -> bool:
        """Insert a group; False when one with that id exists already."""

        def insert(conn: Any) -> bool:
            cur = conn.execute(
                "INSERT INTO groups(group_id, user_ids, agent_ids, description, configuration, created_at) "
                "VALUES (:group_id, :user_ids, :agent_ids, :description, :configuration, :created_at) "
                "ON CONFLICT(group_id) DO NOTHING",
                row,
            )
            return bool(cur.rowcount)

        return bool(self.write(insert))

    def get_group(self, group_id: str) -> Any | None:
        rows = self.read("SELECT * FROM groups WHERE group_id = ?", (group_id,))
        return rows[0] if rows else None

    def list_groups(self, limit: int, offset: int = 0) -> list[Any]:
        return self.read(
            "SELECT g.*, (SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id) AS session_count, "
            "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) AS episode_count "
            "FROM groups g ORDER BY g.group_id LIMIT ? OFFSET ?",
            (limit, offset),
        )

    def insert_session(self, row: dict[str, Any]) -> bool:
        """Insert a session; False when it exists already."""

        def insert(conn: Any) -> bool:
            cur = conn.execute(
                "INSERT INTO sessions(group_id, session_id, configuration, overrides, created_at) "
                "VALUES (:group_id, :session_id, :configuration, :overrides, :created_at) "
                "ON CONFLICT(group_id, session_id) DO NOTHING",
                row,
            )
            return bool(cur.rowcount)

        return bool(self.write(insert))

    def get_session(self, group_id: str, session_id: str) -> Any | None:
        rows = self.read(
            "SELECT s.*, (SELECT count(*) FROM episodes e WHERE e.group_id = s.group_id "
            "AND e.session_id = s.session_id) AS episode_count, "
            "(SELECT r.covered_through_sequence FROM rolling_summaries r WHERE r.group_id = s.group_id "
            "AND r.session_id = s.session_id) AS rolling_covered_through "
            "FROM sessions s "
            "WHERE s.group_id = ? AND s.session_id = ?",
            (group_id, session_id),
        )
        return rows[0] if rows else None

    def list_sessions(self, group_id: str, limit: int) -> list[Any]:
        return self.read(
            "SELECT s.*, (SELECT count(*) FROM episodes e WHERE e.group_id = s.group_id "
            "AND e.session_id = s.session_id) AS episode_count, "
            "(SELECT r.covered_through_sequence FROM rolling_summaries r WHERE r.group_id = s.group_id "
            "AND r.session_id = s.session_id) AS rolling_covered_through "
            "FROM sessions s "
            "WHERE s.group_id = ? ORDER BY s.created_at DESC, s.session_id LIMIT ?",
            (group_id, limit),
        )

    def delete_session(self, group_id: str, session_id: str) -> int:
        """Delete a session and its episodes (both indexes follow); returns the episodes removed."""

        def delete(conn: Any) -> int:
            count = conn.execute(
                "DELETE FROM episodes WHERE group_id = ? AND session_id = ?", (group_id, session_id)
            ).rowcount
            conn.execute("DELETE FROM sessions WHERE group_id = ? AND session_id = ?", (group_id, session_id))
            return int(count)

        return int(self.write(delete))

    # -- episodes -----------------------------------------------------------------------

    def insert_episodes(
        self,
        group_id: str,
        session_id: str,
        episodes: Sequence[NewEpisode],
        vectors: np.ndarray | None,
        *,
        index_vectors: bool,
        created_at: str,
        retry_window_start: str,
    ) -> InsertBatch:
        """Write a batch in one transaction; a retried episode returns its existing id instead."""

        def insert(conn: Any) -> InsertBatch:
            before = _revision(conn, group_id)
            retried = self._retried_batch(conn, group_id, session_id, episodes, retry_window_start)
            if retried is not None:
                return InsertBatch(retried, before, before)
            next_seq = conn.execute(
                "SELECT coalesce(max(sequence), 0) + 1 FROM episodes WHERE group_id = ? AND session_id = ?",
                (group_id, session_id),
            ).fetchone()[0]
            results = []
            for i, ep in enumerate(episodes):
                existing = self._find_by_key(conn, group_id, session_id, ep.dedup_key)
                if existing is not None:
                    results.append(existing)
                    continue
                vector = None if vectors is None else vectors[i]
                new_id = self._insert_one(
                    conn, group_id, session_id, next_seq, ep, vector, index_vectors, created_at
                )
                results.append(Inserted(new_id, next_seq, False))
                next_seq += 1
            new = [r.sequence for r in results if not r.duplicate]
            if new:
                fts.refresh_around(conn, group_id, session_id, min(new), max(new))
            return InsertBatch(results, before, _revision(conn, group_id))

        batch: InsertBatch = self.write(insert)
        return batch

    def _find_by_key(self, conn: Any, group_id: str, session_id: str, key: str | None) -> Inserted | None:
        """The episode stored with this retry key (producer, timestamp and content), if any."""
        if key is None:
            return None
        row = conn.execute(
            "SELECT id, sequence FROM episodes WHERE group_id = ? AND session_id = ? AND dedup_key = ?",
            (group_id, session_id, key),
        ).fetchone()
        return None if row is None else Inserted(row[0], row[1], True)

    def _retried_batch(
        self, conn: Any, group_id: str, session_id: str, episodes: Sequence[NewEpisode], window_start: str
    ) -> list[Inserted] | None:
        """A batch with untimed memories is a retry when the session's newest episodes, written within
        the retry window, are the same producers and contents in the same order."""
        if all(ep.dedup_key is not None for ep in episodes):
            return None
        rows = conn.execute(
            "SELECT id, sequence, producer_id, content_hash, created_at FROM episodes "
            "WHERE group_id = ? AND session_id = ? ORDER BY sequence DESC LIMIT ?",
            (group_id, session_id, len(episodes)),
        ).fetchall()[::-1]
        if len(rows) != len(episodes) or any(row[4] < window_start for row in rows):
            return None
        if [(r[2], r[3]) for r in rows] != [(ep.producer_id, ep.content_hash) for ep in episodes]:
            return None
        return [Inserted(row[0], row[1], True) for row in rows]

    def _insert_one(
        self,
        conn: Any,
        group_id: str,
        session_id: str,
        sequence: int,
        ep: NewEpisode,
        vector: np.ndarray | None,
        index_vectors: bool,
        created_at: str,
    ) -> int:
        state = NOT_INDEXED if not index_vectors else (PENDING if vector is None else INDEXED)
        cur = conn.execute(
            "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, produced_for_id, "
            "content, memory_type, importance, effective_importance, metadata, timestamp, ts_epoch, created_at, "
            "content_hash, dedup_key, indexed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                group_id, session_id, sequence, ep.producer_id, ep.producer_role, ep.produced_for_id,
                ep.content, ep.memory_type, ep.importance, ep.importance, ep.metadata_json, ep.timestamp,
                ep.ts_epoch, created_at, ep.content_hash, ep.dedup_key, state,
            ),
        )  # fmt: skip
        episode_id = int(cur.lastrowid)
        if state == INDEXED and vector is not None:
            self._insert_vector(conn, episode_id, group_id, session_id, ep, vector)
        return episode_id

    def _insert_vector(
        self, conn: Any, episode_id: int, group_id: str, session_id: str, ep: Any, vector: np.ndarray
    ) -> None:
        conn.execute(
            "INSERT INTO episode_vectors(rowid, group_id, embedding, session_id, producer_id, role, "
            "memory_type, ts) VALUES (?,?,?,?,?,?,?,?)",
            (
                episode_id, group_id, vector_blob(vector), session_id, ep.producer_id, ep.producer_role,
                ep.memory_type, float(ep.ts_epoch),
            ),
        )  # fmt: skip

    def pending_vectors(self, limit: int) -> list[Any]:
        """Episodes stored but not yet vector-indexed (the embedder failed or the process died)."""
        return self.read(
            f"SELECT id, group_id, session_id, producer_id, producer_role, memory_type, ts_epoch, content "
            f"FROM episodes WHERE indexed = {PENDING} ORDER BY id LIMIT ?",
            (limit,),
        )

    def set_vectors(self, rows: Sequence[Any], vectors: np.ndarray) -> int:
        """Index vectors for pending episodes that still exist and are still pending."""

        def write(conn: Any) -> int:
            done = 0
            for row, vector in zip(rows, vectors, strict=True):
                cur = conn.execute(
                    f"UPDATE episodes SET indexed = {INDEXED} WHERE id = ? AND indexed = {PENDING}",
                    (row["id"],),
                )
                if cur.rowcount:
                    ep = _VectorRow(
                        row["producer_id"], row["producer_role"], row["memory_type"], row["ts_epoch"]
                    )
                    self._insert_vector(conn, row["id"], row["group_id"], row["session_id"], ep, vector)
                    done += 1
            return done

        return int(self.write(write))

    def recent_episodes(self, group_id: str, session_id: str, limit: int) -> list[Any]:
        """The session's newest episodes, oldest first."""
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? "
            "ORDER BY sequence DESC LIMIT ?",
            (group_id, session_id, limit),
        )
        return rows[::-1]

    def session_episodes(
        self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()
    ) -> list[Any]:
        """Every episode of the session, oldest first, leaving out those of `exclude_types`."""
        return self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND memory_type NOT IN (SELECT value FROM json_each(?)) ORDER BY sequence",
            (group_id, session_id, json.dumps(list(exclude_types))),
        )

    def episodes_between(
        self, group_id: str, session_id: str, after: int, before: int, exclude_types: Sequence[str] = ()
    ) -> list[Any]:
        """The session's episodes with after < sequence < before, oldest first, leaving out `exclude_types`."""
        return self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND sequence > ? AND sequence < ? "
            "AND memory_type NOT IN (SELECT value FROM json_each(?)) ORDER BY sequence",
            (group_id, session_id, after, before, json.dumps(list(exclude_types))),
        )

    def count_episodes(self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()) -> int:
        """How many episodes the session has, leaving out those of `exclude_types`."""
        rows = self.read(
            "SELECT count(*) FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND memory_type NOT IN (SELECT value FROM json_each(?))",
            (group_id, session_id, json.dumps(list(exclude_types))),
        )
        return int(rows[0][0])

    def fetch_episodes(self, ids: Sequence[int]) -> dict[int, Any]:
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {row["id"]: row for row in rows}

    def keyword_search(self, group_id: str, match: str, filters: Filters, k: int) -> list[tuple[int, float]]:
        """Episodes of the group matching an FTS5 expression, best BM25 first, filters inside the query."""
        where, params = _filter_sql(filters, "e")
        rows = self.read(
            f"SELECT e.id, bm25(episodes_fts, {', '.join(map(str, fts.COLUMN_WEIGHTS))}) AS rank FROM episodes_fts "
            "JOIN episodes e ON e.id = episodes_fts.rowid "
            f"WHERE episodes_fts MATCH ? AND e.group_id = ? {where} ORDER BY rank LIMIT ?",
            (match, group_id, *params, k),
        )
        return [(row[0], float(row[1])) for row in rows]

    def vector_search(
        self, group_id: str, query: np.ndarray, filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The group's k nearest episodes by cosine distance; every filter is a KNN constraint.

        A session scope that also admits group-wide types is two exact KNN searches (the session;
        those types anywhere in the group) merged by distance: vec0 applies an OR of metadata
        constraints only after its top k, which could silently return nothing.
        """
        if filters.session_id is None or not filters.group_wide_types:
            return self._knn(group_id, query, replace(filters, group_wide_types=()), k)
        branches = [replace(filters, group_wide_types=())]
        wanted = filters.group_wide_types
        if filters.memory_types:
            wanted = tuple(t for t in wanted if t in filters.memory_types)
        if wanted:
            branches.append(replace(filters, session_id=None, memory_types=wanted, group_wide_types=()))
        nearest: dict[int, float] = {}
        for branch in branches:
            for episode_id, distance in self._knn(group_id, query, branch, k):
                nearest[episode_id] = min(distance, nearest.get(episode_id, distance))
        return sorted(nearest.items(), key=lambda item: item[1])[:k]

    def _knn(self, group_id: str, query: np.ndarray, filters: Filters, k: int) -> list[tuple[int, float]]:
        where, params = _vector_filter_sql(filters)
        rows = self.read(
            "SELECT rowid, distance FROM episode_vectors WHERE embedding MATCH ? AND k = ? "
            f"AND group_id = ? {where} ORDER BY distance",
            (vector_blob(query), min(k, 4096), group_id, *params),
        )
        return [(row[0], float(row[1])) for row in rows if row[1] is not None]

    def vector_revision(self, group_id: str) -> int:
        """How many times the group's vectors have changed, in any process."""
        rows = self.read("SELECT vector_revision FROM groups WHERE group_id = ?", (group_id,))
        return int(rows[0][0]) if rows else 0

    def scan_group_vectors(self, group_id: str) -> tuple[int, VectorRows]:
        """Every vector of the group with its filter columns, and the revision they are at (one snapshot).

        Rows are read in chunks straight into one preallocated matrix, so loading a large
        group costs about the matrix itself and no copies of it.
        """

        def scan() -> tuple[int, VectorRows]:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                revision = _revision(conn, group_id)
                count = conn.execute(
                    "SELECT count(*) FROM episodes WHERE group_id = ? AND indexed = ?", (group_id, INDEXED)
                ).fetchone()[0]
                cursor = conn.execute(
                    "SELECT rowid, embedding, session_id, producer_id, role, memory_type, ts "
                    "FROM episode_vectors WHERE group_id = ?",
                    (group_id,),
                )
                rows = _read_vector_rows(cursor, count, self.dimension)
            finally:
                conn.execute("COMMIT")
            return revision, rows

        result: tuple[int, VectorRows] = self._retry(scan)
        return result

    def candidate_ids(self, group_id: str, filters: Filters) -> np.ndarray:
        """Ids of the group's episodes meeting the filters that the vector cache cannot check itself."""
        where, params = _filter_sql(
            Filters(metadata=filters.metadata, min_importance=filters.min_importance), "e"
        )
        rows = self.read(f"SELECT e.id FROM episodes e WHERE e.group_id = ? {where}", (group_id, *params))
        return np.fromiter((row[0] for row in rows), np.int64, len(rows))

    def in_period(self, ids: Sequence[int], since: float, until: float) -> set[int]:
        """Which of these episodes have a timestamp (epoch seconds) in [since, until]."""
        if not ids:
            return set()
        rows = self.read(
            "SELECT id FROM episodes WHERE id IN (SELECT value FROM json_each(?)) AND ts_epoch BETWEEN ? AND ?",
            (json.dumps(list(ids)), since, until),
        )
        return {row[0] for row in rows}

    def effective_importance(self, ids: Sequence[int], neutral: float) -> dict[int, float]:
        """The effective importance of those of these episodes whose value is not `neutral`."""
        if not ids:
            return {}
        rows = self.read(
            "SELECT id, effective_importance FROM episodes WHERE id IN (SELECT value FROM json_each(?)) "
            "AND effective_importance != ?",
            (json.dumps(list(ids)), neutral),
        )
        return {row[0]: float(row[1]) for row in rows}

    def decay_importance(
        self, now: datetime, decay_per_day: float, batch: int = maintenance.DECAY_BATCH
    ) -> int:
        """Recompute every episode's effective importance, `batch` rows per transaction; returns rows changed."""
        after, changed = 0, 0
        while True:
            last, done = self.write(
                partial(
                    maintenance.decay_batch, after_id=after, now=now, decay_per_day=decay_per_day, limit=batch
                )
            )
            changed += done
            if last is None:
                return changed
            after = last

    def get_meta(self, key: str) -> str | None:
        rows = self.read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self.write(
            lambda conn: conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    def touch(self, ids: Sequence[int], now: str) -> None:
        """Count a retrieval of each episode and refresh its last access time."""
        if not ids:
            return
        self.write(
            lambda conn: conn.execute(
                "UPDATE episodes SET retrieval_count = retrieval_count + 1, last_accessed_at = ? "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (now, json.dumps(list(ids))),
            )
        )

    def delete_episodes(self, group_id: str, ids: Sequence[int] | None, session_id: str | None) -> int:
        """Delete the group's episodes by id and/or session; the FTS and vector rows go with them."""
        clauses, params = ["group_id = ?"], [group_id]
        if ids is not None:
            clauses.append("id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(ids)))
        if session_id is not None:
            clauses.append("session_id = ?")
            params.append(session_id)
        where = " AND ".join(clauses)

        def delete(conn: Any) -> int:
            spans = conn.execute(
                f"SELECT session_id, min(sequence), max(sequence) FROM episodes WHERE {where} GROUP BY session_id",
                params,
            ).fetchall()
            count = conn.execute(f"DELETE FROM episodes WHERE {where}", params).rowcount
            for session, low, high in spans:  # the neighbours' context held the deleted text
                fts.refresh_around(conn, group_id, session, low, high)
            return int(count)

        return int(self.write(delete))

    # -- facts --------------------------------------------------------------------------

    def insert_facts(
        self,
        group_id: str,
        session_id: str,
        facts: Sequence[fact_table.NewFact],
        episodes: Sequence[NewEpisode],
        vectors: np.ndarray | None,
        *,
        supersede: bool,
        index_vectors: bool,
        created_at: str,
    ) -> fact_table.StoredFacts:
        """Store facts, each with the episode recall finds it by, in one transaction. A triple that is
        already current returns that fact; with `supersede`, the other current facts of the same subject
        and predicate (not those of this call) are closed at the new fact's valid_from."""

        def write(conn: Any) -> fact_table.StoredFacts:
            before = _revision(conn, group_id)
            first = sequence = conn.execute(
                "SELECT coalesce(max(sequence), 0) + 1 FROM episodes WHERE group_id = ? AND session_id = ?",
                (group_id, session_id),
            ).fetchone()[0]
            ids: list[int] = []
            duplicate: list[bool] = []
            closed: list[int] = []
            new: list[tuple[int, int]] = []
            for i, (fact, ep) in enumerate(zip(facts, episodes, strict=True)):
                found = fact_table.find_current(conn, group_id, fact)
                duplicate.append(found is not None)
                if found is not None:
                    ids.append(found["id"])
                else:
                    ids.append(fact_table.insert(conn, group_id, fact, created_at))
                    ep = replace(ep, metadata_json=fact_table.episode_metadata(ids[-1]))
                    vector = None if vectors is None else vectors[i]
                    memory_id = self._insert_one(
                        conn, group_id, session_id, sequence, ep, vector, index_vectors, created_at
                    )
                    fact_table.link(conn, ids[-1], memory_id)
                    new.append((i, memory_id))
                    sequence += 1
                if supersede:
                    closed += fact_table.close_current(conn, group_id, fact, keep=set(ids))
            if sequence > first:
                fts.refresh_around(conn, group_id, session_id, first, sequence - 1)
            rows = fact_table.fetch(conn, ids)
            return fact_table.StoredFacts(
                [rows[i] for i in ids], duplicate, closed, new, before, _revision(conn, group_id)
            )

        stored: fact_table.StoredFacts = self.write(write)
        return stored

    def list_facts(
        self, group_id: str, subject: str | None, predicate: str | None, limit: int
    ) -> tuple[list[Any], int]:
        """The group's facts, current first, and how many match in all."""
        result: tuple[list[Any], int] = self._retry(
            lambda: fact_table.select(self._conn(), group_id, subject, predicate, limit)
        )
        return result

    def closed_fact_episodes(self, ids: Sequence[int]) -> set[int]:
        """Which of these episodes hold facts that are no longer current."""
        if not ids:
            return set()
        closed: set[int] = self._retry(lambda: fact_table.closed_memory_ids(self._conn(), ids))
        return closed

    # -- statistics ---------------------------------------------------------------------

    def stats(self, recent_since: str) -> dict[str, Any]:
        """Counts by group, session, memory type and tier (`recent`: stored at or after `recent_since`),
        importance and retrieval totals, pending vectors, and the file's size."""
        by_type = self.read("SELECT memory_type, count(*) FROM episodes GROUP BY memory_type")
        by_tier = self.read(
            f"SELECT CASE WHEN created_at >= ? THEN 'recent' WHEN indexed = {INDEXED} THEN 'long_term' "
            f"WHEN indexed = {PENDING} THEN 'pending_vectors' ELSE 'not_vector_indexed' END AS tier, count(*) "
            "FROM episodes GROUP BY tier",
            (recent_since,),
        )
        totals = self.read(
            "SELECT count(*), avg(importance), avg(effective_importance), "
            "coalesce(sum(effective_importance < 0.1), 0), coalesce(sum(retrieval_count), 0), "
            "coalesce(sum(retrieval_count > 0), 0) FROM episodes"
        )[0]
        by_group = self.read(
            "SELECT g.group_id, (SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id), "
            "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) FROM groups g ORDER BY g.group_id"
        )
        by_session = self.read(
            "SELECT group_id, session_id, count(*) FROM episodes GROUP BY group_id, session_id "
            "ORDER BY count(*) DESC LIMIT 100"
        )
        pending = self.read(f"SELECT count(*) FROM episodes WHERE indexed = {PENDING}")[0][0]
        page = self.read("PRAGMA page_count")[0][0] * self.read("PRAGMA page_size")[0][0]
        return {
            "episodes_by_type": {row[0]: row[1] for row in by_type},
            "groups": [{"group_id": r[0], "sessions": r[1], "episodes": r[2]} for r in by_group],
            "largest_sessions": [
                {"group_id": r[0], "session_id": r[1], "episodes": r[2]} for r in by_session
            ],
            "pending_vectors": pending,
            "database_bytes": page + _wal_size(self.path),
            "episodes_total": totals[0],
            "episodes_by_tier": dict.fromkeys(TIERS, 0) | {row[0]: row[1] for row in by_tier},
            "importance": {
                "mean": round(totals[1] or 0.0, 4),
                "mean_effective": round(totals[2] or 0.0, 4),
                "effective_below_0_1": totals[3],
            },
            "retrievals": {"total": totals[4], "episodes_retrieved": totals[5]},
        }


@dataclass(frozen=True)
class _VectorRow:
    producer_id: str
    producer_role: str
    memory_type: str
    ts_epoch: float


def _revision(conn: Any, group_id: str) -> int:
    row = conn.execute("SELECT vector_revision FROM groups WHERE group_id = ?", (group_id,)).fetchone()
    return int(row[0]) if row else 0


def _read_vector_rows(cursor: Any, expected: int, dimension: int, chunk: int = 4096) -> VectorRows:
    """Fill a matrix from a cursor chunk by chunk; `expected` sizes it and grows if rows keep coming."""
    matrix = np.empty((expected, dimension), np.float32)
    ids: list[int] = []
    columns: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
    ts: list[float] = []
    while batch := cursor.fetchmany(chunk):
        start = len(ids)
        if start + len(batch) > len(matrix):
            matrix = np.concatenate([matrix, np.empty((len(batch), dimension), np.float32)])
        for offset, row in enumerate(batch):
            matrix[start + offset] = np.frombuffer(row[1], dtype="<f4")
            ids.append(row[0])
            for column, value in zip(columns, row[2:6], strict=True):
                column.append(value)
            ts.append(row[6])
    return VectorRows(
        ids=np.asarray(ids, np.int64),
        matrix=matrix[: len(ids)],
        session_id=columns[0],
        producer_id=columns[1],
        role=columns[2],
        memory_type=columns[3],
        ts=np.asarray(ts, np.float64),
    )


def _create_vector_table(conn: Any, dimension: int) -> None:
    for statement in vector_table_sql(dimension):
        conn.execute(statement)


def _wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _filter_sql(filters: Filters, alias: str) -> tuple[str, list[Any]]:
    """AND-ed SQL conditions on the episodes table for every filter that is set."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(sql: str, *values: Any) -> None:
        clauses.append(sql.replace("e.", f"{alias}."))
        params.extend(values)

    if filters.session_id is not None and filters.group_wide_types:
        add(
            "(e.session_id = ? OR e.memory_type IN (SELECT value FROM json_each(?)))",
            filters.session_id,
            json.dumps(list(filters.group_wide_types)),
        )
    elif filters.session_id is not None:
        add("e.session_id = ?", filters.session_id)
    if filters.since is not None:
        add("e.ts_epoch >= ?", filters.since)
    if filters.until is not None:
        add("e.ts_epoch <= ?", filters.until)
    if filters.producer is not None:
        add("e.producer_id = ?", filters.producer)
    if filters.role is not None:
        add("e.producer_role = ?", filters.role)
    if filters.memory_types:
        add("e.memory_type IN (SELECT value FROM json_each(?))", json.dumps(list(filters.memory_types)))
    if filters.min_importance is not None:
        add("e.effective_importance >= ?", filters.min_importance)
    for path, value in filters.metadata:
        sql, values = _metadata_condition(path, value)
        add(sql, *values)
    return "".join(f" AND {c}" for c in clauses), params


def _metadata_condition(path: str, value: Any) -> tuple[str, list[Any]]:
    """Equality on a metadata value at a dotted path; a list means any of its values."""
    json_path = "$." + ".".join(f'"{part}"' for part in path.split("."))
    if isinstance(value, list):
        return (
            "json_extract(e.metadata, ?) IN (SELECT value FROM json_each(?))",
            [json_path, json.dumps(value)],
        )
    if isinstance(value, bool):
        value = int(value)
    return "json_extract(e.metadata, ?) = ?", [json_path, value]


def _vector_filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    """KNN constraints: vec0 metadata columns where they exist, a rowid subquery for the rest."""
    clauses: list[str] = []
    params: list[Any] = []
    simple = {
        "session_id = ?": filters.session_id,
        "producer_id = ?": filters.producer,
        "role = ?": filters.role,
        "ts >= ?": None if filters.since is None else float(filters.since),
        "ts <= ?": None if filters.until is None else float(filters.until),
    }
    for sql, value in simple.items():
        if value is not None:
            clauses.append(sql)
            params.append(value)
    if filters.memory_types:
        marks = ",".join("?" * len(filters.memory_types))
        clauses.append(f"memory_type IN ({marks})")
        params.extend(filters.memory_types)
    if filters.metadata or filters.min_importance is not None:
        rest = Filters(metadata=filters.metadata, min_importance=filters.min_importance)
        where, rest_params = _filter_sql(rest, "e")
        clauses.append(f"rowid IN (SELECT e.id FROM episodes e WHERE 1 {where})")
        params.extend(rest_params)
    return "".join(f" AND {c}" for c in clauses), params
