"""The manager's live sessions: opened (or created) on demand, reference-counted per owner, evicted when idle.

Each open session is one shared `MemorySession` per (group, session). Owners (an MCP connection,
or an `opened` block) hold references; a session nobody references is dropped once it has been
idle for `max_life_time_s`, or sooner, oldest first, while more than `session_cache_size` are
live. One lock serialises every change to the registry, shutdown included.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import check_id, iso
from mcp_memory.errors import SessionExists, SessionInUse, SessionNotFound, ValidationFailed
from mcp_memory.models import DeleteSessionResult, GroupInfo, SessionDetail, SessionInfo
from mcp_memory.session import MemorySession

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"


class LiveSessions:
    """Registry of live `MemorySession`s keyed by (group, session), for one manager."""

    def __init__(
        self, manager: MemoryManager, *, clock: Callable[[], float], now: Callable[[], datetime]
    ) -> None:
        self._manager = manager
        self._clock = clock
        self._now = now
        self.live: dict[tuple[str, str], MemorySession] = {}
        self._lock = anyio.Lock()
        self.closed = False

    async def open_session(
        self,
        group_id: str,
        session_id: str,
        *,
        mode: str = "open_or_create",
        configuration: Mapping[str, Any] | None = None,
        owner: Hashable = LOCAL_OWNER,
    ) -> tuple[MemorySession, bool]:
        """Open (or create) a session and take a reference for `owner`; returns it and whether it was created."""
        if mode not in ("create", "open", "open_or_create"):
            raise ValidationFailed(f"mode {mode!r} is not valid; use 'create', 'open' or 'open_or_create'")
        check_id(session_id, "session_id", "2025-03-01")
        async with self._lock:
            self._manager.engine  # noqa: B018 - fails once shut down
            group = await self._manager.get_group(group_id)
            created = await self._ensure_session(group, session_id, mode, configuration)
            session = await self._live_session(group_id, session_id)
            session.references[owner] += 1
            session.idle_since = None
            return session, created

    async def _ensure_session(
        self, group: GroupInfo, session_id: str, mode: str, configuration: Mapping[str, Any] | None
    ) -> bool:
        row = await run_sync(self._manager.engine.store.get_session, group.group_id, session_id)
        if row is not None:
            if mode == "create":
                raise SessionExists(
                    f"session {session_id!r} already exists in group {group.group_id!r}; "
                    "open it with mode='open' or pick another session_id"
                )
            if configuration is not None and json.loads(row["overrides"]) != dict(configuration):
                raise ValidationFailed(
                    f"session {session_id!r} was created with another configuration, which is frozen; "
                    "open it without configuration, or create a new session"
                )
            return False
        if mode == "open":
            raise SessionNotFound(
                f"session {session_id!r} does not exist in group {group.group_id!r}; "
                "call open_session with mode='open_or_create' (or 'create') first"
            )
        effective = effective_session_config(
            self._manager.config.base_configuration, group.configuration, configuration
        )
        inserted = await run_sync(
            self._manager.engine.store.insert_session,
            {
                "group_id": group.group_id,
                "session_id": session_id,
                "configuration": effective.model_dump_json(),
                "overrides": json.dumps(dict(configuration or {})),
                "created_at": iso(self._now()),
            },
        )
        if not inserted:  # another process created it between our read and write
            return await self._ensure_session(group, session_id, mode, configuration)
        return True

    async def _live_session(self, group_id: str, session_id: str) -> MemorySession:
        session = self.live.get((group_id, session_id))
        if session is not None:
            return session
        row = await run_sync(self._manager.engine.store.get_session, group_id, session_id)
        if row is None:
            raise SessionNotFound(
                f"session {session_id!r} does not exist in group {group_id!r}; call open_session first"
            )
        session = MemorySession(
            manager=self._manager,
            group_id=group_id,
            session_id=session_id,
            configuration=effective_session_config(json.loads(row["configuration"])),
            created_at=datetime.fromisoformat(row["created_at"]),
            idle_since=self._clock(),
        )
        self.live[session.key] = session
        return session

    async def close_session(
        self, group_id: str, session_id: str, *, owner: Hashable | None = None
    ) -> tuple[bool, int]:
        """Release one of `owner`'s references; returns whether one was released and how many are left."""
        owner = LOCAL_OWNER if owner is None else owner
        async with self._lock:
            self._manager.engine  # noqa: B018
            session = self.live.get((group_id, session_id))
            if session is None or session.references[owner] <= 0:
                return False, 0 if session is None else session.reference_count
            self._release(session, owner, 1)
            remaining = session.reference_count
        await self.sweep()
        return True, remaining

    def _release(self, session: MemorySession, owner: Hashable, count: int) -> None:
        session.references[owner] -= count
        if session.references[owner] <= 0:
            del session.references[owner]
        if session.reference_count == 0:
            session.idle_since = self._clock()

    async def release_owner(self, owner: Hashable) -> int:
        """Release every reference `owner` holds (its client disconnected); returns how many."""
        released = 0
        async with self._lock:
            for session in self.live.values():
                count = session.references.get(owner, 0)
                if count:
                    self._release(session, owner, count)
                    released += count
        if released:
            log.info("released %d session reference(s) of a closed connection", released)
        return released

    async def sweep(self) -> list[tuple[str, str]]:
        """Drop unreferenced sessions idle past max_life_time, and the oldest idle ones over the cache bound."""
        async with self._lock:
            if self.closed:
                return []
            now = self._clock()
            idle = sorted(
                (s for s in self.live.values() if s.reference_count == 0 and s.idle_since is not None),
                key=lambda s: s.idle_since or 0.0,
            )
            config = self._manager.config
            expired = [s for s in idle if now - (s.idle_since or now) > config.max_life_time_s]
            overflow = max(0, len(self.live) - len(expired) - config.session_cache_size)
            survivors = [s for s in idle if s not in expired]
            evicted = expired + survivors[:overflow]
            for session in evicted:
                await session.flush()
                del self.live[session.key]
            return [s.key for s in evicted]

    @contextlib.asynccontextmanager
    async def closing(self) -> AsyncIterator[None]:
        """Refuse further work, flush and drop every live session, and hold the lock for the block."""
        async with self._lock:
            self.closed = True
            for session in list(self.live.values()):
                await session.flush()
            self.live.clear()
            yield

    async def delete_session(self, group_id: str, session_id: str) -> DeleteSessionResult:
        """Delete a session and all its episodes; a session someone has open is an error."""
        await self._manager.get_group(group_id)
        async with self._lock:
            session = self.live.get((group_id, session_id))
            if session is not None and session.reference_count > 0:
                raise SessionInUse(
                    f"session {session_id!r} is open ({session.reference_count} reference(s)); "
                    "call close_session first"
                )
            if await run_sync(self._manager.engine.store.get_session, group_id, session_id) is None:
                raise _session_not_found(group_id, session_id)
            deleted = await run_sync(self._manager.engine.store.delete_session, group_id, session_id)
            self.live.pop((group_id, session_id), None)
        return DeleteSessionResult(group_id=group_id, session_id=session_id, deleted_episodes=deleted)

    async def session_info(self, group_id: str, session_id: str, *, created: bool = False) -> SessionInfo:
        row = await run_sync(self._manager.engine.store.get_session, group_id, session_id)
        if row is None:
            await self._manager.get_group(group_id)
            raise _session_not_found(group_id, session_id)
        return self.info_from_row(row, created=created)

    def info_from_row(self, row: Any, *, created: bool = False) -> SessionInfo:
        """A stored session as callers see it, with the references held on it in this process."""
        live = self.live.get((row["group_id"], row["session_id"]))
        return SessionInfo(
            group_id=row["group_id"],
            session_id=row["session_id"],
            created=created,
            reference_count=0 if live is None else live.reference_count,
            configuration=json.loads(row["configuration"]),
            episode_count=row["episode_count"],
            created_at=datetime.fromisoformat(row["created_at"]),
            rolling_summary=self._rolling_status(json.loads(row["configuration"])),
            rolling_summary_covered_through=row["rolling_covered_through"],
        )

    def _rolling_status(self, configuration: Mapping[str, Any]) -> str:
        if not effective_session_config(configuration).short_term.enabled:
            return "off (short-term memory disabled)"
        summaries = self._manager._summaries  # None before start; the property would raise
        if summaries is None or summaries.llm is None:
            return "off (no LLM configured)"
        return "on"

    async def session_detail(self, group_id: str, session_id: str) -> SessionDetail:
        info = await self.session_info(group_id, session_id)
        return SessionDetail(
            session=info,
            recent=await self._manager.recent(group_id, session_id),
            rolling_summary=await self._manager.rolling_summary(group_id, session_id),
        )

    @contextlib.asynccontextmanager
    async def opened(
        self,
        group_id: str,
        session_id: str,
        *,
        mode: str = "open",
        configuration: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[MemorySession]:
        """`async with sessions.opened(g, s) as session:`: a reference held for the block, released in finally."""
        owner = object()
        session, _ = await self.open_session(
            group_id, session_id, mode=mode, configuration=configuration, owner=owner
        )
        try:
            yield session
        finally:
            await self.close_session(group_id, session_id, owner=owner)


def _session_not_found(group_id: str, session_id: str) -> SessionNotFound:
    return SessionNotFound(
        f"session {session_id!r} does not exist in group {group_id!r}; call open_session to create it, "
        f"or read memory://groups/{group_id} for the group's sessions"
    )
