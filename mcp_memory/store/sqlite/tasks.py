"""The `tasks` table: background tasks as rows, so they survive a restart and every server on the file sees
them. Times are fixed-width UTC ISO 8601 text, so they compare as text; `lease_until` is set while a task is
processing, `expires_at` once it has finished. What the times mean is services/tasks.py's business."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mcp_memory.models import TaskInfo, TaskStatus
from mcp_memory.store.sqlite.connection import Database
from mcp_memory.times import iso

_FAIL = "UPDATE tasks SET status = 'failed', error = ?, updated_at = ?, lease_until = NULL, expires_at = ? "


class TaskRows(Database):
    """Create, finish, lease, read and expire background tasks, one transaction each."""

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
        """Insert a new `processing` task owned by `owner`, leased until `lease_until`."""
        task_id = f"task_{uuid.uuid4().hex}"
        self.write(
            lambda conn: conn.execute(
                "INSERT INTO tasks(task_id, kind, group_id, session_id, status, created_at, updated_at, owner, "
                "lease_until) VALUES (?, ?, ?, ?, 'processing', ?, ?, ?, ?)",
                (task_id, kind, group_id, session_id, iso(now), iso(now), owner, iso(lease_until)),
            )
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
        """Record the owner's result or error; True when the owner's task was found."""
        payload = None if result is None else json.dumps(result)
        changed = self.write(
            lambda conn: (
                conn.execute(
                    "UPDATE tasks SET status = ?, result = ?, error = ?, updated_at = ?, lease_until = NULL, "
                    "expires_at = ? WHERE task_id = ? AND owner = ?",
                    (status, payload, error, iso(now), iso(expires_at), task_id, owner),
                ).rowcount
            )
        )
        return bool(changed)

    def renew_task_lease(self, task_id: str, owner: str, until: datetime) -> bool:
        """Push the lease of the owner's running task to `until`; False when it is no longer processing."""
        changed = self.write(
            lambda conn: (
                conn.execute(
                    "UPDATE tasks SET lease_until = ? WHERE task_id = ? AND owner = ? AND status = 'processing'",
                    (iso(until), task_id, owner),
                ).rowcount
            )
        )
        return bool(changed)

    def get_task(self, task_id: str) -> TaskInfo | None:
        rows = self.read(
            "SELECT task_id, kind, status, created_at, updated_at, result, error, group_id FROM tasks "
            "WHERE task_id = ?",
            (task_id,),
        )
        return _task(rows[0]) if rows else None

    def fail_lapsed_tasks(self, reason: str, *, now: datetime, expires_at: datetime) -> int:
        """Mark failed every `processing` task whose lease ended before `now`; returns how many."""
        changed = self.write(
            lambda conn: (
                conn.execute(
                    _FAIL + "WHERE status = 'processing' AND lease_until < ?",
                    (reason, iso(now), iso(expires_at), iso(now)),
                ).rowcount
            )
        )
        return int(changed)

    def processing_task_owners(self) -> list[str]:
        """The owners of the tasks still `processing`."""
        return [row[0] for row in self.read("SELECT DISTINCT owner FROM tasks WHERE status = 'processing'")]

    def fail_owners_tasks(
        self, owners: Sequence[str], reason: str, *, now: datetime, expires_at: datetime
    ) -> int:
        """Mark failed every `processing` task of these owners, lease or not; returns how many."""

        def fail(conn: Any) -> int:
            sql = _FAIL + "WHERE status = 'processing' AND owner = ?"
            return sum(conn.execute(sql, (reason, iso(now), iso(expires_at), o)).rowcount for o in owners)

        return int(self.write(fail))

    def expire_tasks(self, before: datetime) -> int:
        """Delete finished tasks whose expiry time is before `before`; returns how many."""
        sql = "DELETE FROM tasks WHERE expires_at < ?"
        return int(self.write(lambda conn: conn.execute(sql, (iso(before),)).rowcount))


def _task(row: Any) -> TaskInfo:
    return TaskInfo(
        task_id=row[0],
        kind=row[1],
        status=row[2],
        created_at=datetime.fromisoformat(row[3]),
        updated_at=datetime.fromisoformat(row[4]),
        result=None if row[5] is None else json.loads(row[5]),
        error=row[6],
        group_id=row[7],
    )
