"""The SQLite layer's public entry point: `Store`, one database of memories.

One database file holds groups, sessions and episodes, an FTS5 keyword index and a
sqlite-vec `vec0` vector index partitioned by group. WAL, foreign keys and a busy
timeout let several server processes share the file; writes take the write lock up
front (`BEGIN IMMEDIATE`) and are retried while another process holds it.

`Store` is assembled from parts, each in a module of its own, and is the only class
other modules use; it also re-exports the names they import from here:

    store/sqlite/connection.py        driver choice (the only import of sqlite3/sqlean/sqlite-vec),
                       per-thread connections, lock retries, transactions
    store/sqlite/filters.py   `Filters` and the SQL that applies them inside each search
    store/sqlite/episodes.py  writing, reading, searching and deleting episodes
    store/sqlite/vectors.py   the vec0 index: pending vectors, KNN, scans for the vector cache
    store/sqlite/keywords.py  scans, change log and tokenizer for the in-memory keyword index
    store/sqlite/stats.py     database-wide statistics and the importance decay pass
    store/sqlite/transfer.py  the reads of an export and the writes of an import

This module keeps what ties them together: opening and migrating the database, the
embedder check, groups and sessions, metadata, and facts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mcp_memory.errors import EmbedderMismatch, StoreError
from mcp_memory.models import Fact, GroupInfo
from mcp_memory.store.records import (
    Filters,
    NewEpisode,
    NewFact,
    SessionRecord,
    StoredFacts,
    Visible,
)
from mcp_memory.store.sqlite import facts as fact_table
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.connection import (
    BUSY_TIMEOUT_MS,
    LOCK_RETRY_BUDGET_S,
    Database,
    check_database_file,
    recorded_embedder,
)
from mcp_memory.store.sqlite.episodes import EPISODE_COLUMNS, Episodes
from mcp_memory.store.sqlite.keywords import KeywordReads
from mcp_memory.store.sqlite.migrations import MIGRATIONS
from mcp_memory.store.sqlite.stats import TIERS, Statistics
from mcp_memory.store.sqlite.summaries import SummaryRows
from mcp_memory.store.sqlite.tasks import TaskRows
from mcp_memory.store.sqlite.transfer import TransferStore
from mcp_memory.store.sqlite.vectors import VectorIndex, create_vector_table, group_revision, vector_blob
from mcp_memory.times import iso

__all__ = [
    "BUSY_TIMEOUT_MS",
    "EPISODE_COLUMNS",
    "LOCK_RETRY_BUDGET_S",
    "TIERS",
    "Database",
    "Filters",
    "Store",
    "recorded_embedder",
    "vector_blob",
]

log = logging.getLogger(__name__)


SESSIONS_SQL = (
    "SELECT s.*, (SELECT count(*) FROM episodes e WHERE e.group_id = s.group_id AND e.session_id = s.session_id) "
    "AS episode_count, (SELECT r.covered_through_sequence FROM rolling_summaries r WHERE r.group_id = s.group_id "
    "AND r.session_id = s.session_id) AS rolling_covered_through FROM sessions s "
)


def _group(row: Any) -> GroupInfo:
    keys = row.keys()
    return GroupInfo(
        group_id=row["group_id"],
        user_ids=json.loads(row["user_ids"]),
        agent_ids=json.loads(row["agent_ids"]),
        description=row["description"],
        configuration=json.loads(row["configuration"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        session_count=row["session_count"] if "session_count" in keys else 0,
        episode_count=row["episode_count"] if "episode_count" in keys else 0,
        owner=row["owner"],
    )


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        group_id=row["group_id"],
        session_id=row["session_id"],
        configuration=json.loads(row["configuration"]),
        overrides=json.loads(row["overrides"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        episode_count=row["episode_count"],
        rolling_covered_through=row["rolling_covered_through"],
    )


def _mismatch(
    path: Path, recorded: tuple[str, int], name: str, dimension: int, kind: str
) -> EmbedderMismatch:
    return EmbedderMismatch(
        f"the database {path} was built with embedder {recorded[0]!r} ({recorded[1]} dims) but this server "
        f"uses {name!r} ({dimension} dims); start with the embedder it was built with (--embedder or "
        f"MCP_MEMORY_EMBEDDER, and MCP_MEMORY_EMBEDDING_MODEL for an endpoint), or re-embed every memory with "
        f"the new one: `mcp-memory reindex --db {path} --embedder {kind}`"
    )


class Store(Episodes, VectorIndex, KeywordReads, Statistics, TransferStore, TaskRows, SummaryRows):
    """A SQLite database of memories; every method is synchronous and thread-safe."""

    def __init__(
        self,
        path: Path,
        *,
        embedder_name: str,
        dimension: int,
        check_embedder: bool = True,
        embedder_kind: str = "local",
    ) -> None:
        check_database_file(Path(path))
        if check_embedder:  # before any migration: a file we refuse is a file we leave as it is
            self._refuse_other_embedder(Path(path), embedder_name, dimension, embedder_kind)
        super().__init__(path)
        self.dimension = dimension
        try:
            self._migrate()
            self._check_embedder(embedder_name, dimension, embedder_kind, check_embedder)
        except self._db.DatabaseError as exc:
            self.close()
            raise StoreError(
                f"cannot use the database {self.path}: {exc}; if the file is not an mcp-memory database "
                "(or is damaged), move it aside and start again, or pass another --db"
            ) from None

    # -- schema -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.path)

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

    @staticmethod
    def _refuse_other_embedder(path: Path, name: str, dimension: int, kind: str) -> None:
        recorded = recorded_embedder(path)
        if recorded is not None and recorded != (name, dimension):
            raise _mismatch(path, recorded, name, dimension, kind)

    def _check_embedder(self, name: str, dimension: int, kind: str, strict: bool) -> None:
        def check(conn: Any) -> tuple[str, int] | None:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "embedder_name" not in rows:
                conn.execute("INSERT INTO meta(key, value) VALUES ('embedder_name', ?)", (name,))
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('embedder_dimension', ?)", (str(dimension),)
                )
                create_vector_table(conn, dimension)
                return None
            return rows["embedder_name"], int(rows["embedder_dimension"])

        recorded = self.write(check)
        if strict and recorded is not None and recorded != (name, dimension):
            raise _mismatch(self.path, recorded, name, dimension, kind)

    # -- groups and sessions ------------------------------------------------------------

    def insert_group(self, group: GroupInfo) -> bool:
        """Insert a group; False when one with that id exists already."""
        row = (group.group_id, json.dumps(group.user_ids), json.dumps(group.agent_ids), group.description,
               json.dumps(group.configuration), iso(group.created_at), group.owner)  # fmt: skip
        sql = (
            "INSERT INTO groups(group_id, user_ids, agent_ids, description, configuration, created_at, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(group_id) DO NOTHING"
        )
        return bool(self.write(lambda conn: conn.execute(sql, row).rowcount))

    def add_participants(self, group_id: str, user_ids: Sequence[str], agent_ids: Sequence[str]) -> None:
        """Append users and agents the group does not have yet, in one transaction."""

        def add(conn: Any) -> None:
            row = conn.execute(
                "SELECT user_ids, agent_ids FROM groups WHERE group_id = ?", (group_id,)
            ).fetchone()
            users, agents = json.loads(row[0]), json.loads(row[1])
            users += [u for u in user_ids if u not in users]
            agents += [a for a in agent_ids if a not in agents]
            conn.execute(
                "UPDATE groups SET user_ids = ?, agent_ids = ? WHERE group_id = ?",
                (json.dumps(users), json.dumps(agents), group_id),
            )

        self.write(add)

    def get_group(self, group_id: str) -> GroupInfo | None:
        rows = self.read("SELECT * FROM groups WHERE group_id = ?", (group_id,))
        return _group(rows[0]) if rows else None

    def group_counts(self, group_id: str) -> tuple[int, int]:
        """How many sessions and episodes the group has."""
        row = self.read(
            "SELECT (SELECT count(*) FROM sessions WHERE group_id = ?), (SELECT count(*) FROM episodes WHERE group_id = ?)",
            (group_id, group_id),
        )[0]
        return int(row[0]), int(row[1])

    def list_groups(self, limit: int, offset: int = 0, visible: Visible | None = None) -> list[GroupInfo]:
        """The groups in id order, with their session and episode counts; only the `visible` ones when given."""
        where, params = "", ()  # type: tuple[str, tuple[Any, ...]]
        if visible is not None:
            where = "WHERE g.owner = ? OR g.group_id IN (SELECT value FROM json_each(?)) "
            params = (visible.owner, json.dumps(visible.group_ids))
        rows = self.read(
            "SELECT g.*, (SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id) AS session_count, "
            "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) AS episode_count "
            f"FROM groups g {where}ORDER BY g.group_id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_group(row) for row in rows]

    def insert_session(self, session: SessionRecord) -> bool:
        """Insert a session; False when it exists already."""
        row = (session.group_id, session.session_id, json.dumps(session.configuration),
               json.dumps(session.overrides), iso(session.created_at))  # fmt: skip
        sql = (
            "INSERT INTO sessions(group_id, session_id, configuration, overrides, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(group_id, session_id) DO NOTHING"
        )
        return bool(self.write(lambda conn: conn.execute(sql, row).rowcount))

    def get_session(self, group_id: str, session_id: str) -> SessionRecord | None:
        rows = self.read(SESSIONS_SQL + "WHERE s.group_id = ? AND s.session_id = ?", (group_id, session_id))
        return _session(rows[0]) if rows else None

    def list_sessions(self, group_id: str, limit: int) -> list[SessionRecord]:
        """The group's sessions, newest first."""
        rows = self.read(
            SESSIONS_SQL + "WHERE s.group_id = ? ORDER BY s.created_at DESC, s.session_id LIMIT ?",
            (group_id, limit),
        )
        return [_session(row) for row in rows]

    def delete_session(self, group_id: str, session_id: str) -> int:
        """Delete a session and its episodes (both indexes follow); returns the episodes removed."""

        def delete(conn: Any) -> int:
            count = conn.execute(
                "DELETE FROM episodes WHERE group_id = ? AND session_id = ?", (group_id, session_id)
            ).rowcount
            conn.execute("DELETE FROM sessions WHERE group_id = ? AND session_id = ?", (group_id, session_id))
            return int(count)

        return int(self.write(delete))

    # -- who holds a session open ------------------------------------------------------------

    def hold_sessions(self, holder: str, sessions: Sequence[tuple[str, str]], until: str) -> None:
        """Record that `holder` (a server process) has these sessions open until `until`, replacing its
        earlier leases."""

        def hold(conn: Any) -> None:
            conn.execute("DELETE FROM session_leases WHERE holder = ?", (holder,))
            conn.executemany(
                "INSERT OR IGNORE INTO session_leases(group_id, session_id, holder, expires_at) "
                "SELECT group_id, session_id, ?, ? FROM sessions WHERE group_id = ? AND session_id = ?",
                [(holder, until, group_id, session_id) for group_id, session_id in sessions],
            )

        self.write(hold)

    def session_holders(self, group_id: str, session_id: str, now: str) -> list[str]:
        """The processes whose lease on the session has not lapsed."""
        rows = self.read(
            "SELECT holder FROM session_leases WHERE group_id = ? AND session_id = ? AND expires_at >= ? "
            "ORDER BY holder",
            (group_id, session_id, now),
        )
        return [row[0] for row in rows]

    def claim_maintenance(self, now: str, due_before: str) -> bool:
        """Take the maintenance pass: True for exactly one caller while the last claim is older than
        `due_before` (every process asks; one runs it)."""
        sql = (
            "INSERT INTO meta(key, value) VALUES ('maintenance_claimed_at', ?) ON CONFLICT(key) "
            "DO UPDATE SET value = excluded.value WHERE meta.value < ?"
        )
        return bool(self.write(lambda conn: conn.execute(sql, (now, due_before)).rowcount))

    # -- metadata -----------------------------------------------------------------------

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

    # -- facts --------------------------------------------------------------------------

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
        """Store facts, each with the episode recall finds it by, in one transaction. A triple that is
        already current returns that fact; with `supersede`, the other current facts of the same subject
        and predicate (not those of this call) are closed at the new fact's valid_from."""

        def write(conn: Any) -> StoredFacts:
            before = group_revision(conn, group_id)
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
            return StoredFacts(
                [rows[i] for i in ids], duplicate, closed, new, before, group_revision(conn, group_id)
            )

        stored: StoredFacts = self.write(write)
        return stored

    def list_facts(
        self, group_id: str, subject: str | None, predicate: str | None, limit: int
    ) -> tuple[list[Fact], int]:
        """The group's facts, current first, and how many match in all."""
        result: tuple[list[Fact], int] = self._retry(
            lambda: fact_table.select(self._conn(), group_id, subject, predicate, limit)
        )
        return result

    def closed_fact_episodes(self, ids: Sequence[int]) -> set[int]:
        """Which of these episodes hold facts that are no longer current."""
        if not ids:
            return set()
        closed: set[int] = self._retry(lambda: fact_table.closed_memory_ids(self._conn(), ids))
        return closed
