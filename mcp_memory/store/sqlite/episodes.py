"""Episodes: writing them (with retry detection), reading them back, keyword search, deletion.

An episode is one stored memory, numbered by `sequence` within its session. Every write
keeps the FTS5 keyword index (store/sqlite/fts.py) in step with the turns around it, and indexes the
episode's vector when it has one (store/sqlite/vectors.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from mcp_memory.errors import IdempotencyConflict
from mcp_memory.models import Episode
from mcp_memory.store.records import (
    INDEXED,
    KEYED,
    NOT_INDEXED,
    PENDING,
    EpisodeChange,
    EpisodePage,
    Filters,
    InsertBatch,
    Inserted,
    NewEpisode,
)
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.connection import Database
from mcp_memory.store.sqlite.filters import filter_sql
from mcp_memory.store.sqlite.keywords import group_bm25, tokenize_words
from mcp_memory.store.sqlite.vectors import VectorColumns, group_revision, insert_vector

EPISODE_COLUMNS = (
    "id, group_id, session_id, sequence, producer_id, producer_role, produced_for_id, content, "
    "memory_type, importance, metadata, timestamp, created_at, content_hash, retrieval_count, "
    "last_accessed_at, indexed, updated_at, effective_importance, step, message"
)
EPISODE_COLUMNS_OF_E = ", ".join(f"e.{column.strip()}" for column in EPISODE_COLUMNS.split(","))


class Episodes(Database):
    """The Store's episode operations."""

    # -- writing ------------------------------------------------------------------------

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
            before = group_revision(conn, group_id)
            self._check_key_reuse(conn, group_id, session_id, episodes)
            retried = self._retried_batch(conn, group_id, session_id, episodes, retry_window_start)
            if retried is not None:
                return InsertBatch(retried, before, before)
            next_seq = conn.execute(
                "SELECT coalesce(max(sequence), 0) + 1 FROM episodes WHERE group_id = ? AND session_id = ?",
                (group_id, session_id),
            ).fetchone()[0]
            results = []
            for i, ep in enumerate(episodes):
                existing = self._find_by_key(conn, group_id, session_id, ep)
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
            return InsertBatch(results, before, group_revision(conn, group_id))

        batch: InsertBatch = self.write(insert)
        return batch

    def _find_by_key(self, conn: Any, group_id: str, session_id: str, ep: NewEpisode) -> Inserted | None:
        """The episode stored with this memory's retry key, if any; the same key for other words is refused."""
        if ep.dedup_key is None:
            return None
        row = conn.execute(
            "SELECT id, sequence, producer_id, content_hash, updated_at FROM episodes "
            "WHERE group_id = ? AND session_id = ? AND dedup_key = ?",
            (group_id, session_id, ep.dedup_key),
        ).fetchone()
        if row is None:
            return None
        # other words under the same key: an idempotency key reused, unless the memory was corrected since
        if (row[2], row[3]) != (ep.producer_id, ep.content_hash) and row[4] is None:
            raise _key_reused(session_id, row[0])
        return Inserted(row[0], row[1], True)

    def _check_key_reuse(
        self, conn: Any, group_id: str, session_id: str, episodes: Sequence[NewEpisode]
    ) -> None:
        """An idempotency key sent again must come with a call of the same size (the items are checked
        one by one in `_find_by_key`)."""
        first = episodes[0].dedup_key if episodes else None
        if first is None or not first.startswith(KEYED):
            return
        call = first[: first.index("\x1f", len(KEYED)) + 1]  # KEYED + the key + the separator
        rows = conn.execute(
            "SELECT id, dedup_key FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND dedup_key >= ? AND dedup_key < ?",
            (group_id, session_id, call, call[:-1] + "\x20"),
        ).fetchall()
        for row in rows:
            if row[1].split("\x1f")[-2] != str(len(episodes)):
                raise _key_reused(session_id, row[0])

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
            "content_hash, dedup_key, indexed, step, message) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                group_id, session_id, sequence, ep.producer_id, ep.producer_role, ep.produced_for_id,
                ep.content, ep.memory_type, ep.importance, ep.importance, ep.metadata_json, ep.timestamp,
                ep.ts_epoch, created_at, ep.content_hash, ep.dedup_key, state, ep.step, ep.message_json,
            ),
        )  # fmt: skip
        episode_id = int(cur.lastrowid)
        if state == INDEXED and vector is not None:
            insert_vector(conn, episode_id, group_id, session_id, ep, vector)
        return episode_id

    def update_episode(
        self,
        group_id: str,
        episode_id: int,
        change: EpisodeChange,
        vector: np.ndarray | None,
        updated_at: str,
    ) -> Episode | None:
        """Correct a stored episode in place (its id, session, sequence and time stay) and re-index its
        keywords and vector in the same transaction; None when the group has no such episode. A changed
        text without a `vector` leaves the episode pending, indexed later, never with its old vector."""

        def update(conn: Any) -> Episode | None:
            row = conn.execute(
                f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE id = ? AND group_id = ?",
                (episode_id, group_id),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE episodes SET content = coalesce(?, content), content_hash = coalesce(?, content_hash), "
                "memory_type = coalesce(?, memory_type), importance = coalesce(?, importance), "
                "effective_importance = coalesce(?, effective_importance), metadata = coalesce(?, metadata), "
                "updated_at = ? WHERE id = ?",
                (
                    change.content, change.content_hash, change.memory_type, change.importance,
                    change.importance, change.metadata_json, updated_at, episode_id,
                ),
            )  # fmt: skip
            if change.content is not None or change.memory_type is not None:
                if row["indexed"] != NOT_INDEXED:
                    _reindex_vector(conn, row, change, vector)
                fts.refresh_around(conn, group_id, row["session_id"], row["sequence"], row["sequence"])
            return episode(
                conn.execute(f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE id = ?", (episode_id,)).fetchone()
            )

        updated: Episode | None = self.write(update)
        return updated

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

    def delete_episodes(
        self, group_id: str, ids: Sequence[int] | None, session_id: str | None, keep_roles: Sequence[str] = ()
    ) -> int:
        """Delete the group's episodes by id and/or session, except those of `keep_roles`; the FTS and vector
        rows go with them."""
        clauses, params = ["group_id = ?"], [group_id]
        if keep_roles:
            clauses.append("producer_role NOT IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(keep_roles)))
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

    # -- reading ------------------------------------------------------------------------

    def recent_episodes(self, group_id: str, session_id: str, limit: int) -> list[Episode]:
        """The session's newest episodes, oldest first."""
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? "
            "ORDER BY sequence DESC LIMIT ?",
            (group_id, session_id, limit),
        )
        return [episode(row) for row in reversed(rows)]

    def session_episodes(
        self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()
    ) -> list[Episode]:
        """Every episode of the session, oldest first, leaving out those of `exclude_types`."""
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND memory_type NOT IN (SELECT value FROM json_each(?)) ORDER BY sequence",
            (group_id, session_id, json.dumps(list(exclude_types))),
        )
        return [episode(row) for row in rows]

    def episodes_between(
        self, group_id: str, session_id: str, after: int, before: int, exclude_types: Sequence[str] = ()
    ) -> list[Episode]:
        """The session's episodes with after < sequence < before, oldest first, leaving out `exclude_types`."""
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND sequence > ? AND sequence < ? "
            "AND memory_type NOT IN (SELECT value FROM json_each(?)) ORDER BY sequence",
            (group_id, session_id, after, before, json.dumps(list(exclude_types))),
        )
        return [episode(row) for row in rows]

    def count_episodes(self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()) -> int:
        """How many episodes the session has, leaving out those of `exclude_types`."""
        rows = self.read(
            "SELECT count(*) FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND memory_type NOT IN (SELECT value FROM json_each(?))",
            (group_id, session_id, json.dumps(list(exclude_types))),
        )
        return int(rows[0][0])

    def list_episodes(
        self,
        filters: Filters,
        group_id: str,
        *,
        newest_first: bool,
        after: tuple[float, ...] | None,
        limit: int,
    ) -> EpisodePage:
        """The group's episodes meeting `filters` in order, `limit` of them after the position `after`: a
        session's by sequence, a group's by time then id (both keyed, so each page is an index range)."""
        where, params = filter_sql(filters, "e")
        key = "e.sequence" if filters.session_id is not None else "e.ts_epoch, e.id"
        if after is not None:
            marks = ", ".join("?" * len(after))
            where += f" AND ({key}) {'<' if newest_first else '>'} ({marks})"
            params += list(after)
        direction = "DESC" if newest_first else "ASC"
        order = ", ".join(f"{column} {direction}" for column in key.split(", "))
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS}, ts_epoch FROM episodes e WHERE e.group_id = ? {where} ORDER BY {order} LIMIT ?",
            (group_id, *params, limit + 1),
        )
        page, last = rows[:limit], (rows[limit - 1] if len(rows) > limit else None)
        position = None
        if last is not None:
            position = (
                (last["sequence"],) if filters.session_id is not None else (last["ts_epoch"], last["id"])
            )
        return EpisodePage([episode(row) for row in page], position)

    def episodes_in_spans(self, group_id: str, spans: Sequence[tuple[str, int, int]]) -> list[Episode]:
        """The group's episodes in any of these (session, first sequence, last sequence) spans, in order."""
        if not spans:
            return []
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS_OF_E} FROM json_each(?) s JOIN episodes e ON e.group_id = ? "
            "AND e.session_id = s.value ->> 0 AND e.sequence BETWEEN s.value ->> 1 AND s.value ->> 2 "
            "ORDER BY e.session_id, e.sequence",
            (json.dumps([list(span) for span in spans]), group_id),
        )
        return [episode(row) for row in rows]

    def fetch_episodes(self, ids: Sequence[int]) -> dict[int, Episode]:
        """The episodes with these ids (any group: callers check it), by id."""
        rows = self.read(
            f"SELECT {EPISODE_COLUMNS} FROM episodes WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids)),),
        )
        return {row["id"]: episode(row) for row in rows}

    def keeps_vector(self, episode_id: int) -> bool:
        """Whether the episode has (or waits for) a vector; False for one stored without, or not found."""
        rows = self.read("SELECT indexed FROM episodes WHERE id = ?", (episode_id,))
        return bool(rows) and rows[0][0] != NOT_INDEXED

    def search_keywords(
        self, group_id: str, text: str, participants: Iterable[str], filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The group's k best keyword matches for a query, as (id, score: lower is better), filters applied to
        the matches: BM25 over the group's own statistics, ranked as the in-memory copy ranks (keywords.py)."""
        words = fts.query_words(text, participants)
        if not words or k <= 0:
            return []
        found: tuple[np.ndarray, np.ndarray] = self._retry(
            lambda: self._keyword_scores(group_id, words, filters)
        )
        ids, scores = found
        order = np.lexsort((ids, -scores))[:k]  # ties go by id
        return [(int(ids[i]), -float(scores[i])) for i in order]

    def _keyword_scores(
        self, group_id: str, words: Sequence[tuple[str, tuple[int, ...]]], filters: Filters
    ) -> tuple[np.ndarray, np.ndarray]:
        where, params = filter_sql(filters, "e")
        with self.snapshot() as conn:
            tokens = tokenize_words(conn, [word for word, _ in words])
            phrases = [(t, columns) for t, (_, columns) in zip(tokens, words, strict=True)]
            ids, scores = group_bm25(conn, group_id, phrases)
            if not where or not len(ids):
                return ids, scores
            kept = conn.execute(
                f"SELECT e.id FROM json_each(?) j JOIN episodes e ON e.id = j.value WHERE e.group_id = ? {where}",
                (json.dumps(ids.tolist()), group_id, *params),
            ).fetchall()
        mask = np.isin(ids, [row[0] for row in kept])
        return ids[mask], scores[mask]

    def keyword_search(self, group_id: str, match: str, filters: Filters, k: int) -> list[tuple[int, float]]:
        """Episodes of the group matching an FTS5 expression, ranked by FTS5's own bm25() (the whole table's
        statistics, FTS5's idf), filters inside the query: what benchmarks and tests compare with FTS5;
        recall ranks by search_keywords."""
        where, params = filter_sql(filters, "e")
        rows = self.read(
            f"SELECT e.id, bm25(episodes_fts, {', '.join(map(str, fts.COLUMN_WEIGHTS))}) AS rank FROM episodes_fts "
            "CROSS JOIN episodes e ON e.id = episodes_fts.rowid "  # FTS first: never a MATCH per row
            f"WHERE episodes_fts MATCH ? AND e.group_id = ? {where} ORDER BY rank, e.id LIMIT ?",
            (match, group_id, *params, k),
        )
        return [(row[0], float(row[1])) for row in rows]

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


def _key_reused(session_id: str, memory_id: int) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"this idempotency_key was already used in session {session_id!r} for other memories (memory "
        f"{memory_id}); send a new key with new memories, or exactly the same memories to retry"
    )


def _reindex_vector(conn: Any, row: Any, change: EpisodeChange, vector: np.ndarray | None) -> None:
    """Replace an episode's vector row: a new vector for new text (pending if there is none yet), or the
    same vector under its new memory type. The group's revision moves, so in-memory copies reload."""
    if change.content is None:
        old = conn.execute("SELECT embedding FROM episode_vectors WHERE rowid = ?", (row["id"],)).fetchone()
        vector = None if old is None else np.frombuffer(old[0], dtype="<f4")
    conn.execute("DELETE FROM episode_vectors WHERE rowid = ?", (row["id"],))
    state = PENDING if vector is None else INDEXED
    conn.execute("UPDATE episodes SET indexed = ? WHERE id = ?", (state, row["id"]))
    conn.execute(
        "UPDATE groups SET vector_revision = vector_revision + 1 WHERE group_id = ?", (row["group_id"],)
    )
    if vector is not None:
        ts = conn.execute("SELECT ts_epoch FROM episodes WHERE id = ?", (row["id"],)).fetchone()[0]
        columns = VectorColumns(
            row["producer_id"], row["producer_role"], change.memory_type or row["memory_type"], ts
        )
        insert_vector(conn, row["id"], row["group_id"], row["session_id"], columns, vector)


def episode(row: Any) -> Episode:
    """An episodes row as the model callers see (a stored message's extras included, its original text not)."""
    extras = json.loads(row["message"]) if row["message"] else {}
    extras.pop("text", None)
    return Episode(
        id=row["id"],
        group_id=row["group_id"],
        session_id=row["session_id"],
        sequence=row["sequence"],
        timestamp=datetime.fromisoformat(row["timestamp"]),
        producer=row["producer_id"],
        role=row["producer_role"],
        produced_for=row["produced_for_id"],
        content=row["content"],
        memory_type=row["memory_type"],
        importance=row["importance"],
        metadata=json.loads(row["metadata"]),
        step=row["step"],
        retrieval_count=row["retrieval_count"],
        last_accessed_at=None
        if row["last_accessed_at"] is None
        else datetime.fromisoformat(row["last_accessed_at"]),
        effective_importance=row["effective_importance"],
        **extras,
    )
