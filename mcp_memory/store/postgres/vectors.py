"""Vectors on PostgreSQL: a pgvector column with an HNSW index, and the searches on it.

`episode_vectors` is made with the embedder's dimension when a database first records one. Recall searches
a group's vectors in memory (recall/vectors.py); the store answers only until that copy is loaded, and then
a small group (at most EXACT_ROWS vectors) is searched exactly, a large one through the HNSW index with
iterative scans (without them, a filter that keeps few rows could leave the index's candidates empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mcp_memory.store.postgres.connection import PgDatabase, lock_group, vector_text
from mcp_memory.store.postgres.filters import filter_sql
from mcp_memory.store.postgres.migrations import KEEP_CHANGES
from mcp_memory.store.records import INDEXED, PENDING, Filters, PendingVector, VectorRows
from mcp_memory.store.sqlite.filters import sql_only

EXACT_ROWS = 10_000  # an exact scan of this many vectors takes tens of milliseconds here
EF_SEARCH = 100


def vector_table_sql(dimension: int) -> list[str]:
    """The vector table with its index, and the trigger that numbers its changes in the group's log."""
    return [
        f"""CREATE OR REPLACE FUNCTION log_vector_change(changed_group TEXT, changed_episode BIGINT)
        RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            head BIGINT;
        BEGIN
            UPDATE groups SET vector_revision = vector_revision + 1 WHERE group_id = changed_group
                RETURNING vector_revision INTO head;
            IF head IS NOT NULL THEN
                INSERT INTO vector_changes(group_id, revision, episode_id) VALUES (changed_group, head, changed_episode)
                    ON CONFLICT DO NOTHING;
                IF head % 1000 = 0 THEN
                    DELETE FROM vector_changes WHERE group_id = changed_group AND revision <= head - {KEEP_CHANGES};
                END IF;
            END IF;
        END $$""",
        f"""CREATE TABLE episode_vectors (
            episode_id BIGINT PRIMARY KEY REFERENCES episodes(id) ON DELETE CASCADE,
            group_id TEXT NOT NULL,
            embedding vector({int(dimension)}) NOT NULL
        )""",
        "CREATE INDEX episode_vectors_group ON episode_vectors(group_id)",
        "CREATE INDEX episode_vectors_hnsw ON episode_vectors USING hnsw (embedding vector_cosine_ops)",
        """CREATE OR REPLACE FUNCTION bump_vector_revision() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            changed RECORD;
        BEGIN
            IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
            PERFORM log_vector_change(changed.group_id, changed.episode_id);
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER episode_vectors_revision AFTER INSERT OR UPDATE OR DELETE ON episode_vectors
            FOR EACH ROW EXECUTE FUNCTION bump_vector_revision()""",
    ]


def create_vector_table(conn: Any, dimension: int) -> None:
    for statement in vector_table_sql(dimension):
        conn.execute(statement)


def group_revision(conn: Any, group_id: str) -> int:
    row = conn.execute("SELECT vector_revision FROM groups WHERE group_id = %s", (group_id,)).fetchone()
    return int(row[0]) if row else 0


def insert_vector(conn: Any, episode_id: int, group_id: str, vector: np.ndarray) -> None:
    conn.execute(
        "INSERT INTO episode_vectors(episode_id, group_id, embedding) VALUES (%s, %s, %s::vector)",
        (episode_id, group_id, vector_text(vector)),
    )


def hnsw_query(
    conn: Any, group_id: str, text: str, where: str, params: Sequence[Any], k: int
) -> tuple[str, tuple[Any, ...]]:
    """The KNN through the HNSW index, its settings made for this transaction: iterative scans (a filter may
    drop the index's first candidates), a wider candidate list for a larger k, and no sorting in its place
    (left free, the planner sorts a whole group it misjudges as small)."""
    conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
    conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, min(k, 1000))}")
    conn.execute("SET LOCAL enable_sort = off")
    sql = (
        "SELECT v.episode_id, v.embedding <=> %s::vector FROM episode_vectors v JOIN episodes e ON e.id = "
        f"v.episode_id WHERE v.group_id = %s {where} ORDER BY v.embedding <=> %s::vector LIMIT %s"
    )
    return sql, (text, group_id, *params, text, k)


class VectorIndex(PgDatabase):
    """The Store's vector operations on PostgreSQL."""

    dimension: int
    exact_rows: int = EXACT_ROWS  # the most vectors a group is searched exactly with (tests lower it)

    def reset_vectors(self, name: str, dimension: int) -> int:
        def reset(conn: Any) -> int:
            conn.execute("SELECT group_id FROM groups ORDER BY group_id FOR NO KEY UPDATE")
            conn.execute("DROP TABLE IF EXISTS episode_vectors")
            conn.execute("UPDATE meta SET value = %s WHERE key = 'embedder_name'", (name,))
            conn.execute("UPDATE meta SET value = %s WHERE key = 'embedder_dimension'", (str(dimension),))
            create_vector_table(conn, dimension)
            conn.execute("UPDATE groups SET vector_revision = vector_revision + 1")
            return int(
                conn.execute(f"UPDATE episodes SET indexed = {PENDING} WHERE indexed = {INDEXED}").rowcount
            )

        self.dimension = dimension
        return self._run(reset)

    def pending_vectors(self, limit: int) -> list[PendingVector]:
        rows = self._rows(
            "SELECT id, group_id, session_id, producer_id, producer_role, memory_type, ts_epoch, content "
            f"FROM episodes WHERE indexed = {PENDING} ORDER BY id LIMIT %s",
            (limit,),
        )
        return [PendingVector(*row) for row in rows]

    def pending_count(self) -> int:
        return int(self._rows(f"SELECT count(*) FROM episodes WHERE indexed = {PENDING}")[0][0])

    def set_vectors(self, pending: Sequence[PendingVector], vectors: np.ndarray) -> int:
        def write(conn: Any) -> int:
            for group_id in sorted({row.group_id for row in pending}):
                lock_group(conn, group_id)
            done = 0
            for row, vector in zip(pending, vectors, strict=True):
                updated = conn.execute(
                    f"UPDATE episodes SET indexed = {INDEXED} WHERE id = %s AND indexed = {PENDING}",
                    (row.id,),
                ).rowcount
                if updated:
                    insert_vector(conn, row.id, row.group_id, vector)
                    done += 1
            return done

        return self._run(write)

    def vector_search(
        self, group_id: str, query: np.ndarray, filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The group's k nearest episodes by cosine distance, every filter inside the search (a session scope
        that admits group-wide types is one OR condition here: no top-k is cut before it applies)."""
        return self._knn(group_id, query, filters, k)

    def _knn(self, group_id: str, query: np.ndarray, filters: Filters, k: int) -> list[tuple[int, float]]:
        where, params = filter_sql(filters)
        text = vector_text(query)
        join = "FROM episode_vectors v JOIN episodes e ON e.id = v.episode_id WHERE v.group_id = %s"

        def search(conn: Any) -> list[Any]:
            count = conn.execute("SELECT count(*) FROM episode_vectors WHERE group_id = %s", (group_id,))
            if count.fetchone()[0] <= self.exact_rows:  # exact: OFFSET 0 keeps the index out of the ordering
                return conn.execute(
                    f"SELECT id, d FROM (SELECT v.episode_id AS id, v.embedding <=> %s::vector AS d {join} {where} "
                    "OFFSET 0) s ORDER BY d, id LIMIT %s",
                    (text, group_id, *params, k),
                ).fetchall()
            return conn.execute(*hnsw_query(conn, group_id, text, where, params, k)).fetchall()

        rows = self._run(search)
        return sorted(((int(r[0]), float(r[1])) for r in rows), key=lambda item: (item[1], item[0]))

    def vector_revision(self, group_id: str) -> int:
        rows = self._rows("SELECT vector_revision FROM groups WHERE group_id = %s", (group_id,))
        return int(rows[0][0]) if rows else 0

    def vector_changes(self, group_id: str, after: int, limit: int) -> list[tuple[int, int]] | None:
        """Up to `limit` (revision, episode id) changes of the group's vectors after revision `after`, oldest
        first (a revision missing from the log: the copy reloads)."""
        rows = self._rows(
            "SELECT revision, episode_id FROM vector_changes WHERE group_id = %s AND revision > %s "
            "ORDER BY revision LIMIT %s",
            (group_id, after, limit),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def vector_rows(self, group_id: str, ids: Sequence[int]) -> VectorRows:
        """The group's vectors of these episodes as they are now (those without one left out)."""
        return self._run(
            lambda conn: _vector_rows(
                conn, self.dimension, "AND v.episode_id = ANY(%s)", (group_id, list(ids))
            )
        )

    def vector_count(self, group_id: str) -> int:
        return int(self._rows("SELECT count(*) FROM episode_vectors WHERE group_id = %s", (group_id,))[0][0])

    def scan_group_vectors(self, group_id: str) -> tuple[int, VectorRows]:
        def scan(conn: Any) -> tuple[int, VectorRows]:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            revision = group_revision(conn, group_id)
            return revision, _vector_rows(conn, self.dimension, "", (group_id,))

        return self._run(scan)

    def candidate_ids(self, group_id: str, filters: Filters) -> np.ndarray:
        where, params = filter_sql(sql_only(filters))
        rows = self._rows(f"SELECT e.id FROM episodes e WHERE e.group_id = %s {where}", (group_id, *params))
        return np.fromiter((row[0] for row in rows), np.int64, len(rows))


def _vector_rows(conn: Any, dimension: int, where: str, params: Sequence[Any]) -> VectorRows:
    """The group's vector rows with the columns the in-memory copy filters on, ids ascending (binary: the
    vectors arrive as float32 arrays)."""
    cursor = conn.cursor(binary=True)
    cursor.execute(
        "SELECT e.id, v.embedding, e.session_id, e.producer_id, e.producer_role, e.memory_type, e.ts_epoch "
        f"FROM episode_vectors v JOIN episodes e ON e.id = v.episode_id WHERE v.group_id = %s {where} ORDER BY e.id",
        params,
    )
    rows = cursor.fetchall()
    matrix = np.empty((len(rows), dimension), np.float32)
    for i, row in enumerate(rows):
        matrix[i] = row[1]
    return VectorRows(
        ids=np.asarray([row[0] for row in rows], np.int64),
        matrix=matrix,
        session_id=[row[2] for row in rows],
        producer_id=[row[3] for row in rows],
        role=[row[4] for row in rows],
        memory_type=[row[5] for row in rows],
        ts=np.asarray([row[6] for row in rows], np.float64),
    )
