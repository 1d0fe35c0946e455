"""The Store on PostgreSQL: one database many servers share, each call one transaction on a pooled connection.

Assembled from parts, as on SQLite:

    store/postgres/connection.py  the pool (the only import of psycopg), vectors as numpy, the group lock
    store/postgres/migrations.py  the schema, migrated once under an advisory lock
    store/postgres/filters.py     recall filters as SQL
    store/postgres/episodes.py    writing, correcting, reading and deleting episodes
    store/postgres/facts.py       facts and their replacement
    store/postgres/keywords.py    the keyword rows (FTS5's tokens), the change feed, the cold-path BM25
    store/postgres/vectors.py     pgvector: exact or HNSW search, scans for the vector cache
    store/postgres/transfer.py    the reads of an export and the writes of an import

This module keeps the rest: opening, the embedder check, groups and sessions (and who holds a session open),
metadata, statistics, summary counters, tasks.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from mcp_memory.errors import EmbedderMismatch
from mcp_memory.models import GroupInfo, TaskInfo, TaskStatus
from mcp_memory.store.postgres.connection import POOL_SIZE, lock_group
from mcp_memory.store.postgres.episodes import Episodes
from mcp_memory.store.postgres.facts import Facts
from mcp_memory.store.postgres.keywords import KeywordReads
from mcp_memory.store.postgres.migrations import MIGRATION_LOCK, migrate
from mcp_memory.store.postgres.transfer import Transfer
from mcp_memory.store.postgres.vectors import VectorIndex, create_vector_table
from mcp_memory.store.records import INDEXED, PENDING, RollingSummary, SessionRecord, Visible
from mcp_memory.store.sqlite import decay as maintenance
from mcp_memory.store.sqlite.keywords import Tokenizer
from mcp_memory.times import iso

DATABASE_ID_KEY = "database_id"
TIERS = ("recent", "long_term", "pending_vectors", "not_vector_indexed")
_FAIL = (
    "UPDATE tasks SET status = 'failed', error = %s, updated_at = %s, lease_until = NULL, expires_at = %s "
)
_SESSIONS = (
    "SELECT s.group_id, s.session_id, s.configuration, s.overrides, s.created_at, "
    "(SELECT count(*) FROM episodes e WHERE e.group_id = s.group_id AND e.session_id = s.session_id), "
    "(SELECT r.covered_through_sequence FROM rolling_summaries r WHERE r.group_id = s.group_id "
    "AND r.session_id = s.session_id) FROM sessions s "
)
_GROUPS = (
    "SELECT g.group_id, g.user_ids, g.agent_ids, g.description, g.configuration, g.created_at, g.owner, "
    "(SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id), "
    "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) FROM groups g "
)


class PostgresStore(Episodes, Facts, KeywordReads, VectorIndex, Transfer):
    """A PostgreSQL database of memories; every method is synchronous and thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        embedder_name: str,
        dimension: int,
        check_embedder: bool = True,
        embedder_kind: str = "local",
        pool_size: int = POOL_SIZE,
    ) -> None:
        super().__init__(url, pool_size=pool_size)
        self.tokenizer = Tokenizer()
        self.dimension = dimension
        try:
            with self._connection() as conn:
                self._version = migrate(conn)
            recorded = self._run(partial(self._record_embedder, name=embedder_name, dimension=dimension))
        except Exception:
            self.close()
            raise
        if check_embedder and recorded is not None and recorded != (embedder_name, dimension):
            self.close()
            raise EmbedderMismatch(
                f"the database {self.location} was built with embedder {recorded[0]!r} ({recorded[1]} dims) but "
                f"this server uses {embedder_name!r} ({dimension} dims); start with the embedder it was built "
                "with (--embedder or MCP_MEMORY_EMBEDDER, and MCP_MEMORY_EMBEDDING_MODEL for an endpoint), or "
                f"re-embed every memory with the new one: `mcp-memory reindex --db <url> --embedder {embedder_kind}`"
            )

    @staticmethod
    def _record_embedder(conn: Any, *, name: str, dimension: int) -> tuple[str, int] | None:
        """The embedder the database was built with; a new database records this one (and makes its vector
        table), under the migration lock so servers starting together agree."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if "embedder_name" not in rows:
            conn.execute("INSERT INTO meta(key, value) VALUES ('embedder_name', %s)", (name,))
            conn.execute("INSERT INTO meta(key, value) VALUES ('embedder_dimension', %s)", (str(dimension),))
            create_vector_table(conn, dimension)
            return None
        return rows["embedder_name"], int(rows["embedder_dimension"])

    def close(self) -> None:
        super().close()
        tokenizer = getattr(self, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.close()

    # -- the database itself -------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self._version

    def get_meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    def database_id(self) -> str:
        def get(conn: Any) -> str:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                (DATABASE_ID_KEY, secrets.token_hex(16)),
            )
            return str(
                conn.execute("SELECT value FROM meta WHERE key = %s", (DATABASE_ID_KEY,)).fetchone()[0]
            )

        return self._run(get)

    # -- groups and sessions ------------------------------------------------------------

    def insert_group(self, group: GroupInfo) -> bool:
        sql = (
            "INSERT INTO groups(group_id, user_ids, agent_ids, description, configuration, created_at, owner) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (group_id) DO NOTHING"
        )
        row = (group.group_id, json.dumps(group.user_ids), json.dumps(group.agent_ids), group.description,
               json.dumps(group.configuration), iso(group.created_at), group.owner)  # fmt: skip
        return self._count(sql, row) > 0

    def add_participants(self, group_id: str, user_ids: Sequence[str], agent_ids: Sequence[str]) -> None:
        def add(conn: Any) -> None:
            users, agents = conn.execute(
                "SELECT user_ids, agent_ids FROM groups WHERE group_id = %s FOR UPDATE", (group_id,)
            ).fetchone()
            users += [u for u in user_ids if u not in users]
            agents += [a for a in agent_ids if a not in agents]
            conn.execute(
                "UPDATE groups SET user_ids = %s, agent_ids = %s WHERE group_id = %s",
                (json.dumps(users), json.dumps(agents), group_id),
            )

        self._run(add)

    def get_group(self, group_id: str) -> GroupInfo | None:
        """The group without its counts (group_counts has them), as on SQLite: recall reads it every time."""
        rows = self._rows(
            "SELECT group_id, user_ids, agent_ids, description, configuration, created_at, owner, 0, 0 FROM groups "
            "WHERE group_id = %s",
            (group_id,),
        )
        return _group(rows[0]) if rows else None

    def group_counts(self, group_id: str) -> tuple[int, int]:
        row = self._rows(
            "SELECT (SELECT count(*) FROM sessions WHERE group_id = %s), "
            "(SELECT count(*) FROM episodes WHERE group_id = %s)",
            (group_id, group_id),
        )[0]
        return int(row[0]), int(row[1])

    def list_groups(self, limit: int, offset: int = 0, visible: Visible | None = None) -> list[GroupInfo]:
        where, params = "", ()  # type: tuple[str, tuple[Any, ...]]
        if visible is not None:
            where, params = (
                "WHERE g.owner = %s OR g.group_id = ANY(%s) ",
                (visible.owner, list(visible.group_ids)),
            )
        rows = self._rows(
            _GROUPS + where + 'ORDER BY g.group_id COLLATE "C" LIMIT %s OFFSET %s', (*params, limit, offset)
        )
        return [_group(row) for row in rows]

    def insert_session(self, session: SessionRecord) -> bool:
        sql = (
            "INSERT INTO sessions(group_id, session_id, configuration, overrides, created_at) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (group_id, session_id) DO NOTHING"
        )
        row = (session.group_id, session.session_id, json.dumps(session.configuration),
               json.dumps(session.overrides), iso(session.created_at))  # fmt: skip
        return self._count(sql, row) > 0

    def get_session(self, group_id: str, session_id: str) -> SessionRecord | None:
        rows = self._rows(_SESSIONS + "WHERE s.group_id = %s AND s.session_id = %s", (group_id, session_id))
        return _session(rows[0]) if rows else None

    def list_sessions(self, group_id: str, limit: int) -> list[SessionRecord]:
        rows = self._rows(
            _SESSIONS + "WHERE s.group_id = %s ORDER BY s.created_at DESC, s.session_id LIMIT %s",
            (group_id, limit),
        )
        return [_session(row) for row in rows]

    def delete_session(self, group_id: str, session_id: str) -> int:
        def delete(conn: Any) -> int:
            lock_group(conn, group_id)
            count = conn.execute(
                "DELETE FROM episodes WHERE group_id = %s AND session_id = %s", (group_id, session_id)
            ).rowcount
            conn.execute(
                "DELETE FROM sessions WHERE group_id = %s AND session_id = %s", (group_id, session_id)
            )
            return int(count)

        return self._run(delete)

    # -- who holds a session open ------------------------------------------------------------

    def hold_sessions(self, holder: str, sessions: Sequence[tuple[str, str]], until: str) -> None:
        """Record that `holder` (a server) has these sessions open until `until`, replacing its earlier leases."""

        def hold(conn: Any) -> None:
            conn.execute("DELETE FROM session_leases WHERE holder = %s", (holder,))
            if sessions:
                groups, ids = [s[0] for s in sessions], [s[1] for s in sessions]
                conn.execute(
                    "INSERT INTO session_leases(group_id, session_id, holder, expires_at) "
                    "SELECT s.group_id, s.session_id, %s, %s FROM unnest(%s::text[], %s::text[]) "
                    "AS s(group_id, session_id) JOIN sessions USING (group_id, session_id) ON CONFLICT DO NOTHING",
                    (holder, until, groups, ids),
                )

        self._run(hold)

    def session_holders(self, group_id: str, session_id: str, now: str) -> list[str]:
        """The servers whose lease on the session has not lapsed."""
        rows = self._rows(
            "SELECT holder FROM session_leases WHERE group_id = %s AND session_id = %s AND expires_at >= %s "
            "ORDER BY holder",
            (group_id, session_id, now),
        )
        return [row[0] for row in rows]

    # -- statistics and maintenance ---------------------------------------------------------

    def stats(self, recent_since: str) -> dict[str, Any]:
        def read(conn: Any) -> dict[str, Any]:
            def rows(sql: str, params: Sequence[Any] = ()) -> list[Any]:
                return conn.execute(sql, params).fetchall()

            by_type = rows("SELECT memory_type, count(*) FROM episodes GROUP BY memory_type")
            by_tier = rows(
                f"SELECT CASE WHEN indexed = {PENDING} THEN 'pending_vectors' WHEN created_at >= %s THEN 'recent' "
                f"WHEN indexed = {INDEXED} THEN 'long_term' ELSE 'not_vector_indexed' END AS tier, count(*) "
                "FROM episodes GROUP BY tier",
                (recent_since,),
            )
            totals = rows(
                "SELECT count(*), avg(importance), avg(effective_importance), "
                "count(*) FILTER (WHERE effective_importance < 0.1), coalesce(sum(retrieval_count), 0), "
                "count(*) FILTER (WHERE retrieval_count > 0) FROM episodes"
            )[0]
            by_group = rows(
                "SELECT g.group_id, (SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id), "
                "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) FROM groups g "
                'ORDER BY g.group_id COLLATE "C"'
            )
            by_session = rows(
                "SELECT group_id, session_id, count(*) FROM episodes GROUP BY group_id, session_id "
                "ORDER BY count(*) DESC LIMIT 100"
            )
            by_producer = rows(
                "SELECT group_id, producer_id, count(*), avg(effective_importance), sum(retrieval_count) "
                "FROM episodes GROUP BY group_id, producer_id ORDER BY count(*) DESC LIMIT 200"
            )
            pending = rows(f"SELECT count(*) FROM episodes WHERE indexed = {PENDING}")[0][0]
            size = rows("SELECT pg_database_size(current_database())")[0][0]
            return {
                "episodes_by_type": {row[0]: row[1] for row in by_type},
                "groups": [{"group_id": r[0], "sessions": r[1], "episodes": r[2]} for r in by_group],
                "largest_sessions": [
                    {"group_id": r[0], "session_id": r[1], "episodes": r[2]} for r in by_session
                ],
                "producers": [
                    {
                        "group_id": r[0],
                        "producer": r[1],
                        "episodes": r[2],
                        "mean_effective_importance": round(float(r[3]), 4),
                        "retrievals": int(r[4]),
                    }
                    for r in by_producer
                ],  # fmt: skip
                "pending_vectors": pending,
                "database_bytes": int(size),
                "episodes_total": totals[0],
                "episodes_by_tier": dict.fromkeys(TIERS, 0) | {row[0]: row[1] for row in by_tier},
                "importance": {
                    "mean": round(float(totals[1] or 0.0), 4),
                    "mean_effective": round(float(totals[2] or 0.0), 4),
                    "effective_below_0_1": totals[3],
                },
                "retrievals": {"total": int(totals[4]), "episodes_retrieved": totals[5]},
            }

        return self._run(read)

    def decay_importance(
        self, now: datetime, decay_per_day: float, batch: int = maintenance.DECAY_BATCH
    ) -> int:
        """Recompute every episode's effective importance, `batch` rows per transaction."""

        def step(conn: Any, after: int) -> tuple[int | None, int]:
            rows = conn.execute(
                "SELECT id, importance, retrieval_count, created_at, last_accessed_at, effective_importance "
                "FROM episodes WHERE id > %s ORDER BY id LIMIT %s",
                (after, batch),
            ).fetchall()
            changes = []
            for row in rows:
                value = maintenance.effective_importance(
                    row[1], row[2], maintenance.age_days(row[3], row[4], now), decay_per_day
                )
                if value != row[5]:
                    changes.append((value, row[0]))
            if changes:
                with conn.cursor() as cursor:
                    cursor.executemany("UPDATE episodes SET effective_importance = %s WHERE id = %s", changes)
            return (rows[-1][0] if rows else None), len(changes)

        after, changed = 0, 0
        while True:
            last, done = self._run(partial(step, after=after))
            changed += done
            if last is None:
                return changed
            after = last

    def claim_maintenance(self, now: str, due_before: str) -> bool:
        """Take the maintenance pass: True for exactly one caller while the last claim is older than
        `due_before` (every server asks; one runs it)."""
        return (
            self._count(
                "INSERT INTO meta(key, value) VALUES ('maintenance_claimed_at', %s) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value WHERE meta.value < %s",
                (now, due_before),
            )
            > 0
        )

    # -- summaries ------------------------------------------------------------------------

    def reserve_lightweight(self, group_id: str, session_id: str, limit: int) -> bool:
        if limit <= 0:
            return False
        sql = (
            "INSERT INTO summary_counts AS c (group_id, session_id, lightweight) VALUES (%s, %s, 1) "
            "ON CONFLICT (group_id, session_id) DO UPDATE SET lightweight = c.lightweight + 1 "
            "WHERE c.lightweight < %s"
        )
        return self._count(sql, (group_id, session_id, limit)) > 0

    def release_lightweight(self, group_id: str, session_id: str) -> None:
        self._count(
            "UPDATE summary_counts SET lightweight = lightweight - 1 "
            "WHERE group_id = %s AND session_id = %s AND lightweight > 0",
            (group_id, session_id),
        )

    def lightweight_used(self, group_id: str, session_id: str) -> int:
        return self._counter("lightweight", group_id, session_id)

    def auto_multiple(self, group_id: str, session_id: str) -> int:
        return self._counter("auto_multiple", group_id, session_id)

    def _counter(self, column: str, group_id: str, session_id: str) -> int:
        rows = self._rows(
            f"SELECT {column} FROM summary_counts WHERE group_id = %s AND session_id = %s",
            (group_id, session_id),
        )
        return int(rows[0][0]) if rows else 0

    def claim_auto(self, group_id: str, session_id: str, multiple: int) -> bool:
        sql = (
            "INSERT INTO summary_counts AS c (group_id, session_id, auto_multiple) VALUES (%s, %s, %s) "
            "ON CONFLICT (group_id, session_id) DO UPDATE SET auto_multiple = excluded.auto_multiple "
            "WHERE c.auto_multiple < excluded.auto_multiple"
        )
        return self._count(sql, (group_id, session_id, multiple)) > 0

    def rolling_summary(self, group_id: str, session_id: str) -> RollingSummary | None:
        rows = self._rows(
            "SELECT text, covered_through_sequence, updated_at, omitted_sequences FROM rolling_summaries "
            "WHERE group_id = %s AND session_id = %s",
            (group_id, session_id),
        )
        if not rows:
            return None
        text, covered, updated_at, omitted = rows[0]
        return RollingSummary(text, int(covered), updated_at, list(omitted))

    def save_rolling_summary(self, group_id: str, session_id: str, summary: RollingSummary) -> None:
        sql = (
            "INSERT INTO rolling_summaries (group_id, session_id, text, covered_through_sequence, updated_at, "
            "omitted_sequences) SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM sessions "
            "WHERE group_id = %s AND session_id = %s) ON CONFLICT (group_id, session_id) DO UPDATE SET "
            "text = excluded.text, covered_through_sequence = excluded.covered_through_sequence, "
            "updated_at = excluded.updated_at, omitted_sequences = excluded.omitted_sequences"
        )
        self._count(sql, (group_id, session_id, summary.text, summary.covered_through_sequence, summary.updated_at,
                          json.dumps(summary.omitted_sequences), group_id, session_id))  # fmt: skip

    # -- tasks ----------------------------------------------------------------------------

    def create_task(
        self,
        *,
        kind: str,
        group_id: str,
        session_id: str | None,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> TaskInfo:
        task_id = f"task_{uuid.uuid4().hex}"
        self._count(
            "INSERT INTO tasks(task_id, kind, group_id, session_id, status, created_at, updated_at, owner, "
            "lease_until) VALUES (%s, %s, %s, %s, 'processing', %s, %s, %s, %s)",
            (task_id, kind, group_id, session_id, iso(now), iso(now), owner, iso(lease_until)),
        )
        return TaskInfo(task_id=task_id, kind=kind, status="processing", created_at=now, updated_at=now)

    def finish_task(
        self,
        task_id: str,
        owner: str,
        *,
        status: TaskStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        now: datetime,
        expires_at: datetime,
    ) -> bool:
        payload = None if result is None else json.dumps(result)
        return (
            self._count(
                "UPDATE tasks SET status = %s, result = %s, error = %s, updated_at = %s, lease_until = NULL, "
                "expires_at = %s WHERE task_id = %s AND owner = %s",
                (status, payload, error, iso(now), iso(expires_at), task_id, owner),
            )
            > 0
        )

    def renew_task_lease(self, task_id: str, owner: str, until: datetime) -> bool:
        return (
            self._count(
                "UPDATE tasks SET lease_until = %s WHERE task_id = %s AND owner = %s AND status = 'processing'",
                (iso(until), task_id, owner),
            )
            > 0
        )

    def get_task(self, task_id: str) -> TaskInfo | None:
        rows = self._rows(
            "SELECT task_id, kind, status, created_at, updated_at, result, error, group_id FROM tasks "
            "WHERE task_id = %s",
            (task_id,),
        )
        return _task(rows[0]) if rows else None

    def fail_lapsed_tasks(self, reason: str, *, now: datetime, expires_at: datetime) -> int:
        return self._count(
            _FAIL + "WHERE status = 'processing' AND lease_until < %s",
            (reason, iso(now), iso(expires_at), iso(now)),
        )

    def processing_task_owners(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT DISTINCT owner FROM tasks WHERE status = 'processing'")]

    def fail_owners_tasks(
        self, owners: Sequence[str], reason: str, *, now: datetime, expires_at: datetime
    ) -> int:
        return self._count(
            _FAIL + "WHERE status = 'processing' AND owner = ANY(%s)",
            (reason, iso(now), iso(expires_at), list(owners)),
        )

    def expire_tasks(self, before: datetime) -> int:
        return self._count("DELETE FROM tasks WHERE expires_at < %s", (iso(before),))


def _group(row: Any) -> GroupInfo:
    return GroupInfo(
        group_id=row[0], user_ids=row[1], agent_ids=row[2], description=row[3], configuration=row[4],
        created_at=datetime.fromisoformat(row[5]), owner=row[6], session_count=int(row[7]), episode_count=int(row[8]),
    )  # fmt: skip


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        group_id=row[0], session_id=row[1], configuration=row[2], overrides=row[3],
        created_at=datetime.fromisoformat(row[4]), episode_count=int(row[5]), rolling_covered_through=row[6],
    )  # fmt: skip


def _task(row: Any) -> TaskInfo:
    return TaskInfo(
        task_id=row[0], kind=row[1], status=row[2], created_at=datetime.fromisoformat(row[3]),
        updated_at=datetime.fromisoformat(row[4]), result=row[5], error=row[6], group_id=row[7],
    )  # fmt: skip
