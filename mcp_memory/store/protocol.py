"""The Store protocol: what the engine and the services need from a database, in typed records.

Every backend implements it (store/sqlite/ today); nothing outside a backend sees a connection, a row or
SQL. Each part is a protocol of its own, so a service names only what it uses (the task runner takes a
`TaskStore`), and `Store` is all of them. Methods are synchronous and thread-safe: callers run them on
worker threads. Times go in and come out as aware datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from mcp_memory.models import GroupInfo, TaskInfo, TaskStatus
from mcp_memory.store.records import RollingSummary, SessionRecord


class GroupStore(Protocol):
    """Groups: who takes part, and the configuration their sessions start from."""

    def insert_group(self, group: GroupInfo) -> bool:
        """Insert a group; False when one with that id exists already (nothing changes then)."""
        ...

    def add_participants(self, group_id: str, user_ids: Sequence[str], agent_ids: Sequence[str]) -> None:
        """Append the users and agents the group does not have yet, in order, in one transaction."""
        ...

    def get_group(self, group_id: str) -> GroupInfo | None: ...

    def group_counts(self, group_id: str) -> tuple[int, int]:
        """How many sessions and episodes the group has."""
        ...

    def list_groups(self, limit: int, offset: int = 0) -> list[GroupInfo]:
        """The groups in id order, with their session and episode counts."""
        ...


class SessionStore(Protocol):
    """Sessions: a group's conversations, each with the configuration frozen when it was created."""

    def insert_session(self, session: SessionRecord) -> bool:
        """Insert a session; False when it exists already (nothing changes then)."""
        ...

    def get_session(self, group_id: str, session_id: str) -> SessionRecord | None: ...

    def list_sessions(self, group_id: str, limit: int) -> list[SessionRecord]:
        """The group's sessions, newest first."""
        ...

    def delete_session(self, group_id: str, session_id: str) -> int:
        """Delete a session and every episode of it (both indexes follow); returns the episodes removed."""
        ...


class SummaryStore(Protocol):
    """The counters that pace summaries, and each session's rolling summary."""

    def reserve_lightweight(self, group_id: str, session_id: str, limit: int) -> bool:
        """Take one of the session's `limit` lightweight summaries; False when all are taken."""
        ...

    def release_lightweight(self, group_id: str, session_id: str) -> None:
        """Give back a reservation whose summary was never stored."""
        ...

    def lightweight_used(self, group_id: str, session_id: str) -> int: ...

    def auto_multiple(self, group_id: str, session_id: str) -> int:
        """The last multiple of the auto-summary threshold a summary was started for."""
        ...

    def claim_auto(self, group_id: str, session_id: str, multiple: int) -> bool:
        """Claim the automatic summary for `multiple`; False when this or a later one is claimed already."""
        ...

    def rolling_summary(self, group_id: str, session_id: str) -> RollingSummary | None: ...

    def save_rolling_summary(self, group_id: str, session_id: str, summary: RollingSummary) -> None: ...


class TaskStore(Protocol):
    """Background tasks as records every server on the database sees (services/tasks.py gives them meaning)."""

    def create_task(
        self,
        *,
        kind: str,
        group_id: str,
        session_id: str | None,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> TaskInfo: ...

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
    ) -> bool: ...

    def renew_task_lease(self, task_id: str, owner: str, until: datetime) -> bool: ...

    def get_task(self, task_id: str) -> TaskInfo | None: ...

    def fail_lapsed_tasks(self, reason: str, *, now: datetime, expires_at: datetime) -> int: ...

    def processing_task_owners(self) -> list[str]: ...

    def fail_owners_tasks(
        self, owners: Sequence[str], reason: str, *, now: datetime, expires_at: datetime
    ) -> int: ...

    def expire_tasks(self, before: datetime) -> int: ...
