"""Live sessions: opened (or created) on demand, reference-counted per owner, evicted when idle.

Each open session is one shared `MemorySession` per (group, session). Owners (an MCP connection,
or an `opened` block) hold references; a session nobody references is dropped once it has been
idle for `max_life_time_s`, or sooner, oldest first, while more than `session_cache_size` are
live. One lock serialises every change to the registry, shutdown included.

Other servers on the same database see which sessions this one holds open through leases in the database
(`holder`: this server's instance id): written whenever the set of referenced sessions changes and renewed
by the upkeep tick, they lapse LEASE_S after a server stops renewing them (it crashed). A session another
server holds open is not deleted.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
from anyio.to_thread import run_sync

from mcp_memory.config import Config, SessionConfig, effective_session_config
from mcp_memory.episodes import check_id
from mcp_memory.errors import ManagerClosed, SessionExists, SessionInUse, SessionNotFound, ValidationFailed
from mcp_memory.models import DeleteSessionResult, GroupDetail, GroupInfo, SessionInfo
from mcp_memory.services.groups import LIST_LIMIT, Groups
from mcp_memory.store.protocol import SessionStore
from mcp_memory.store.records import SessionRecord
from mcp_memory.times import iso

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"
NO_REFERENCE: Hashable = "no reference"  # a request that holds nothing open (stateless HTTP)
LEASE_S = 120.0  # four upkeep ticks: a lease outlives a slow tick, and lapses soon after its server died
RollingStatus = Callable[[Mapping[str, Any]], str]
"""Whether a session with this configuration keeps a rolling summary: "on", or why it is off."""


@dataclass(eq=False)
class MemorySession:
    """A live session: its frozen configuration, shared by everyone who opened it, counted by references
    per owner."""

    group_id: str
    session_id: str
    configuration: SessionConfig
    created_at: datetime
    references: Counter[Hashable] = field(default_factory=Counter)
    idle_since: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.group_id, self.session_id

    @property
    def reference_count(self) -> int:
        return sum(self.references.values())


class Sessions:
    """Registry of live `MemorySession`s keyed by (group, session), over one database."""

    def __init__(
        self,
        store: SessionStore,
        groups: Groups,
        *,
        config: Config,
        rolling_status: RollingStatus,
        clock: Callable[[], float],
        now: Callable[[], datetime],
        holder: str = LOCAL_OWNER,
    ) -> None:
        self._store = store
        self.holder = holder
        self._leased: list[tuple[str, str]] = []
        self._groups = groups
        self._config = config
        self._rolling_status = rolling_status
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
        user_ids: tuple[str, ...] | list[str] = (),
        agent_ids: tuple[str, ...] | list[str] = (),
        group_owner: str | None = None,
    ) -> tuple[MemorySession, bool]:
        """Open (or create) a session and take a reference for `owner` (none for NO_REFERENCE); returns it and
        whether it was created. Given participants, a missing group is created with them first (MemMachine's
        get-or-create), owned by `group_owner`."""
        if mode not in ("create", "open", "open_or_create"):
            raise ValidationFailed(f"mode {mode!r} is not valid; use 'create', 'open' or 'open_or_create'")
        check_id(session_id, "session_id", "2025-03-01")
        if user_ids or agent_ids:
            await self._groups.ensure_group(group_id, user_ids, agent_ids, owner=group_owner)
        async with self._lock:
            self._check_open()
            group = await self._groups.get_group(group_id)
            created = await self._ensure_session(group, session_id, mode, configuration)
            session = await self._live_session(group_id, session_id)
            if owner != NO_REFERENCE:
                session.references[owner] += 1
                session.idle_since = None
                await self._publish_leases()
            return session, created

    def _check_open(self) -> None:
        if self.closed:
            raise ManagerClosed("the memory manager has shut down; restart the server to use memory again")

    async def _ensure_session(
        self, group: GroupInfo, session_id: str, mode: str, configuration: Mapping[str, Any] | None
    ) -> bool:
        stored = await run_sync(self._store.get_session, group.group_id, session_id)
        if stored is not None:
            if mode == "create":
                raise SessionExists(
                    f"session {session_id!r} already exists in group {group.group_id!r}; "
                    "open it with mode='open' or pick another session_id"
                )
            if configuration is not None and stored.overrides != dict(configuration):
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
            self._config.base_configuration, group.configuration, configuration
        )
        record = SessionRecord(
            group_id=group.group_id, session_id=session_id, configuration=effective.model_dump(mode="json"),
            overrides=dict(configuration or {}), created_at=self._now(),
        )  # fmt: skip
        if not await run_sync(self._store.insert_session, record):  # another process created it meanwhile
            return await self._ensure_session(group, session_id, mode, configuration)
        return True

    async def _live_session(self, group_id: str, session_id: str) -> MemorySession:
        session = self.live.get((group_id, session_id))
        if session is not None:
            return session
        stored = await run_sync(self._store.get_session, group_id, session_id)
        if stored is None:
            raise SessionNotFound(
                f"session {session_id!r} does not exist in group {group_id!r}; call open_session first"
            )
        session = MemorySession(
            group_id=group_id,
            session_id=session_id,
            configuration=effective_session_config(stored.configuration),
            created_at=stored.created_at,
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
            self._check_open()
            session = self.live.get((group_id, session_id))
            if session is None or owner == NO_REFERENCE or session.references[owner] <= 0:
                return False, 0 if session is None else session.reference_count
            self._release(session, owner, 1)
            remaining = session.reference_count
            await self._publish_leases()
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
            await self._publish_leases()
        if released:
            log.info("released %d session reference(s) of a closed connection", released)
        return released

    async def _publish_leases(self, *, renew: bool = False) -> None:
        """Write this server's leases when the sessions it holds open changed (or to renew them); the caller
        holds the lock."""
        held = sorted(key for key, session in self.live.items() if session.reference_count > 0)
        if held == self._leased and not renew:
            return
        until = iso(self._now() + timedelta(seconds=LEASE_S))
        await run_sync(self._store.hold_sessions, self.holder, held, until)
        self._leased = held

    async def renew_leases(self) -> None:
        """Push this server's leases forward (the upkeep tick calls this)."""
        async with self._lock:
            if not self.closed and (self._leased or any(s.reference_count for s in self.live.values())):
                await self._publish_leases(renew=True)

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
            expired = [s for s in idle if now - (s.idle_since or now) > self._config.max_life_time_s]
            overflow = max(0, len(self.live) - len(expired) - self._config.session_cache_size)
            survivors = [s for s in idle if s not in expired]
            evicted = expired + survivors[:overflow]
            for session in evicted:
                del self.live[session.key]
            return [s.key for s in evicted]

    @contextlib.asynccontextmanager
    async def closing(self) -> AsyncIterator[None]:
        """Refuse further work, drop every live session, and hold the lock for the block."""
        async with self._lock:
            self.closed = True
            self.live.clear()
            if self._leased:
                with contextlib.suppress(Exception):  # the database may be gone already: leases lapse then
                    await run_sync(self._store.hold_sessions, self.holder, [], iso(self._now()))
                self._leased = []
            yield

    async def delete_session(self, group_id: str, session_id: str) -> DeleteSessionResult:
        """Delete a session and all its episodes; a session someone has open is an error."""
        await self._groups.get_group(group_id)
        async with self._lock:
            session = self.live.get((group_id, session_id))
            if session is not None and session.reference_count > 0:
                raise SessionInUse(
                    f"session {session_id!r} is open ({session.reference_count} reference(s)); "
                    "call close_session first"
                )
            if await run_sync(self._store.get_session, group_id, session_id) is None:
                raise _session_not_found(group_id, session_id)
            holders = await run_sync(self._store.session_holders, group_id, session_id, iso(self._now()))
            others = [holder for holder in holders if holder != self.holder]
            if others:
                raise SessionInUse(
                    f"session {session_id!r} is open on another server sharing this database ({others[0]}); "
                    f"close it there first (a server that stopped without closing it lets go within "
                    f"{int(LEASE_S)} s)"
                )
            deleted = await run_sync(self._store.delete_session, group_id, session_id)
            self.live.pop((group_id, session_id), None)
        return DeleteSessionResult(group_id=group_id, session_id=session_id, deleted_episodes=deleted)

    async def session_info(self, group_id: str, session_id: str, *, created: bool = False) -> SessionInfo:
        stored = await run_sync(self._store.get_session, group_id, session_id)
        if stored is None:
            await self._groups.get_group(group_id)
            raise _session_not_found(group_id, session_id)
        return self._info(stored, created=created)

    def _info(self, stored: SessionRecord, *, created: bool = False) -> SessionInfo:
        """A stored session as callers see it, with the references held on it in this process."""
        live = self.live.get((stored.group_id, stored.session_id))
        return SessionInfo(
            group_id=stored.group_id,
            session_id=stored.session_id,
            created=created,
            reference_count=0 if live is None else live.reference_count,
            configuration=stored.configuration,
            episode_count=stored.episode_count,
            created_at=stored.created_at,
            rolling_summary=self._rolling_status(stored.configuration),
            rolling_summary_covered_through=stored.rolling_covered_through,
        )

    async def group_detail(self, group_id: str) -> GroupDetail:
        """The group with its counts and its sessions, newest first."""
        group = await self._groups.counted(await self._groups.get_group(group_id))
        stored = await run_sync(self._store.list_sessions, group_id, LIST_LIMIT)
        return GroupDetail(group=group, sessions=[self._info(s) for s in stored])

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

    def created(
        self, group_id: str, session_id: str, configuration: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractAsyncContextManager[MemorySession]:
        """Like `opened`, but the session must not exist yet."""
        return self.opened(group_id, session_id, mode="create", configuration=configuration)


def _session_not_found(group_id: str, session_id: str) -> SessionNotFound:
    return SessionNotFound(
        f"session {session_id!r} does not exist in group {group_id!r}; call open_session to create it, "
        f"or read memory://groups/{group_id} for the group's sessions"
    )
