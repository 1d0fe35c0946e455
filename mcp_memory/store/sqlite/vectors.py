"""The vector index: a sqlite-vec `vec0` table partitioned by group, and the queries on it.

Each episode records whether its vector is in the index (`indexed`: INDEXED, PENDING when the
embedder has not produced it yet, NOT_INDEXED when its session keeps no long-term vectors).
Search is an exact KNN inside vec0 with every filter as a constraint; `scan_group_vectors`
loads a whole group for the in-memory cache (recall/vectors.py), and `vector_revision` tells
the cache when what it holds is stale.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mcp_memory.store.records import INDEXED, PENDING, Filters, PendingVector, VectorRows
from mcp_memory.store.sqlite.connection import Database
from mcp_memory.store.sqlite.filters import filter_sql, sql_only, vector_filter_sql
from mcp_memory.store.sqlite.migrations import vector_table_sql


def vector_blob(vector: np.ndarray) -> bytes:
    """The float32 little-endian bytes sqlite-vec reads."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def group_revision(conn: Any, group_id: str) -> int:
    """The group's vector revision as this connection sees it."""
    row = conn.execute("SELECT vector_revision FROM groups WHERE group_id = ?", (group_id,)).fetchone()
    return int(row[0]) if row else 0


def create_vector_table(conn: Any, dimension: int) -> None:
    for statement in vector_table_sql(dimension):
        conn.execute(statement)


def insert_vector(
    conn: Any, episode_id: int, group_id: str, session_id: str, ep: Any, vector: np.ndarray
) -> None:
    """Index one episode's vector with the columns KNN filters on (`ep` has its producer, role, type, time)."""
    conn.execute(
        "INSERT INTO episode_vectors(rowid, group_id, embedding, session_id, producer_id, role, "
        "memory_type, ts) VALUES (?,?,?,?,?,?,?,?)",
        (
            episode_id, group_id, vector_blob(vector), session_id, ep.producer_id, ep.producer_role,
            ep.memory_type, float(ep.ts_epoch),
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class VectorColumns:
    """The columns a vector row is filtered by in a KNN."""

    producer_id: str
    producer_role: str
    memory_type: str
    ts_epoch: float


class VectorIndex(Database):
    """The Store's vector-index operations: re-embedding, pending vectors, KNN and cache scans."""

    dimension: int

    def reset_vectors(self, name: str, dimension: int) -> int:
        """Drop the vector index, record a new embedder, and mark every indexable episode pending."""

        def reset(conn: Any) -> int:
            conn.execute("DROP TRIGGER IF EXISTS episodes_vectors_delete")
            conn.execute("DROP TABLE IF EXISTS episode_vectors")
            conn.execute("UPDATE meta SET value = ? WHERE key = 'embedder_name'", (name,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'embedder_dimension'", (str(dimension),))
            create_vector_table(conn, dimension)
            return conn.execute(f"UPDATE episodes SET indexed = {PENDING} WHERE indexed = {INDEXED}").rowcount

        self.dimension = dimension
        return int(self.write(reset))

    def pending_vectors(self, limit: int) -> list[PendingVector]:
        """Episodes stored but not yet vector-indexed (the embedder failed or the process died)."""
        rows = self.read(
            f"SELECT id, group_id, session_id, producer_id, producer_role, memory_type, ts_epoch, content "
            f"FROM episodes WHERE indexed = {PENDING} ORDER BY id LIMIT ?",
            (limit,),
        )
        return [PendingVector(*row) for row in rows]

    def set_vectors(self, rows: Sequence[PendingVector], vectors: np.ndarray) -> int:
        """Index vectors for pending episodes that still exist and are still pending."""

        def write(conn: Any) -> int:
            done = 0
            for row, vector in zip(rows, vectors, strict=True):
                cur = conn.execute(
                    f"UPDATE episodes SET indexed = {INDEXED} WHERE id = ? AND indexed = {PENDING}",
                    (row.id,),
                )
                if cur.rowcount:
                    ep = VectorColumns(row.producer_id, row.role, row.memory_type, row.ts_epoch)
                    insert_vector(conn, row.id, row.group_id, row.session_id, ep, vector)
                    done += 1
            return done

        return int(self.write(write))

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
        where, params = vector_filter_sql(filters)
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

    def vector_changes(self, group_id: str, after: int, limit: int) -> list[tuple[int, int]] | None:
        """None: SQLite keeps no log of vector changes (one machine's copy reloads the group, by rowid)."""
        return None

    def vector_rows(self, group_id: str, ids: Sequence[int]) -> VectorRows:
        """The group's vectors of these episodes as they are now (episodes without one left out)."""
        wanted = sorted({int(i) for i in ids})
        rows = self.read(
            "SELECT e.id, v.embedding, e.session_id, e.producer_id, e.producer_role, e.memory_type, e.ts_epoch "
            "FROM episodes e JOIN episode_vectors v ON v.rowid = e.id WHERE e.group_id = ? AND e.indexed = ? "
            "AND e.id IN (SELECT value FROM json_each(?)) ORDER BY e.id",
            (group_id, INDEXED, json.dumps(wanted)),
        )
        matrix = np.empty((len(rows), self.dimension), np.float32)
        for i, row in enumerate(rows):
            matrix[i] = np.frombuffer(row[1], dtype="<f4")
        return VectorRows(
            ids=np.asarray([row[0] for row in rows], np.int64), matrix=matrix,
            session_id=[row[2] for row in rows], producer_id=[row[3] for row in rows],
            role=[row[4] for row in rows], memory_type=[row[5] for row in rows],
            ts=np.asarray([row[6] for row in rows], np.float64),
        )  # fmt: skip

    def vector_count(self, group_id: str) -> int:
        """How many of the group's episodes have a vector in the index."""
        rows = self.read(
            "SELECT count(*) FROM episodes WHERE group_id = ? AND indexed = ?", (group_id, INDEXED)
        )
        return int(rows[0][0])

    def scan_group_vectors(self, group_id: str) -> tuple[int, VectorRows]:
        """Every vector of the group with its filter columns, and the revision they are at (one snapshot).

        Rows are read in chunks straight into one preallocated matrix, so loading a large
        group costs about the matrix itself and no copies of it.
        """

        def scan() -> tuple[int, VectorRows]:
            conn = self._conn()
            conn.execute("BEGIN")
            try:
                revision = group_revision(conn, group_id)
                count = conn.execute(
                    "SELECT count(*) FROM episodes WHERE group_id = ? AND indexed = ?", (group_id, INDEXED)
                ).fetchone()[0]
                cursor = conn.execute(  # by rowid: vec0's partition scan costs what the whole table does
                    "SELECT e.id, v.embedding, e.session_id, e.producer_id, e.producer_role, e.memory_type, "
                    "e.ts_epoch FROM episodes e JOIN episode_vectors v ON v.rowid = e.id "
                    "WHERE e.group_id = ? AND e.indexed = ?",
                    (group_id, INDEXED),
                )
                rows = _read_vector_rows(cursor, count, self.dimension)
            finally:
                conn.execute("COMMIT")
            return revision, rows

        result: tuple[int, VectorRows] = self._retry(scan)
        return result

    def candidate_ids(self, group_id: str, filters: Filters) -> np.ndarray:
        """Ids of the group's episodes meeting the filters that the vector cache cannot check itself."""
        where, params = filter_sql(sql_only(filters), "e")
        rows = self.read(f"SELECT e.id FROM episodes e WHERE e.group_id = ? {where}", (group_id, *params))
        return np.fromiter((row[0] for row in rows), np.int64, len(rows))


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
