"""Background tasks kept in the database, so they survive a restart and any server process can read them.

Memoria keeps tasks in memory and loses them on restart; here each task is a row of `tasks`.
The SQL functions take an open connection inside the caller's transaction (like store/sqlite/fts.py);
`TaskRunner` runs work in the background and records it through a `write(fn)` callable
(`Store.write`).

How a dead owner is told from a live one: a lease. Every running task carries its owner's
instance id and a `lease_until` time that the owner pushes forward every `HEARTBEAT_S` while
the work runs. A `processing` task whose lease has lapsed lost its owner (crashed, killed, or
stuck for `LEASE_S`), and `fail_orphans` marks it failed; `TaskRunner.get` runs it before
every read, so a crash shows up within `LEASE_S` in every process, restarted or not. A pid
check would be quicker but wrong across containers and hosts sharing one file, unsafe on
Windows (`os.kill(pid, 0)` terminates there) and fooled by reused pids; a lease needs none of it.
If a slow owner still finishes a task after it was failed, its result wins: the work was done.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio
import anyio.abc
from pydantic import BaseModel

from mcp_memory.errors import MemoryServerError, TaskNotFound
from mcp_memory.models import TaskInfo, TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")
LEASE_S = 30.0
HEARTBEAT_S = 10.0
TASK_TTL_S = 7 * 24 * 3600.0
ORPHAN_REASON = "the server process running this task stopped before it finished; run it again"
SHUTDOWN_REASON = "the server shut down before this task finished; run it again"

M005_TASKS = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    group_id TEXT NOT NULL,
    session_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    result TEXT CHECK (result IS NULL OR json_valid(result)),
    error TEXT,
    owner TEXT NOT NULL,
    lease_until TEXT,
    expires_at TEXT
) STRICT;
CREATE INDEX tasks_processing ON tasks(lease_until) WHERE status = 'processing';
CREATE INDEX tasks_expires ON tasks(expires_at) WHERE expires_at IS NOT NULL;
"""
"""Times are fixed-width UTC ISO 8601 text, so they compare as text. `lease_until` is set while
processing, `expires_at` once finished (finished tasks are kept `TASK_TTL_S`)."""


def m005_tasks(conn: Any) -> None:
    """Create the `tasks` table (append to schema.MIGRATIONS)."""
    for statement in M005_TASKS.strip().split(";\n"):
        if statement.strip(" ;\n"):
            conn.execute(statement)


def new_instance_id() -> str:
    """An id for this server process: readable in the table, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


# -- SQL: each function runs inside the caller's transaction ---------------------------------------


def create(
    conn: Any,
    *,
    kind: str,
    group_id: str,
    session_id: str | None,
    owner: str,
    lease_s: float = LEASE_S,
    now: datetime | None = None,
) -> TaskInfo:
    """Insert a new `processing` task owned by `owner`, leased for `lease_s`."""
    moment = _now(now)
    task_id = f"task_{uuid.uuid4().hex}"
    conn.execute(
        "INSERT INTO tasks(task_id, kind, group_id, session_id, status, created_at, updated_at, owner, "
        "lease_until) VALUES (?, ?, ?, ?, 'processing', ?, ?, ?, ?)",
        (task_id, kind, group_id, session_id, _iso(moment), _iso(moment), owner,
         _iso(moment + timedelta(seconds=lease_s))),
    )  # fmt: skip
    return TaskInfo(task_id=task_id, kind=kind, status="processing", created_at=moment, updated_at=moment)


def complete(
    conn: Any,
    task_id: str,
    owner: str,
    result: dict[str, Any],
    *,
    ttl_s: float = TASK_TTL_S,
    now: datetime | None = None,
) -> bool:
    """Record the owner's result; True when the owner's task was found."""
    return _finish(conn, task_id, owner, "completed", json.dumps(result), None, ttl_s, _now(now))


def fail(
    conn: Any,
    task_id: str,
    owner: str,
    error: str,
    *,
    ttl_s: float = TASK_TTL_S,
    now: datetime | None = None,
) -> bool:
    """Record why the owner's task failed; True when the owner's task was found."""
    return _finish(conn, task_id, owner, "failed", None, error, ttl_s, _now(now))


def _finish(
    conn: Any,
    task_id: str,
    owner: str,
    status: TaskStatus,
    result: str | None,
    error: str | None,
    ttl_s: float,
    moment: datetime,
) -> bool:
    cursor = conn.execute(
        "UPDATE tasks SET status = ?, result = ?, error = ?, updated_at = ?, lease_until = NULL, "
        "expires_at = ? WHERE task_id = ? AND owner = ?",
        (status, result, error, _iso(moment), _iso(moment + timedelta(seconds=ttl_s)), task_id, owner),
    )
    return bool(cursor.rowcount)


def heartbeat(
    conn: Any, task_id: str, owner: str, *, lease_s: float = LEASE_S, now: datetime | None = None
) -> bool:
    """Push the lease of the owner's running task forward; False when it is no longer processing."""
    until = _iso(_now(now) + timedelta(seconds=lease_s))
    cursor = conn.execute(
        "UPDATE tasks SET lease_until = ? WHERE task_id = ? AND owner = ? AND status = 'processing'",
        (until, task_id, owner),
    )
    return bool(cursor.rowcount)


def get(conn: Any, task_id: str) -> TaskInfo | None:
    """The task with that id, or None."""
    row = conn.execute(
        "SELECT task_id, kind, status, created_at, updated_at, result, error FROM tasks WHERE task_id = ?",
        (task_id,),
    ).fetchone()
    if row is None:
        return None
    return TaskInfo(
        task_id=row[0],
        kind=row[1],
        status=row[2],
        created_at=datetime.fromisoformat(row[3]),
        updated_at=datetime.fromisoformat(row[4]),
        result=None if row[5] is None else json.loads(row[5]),
        error=row[6],
    )


def fail_orphans(
    conn: Any, reason: str = ORPHAN_REASON, *, ttl_s: float = TASK_TTL_S, now: datetime | None = None
) -> int:
    """Mark failed, with `reason`, every `processing` task whose owner's lease has lapsed; returns how many."""
    moment = _now(now)
    cursor = conn.execute(
        "UPDATE tasks SET status = 'failed', error = ?, updated_at = ?, lease_until = NULL, expires_at = ? "
        "WHERE status = 'processing' AND lease_until < ?",
        (reason, _iso(moment), _iso(moment + timedelta(seconds=ttl_s)), _iso(moment)),
    )
    return int(cursor.rowcount)


def fail_dead_local_owners(
    conn: Any, reason: str = ORPHAN_REASON, *, ttl_s: float = TASK_TTL_S, now: datetime | None = None
) -> int:
    """Fail at once the `processing` tasks of owners on this host whose process is gone, lease or not.

    A server restarted right after a crash should not show the dead one's tasks as running for
    the rest of their lease. Only POSIX can ask whether a pid lives without touching it; elsewhere,
    and for other hosts, the lease decides.
    """
    if os.name != "posix":
        return 0
    prefix = f"{socket.gethostname()}:"
    owners = conn.execute(
        "SELECT DISTINCT owner FROM tasks WHERE status = 'processing' AND substr(owner, 1, ?) = ?",
        (len(prefix), prefix),
    ).fetchall()
    dead = [owner for (owner,) in owners if not _pid_alive(owner.split(":")[1])]
    moment = _now(now)
    failed = 0
    for owner in dead:
        failed += conn.execute(
            "UPDATE tasks SET status = 'failed', error = ?, updated_at = ?, lease_until = NULL, expires_at = ? "
            "WHERE status = 'processing' AND owner = ?",
            (reason, _iso(moment), _iso(moment + timedelta(seconds=ttl_s)), owner),
        ).rowcount
    return int(failed)


def _pid_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def expire(conn: Any, older_than: datetime) -> int:
    """Delete finished tasks whose expiry time is before `older_than` (usually now); returns how many."""
    cursor = conn.execute("DELETE FROM tasks WHERE expires_at < ?", (_iso(older_than),))
    return int(cursor.rowcount)


# -- running tasks ---------------------------------------------------------------------------------

Write = Callable[[Callable[[Any], Any]], Any]
"""Runs `fn(conn)` in one write transaction and returns its result (`Store.write`)."""


class TaskRunner:
    """Runs work in a task group while its row says `processing`, then records the result or the error."""

    def __init__(
        self,
        write: Write,
        *,
        owner: str | None = None,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        ttl_s: float = TASK_TTL_S,
    ) -> None:
        self._write = write
        self.owner = owner or new_instance_id()
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(conn, *args, **kwargs)` in one write transaction on a worker thread."""

        def call(conn: Any) -> T:
            return fn(conn, *args, **kwargs)

        result: T = await anyio.to_thread.run_sync(self._write, call)
        return result

    async def submit(
        self,
        task_group: anyio.abc.TaskGroup,
        kind: str,
        group_id: str,
        session_id: str | None,
        work: Callable[[], Awaitable[BaseModel | dict[str, Any]]],
    ) -> TaskInfo:
        """Record a `processing` task, start `work` in `task_group`, and return the task at once."""
        info = await self._db(
            create,
            kind=kind,
            group_id=group_id,
            session_id=session_id,
            owner=self.owner,
            lease_s=self.lease_s,
        )
        task_group.start_soon(self._run, info.task_id, work, name=f"task {info.task_id}")
        return info

    async def get(self, task_id: str) -> TaskInfo:
        """The task as any process sees it (orphans failed and expired tasks dropped first)."""
        info = await self._db(self._get, task_id)
        if info is None:
            raise TaskNotFound(
                f"task {task_id!r} does not exist; use the task_id summarize_session returned "
                f"(finished tasks are kept for {self.ttl_s / 86400:g} days)"
            )
        return info

    def _get(self, conn: Any, task_id: str) -> TaskInfo | None:
        fail_orphans(conn, ttl_s=self.ttl_s)
        expire(conn, datetime.now(UTC))
        return get(conn, task_id)

    async def fail_orphans(self, reason: str = ORPHAN_REASON) -> int:
        """Fail every task whose owner died on this host or stopped renewing its lease (call once at start)."""

        def both(conn: Any) -> int:
            return fail_dead_local_owners(conn, reason, ttl_s=self.ttl_s) + fail_orphans(
                conn, reason, ttl_s=self.ttl_s
            )

        return await self._db(both)

    async def expire(self) -> int:
        """Housekeeping (the manager's background loop): fail orphans, then delete tasks past their expiry."""
        return await self._db(self._expire)

    def _expire(self, conn: Any) -> int:
        fail_orphans(conn, ttl_s=self.ttl_s)
        return expire(conn, datetime.now(UTC))

    async def _run(self, task_id: str, work: Callable[[], Awaitable[BaseModel | dict[str, Any]]]) -> None:
        try:
            result = await self._with_heartbeat(task_id, work)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._record(fail, task_id, SHUTDOWN_REASON)
            raise
        except MemoryServerError as exc:
            await self._record(fail, task_id, str(exc))
        except Exception as exc:  # noqa: BLE001 - a task's top level: record it, keep the server up
            log.exception("task %s failed", task_id)
            await self._record(fail, task_id, f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            await self._record(complete, task_id, payload)

    async def _record(self, finish: Callable[..., bool], task_id: str, outcome: Any) -> None:
        """Write a task's end; if even that fails (database closed), the lease lets others see it died."""
        try:
            await self._db(finish, task_id, self.owner, outcome, ttl_s=self.ttl_s)
        except Exception:  # noqa: BLE001 - nowhere left to report it but the log
            log.exception("cannot record the end of task %s", task_id)

    async def _with_heartbeat(
        self, task_id: str, work: Callable[[], Awaitable[BaseModel | dict[str, Any]]]
    ) -> BaseModel | dict[str, Any]:
        """Await `work` while renewing the lease; its exception comes out as itself, not in a group."""
        outcome: list[BaseModel | dict[str, Any]] = []
        failure: list[Exception] = []
        async with anyio.create_task_group() as beats:
            beats.start_soon(self._beat, task_id)
            try:
                outcome.append(await work())
            except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group
                failure.append(exc)
            finally:
                beats.cancel_scope.cancel()
        if failure:
            raise failure[0]
        return outcome[0]

    async def _beat(self, task_id: str) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            try:
                await self._db(heartbeat, task_id, self.owner, lease_s=self.lease_s)
            except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the lease
                log.warning("cannot renew the lease of task %s: %s", task_id, exc)
