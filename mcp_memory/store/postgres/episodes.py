"""Episodes on PostgreSQL: writing them (with retry detection), correcting, reading and deleting them.

Every write takes the group's row lock first (connection.lock_group), so a group's writers take turns:
sequence numbers, the retry checks and the change feed stay exact with many servers writing. Each write
re-composes the keyword rows of the turns it touched and their neighbours (keywords.py) and indexes the
vectors it was given (vectors.py), in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from mcp_memory.errors import IdempotencyConflict
from mcp_memory.models import Episode
from mcp_memory.store.postgres.connection import PgDatabase, lock_group, vector_text
from mcp_memory.store.postgres.filters import filter_sql
from mcp_memory.store.postgres.keywords import refresh_keywords
from mcp_memory.store.postgres.vectors import group_revision, insert_vector
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
from mcp_memory.store.sqlite.keywords import Tokenizer

EPISODE_COLUMNS = (
    "e.id, e.group_id, e.session_id, e.sequence, e.producer_id, e.producer_role, e.produced_for_id, e.content, "
    "e.memory_type, e.importance, e.metadata, e.timestamp, e.created_at, e.content_hash, e.retrieval_count, "
    "e.last_accessed_at, e.indexed, e.updated_at, e.effective_importance, e.step, e.message"
)
_INSERT_INTO = (
    "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, produced_for_id, content, "
    "memory_type, importance, effective_importance, metadata, timestamp, ts_epoch, created_at, content_hash, "
    "dedup_key, indexed, step, message)"
)
_MARKS = "(" + ",".join(["%s"] * 19) + ")"
_INSERT = f"{_INSERT_INTO} VALUES {_MARKS} RETURNING id"


class Episodes(PgDatabase):
    """The Store's episode operations on PostgreSQL."""

    tokenizer: Tokenizer

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
        def insert(conn: Any) -> InsertBatch:
            lock_group(conn, group_id)
            before = group_revision(conn, group_id)
            _check_key_reuse(conn, group_id, session_id, episodes)
            retried = _retried_batch(conn, group_id, session_id, episodes, retry_window_start)
            if retried is not None:
                return InsertBatch(retried, before, before)
            next_seq = next_sequence(conn, group_id, session_id)
            stored = _stored_keys(conn, group_id, session_id, episodes)
            results: list[Inserted | None] = []
            planned: list[tuple[int, NewEpisode, np.ndarray | None]] = []  # (sequence, episode, vector)
            planned_keys: dict[str, int] = {}  # a key written earlier in this call: its place in `results`
            for i, ep in enumerate(episodes):
                if ep.dedup_key in planned_keys:
                    results.append(None)  # the same memory twice in one call: the first one's row, below
                    continue
                existing = _match_key(stored.get(ep.dedup_key or ""), session_id, ep)
                if existing is not None:
                    results.append(existing)
                    continue
                if ep.dedup_key is not None:
                    planned_keys[ep.dedup_key] = len(results)
                planned.append((next_seq, ep, None if vectors is None else vectors[i]))
                results.append(Inserted(0, next_seq, False))
                next_seq += 1
            ids = insert_many(conn, group_id, session_id, planned, index_vectors, created_at)
            done = [
                Inserted(ids[r.sequence], r.sequence, False) if r is not None and not r.duplicate else r
                for r in results
            ]
            for place, ep in enumerate(episodes):  # repeats of a key in this call are that memory again
                if done[place] is None:
                    first = done[planned_keys[ep.dedup_key or ""]]
                    assert first is not None
                    done[place] = Inserted(first.id, first.sequence, True)
            results = done
            new = [r.sequence for r in results if r is not None and not r.duplicate]
            if new:
                refresh_keywords(conn, self.tokenizer, group_id, session_id, min(new), max(new))
            return InsertBatch([r for r in results if r is not None], before, group_revision(conn, group_id))

        return self._run(insert)

    def update_episode(
        self,
        group_id: str,
        episode_id: int,
        change: EpisodeChange,
        vector: np.ndarray | None,
        updated_at: str,
    ) -> Episode | None:
        def update(conn: Any) -> Episode | None:
            lock_group(conn, group_id)
            row = conn.execute(
                "SELECT session_id, sequence, indexed FROM episodes WHERE id = %s AND group_id = %s",
                (episode_id, group_id),
            ).fetchone()
            if row is None:
                return None
            session_id, sequence, indexed = row
            conn.execute(
                "UPDATE episodes SET content = coalesce(%s, content), content_hash = coalesce(%s, content_hash), "
                "memory_type = coalesce(%s, memory_type), importance = coalesce(%s, importance), "
                "effective_importance = coalesce(%s, effective_importance), "
                "metadata = coalesce(%s::jsonb, metadata), updated_at = %s WHERE id = %s",
                (
                    change.content, change.content_hash, change.memory_type, change.importance,
                    change.importance, change.metadata_json, updated_at, episode_id,
                ),
            )  # fmt: skip
            if change.content is not None or change.memory_type is not None:
                if indexed != NOT_INDEXED:
                    _reindex_vector(conn, group_id, episode_id, change, vector)
                refresh_keywords(conn, self.tokenizer, group_id, session_id, sequence, sequence)
            found = conn.execute(f"SELECT {EPISODE_COLUMNS} FROM episodes e WHERE e.id = %s", (episode_id,))
            return episode(found.fetchone())

        return self._run(update)

    def touch(self, ids: Sequence[int], now: str) -> None:
        if not ids:
            return
        self._count(
            "UPDATE episodes SET retrieval_count = retrieval_count + 1, last_accessed_at = %s WHERE id = ANY(%s)",
            (now, sorted(set(ids))),
        )

    def delete_episodes(
        self, group_id: str, ids: Sequence[int] | None, session_id: str | None, keep_roles: Sequence[str] = ()
    ) -> int:
        clauses: list[str] = ["group_id = %s"]
        params: list[Any] = [group_id]
        if keep_roles:
            clauses.append("NOT (producer_role = ANY(%s))")
            params.append(list(keep_roles))
        if ids is not None:
            clauses.append("id = ANY(%s)")
            params.append(list(ids))
        if session_id is not None:
            clauses.append("session_id = %s")
            params.append(session_id)
        where = " AND ".join(clauses)

        def delete(conn: Any) -> int:
            lock_group(conn, group_id)
            spans = conn.execute(
                f"SELECT session_id, min(sequence), max(sequence) FROM episodes WHERE {where} GROUP BY session_id",
                params,
            ).fetchall()
            count = conn.execute(f"DELETE FROM episodes WHERE {where}", params).rowcount
            for session, low, high in spans:  # the neighbours' context held the deleted text
                refresh_keywords(conn, self.tokenizer, group_id, session, low, high)
            return int(count)

        return self._run(delete)

    # -- reading ------------------------------------------------------------------------

    def _episodes(self, sql: str, params: Sequence[Any]) -> list[Episode]:
        return [
            episode(row) for row in self._rows(f"SELECT {EPISODE_COLUMNS} FROM episodes e " + sql, params)
        ]

    def recent_episodes(self, group_id: str, session_id: str, limit: int) -> list[Episode]:
        found = self._episodes(
            "WHERE e.group_id = %s AND e.session_id = %s ORDER BY e.sequence DESC LIMIT %s",
            (group_id, session_id, limit),
        )
        return found[::-1]

    def session_episodes(
        self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()
    ) -> list[Episode]:
        return self._episodes(
            "WHERE e.group_id = %s AND e.session_id = %s AND NOT (e.memory_type = ANY(%s)) ORDER BY e.sequence",
            (group_id, session_id, list(exclude_types)),
        )

    def episodes_between(
        self, group_id: str, session_id: str, after: int, before: int, exclude_types: Sequence[str] = ()
    ) -> list[Episode]:
        return self._episodes(
            "WHERE e.group_id = %s AND e.session_id = %s AND e.sequence > %s AND e.sequence < %s "
            "AND NOT (e.memory_type = ANY(%s)) ORDER BY e.sequence",
            (group_id, session_id, after, before, list(exclude_types)),
        )

    def count_episodes(self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()) -> int:
        rows = self._rows(
            "SELECT count(*) FROM episodes WHERE group_id = %s AND session_id = %s "
            "AND NOT (memory_type = ANY(%s))",
            (group_id, session_id, list(exclude_types)),
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
        where, params = filter_sql(filters)
        by_session = filters.session_id is not None
        key = "e.sequence" if by_session else "e.ts_epoch, e.id"
        if after is not None:
            marks = ", ".join(["%s"] * len(after))
            where += f" AND ({key}) {'<' if newest_first else '>'} ({marks})"
            params += list(after)
        direction = "DESC" if newest_first else "ASC"
        order = ", ".join(f"{column} {direction}" for column in key.split(", "))
        rows = self._rows(
            f"SELECT {EPISODE_COLUMNS}, e.ts_epoch FROM episodes e WHERE e.group_id = %s {where} "
            f"ORDER BY {order} LIMIT %s",
            (group_id, *params, limit + 1),
        )
        page, last = rows[:limit], (rows[limit - 1] if len(rows) > limit else None)
        position = None
        if last is not None:
            position = (last[3],) if by_session else (last[-1], last[0])
        return EpisodePage([episode(row) for row in page], position)

    def episodes_in_spans(self, group_id: str, spans: Sequence[tuple[str, int, int]]) -> list[Episode]:
        if not spans:
            return []
        sessions, lows, highs = (list(column) for column in zip(*spans, strict=True))
        return self._episodes(
            "JOIN unnest(%s::text[], %s::int[], %s::int[]) AS s(session_id, low, high) "
            "ON e.session_id = s.session_id AND e.sequence BETWEEN s.low AND s.high "
            'WHERE e.group_id = %s ORDER BY e.session_id COLLATE "C", e.sequence',
            (sessions, lows, highs, group_id),
        )

    def fetch_episodes(self, ids: Sequence[int]) -> dict[int, Episode]:
        found = self._episodes("WHERE e.id = ANY(%s)", (list(ids),))
        return {ep.id: ep for ep in found}

    def keeps_vector(self, episode_id: int) -> bool:
        rows = self._rows("SELECT indexed FROM episodes WHERE id = %s", (episode_id,))
        return bool(rows) and rows[0][0] != NOT_INDEXED

    def in_period(self, ids: Sequence[int], since: float, until: float) -> set[int]:
        if not ids:
            return set()
        rows = self._rows(
            "SELECT id FROM episodes WHERE id = ANY(%s) AND ts_epoch BETWEEN %s AND %s",
            (list(ids), since, until),
        )
        return {row[0] for row in rows}

    def effective_importance(self, ids: Sequence[int], neutral: float) -> dict[int, float]:
        if not ids:
            return {}
        rows = self._rows(
            "SELECT id, effective_importance FROM episodes WHERE id = ANY(%s) AND effective_importance != %s",
            (list(ids), neutral),
        )
        return {row[0]: float(row[1]) for row in rows}


# -- the writes' parts, inside the caller's transaction ------------------------------------------------


def next_sequence(conn: Any, group_id: str, session_id: str) -> int:
    return int(
        conn.execute(
            "SELECT coalesce(max(sequence), 0) + 1 FROM episodes WHERE group_id = %s AND session_id = %s",
            (group_id, session_id),
        ).fetchone()[0]
    )


def insert_one(
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
    episode_id = conn.execute(
        _INSERT,
        (
            group_id, session_id, sequence, ep.producer_id, ep.producer_role, ep.produced_for_id, ep.content,
            ep.memory_type, ep.importance, ep.importance, ep.metadata_json, ep.timestamp, ep.ts_epoch,
            created_at, ep.content_hash, ep.dedup_key, state, ep.step, ep.message_json,
        ),
    ).fetchone()[0]  # fmt: skip
    if state == INDEXED and vector is not None:
        insert_vector(conn, int(episode_id), group_id, vector)
    return int(episode_id)


def insert_many(
    conn: Any,
    group_id: str,
    session_id: str,
    planned: Sequence[tuple[int, NewEpisode, np.ndarray | None]],
    index_vectors: bool,
    created_at: str,
) -> dict[int, int]:
    """Insert (sequence, episode, vector) rows in one statement, their vectors in one pipelined batch;
    returns the new id of each sequence."""
    if not planned:
        return {}
    rows = []
    for sequence, ep, vector in planned:
        state = NOT_INDEXED if not index_vectors else (PENDING if vector is None else INDEXED)
        rows.append((
            group_id, session_id, sequence, ep.producer_id, ep.producer_role, ep.produced_for_id, ep.content,
            ep.memory_type, ep.importance, ep.importance, ep.metadata_json, ep.timestamp, ep.ts_epoch,
            created_at, ep.content_hash, ep.dedup_key, state, ep.step, ep.message_json,
        ))  # fmt: skip
    returned = conn.execute(
        f"{_INSERT_INTO} VALUES {','.join([_MARKS] * len(rows))} RETURNING id, sequence",
        [value for row in rows for value in row],
    ).fetchall()
    ids = {int(sequence): int(episode_id) for episode_id, sequence in returned}
    indexed = [(ids[sequence], group_id, vector_text(vector)) for sequence, _, vector in planned
               if index_vectors and vector is not None]  # fmt: skip
    if indexed:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO episode_vectors(episode_id, group_id, embedding) VALUES (%s, %s, %s::vector)",
                indexed,
            )
    return ids


def _stored_keys(conn: Any, group_id: str, session_id: str, episodes: Sequence[NewEpisode]) -> dict[str, Any]:
    """The session's stored memories under any of these retry keys, by key (one query for the batch)."""
    keys = [ep.dedup_key for ep in episodes if ep.dedup_key is not None]
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT dedup_key, id, sequence, producer_id, content_hash, updated_at FROM episodes "
        "WHERE group_id = %s AND session_id = %s AND dedup_key = ANY(%s)",
        (group_id, session_id, keys),
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _match_key(row: Any, session_id: str, ep: NewEpisode) -> Inserted | None:
    """The stored memory under this memory's retry key, if any; the same key for other words is refused,
    unless the stored memory was corrected since."""
    if row is None:
        return None
    if (row[2], row[3]) != (ep.producer_id, ep.content_hash) and row[4] is None:
        raise _key_reused(session_id, row[0])
    return Inserted(row[0], row[1], True)


def _check_key_reuse(conn: Any, group_id: str, session_id: str, episodes: Sequence[NewEpisode]) -> None:
    first = episodes[0].dedup_key if episodes else None
    if first is None or not first.startswith(KEYED):
        return
    call = first[: first.index("\x1f", len(KEYED)) + 1]
    rows = conn.execute(
        "SELECT id, dedup_key FROM episodes WHERE group_id = %s AND session_id = %s "
        "AND starts_with(dedup_key, %s)",
        (group_id, session_id, call),
    ).fetchall()
    for row in rows:
        if row[1].split("\x1f")[-2] != str(len(episodes)):
            raise _key_reused(session_id, row[0])


def _retried_batch(
    conn: Any, group_id: str, session_id: str, episodes: Sequence[NewEpisode], window_start: str
) -> list[Inserted] | None:
    if all(ep.dedup_key is not None for ep in episodes):
        return None
    rows = conn.execute(
        "SELECT id, sequence, producer_id, content_hash, created_at FROM episodes "
        "WHERE group_id = %s AND session_id = %s ORDER BY sequence DESC LIMIT %s",
        (group_id, session_id, len(episodes)),
    ).fetchall()[::-1]
    if len(rows) != len(episodes) or any(row[4] < window_start for row in rows):
        return None
    if [(r[2], r[3]) for r in rows] != [(ep.producer_id, ep.content_hash) for ep in episodes]:
        return None
    return [Inserted(row[0], row[1], True) for row in rows]


def _key_reused(session_id: str, memory_id: int) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"this idempotency_key was already used in session {session_id!r} for other memories (memory "
        f"{memory_id}); send a new key with new memories, or exactly the same memories to retry"
    )


def _reindex_vector(
    conn: Any, group_id: str, episode_id: int, change: EpisodeChange, vector: np.ndarray | None
) -> None:
    """New text: its new vector, or pending until one is made. Only a new memory type: the same vector,
    whose filter column (the episode's) moved, so the group's revision moves and in-memory copies reload."""
    if change.content is None:
        conn.execute("SELECT log_vector_change(%s, %s)", (group_id, episode_id))
        return
    conn.execute("DELETE FROM episode_vectors WHERE episode_id = %s", (episode_id,))
    conn.execute(
        "UPDATE episodes SET indexed = %s WHERE id = %s", (PENDING if vector is None else INDEXED, episode_id)
    )
    if vector is not None:
        insert_vector(conn, episode_id, group_id, vector)


def episode(row: Any) -> Episode:
    """A row of EPISODE_COLUMNS as the model callers see (a stored message's extras included)."""
    extras = json.loads(row[20]) if row[20] else {}
    extras.pop("text", None)
    return Episode(
        id=row[0], group_id=row[1], session_id=row[2], sequence=row[3],
        timestamp=datetime.fromisoformat(row[11]), producer=row[4], role=row[5], produced_for=row[6],
        content=row[7], memory_type=row[8], importance=row[9], metadata=row[10], step=row[19],
        retrieval_count=row[14],
        last_accessed_at=None if row[15] is None else datetime.fromisoformat(row[15]),
        effective_importance=row[18], **extras,
    )  # fmt: skip
