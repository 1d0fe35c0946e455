"""The Store on PostgreSQL: a connection pool, one transaction per call, typed records in and out.

So far the parts that keep no memories themselves: groups, sessions, summary counters and rolling
summaries, tasks, the database's metadata (tests/test_store_contract.py runs their contract tests here).
Episodes, facts, search and save and load are issue 13's next steps; the server does not serve PostgreSQL
yet.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from mcp_memory.errors import ConfigurationError, StoreError
from mcp_memory.models import GroupInfo, TaskInfo, TaskStatus
from mcp_memory.store.postgres.migrations import migrate
from mcp_memory.store.records import RollingSummary, SessionRecord
from mcp_memory.times import iso

T = TypeVar("T")
DATABASE_ID_KEY = "database_id"
POOL_SIZE = 4
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
    "SELECT g.group_id, g.user_ids, g.agent_ids, g.description, g.configuration, g.created_at, "
    "(SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id), "
    "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) FROM groups g "
)


def _driver() -> Any:
    try:
        import psycopg_pool
    except ImportError:
        raise ConfigurationError(
            "PostgreSQL needs the postgres extra: pip install 'mcp-memory[postgres]' "
            "(or uv tool install 'mcp-memory[postgres]')"
        ) from None
    return psycopg_pool


class PostgresStore:
    """A PostgreSQL database of memories; every method is synchronous and thread-safe."""

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self._pool = _driver().ConnectionPool(url, min_size=1, max_size=pool_size, open=True)
        self._closed = False
        with self._pool.connection() as conn:
            self._version = migrate(conn)

    # -- plumbing -----------------------------------------------------------------------

    def _run(self, work: Callable[[Any], T]) -> T:
        """`work(conn)` in one transaction on a pooled connection."""
        if self._closed:
            raise StoreError("the memory database is closed")
        with self._pool.connection() as conn, conn.transaction():
            return work(conn)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._run(lambda conn: conn.execute(sql, params).fetchall())

    def _count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self._run(lambda conn: conn.execute(sql, params).rowcount))

    def close(self) -> None:
        self._closed = True
        self._pool.close()

    # -- the database itself -------------------------------------------------------------

    @property
    def location(self) -> str:
        """The server and database, never the password."""
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(self.url)
        host, port, name = (
            parts.get("host") or "localhost",
            parts.get("port") or 5432,
            parts.get("dbname") or "",
        )
        return f"postgresql://{host}:{port}/{name}"

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
            "INSERT INTO groups(group_id, user_ids, agent_ids, description, configuration, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (group_id) DO NOTHING"
        )
        row = (group.group_id, json.dumps(group.user_ids), json.dumps(group.agent_ids), group.description,
               json.dumps(group.configuration), iso(group.created_at))  # fmt: skip
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
        rows = self._rows(_GROUPS + "WHERE g.group_id = %s", (group_id,))
        return _group(rows[0]) if rows else None

    def group_counts(self, group_id: str) -> tuple[int, int]:
        row = self._rows(
            "SELECT (SELECT count(*) FROM sessions WHERE group_id = %s), "
            "(SELECT count(*) FROM episodes WHERE group_id = %s)",
            (group_id, group_id),
        )[0]
        return int(row[0]), int(row[1])

    def list_groups(self, limit: int, offset: int = 0) -> list[GroupInfo]:
        rows = self._rows(_GROUPS + "ORDER BY g.group_id LIMIT %s OFFSET %s", (limit, offset))
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
            count = conn.execute(
                "DELETE FROM episodes WHERE group_id = %s AND session_id = %s", (group_id, session_id)
            ).rowcount
            conn.execute(
                "DELETE FROM sessions WHERE group_id = %s AND session_id = %s", (group_id, session_id)
            )
            return int(count)

        return self._run(delete)

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
            "SELECT task_id, kind, status, created_at, updated_at, result, error FROM tasks WHERE task_id = %s",
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
        created_at=datetime.fromisoformat(row[5]), session_count=int(row[6]), episode_count=int(row[7]),
    )  # fmt: skip


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        group_id=row[0], session_id=row[1], configuration=row[2], overrides=row[3],
        created_at=datetime.fromisoformat(row[4]), episode_count=int(row[5]), rolling_covered_through=row[6],
    )  # fmt: skip


def _task(row: Any) -> TaskInfo:
    return TaskInfo(
        task_id=row[0], kind=row[1], status=row[2], created_at=datetime.fromisoformat(row[3]),
        updated_at=datetime.fromisoformat(row[4]), result=row[5], error=row[6],
    )  # fmt: skip
