"""Background tasks kept in the database, so they survive a restart and any server process can read them.

Memoria keeps tasks in memory and loses them on restart; here each task is a row of `tasks`.
`TaskRunner` runs work in the background and records it through the store (store/sqlite/tasks.py holds
the table).

How a dead owner is told from a live one: a lease. Every running task carries its owner's
instance id and a `lease_until` time that the owner pushes forward every `HEARTBEAT_S` while
the work runs. A `processing` task whose lease has lapsed lost its owner (crashed, killed, or
stuck for `LEASE_S`), and is marked failed before every read (`TaskRunner.get`), so a crash shows up within `LEASE_S` in every process, restarted or not. A pid
check would be quicker but wrong across containers and hosts sharing one file, unsafe on
Windows (`os.kill(pid, 0)` terminates there) and fooled by reused pids; a lease needs none of it.
If a slow owner still finishes a task after it was failed, its result wins: the work was done.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.to_thread import run_sync
from pydantic import BaseModel

from mcp_memory.errors import MemoryServerError, TaskNotFound
from mcp_memory.models import TaskInfo, TaskStatus
from mcp_memory.store.protocol import TaskStore

log = logging.getLogger(__name__)

LEASE_S = 30.0
HEARTBEAT_S = 10.0
TASK_TTL_S = 7 * 24 * 3600.0
ORPHAN_REASON = "the server process running this task stopped before it finished; run it again"
SHUTDOWN_REASON = "the server shut down before this task finished; run it again"


def new_instance_id() -> str:
    """An id for this server process: readable in the table, unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_local_owners(owners: Sequence[str]) -> list[str]:
    """The owners on this host whose process is gone: their tasks fail at once, lease or not.

    A server restarted right after a crash should not show the dead one's tasks as running for
    the rest of their lease. Only POSIX can ask whether a pid lives without touching it; elsewhere,
    and for other hosts, the lease decides.
    """
    if os.name != "posix":
        return []
    prefix = f"{socket.gethostname()}:"
    return [owner for owner in owners if owner.startswith(prefix) and not _pid_alive(owner.split(":")[1])]


def _pid_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


# -- running tasks ---------------------------------------------------------------------------------


class TaskRunner:
    """Runs work in a task group while its row says `processing`, then records the result or the error."""

    def __init__(
        self,
        store: TaskStore,
        *,
        owner: str | None = None,
        lease_s: float = LEASE_S,
        heartbeat_s: float = HEARTBEAT_S,
        ttl_s: float = TASK_TTL_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self.owner = owner or new_instance_id()
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self._now = now

    async def submit(
        self,
        task_group: anyio.abc.TaskGroup,
        kind: str,
        group_id: str,
        session_id: str | None,
        work: Callable[[], Awaitable[BaseModel | dict[str, Any]]],
    ) -> TaskInfo:
        """Record a `processing` task, start `work` in `task_group`, and return the task at once."""
        now = self._now()
        info = await run_sync(
            partial(
                self._store.create_task, kind=kind, group_id=group_id, session_id=session_id,
                owner=self.owner, now=now, lease_until=now + timedelta(seconds=self.lease_s),
            )
        )  # fmt: skip
        task_group.start_soon(self._run, info.task_id, work, name=f"task {info.task_id}")
        return info

    async def get(self, task_id: str) -> TaskInfo:
        """The task as any process sees it (orphans failed and expired tasks dropped first)."""
        await self.expire()
        info = await run_sync(self._store.get_task, task_id)
        if info is None:
            raise TaskNotFound(
                f"task {task_id!r} does not exist; use the task_id summarize_session returned "
                f"(finished tasks are kept for {self.ttl_s / 86400:g} days)"
            )
        return info

    async def fail_orphans(self, reason: str = ORPHAN_REASON) -> int:
        """Fail every task whose owner died on this host or stopped renewing its lease (call once at start)."""
        dead = dead_local_owners(await run_sync(self._store.processing_task_owners))
        now = self._now()
        expires_at = now + timedelta(seconds=self.ttl_s)
        failed = await run_sync(
            partial(self._store.fail_owners_tasks, dead, reason, now=now, expires_at=expires_at)
        )
        return failed + await self._fail_lapsed(reason)

    async def expire(self) -> int:
        """Housekeeping (the background loop, and before every read): fail orphans, then delete the tasks past
        their expiry; returns how many were deleted."""
        await self._fail_lapsed(ORPHAN_REASON)
        return await run_sync(self._store.expire_tasks, self._now())

    async def _fail_lapsed(self, reason: str) -> int:
        now = self._now()
        expires_at = now + timedelta(seconds=self.ttl_s)
        return await run_sync(partial(self._store.fail_lapsed_tasks, reason, now=now, expires_at=expires_at))

    async def _run(self, task_id: str, work: Callable[[], Awaitable[BaseModel | dict[str, Any]]]) -> None:
        try:
            result = await self._with_heartbeat(task_id, work)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._record(task_id, "failed", error=SHUTDOWN_REASON)
            raise
        except MemoryServerError as exc:
            await self._record(task_id, "failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a task's top level: record it, keep the server up
            log.exception("task %s failed", task_id)
            await self._record(task_id, "failed", error=f"unexpected error: {type(exc).__name__}: {exc}")
        else:
            payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
            await self._record(task_id, "completed", result=payload)

    async def _record(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Write a task's end; if even that fails (database closed), the lease lets others see it died."""
        now = self._now()
        finish = partial(
            self._store.finish_task, task_id, self.owner, status=status, result=result, error=error,
            now=now, expires_at=now + timedelta(seconds=self.ttl_s),
        )  # fmt: skip
        try:
            await run_sync(finish)
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
            until = self._now() + timedelta(seconds=self.lease_s)
            try:
                await run_sync(self._store.renew_task_lease, task_id, self.owner, until)
            except Exception as exc:  # noqa: BLE001 - a missed beat only shortens the lease
                log.warning("cannot renew the lease of task %s: %s", task_id, exc)
