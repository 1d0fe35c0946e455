"""Save and load in the database: the reads an export makes, the writes an import makes.

An export reads everything in one read transaction (`export_records`), so the file is the database at one
moment while other processes go on writing. An import writes a session's records in transactions of a
bounded size (`import_chunk`), each complete in itself: ids are mapped (facts' memories, summaries' source
episodes, the rolling summary's covered sequence follow the rows they point at), and whatever is already
there is found and left as it is, so importing a file twice, or into the database it came from, adds
nothing. How a memory is found again: by its dedup key (the exported one, else `import<US>database<US>id`,
which the new row keeps), else by its sequence and content (or its sequence, speaker and time when it was
corrected on either side since). A fact: by its memory, else by its keys and validity period (a current
fact: by its keys). The format itself is transfer/format.py's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.connection import Database

DATABASE_ID_KEY = "database_id"  # in the meta table: where an export's memories came from
GAP_REFRESHED = fts.TURNS_BEFORE + fts.TURNS_AFTER  # new turns this close share one keyword refresh
EXPORT_MEMORY_COLUMNS = (
    "id, group_id, session_id, sequence, producer_id, producer_role, produced_for_id, content, message, "
    "memory_type, importance, effective_importance, metadata, timestamp, created_at, updated_at, "
    "retrieval_count, last_accessed_at, dedup_key, step, indexed"
)
FACT_COLUMNS = (
    "f.id, f.group_id, f.session_id, f.subject, f.predicate, f.object, f.source, f.confidence, f.valid_from, "
    "f.valid_to, f.created_at, f.memory_id"
)


@dataclass(frozen=True)
class _Found:
    id: int
    sequence: int
    same_session: bool = True


class TransferStore(Database):
    """The Store's export reads and import writes."""

    # -- identity -----------------------------------------------------------------------

    def database_id(self) -> str:
        """This database's random identity, made the first time it is asked for."""

        def get(conn: Any) -> str:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (DATABASE_ID_KEY, secrets.token_hex(16)),
            )
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (DATABASE_ID_KEY,)).fetchone()
            return str(row[0])

        return str(self.write(get))

    # -- export -------------------------------------------------------------------------

    def export_records(self, group_ids: Sequence[str]) -> Generator[tuple[str, dict[str, Any]]]:
        """("counts", {...}) first, then every record of these groups in file order as the line
        transfer/format.py reads (kind, fields), read in one transaction: each group, then each of its
        sessions with its memories, facts, rolling summary and counters."""
        rows = self._export_rows(group_ids)
        try:
            kind, counts = next(rows)
            yield kind, dict(counts)
            for kind, row in rows:
                yield kind, _LINES[kind](row)
        finally:
            rows.close()

    def _export_rows(self, group_ids: Sequence[str]) -> Generator[tuple[str, Any]]:
        with self.snapshot() as conn:
            yield "counts", _export_counts(conn, group_ids)
            groups = conn.execute(
                "SELECT * FROM groups WHERE group_id IN (SELECT value FROM json_each(?)) ORDER BY group_id",
                (json.dumps(list(group_ids)),),
            ).fetchall()
            for group in groups:
                yield "group", group
                sessions = conn.execute(
                    "SELECT * FROM sessions WHERE group_id = ? ORDER BY created_at, session_id", (group[0],)
                ).fetchall()
                for session in sessions:
                    yield "session", session
                    yield from _session_rows(conn, group[0], session["session_id"])

    def export_group_ids(self) -> list[str]:
        return [row[0] for row in self.read("SELECT group_id FROM groups ORDER BY group_id")]

    # -- import -------------------------------------------------------------------------

    def import_group(self, group: ImportedGroup) -> tuple[bool, list[str], list[str]]:
        """Create the group as exported, or add the participants it lacks; returns whether it was created and
        the users and agents added."""
        row = {
            "group_id": group.group_id, "user_ids": json.dumps(group.user_ids),
            "agent_ids": json.dumps(group.agent_ids), "description": group.description,
            "configuration": json.dumps(group.configuration), "created_at": group.created_at, "owner": group.owner,
        }  # fmt: skip

        def write(conn: Any) -> tuple[bool, list[str], list[str]]:
            cur = conn.execute(
                "INSERT INTO groups(group_id, user_ids, agent_ids, description, configuration, created_at, owner) "
                "VALUES (:group_id, :user_ids, :agent_ids, :description, :configuration, :created_at, :owner) "
                "ON CONFLICT(group_id) DO NOTHING",
                row,
            )
            if cur.rowcount:
                return True, [], []
            stored = conn.execute(
                "SELECT user_ids, agent_ids FROM groups WHERE group_id = ?", (row["group_id"],)
            ).fetchone()
            users, agents = json.loads(stored[0]), json.loads(stored[1])
            new_users = [u for u in group.user_ids if u not in users + agents]
            new_agents = [a for a in group.agent_ids if a not in users + agents]
            if new_users or new_agents:
                conn.execute(
                    "UPDATE groups SET user_ids = ?, agent_ids = ? WHERE group_id = ?",
                    (json.dumps(users + new_users), json.dumps(agents + new_agents), row["group_id"]),
                )
            return False, new_users, new_agents

        result: tuple[bool, list[str], list[str]] = self.write(write)
        return result

    def import_chunk(
        self, chunk: ImportChunk, known_ids: Mapping[int, int], known_sequences: Mapping[int, int]
    ) -> ChunkOutcome:
        """Write one chunk in one transaction; `known_*` map what earlier chunks wrote (old -> new)."""
        outcome: ChunkOutcome = self.write(
            lambda conn: _Importer(conn, chunk, known_ids, known_sequences).run()
        )
        return outcome

    def pending_count(self) -> int:
        """How many memories wait for their vector (the import leaves them so, then indexes them in batches)."""
        return int(self.read(f"SELECT count(*) FROM episodes WHERE indexed = {PENDING}")[0][0])

    def session_configuration(self, group_id: str, session_id: str) -> dict[str, Any] | None:
        """The stored configuration of a session (None when it does not exist)."""
        rows = self.read(
            "SELECT configuration FROM sessions WHERE group_id = ? AND session_id = ?", (group_id, session_id)
        )
        return dict(json.loads(rows[0][0])) if rows else None


def group_line(row: Any) -> dict[str, Any]:
    line = {
        "kind": "group",
        "group_id": row["group_id"],
        "user_ids": json.loads(row["user_ids"]),
        "agent_ids": json.loads(row["agent_ids"]),
        "description": row["description"],
        "configuration": json.loads(row["configuration"]),
        "created_at": row["created_at"],
    }
    if row["owner"] is not None:  # only groups made over authenticated HTTP have one
        line["owner"] = row["owner"]
    return line


def session_line(row: Any) -> dict[str, Any]:
    return {
        "kind": "session",
        "group_id": row["group_id"],
        "session_id": row["session_id"],
        "configuration": json.loads(row["configuration"]),
        "overrides": json.loads(row["overrides"]),
        "created_at": row["created_at"],
    }


def memory_line(row: Any) -> dict[str, Any]:
    return {
        "kind": "memory",
        "id": row["id"],
        "group_id": row["group_id"],
        "session_id": row["session_id"],
        "sequence": row["sequence"],
        "producer": row["producer_id"],
        "role": row["producer_role"],
        "produced_for": row["produced_for_id"],
        "content": row["content"],
        "message": None if row["message"] is None else json.loads(row["message"]),
        "memory_type": row["memory_type"],
        "importance": row["importance"],
        "effective_importance": row["effective_importance"],
        "metadata": json.loads(row["metadata"]),
        "timestamp": row["timestamp"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "retrieval_count": row["retrieval_count"],
        "last_accessed_at": row["last_accessed_at"],
        "dedup_key": row["dedup_key"],
        "step": row["step"],
        "vector": row["indexed"] != NOT_INDEXED,
    }


def fact_line(row: Any) -> dict[str, Any]:
    names = ("id", "group_id", "session_id", "subject", "predicate", "object", "source", "confidence")
    return {
        "kind": "fact",
        **{name: row[name] for name in names},
        "valid_from": row["valid_from"],
        "valid_to": row["valid_to"],
        "created_at": row["created_at"],
        "memory_id": row["memory_id"],
    }


def rolling_summary_line(row: Any) -> dict[str, Any]:
    return {
        "kind": "rolling_summary",
        "group_id": row["group_id"],
        "session_id": row["session_id"],
        "text": row["text"],
        "covered_through_sequence": row["covered_through_sequence"],
        "updated_at": row["updated_at"],
        "omitted_sequences": json.loads(row["omitted_sequences"]),
    }


def summary_count_line(row: Any) -> dict[str, Any]:
    return {
        "kind": "summary_count",
        "group_id": row["group_id"],
        "session_id": row["session_id"],
        "lightweight": row["lightweight"],
        "auto_multiple": row["auto_multiple"],
    }


_LINES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "group": group_line,
    "session": session_line,
    "memory": memory_line,
    "fact": fact_line,
    "rolling_summary": rolling_summary_line,
    "summary_count": summary_count_line,
}


def _export_counts(conn: Any, group_ids: Sequence[str]) -> dict[str, int]:
    groups = json.dumps(list(group_ids))
    where = "WHERE group_id IN (SELECT value FROM json_each(?))"
    tables = {"groups": "groups", "sessions": "sessions", "memories": "episodes"}
    counts = {
        name: conn.execute(f"SELECT count(*) FROM {table} {where}", (groups,)).fetchone()[0]
        for name, table in tables.items()
    }
    counts["facts"] = conn.execute(
        "SELECT count(*) FROM facts f JOIN episodes e ON e.id = f.memory_id WHERE e.group_id IN "
        "(SELECT value FROM json_each(?))",
        (groups,),
    ).fetchone()[0]
    for name in ("rolling_summaries", "summary_counts"):
        counts[name] = conn.execute(f"SELECT count(*) FROM {name} {where}", (groups,)).fetchone()[0]
    return counts


def _session_rows(conn: Any, group_id: str, session_id: str) -> Iterator[tuple[str, Any]]:
    key = (group_id, session_id)
    for row in conn.execute(
        f"SELECT {EXPORT_MEMORY_COLUMNS} FROM episodes WHERE group_id = ? AND session_id = ? ORDER BY sequence",
        key,
    ):
        yield "memory", row
    for row in conn.execute(
        f"SELECT {FACT_COLUMNS} FROM facts f JOIN episodes e ON e.id = f.memory_id "
        "WHERE e.group_id = ? AND e.session_id = ? ORDER BY e.sequence",
        key,
    ):
        yield "fact", row
    for kind, table in (("rolling_summary", "rolling_summaries"), ("summary_count", "summary_counts")):
        row = conn.execute(f"SELECT * FROM {table} WHERE group_id = ? AND session_id = ?", key).fetchone()
        if row is not None:
            yield kind, row


class _Importer:
    """One chunk's transaction: find what is there, write the rest, map the ids."""

    def __init__(
        self, conn: Any, chunk: ImportChunk, known_ids: Mapping[int, int], known_sequences: Mapping[int, int]
    ) -> None:
        self.conn = conn
        self.chunk = chunk
        self.known_ids = known_ids
        self.known_sequences = known_sequences
        self.out = ChunkOutcome(last_sequence=chunk.after)
        self.keys: dict[int, str] = {}
        self.by_id = {ep.old_id: ep for ep in chunk.episodes}

    def run(self) -> ChunkOutcome:
        chunk = self.chunk
        if chunk.session is not None:
            self._ensure_session(chunk.session)
        found = {ep.old_id: self._find_episode(ep) for ep in chunk.episodes}
        facts = {fact.old_id: self._find_fact(fact, found.get(fact.old_memory_id)) for fact in chunk.facts}
        self._take_facts_memories(facts, found)
        self._map_found(found)
        new = [ep for ep in chunk.episodes if found[ep.old_id] is None]
        self.out.existing = len(chunk.episodes) - len(new)
        self._insert_episodes(new)
        self._insert_facts(
            [fact for fact in chunk.facts if facts[fact.old_id] is None], {ep.old_id for ep in new}
        )
        self.out.facts_existing = sum(hit is not None for hit in facts.values())
        if chunk.rolling is not None:
            self._rolling(chunk.rolling)
        if chunk.summary_count is not None:
            self._summary_count(*chunk.summary_count)
        return self.out

    def _ensure_session(self, session: ImportedSession) -> None:
        """The session as exported, unless it exists: then it keeps its configuration."""
        row = {
            "group_id": session.group_id, "session_id": session.session_id,
            "configuration": json.dumps(session.configuration), "overrides": json.dumps(session.overrides),
            "created_at": session.created_at,
        }  # fmt: skip
        cur = self.conn.execute(
            "INSERT INTO sessions(group_id, session_id, configuration, overrides, created_at) "
            "VALUES (:group_id, :session_id, :configuration, :overrides, :created_at) "
            "ON CONFLICT(group_id, session_id) DO NOTHING",
            row,
        )
        self.out.session_created = bool(cur.rowcount)

    def _take_facts_memories(
        self, facts: Mapping[int, tuple[int, int | None] | None], found: dict[int, _Found | None]
    ) -> None:
        """A fact already there brings its own memory: the exported one is that one, not written again."""
        for fact in self.chunk.facts:
            there = facts[fact.old_id]
            if there is not None and there[1] is not None and found.get(fact.old_memory_id) is None:
                found[fact.old_memory_id] = _Found(there[1], 0, same_session=False)

    def _map_found(self, found: Mapping[int, _Found | None]) -> None:
        for old_id, hit in found.items():
            if hit is not None:
                self.out.ids[old_id] = hit.id
                if hit.same_session:
                    self.out.sequences[self.by_id[old_id].old_sequence] = hit.sequence

    # -- finding what is there ---------------------------------------------------------

    def _by_key(self, key: str) -> Any:
        return self.conn.execute(
            "SELECT id, sequence, producer_id, content_hash, updated_at FROM episodes "
            "WHERE group_id = ? AND session_id = ? AND dedup_key = ?",
            (self.chunk.group_id, self.chunk.session_id, key),
        ).fetchone()

    def _find_episode(self, ep: ImportedEpisode) -> _Found | None:
        """The stored memory this one is, if any; also decides the dedup key a new row gets."""
        key = ep.dedup_key or ep.fallback_key
        row = self._by_key(key)
        if row is not None and key != ep.fallback_key:
            corrected = row[4] is not None or ep.updated_at is not None
            if (row[2], row[3]) != (ep.producer_id, ep.content_hash) and not corrected:
                key = (
                    ep.fallback_key
                )  # the key names another memory here (one idempotency key in two databases)
                row = self._by_key(key)
        self.keys[ep.old_id] = key
        if row is None:
            row = self._by_place(ep)
        return None if row is None else _Found(row[0], row[1])

    def _by_place(self, ep: ImportedEpisode) -> Any:
        """The memory at the same sequence with the same content, or the same memory corrected on one side
        since (update_memory keeps its sequence, speaker and time)."""
        return self.conn.execute(
            "SELECT id, sequence FROM episodes WHERE group_id = ? AND session_id = ? AND sequence = ? "
            "AND (content_hash = ? OR ((updated_at IS NOT NULL OR ?) AND producer_id = ? AND timestamp = ?))",
            (
                self.chunk.group_id, self.chunk.session_id, ep.old_sequence, ep.content_hash,
                ep.updated_at is not None, ep.producer_id, ep.timestamp,
            ),
        ).fetchone()  # fmt: skip

    def _find_fact(self, fact: ImportedFact, memory: _Found | None) -> tuple[int, int | None] | None:
        """(id, memory_id) of the stored fact this one is, if any."""
        conn, group_id = self.conn, self.chunk.group_id
        if memory is not None:
            row = conn.execute("SELECT id, memory_id FROM facts WHERE memory_id = ?", (memory.id,)).fetchone()
            if row is not None:
                return row[0], row[1]
        keys = "group_id = ? AND subject_key = ? AND predicate_key = ? AND object_key = ?"
        if fact.valid_to is None:  # one current fact per triple
            row = conn.execute(
                f"SELECT id, memory_id FROM facts WHERE {keys} AND valid_to IS NULL", (group_id, *fact.keys)
            ).fetchone()
        else:
            row = conn.execute(
                f"SELECT id, memory_id FROM facts WHERE {keys} AND valid_from = ? AND valid_to = ?",
                (group_id, *fact.keys, fact.valid_from, fact.valid_to),
            ).fetchone()
        return None if row is None else (row[0], row[1])

    # -- writing -------------------------------------------------------------------------

    def _insert_episodes(self, new: Sequence[ImportedEpisode]) -> None:
        sequences = self._sequences(new)
        for ep, sequence in zip(new, sequences, strict=True):
            self.out.ids[ep.old_id] = self._insert_episode(ep, sequence)
            self.out.sequences[ep.old_sequence] = sequence
        self.out.added = len(new)
        if sequences:
            self.out.last_sequence = max(self.out.last_sequence, *sequences)
        for low, high in _runs(sorted(sequences)):
            self._refresh_keywords(low, high)

    def _refresh_keywords(self, low: int, high: int) -> None:
        """Index the session's keyword rows for these sequences (and the neighbours whose context they are)."""
        fts.refresh_around(self.conn, self.chunk.group_id, self.chunk.session_id, low, high)

    def _sequences(self, new: Sequence[ImportedEpisode]) -> list[int]:
        """The exported sequences when every one is free here (and after what earlier chunks wrote), so a
        session comes back as it was; else after the session's last memory, in the exported order."""
        if not new:
            return []
        chunk, exported = self.chunk, [ep.old_sequence for ep in new]
        taken = self.conn.execute(
            "SELECT count(*) FROM episodes WHERE group_id = ? AND session_id = ? "
            "AND sequence IN (SELECT value FROM json_each(?))",
            (chunk.group_id, chunk.session_id, json.dumps(exported)),
        ).fetchone()[0]
        if not taken and min(exported) > chunk.after:
            return exported
        last = self.conn.execute(
            "SELECT coalesce(max(sequence), 0) FROM episodes WHERE group_id = ? AND session_id = ?",
            (chunk.group_id, chunk.session_id),
        ).fetchone()[0]
        start = max(last, chunk.after) + 1
        return list(range(start, start + len(new)))

    def _insert_episode(self, ep: ImportedEpisode, sequence: int) -> int:
        chunk = self.chunk
        indexed = PENDING if ep.vector and chunk.index_vectors else NOT_INDEXED
        metadata = ep.metadata_json if ep.source_ids is None else self._with_sources(ep)
        cur = self.conn.execute(
            "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, produced_for_id, "
            "content, memory_type, importance, effective_importance, metadata, timestamp, ts_epoch, created_at, "
            "content_hash, dedup_key, retrieval_count, last_accessed_at, indexed, updated_at, step, message) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                chunk.group_id, chunk.session_id, sequence, ep.producer_id, ep.producer_role, ep.produced_for_id,
                ep.content, ep.memory_type, ep.importance, ep.effective_importance, metadata, ep.timestamp,
                ep.ts_epoch, ep.created_at, ep.content_hash, self.keys[ep.old_id], ep.retrieval_count,
                ep.last_accessed_at, indexed, ep.updated_at, ep.step, ep.message_json,
            ),
        )  # fmt: skip
        return int(cur.lastrowid)

    def _with_sources(self, ep: ImportedEpisode) -> str:
        """A summary's metadata with its source episodes' new ids (those not imported are left out)."""
        assert ep.source_ids is not None
        ids = [self._new_id(old) for old in ep.source_ids]
        metadata = json.loads(ep.metadata_json)
        metadata["source_episode_ids"] = [i for i in ids if i is not None]
        return json.dumps(metadata, ensure_ascii=False, sort_keys=True)

    def _new_id(self, old_id: int) -> int | None:
        return self.out.ids.get(old_id, self.known_ids.get(old_id))

    def _insert_facts(self, facts: Sequence[ImportedFact], new_memories: set[int]) -> None:
        for fact in facts:
            memory_id = self._new_id(fact.old_memory_id)
            cur = self.conn.execute(
                "INSERT INTO facts(group_id, session_id, subject, predicate, object, subject_key, predicate_key, "
                "object_key, source, confidence, valid_from, valid_to, created_at, memory_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    self.chunk.group_id, fact.session_id, fact.subject, fact.predicate, fact.object, *fact.keys,
                    fact.source, fact.confidence, fact.valid_from, fact.valid_to, fact.created_at, memory_id,
                ),
            )  # fmt: skip
            if fact.old_memory_id in new_memories:  # its memory's metadata names the fact: the new id
                self.conn.execute(
                    "UPDATE episodes SET metadata = json_set(metadata, '$.fact.id', ?) "
                    "WHERE id = ? AND json_type(metadata, '$.fact') = 'object'",
                    (int(cur.lastrowid), memory_id),
                )
        self.out.facts_added = len(facts)

    def _rolling(self, rolling: ImportedRolling) -> None:
        """The session's rolling summary, unless it has one; its sequences mapped to the new ones."""
        chunk = self.chunk
        there = self.conn.execute(
            "SELECT 1 FROM rolling_summaries WHERE group_id = ? AND session_id = ?",
            (chunk.group_id, chunk.session_id),
        ).fetchone()
        if there is not None:
            return
        covered, omitted = self._rolling_sequences(rolling)
        self.conn.execute(
            "INSERT INTO rolling_summaries(group_id, session_id, text, covered_through_sequence, updated_at, "
            "omitted_sequences) VALUES (?, ?, ?, ?, ?, ?)",
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

    def _rolling_sequences(self, rolling: ImportedRolling) -> tuple[int, list[int]]:
        """The last sequence the summary covers and the ones it leaves out, as this database numbers them."""
        sequences = {**self.known_sequences, **self.out.sequences}
        covered = max(
            (new for old, new in sequences.items() if old <= rolling.covered_through_sequence), default=0
        )
        return covered, [sequences[old] for old in rolling.omitted_sequences if old in sequences]

    def _summary_count(self, lightweight: int, auto_multiple: int) -> None:
        """The session's summary counters: the higher of what is there and what was exported."""
        self.conn.execute(
            "INSERT INTO summary_counts(group_id, session_id, lightweight, auto_multiple) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(group_id, session_id) DO UPDATE SET "
            "lightweight = max(lightweight, excluded.lightweight), "
            "auto_multiple = max(auto_multiple, excluded.auto_multiple) "
            "WHERE excluded.lightweight > lightweight OR excluded.auto_multiple > auto_multiple",
            (self.chunk.group_id, self.chunk.session_id, lightweight, auto_multiple),
        )


def _runs(sequences: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted sequences as (low, high) spans; near neighbours share a span (one keyword refresh each)."""
    if not sequences:
        return
    low = high = sequences[0]
    for sequence in sequences[1:]:
        if sequence - high > GAP_REFRESHED:
            yield low, high
            low = sequence
        high = sequence
    yield low, high
