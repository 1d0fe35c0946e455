"""The facts table: (subject, predicate, object) triples with a validity period.

A fact is current while `valid_to` is NULL. Duplicates are found by the `*_key` columns: the
text trimmed, its whitespace collapsed and its case folded, so "Ana  lives in" and "ana lives
in" are one predicate. Each fact is also stored as an episode (`memory_id`) so that recall finds
it with no search code of its own; the episode's metadata says whether the fact is current.

Functions here take an open connection inside the caller's transaction; store/sqlite/store.py owns it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from mcp_memory.errors import FactNotNewer
from mcp_memory.models import Fact
from mcp_memory.store.records import NewFact, fact_key

FACT_COLUMNS = (
    "id, group_id, session_id, subject, predicate, object, source, confidence, valid_from, valid_to, "
    "created_at, memory_id"
)


def episode_metadata(fact_id: int) -> str:
    """The metadata of a fact's episode: recall hits show which fact they are and whether it is current."""
    return json.dumps({"fact": {"id": fact_id, "current": True}})


def find_current(conn: Any, group_id: str, fact: NewFact) -> Any | None:
    """The current fact with the same triple, if any."""
    subject, predicate, obj = fact.keys
    return conn.execute(
        f"SELECT {FACT_COLUMNS} FROM facts WHERE group_id = ? AND subject_key = ? AND predicate_key = ? "
        "AND object_key = ? AND valid_to IS NULL",
        (group_id, subject, predicate, obj),
    ).fetchone()


def insert(conn: Any, group_id: str, fact: NewFact, created_at: str) -> int:
    """Insert a current fact, not yet linked to its episode; returns its id."""
    cur = conn.execute(
        "INSERT INTO facts(group_id, session_id, subject, predicate, object, subject_key, predicate_key, "
        "object_key, source, confidence, valid_from, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            group_id, fact.session_id, fact.subject, fact.predicate, fact.object, *fact.keys,
            fact.source, fact.confidence, fact.valid_from, created_at,
        ),
    )  # fmt: skip
    return int(cur.lastrowid)


def link(conn: Any, fact_id: int, memory_id: int) -> None:
    conn.execute("UPDATE facts SET memory_id = ? WHERE id = ?", (memory_id, fact_id))


def close_current(conn: Any, group_id: str, fact: NewFact, keep: Collection[int]) -> list[int]:
    """Close the current facts with the fact's subject and predicate (except `keep`) at its valid_from."""
    subject, predicate, _ = fact.keys
    rows = conn.execute(
        "SELECT id, subject, predicate, object, valid_from, memory_id FROM facts WHERE group_id = ? "
        "AND subject_key = ? AND predicate_key = ? AND valid_to IS NULL ORDER BY id",
        (group_id, subject, predicate),
    ).fetchall()
    closing = [row for row in rows if row["id"] not in keep]
    if not closing:
        return []
    for row in closing:
        if row["valid_from"] > fact.valid_from:
            raise FactNotNewer(
                f"valid_from {fact.valid_from} is before the current fact {row['subject']!r} "
                f"{row['predicate']!r} {row['object']!r} (id {row['id']}) became valid ({row['valid_from']}), "
                "so it cannot replace it; pass a later valid_from, or leave it out to mean now; nothing was stored"
            )
    ids = [row["id"] for row in closing]
    conn.execute(
        "UPDATE facts SET valid_to = ? WHERE id IN (SELECT value FROM json_each(?))",
        (fact.valid_from, json.dumps(ids)),
    )
    conn.execute(
        "UPDATE episodes SET metadata = json_set(metadata, '$.fact.current', json('false'), "
        "'$.fact.valid_to', ?) WHERE id IN (SELECT value FROM json_each(?))",
        (fact.valid_from, json.dumps([row["memory_id"] for row in closing if row["memory_id"] is not None])),
    )
    return ids


def fetch(conn: Any, ids: Sequence[int]) -> dict[int, Fact]:
    rows = conn.execute(
        f"SELECT {FACT_COLUMNS} FROM facts WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    ).fetchall()
    return {row["id"]: fact(row) for row in rows}


def select(
    conn: Any, group_id: str, subject: str | None, predicate: str | None, limit: int
) -> tuple[list[Fact], int]:
    """The group's facts (filtered by normalised subject and predicate): current first, then the newest;
    and how many match in all."""
    where, params = "group_id = ?", [group_id]
    for column, value in (("subject_key", subject), ("predicate_key", predicate)):
        if value is not None:
            where += f" AND {column} = ?"
            params.append(fact_key(value))
    rows = conn.execute(
        f"SELECT {FACT_COLUMNS} FROM facts WHERE {where} "
        "ORDER BY valid_to IS NOT NULL, coalesce(valid_to, valid_from) DESC, id DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    total = conn.execute(f"SELECT count(*) FROM facts WHERE {where}", params).fetchone()[0]
    return [fact(row) for row in rows], int(total)


def closed_memory_ids(conn: Any, memory_ids: Sequence[int]) -> set[int]:
    """Which of these episodes hold facts that are no longer current."""
    rows = conn.execute(
        "SELECT memory_id FROM facts WHERE valid_to IS NOT NULL "
        "AND memory_id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(memory_ids)),),
    ).fetchall()
    return {row[0] for row in rows}


def fact(row: Any) -> Fact:
    """A facts row as the model callers see."""
    return Fact(
        id=row["id"],
        group_id=row["group_id"],
        subject=row["subject"],
        predicate=row["predicate"],
        object=row["object"],
        current=row["valid_to"] is None,
        valid_from=datetime.fromisoformat(row["valid_from"]),
        valid_to=None if row["valid_to"] is None else datetime.fromisoformat(row["valid_to"]),
        session_id=row["session_id"],
        source=row["source"],
        confidence=row["confidence"],
        memory_id=row["memory_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )
