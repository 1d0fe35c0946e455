"""Facts on PostgreSQL: the triples table as on SQLite (store/sqlite/facts.py), each with its episode.

A fact write holds the group's row lock (connection.lock_group) from its first read to its commit, so two
servers replacing the same subject and predicate at once take turns: exactly one fact stays current.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np

from mcp_memory.errors import FactNotNewer
from mcp_memory.models import Fact
from mcp_memory.store.postgres.connection import PgDatabase, lock_group
from mcp_memory.store.postgres.episodes import insert_one, next_sequence
from mcp_memory.store.postgres.keywords import refresh_keywords
from mcp_memory.store.postgres.vectors import group_revision
from mcp_memory.store.records import NewEpisode, NewFact, StoredFacts, fact_key
from mcp_memory.store.sqlite.facts import episode_metadata
from mcp_memory.store.sqlite.keywords import Tokenizer

FACT_COLUMNS = (
    "id, group_id, session_id, subject, predicate, object, source, confidence, valid_from, valid_to, "
    "created_at, memory_id"
)


class Facts(PgDatabase):
    tokenizer: Tokenizer

    def insert_facts(
        self,
        group_id: str,
        session_id: str,
        facts: Sequence[NewFact],
        episodes: Sequence[NewEpisode],
        vectors: np.ndarray | None,
        *,
        supersede: bool,
        index_vectors: bool,
        created_at: str,
    ) -> StoredFacts:
        def write(conn: Any) -> StoredFacts:
            lock_group(conn, group_id)
            before = group_revision(conn, group_id)
            first = sequence = next_sequence(conn, group_id, session_id)
            ids: list[int] = []
            duplicate: list[bool] = []
            closed: list[int] = []
            new: list[tuple[int, int]] = []
            for i, (fact, ep) in enumerate(zip(facts, episodes, strict=True)):
                subject, predicate, obj = fact.keys
                found = conn.execute(
                    "SELECT id FROM facts WHERE group_id = %s AND subject_key = %s AND predicate_key = %s "
                    "AND object_key = %s AND valid_to IS NULL",
                    (group_id, subject, predicate, obj),
                ).fetchone()
                duplicate.append(found is not None)
                if found is not None:
                    ids.append(int(found[0]))
                else:
                    fact_id = conn.execute(
                        "INSERT INTO facts(group_id, session_id, subject, predicate, object, subject_key, "
                        "predicate_key, object_key, source, confidence, valid_from, created_at) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                        (
                            group_id, fact.session_id, fact.subject, fact.predicate, fact.object, *fact.keys,
                            fact.source, fact.confidence, fact.valid_from, created_at,
                        ),
                    ).fetchone()[0]  # fmt: skip
                    ids.append(int(fact_id))
                    ep = replace(ep, metadata_json=episode_metadata(ids[-1]))
                    vector = None if vectors is None else vectors[i]
                    memory_id = insert_one(
                        conn, group_id, session_id, sequence, ep, vector, index_vectors, created_at
                    )
                    conn.execute("UPDATE facts SET memory_id = %s WHERE id = %s", (memory_id, ids[-1]))
                    new.append((i, memory_id))
                    sequence += 1
                if supersede:
                    closed += _close_current(conn, group_id, fact, keep=set(ids))
            if sequence > first:
                refresh_keywords(conn, self.tokenizer, group_id, session_id, first, sequence - 1)
            rows = {
                row[0]: fact_record(row)
                for row in conn.execute(f"SELECT {FACT_COLUMNS} FROM facts WHERE id = ANY(%s)", (ids,))
            }
            return StoredFacts(
                [rows[i] for i in ids], duplicate, closed, new, before, group_revision(conn, group_id)
            )

        return self._run(write)

    def list_facts(
        self, group_id: str, subject: str | None, predicate: str | None, limit: int
    ) -> tuple[list[Fact], int]:
        where, params = "group_id = %s", [group_id]
        for column, value in (("subject_key", subject), ("predicate_key", predicate)):
            if value is not None:
                where += f" AND {column} = %s"
                params.append(fact_key(value))

        def read(conn: Any) -> tuple[list[Fact], int]:
            rows = conn.execute(
                f"SELECT {FACT_COLUMNS} FROM facts WHERE {where} "
                "ORDER BY valid_to IS NOT NULL, coalesce(valid_to, valid_from) DESC, id DESC LIMIT %s",
                (*params, limit),
            ).fetchall()
            total = conn.execute(f"SELECT count(*) FROM facts WHERE {where}", params).fetchone()[0]
            return [fact_record(row) for row in rows], int(total)

        return self._run(read)

    def closed_fact_episodes(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        rows = self._rows(
            "SELECT memory_id FROM facts WHERE valid_to IS NOT NULL AND memory_id = ANY(%s)", (list(ids),)
        )
        return {row[0] for row in rows}


def _close_current(conn: Any, group_id: str, fact: NewFact, keep: set[int]) -> list[int]:
    """Close the current facts with the fact's subject and predicate (except `keep`) at its valid_from."""
    subject, predicate, _ = fact.keys
    rows = conn.execute(
        "SELECT id, subject, predicate, object, valid_from, memory_id FROM facts WHERE group_id = %s "
        "AND subject_key = %s AND predicate_key = %s AND valid_to IS NULL ORDER BY id",
        (group_id, subject, predicate),
    ).fetchall()
    closing = [row for row in rows if row[0] not in keep]
    for row in closing:
        if row[4] > fact.valid_from:
            raise FactNotNewer(
                f"valid_from {fact.valid_from} is before the current fact {row[1]!r} {row[2]!r} {row[3]!r} "
                f"(id {row[0]}) became valid ({row[4]}), so it cannot replace it; pass a later valid_from, "
                "or leave it out to mean now; nothing was stored"
            )
    if not closing:
        return []
    ids = [row[0] for row in closing]
    conn.execute("UPDATE facts SET valid_to = %s WHERE id = ANY(%s)", (fact.valid_from, ids))
    conn.execute(
        "UPDATE episodes SET metadata = jsonb_set(jsonb_set(metadata, '{fact,current}', 'false'), "
        "'{fact,valid_to}', to_jsonb(%s::text)) WHERE id = ANY(%s)",
        (fact.valid_from, [row[5] for row in closing if row[5] is not None]),
    )
    return ids


def fact_record(row: Any) -> Fact:
    return Fact(
        id=row[0], group_id=row[1], session_id=row[2], subject=row[3], predicate=row[4], object=row[5],
        source=row[6], confidence=row[7], valid_from=datetime.fromisoformat(row[8]),
        valid_to=None if row[9] is None else datetime.fromisoformat(row[9]), current=row[9] is None,
        created_at=datetime.fromisoformat(row[10]), memory_id=row[11],
    )  # fmt: skip
