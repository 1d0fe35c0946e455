"""Save and load on PostgreSQL: the reads of an export and the writes of an import, as on SQLite.

What an import finds, keeps and maps is store/sqlite/transfer.py's `_Importer` (its docstring says how a
memory or a fact is found again); here only its SQL differs, so the two backends cannot drift apart in
what they decide. An export reads in one REPEATABLE READ transaction (one snapshot while other servers go on
writing) and yields the same lines, JSON columns read as text so the same line builders serve both.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

from mcp_memory.store.postgres.connection import PgDatabase, lock_group
from mcp_memory.store.postgres.keywords import refresh_keywords
from mcp_memory.store.records import (
    NOT_INDEXED,
    PENDING,
    ChunkOutcome,
    ImportChunk,
    ImportedEpisode,
    ImportedFact,
    ImportedGroup,
    ImportedRolling,
    ImportedSession,
)
from mcp_memory.store.sqlite.keywords import Tokenizer
from mcp_memory.store.sqlite.transfer import _LINES, _Found, _Importer

_GROUP = (
    "SELECT group_id, user_ids::text AS user_ids, agent_ids::text AS agent_ids, description, "
    "configuration::text AS configuration, created_at, owner FROM groups "
)
_SESSION = (
    "SELECT group_id, session_id, configuration::text AS configuration, overrides::text AS overrides, created_at "
    "FROM sessions "
)
_MEMORY = (
    "SELECT id, group_id, session_id, sequence, producer_id, producer_role, produced_for_id, content, message, "
    "memory_type, importance, effective_importance, metadata::text AS metadata, timestamp, created_at, "
    "updated_at, retrieval_count, last_accessed_at, dedup_key, step, indexed FROM episodes "
)
_FACT = (
    "SELECT f.id, f.group_id, f.session_id, f.subject, f.predicate, f.object, f.source, f.confidence, "
    "f.valid_from, f.valid_to, f.created_at, f.memory_id FROM facts f JOIN episodes e ON e.id = f.memory_id "
)
_ROLLING = (
    "SELECT group_id, session_id, text, covered_through_sequence, updated_at, "
    "omitted_sequences::text AS omitted_sequences FROM rolling_summaries "
)
_COUNTS = "SELECT group_id, session_id, lightweight, auto_multiple FROM summary_counts "


class Transfer(PgDatabase):
    """The Store's export reads and import writes on PostgreSQL."""

    tokenizer: Tokenizer

    # -- export -------------------------------------------------------------------------

    def export_group_ids(self) -> list[str]:
        return [row[0] for row in self._rows('SELECT group_id FROM groups ORDER BY group_id COLLATE "C"')]

    def export_records(self, group_ids: Sequence[str]) -> Generator[tuple[str, dict[str, Any]]]:
        """("counts", {...}) first, then every record of these groups in file order, from one snapshot."""
        from psycopg.rows import dict_row

        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor = conn.cursor(row_factory=dict_row)
            yield "counts", _export_counts(conn, group_ids)
            groups = cursor.execute(
                _GROUP + 'WHERE group_id = ANY(%s) ORDER BY group_id COLLATE "C"', (list(group_ids),)
            ).fetchall()
            for group in groups:
                yield "group", _LINES["group"](group)
                sessions = cursor.execute(
                    _SESSION + 'WHERE group_id = %s ORDER BY created_at COLLATE "C", session_id COLLATE "C"',
                    (group["group_id"],),
                ).fetchall()
                for session in sessions:
                    yield "session", _LINES["session"](session)
                    for kind, row in _session_rows(conn, group["group_id"], session["session_id"]):
                        yield kind, _LINES[kind](row)

    # -- import -------------------------------------------------------------------------

    def import_group(self, group: ImportedGroup) -> tuple[bool, list[str], list[str]]:
        def write(conn: Any) -> tuple[bool, list[str], list[str]]:
            created = conn.execute(
                "INSERT INTO groups(group_id, user_ids, agent_ids, description, configuration, created_at, owner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (group_id) DO NOTHING",
                (group.group_id, json.dumps(group.user_ids), json.dumps(group.agent_ids), group.description,
                 json.dumps(group.configuration), group.created_at, group.owner),
            ).rowcount  # fmt: skip
            if created:
                return True, [], []
            users, agents = conn.execute(
                "SELECT user_ids, agent_ids FROM groups WHERE group_id = %s FOR UPDATE", (group.group_id,)
            ).fetchone()
            new_users = [u for u in group.user_ids if u not in users + agents]
            new_agents = [a for a in group.agent_ids if a not in users + agents]
            if new_users or new_agents:
                conn.execute(
                    "UPDATE groups SET user_ids = %s, agent_ids = %s WHERE group_id = %s",
                    (json.dumps(users + new_users), json.dumps(agents + new_agents), group.group_id),
                )
            return False, new_users, new_agents

        return self._run(write)

    def import_chunk(
        self, chunk: ImportChunk, known_ids: Mapping[int, int], known_sequences: Mapping[int, int]
    ) -> ChunkOutcome:
        def write(conn: Any) -> ChunkOutcome:
            lock_group(conn, chunk.group_id)
            return _PgImporter(conn, chunk, known_ids, known_sequences, self.tokenizer).run()

        return self._run(write)

    def session_configuration(self, group_id: str, session_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT configuration FROM sessions WHERE group_id = %s AND session_id = %s",
            (group_id, session_id),
        )
        return dict(rows[0][0]) if rows else None


def _export_counts(conn: Any, group_ids: Sequence[str]) -> dict[str, int]:
    groups = list(group_ids)
    tables = {
        "groups": "groups", "sessions": "sessions", "memories": "episodes",
        "rolling_summaries": "rolling_summaries", "summary_counts": "summary_counts",
    }  # fmt: skip
    counts = {
        name: int(
            conn.execute(f"SELECT count(*) FROM {table} WHERE group_id = ANY(%s)", (groups,)).fetchone()[0]
        )
        for name, table in tables.items()
    }
    counts["facts"] = int(
        conn.execute(
            "SELECT count(*) FROM facts f JOIN episodes e ON e.id = f.memory_id WHERE e.group_id = ANY(%s)",
            (groups,),
        ).fetchone()[0]
    )
    order = ["groups", "sessions", "memories", "facts", "rolling_summaries", "summary_counts"]
    return {name: counts[name] for name in order}


def _session_rows(conn: Any, group_id: str, session_id: str) -> Iterator[tuple[str, Any]]:
    from psycopg.rows import dict_row

    cursor = conn.cursor(row_factory=dict_row)
    key = (group_id, session_id)
    memories = cursor.execute(_MEMORY + "WHERE group_id = %s AND session_id = %s ORDER BY sequence", key)
    for row in memories.fetchall():
        yield "memory", row
    facts = cursor.execute(_FACT + "WHERE e.group_id = %s AND e.session_id = %s ORDER BY e.sequence", key)
    for row in facts.fetchall():
        yield "fact", row
    for kind, sql in (("rolling_summary", _ROLLING), ("summary_count", _COUNTS)):
        row = cursor.execute(sql + "WHERE group_id = %s AND session_id = %s", key).fetchone()
        if row is not None:
            yield kind, row


class _PgImporter(_Importer):
    """SQLite's importer, its statements in PostgreSQL's dialect (the group is locked by the caller)."""

    def __init__(
        self,
        conn: Any,
        chunk: ImportChunk,
        known_ids: Mapping[int, int],
        known_sequences: Mapping[int, int],
        tokenizer: Tokenizer,
    ) -> None:
        super().__init__(conn, chunk, known_ids, known_sequences)
        self.tokenizer = tokenizer

    def _ensure_session(self, session: ImportedSession) -> None:
        created = self.conn.execute(
            "INSERT INTO sessions(group_id, session_id, configuration, overrides, created_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (group_id, session_id) DO NOTHING",
            (session.group_id, session.session_id, json.dumps(session.configuration),
             json.dumps(session.overrides), session.created_at),
        ).rowcount  # fmt: skip
        self.out.session_created = bool(created)

    def _by_key(self, key: str) -> Any:
        return self.conn.execute(
            "SELECT id, sequence, producer_id, content_hash, updated_at FROM episodes "
            "WHERE group_id = %s AND session_id = %s AND dedup_key = %s",
            (self.chunk.group_id, self.chunk.session_id, key),
        ).fetchone()

    def _by_place(self, ep: ImportedEpisode) -> Any:
        return self.conn.execute(
            "SELECT id, sequence FROM episodes WHERE group_id = %s AND session_id = %s AND sequence = %s "
            "AND (content_hash = %s OR ((updated_at IS NOT NULL OR %s) AND producer_id = %s AND timestamp = %s))",
            (
                self.chunk.group_id, self.chunk.session_id, ep.old_sequence, ep.content_hash,
                ep.updated_at is not None, ep.producer_id, ep.timestamp,
            ),
        ).fetchone()  # fmt: skip

    def _find_fact(self, fact: ImportedFact, memory: _Found | None) -> tuple[int, int | None] | None:
        conn, group_id = self.conn, self.chunk.group_id
        if memory is not None:
            row = conn.execute(
                "SELECT id, memory_id FROM facts WHERE memory_id = %s", (memory.id,)
            ).fetchone()
            if row is not None:
                return row[0], row[1]
        keys = "group_id = %s AND subject_key = %s AND predicate_key = %s AND object_key = %s"
        if fact.valid_to is None:
            row = conn.execute(
                f"SELECT id, memory_id FROM facts WHERE {keys} AND valid_to IS NULL", (group_id, *fact.keys)
            ).fetchone()
        else:
            row = conn.execute(
                f"SELECT id, memory_id FROM facts WHERE {keys} AND valid_from = %s AND valid_to = %s",
                (group_id, *fact.keys, fact.valid_from, fact.valid_to),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def _refresh_keywords(self, low: int, high: int) -> None:
        refresh_keywords(self.conn, self.tokenizer, self.chunk.group_id, self.chunk.session_id, low, high)

    def _sequences(self, new: Sequence[ImportedEpisode]) -> list[int]:
        if not new:
            return []
        chunk, exported = self.chunk, [ep.old_sequence for ep in new]
        taken = self.conn.execute(
            "SELECT count(*) FROM episodes WHERE group_id = %s AND session_id = %s AND sequence = ANY(%s)",
            (chunk.group_id, chunk.session_id, exported),
        ).fetchone()[0]
        if not taken and min(exported) > chunk.after:
            return exported
        last = self.conn.execute(
            "SELECT coalesce(max(sequence), 0) FROM episodes WHERE group_id = %s AND session_id = %s",
            (chunk.group_id, chunk.session_id),
        ).fetchone()[0]
        start = max(last, chunk.after) + 1
        return list(range(start, start + len(new)))

    def _insert_episode(self, ep: ImportedEpisode, sequence: int) -> int:
        chunk = self.chunk
        indexed = PENDING if ep.vector and chunk.index_vectors else NOT_INDEXED
        metadata = ep.metadata_json if ep.source_ids is None else self._with_sources(ep)
        row = self.conn.execute(
            "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, produced_for_id, "
            "content, memory_type, importance, effective_importance, metadata, timestamp, ts_epoch, created_at, "
            "content_hash, dedup_key, retrieval_count, last_accessed_at, indexed, updated_at, step, message) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
            (
                chunk.group_id, chunk.session_id, sequence, ep.producer_id, ep.producer_role, ep.produced_for_id,
                ep.content, ep.memory_type, ep.importance, ep.effective_importance, metadata, ep.timestamp,
                ep.ts_epoch, ep.created_at, ep.content_hash, self.keys[ep.old_id], ep.retrieval_count,
                ep.last_accessed_at, indexed, ep.updated_at, ep.step, ep.message_json,
            ),
        ).fetchone()  # fmt: skip
        return int(row[0])

    def _insert_facts(self, facts: Sequence[ImportedFact], new_memories: set[int]) -> None:
        for fact in facts:
            memory_id = self._new_id(fact.old_memory_id)
            fact_id = self.conn.execute(
                "INSERT INTO facts(group_id, session_id, subject, predicate, object, subject_key, predicate_key, "
                "object_key, source, confidence, valid_from, valid_to, created_at, memory_id) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                (
                    self.chunk.group_id, fact.session_id, fact.subject, fact.predicate, fact.object, *fact.keys,
                    fact.source, fact.confidence, fact.valid_from, fact.valid_to, fact.created_at, memory_id,
                ),
            ).fetchone()[0]  # fmt: skip
            if fact.old_memory_id in new_memories:  # its memory's metadata names the fact: the new id
                self.conn.execute(
                    "UPDATE episodes SET metadata = jsonb_set(metadata, '{fact,id}', to_jsonb(%s::bigint)) "
                    "WHERE id = %s AND jsonb_typeof(metadata -> 'fact') = 'object'",
                    (fact_id, memory_id),
                )
        self.out.facts_added = len(facts)

    def _rolling(self, rolling: ImportedRolling) -> None:
        chunk = self.chunk
        there = self.conn.execute(
            "SELECT 1 FROM rolling_summaries WHERE group_id = %s AND session_id = %s",
            (chunk.group_id, chunk.session_id),
        ).fetchone()
        if there is not None:
            return
        covered, omitted = self._rolling_sequences(rolling)
        self.conn.execute(
            "INSERT INTO rolling_summaries(group_id, session_id, text, covered_through_sequence, updated_at, "
            "omitted_sequences) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                chunk.group_id,
                chunk.session_id,
                rolling.text,
                covered,
                rolling.updated_at,
                json.dumps(omitted),
            ),
        )
        self.out.rolling_added = True

    def _summary_count(self, lightweight: int, auto_multiple: int) -> None:
        self.conn.execute(
            "INSERT INTO summary_counts AS c (group_id, session_id, lightweight, auto_multiple) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (group_id, session_id) DO UPDATE SET "
            "lightweight = greatest(c.lightweight, excluded.lightweight), "
            "auto_multiple = greatest(c.auto_multiple, excluded.auto_multiple) "
            "WHERE excluded.lightweight > c.lightweight OR excluded.auto_multiple > c.auto_multiple",
            (self.chunk.group_id, self.chunk.session_id, lightweight, auto_multiple),
        )
