"""The memory manager: groups, reference-counted live sessions, and their lifecycle.

One `MemoryManager` per server process (MemMachine's EpisodicMemoryManager). It holds no
SQL: persistence goes through the engine's Store, always on worker threads, so the
event loop never waits on the disk or the embedder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.abc
from pydantic import ValidationError

from mcp_memory import rolling
from mcp_memory.config import Config, effective_session_config
from mcp_memory.embeddings import Embedder, EmbeddingError, make_embedder
from mcp_memory.engine import MemoryEngine, RecallQuery, RecallStrategy
from mcp_memory.episodes import (
    episode_from_row,
    iso,
    normalize_timestamp,
    parse_memories,
    prepare_episode,
    utc_now,
)
from mcp_memory.errors import (
    ConfigurationError,
    GroupExists,
    GroupNotFound,
    ManagerClosed,
    SessionExists,
    SessionInUse,
    SessionNotFound,
    ValidationFailed,
)
from mcp_memory.extraction import NOT_CONFIGURED, Complete, completion_from_config, extract_facts
from mcp_memory.fact_table import FACT_MEMORY_TYPE, NewFact, StoredFacts
from mcp_memory.facts import (
    FACTS_SESSION,
    check_confidence,
    check_request,
    check_source,
    fact_from_row,
    fact_result,
    prepare_fact,
)
from mcp_memory.llm import DEFAULT_LLM_MODEL, LLMClient, LLMNotConfigured, OpenAIChatLLM
from mcp_memory.models import (
    AddedMemory,
    AddMemoryResult,
    DeleteResult,
    DeleteSessionResult,
    Episode,
    FactList,
    FactResult,
    GroupDetail,
    GroupInfo,
    MaintenanceReport,
    MaintenanceTrigger,
    MemoryInput,
    RecallResult,
    SessionDetail,
    SessionInfo,
    Stats,
)
from mcp_memory.session import MemorySession
from mcp_memory.store import Filters, NewEpisode, Store, recorded_embedder
from mcp_memory.summaries import (
    SUMMARY_MEMORY_TYPE,
    SummarizeResponse,
    SummaryMode,
    SummaryService,
    SummarySettings,
)
from mcp_memory.tasks import TaskInfo, TaskRunner
from mcp_memory.tokens import token_counter
from mcp_memory.vector_cache import VectorCache
from mcp_memory.window import trim

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCAL_OWNER = "local"
TICK_S = 30.0  # how often the background loop sweeps sessions, indexes pending vectors and expires tasks
RECENT_TIER_S = 24 * 3600.0  # memory://stats counts episodes stored this recently as the "recent" tier
LAST_MAINTENANCE_KEY = "last_maintenance"  # in the meta table: every process on the file sees the last pass
MAX_RECALL_LIMIT = 100
LIST_LIMIT = 200
WINDOW_MARGIN = 8
SUMMARY_MAX_CHARS = 8_000  # a full summary is at most about 4,300 characters (summaries.py)
NOT_TURNS = (SUMMARY_MEMORY_TYPE, FACT_MEMORY_TYPE)  # what the automatic summary trigger does not count


class MemoryManager:
    """Registry of live `MemorySession`s keyed by (group, session), over one database."""

    def __init__(
        self,
        config: Config,
        *,
        embedder: Embedder | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.config = config
        self.embedder_warning: str | None = None
        if embedder is None:
            embedder, self.embedder_warning = make_embedder(
                config.embedder,
                model_dir=config.model_dir,
                base_url=config.embedding_base_url,
                api_key=config.embedding_api_key,
                model=config.embedding_model,
                dimension=config.embedding_dimension if config.embedder == "openai" else None,
            )
        self.embedder = embedder
        self._clock = clock
        self._now = now
        self._engine: MemoryEngine | None = None
        self._live: dict[tuple[str, str], MemorySession] = {}
        self._lock = anyio.Lock()
        self._closed = False
        self._tasks: TaskRunner | None = None
        self._summaries: SummaryService | None = None
        self._jobs: anyio.abc.TaskGroup | None = None  # run_background's, for work that outlives a request
        self._maintenance_lock = anyio.Lock()
        self._maintained_at: float | None = None  # self._clock() at this process's last maintenance pass
        # one rolling-summary pass per session at a time, in order; at most one more waits (it sees every add)
        self._roll_locks: dict[tuple[str, str], anyio.Lock] = {}
        self._roll_queued: set[tuple[str, str]] = set()
        # add_fact(text=...) asks this model; replace it to use another client or MCP sampling
        self.fact_completion: Complete | None = completion_from_config(config)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, check_embedder: bool = True) -> MemoryManager:
        """Open (and migrate) the database; cheap: no model is loaded here."""
        await self._learn_dimension()
        store = await anyio.to_thread.run_sync(
            partial(
                Store,
                self.config.db_path,
                embedder_name=self.embedder.name,
                dimension=self.embedder.dimension,
                check_embedder=check_embedder,
            )
        )
        cache = VectorCache(self.config.vector_cache_mb * 2**20) if self.config.vector_cache_mb > 0 else None
        self._engine = MemoryEngine(store, self.embedder, clock=self._now, cache=cache)
        self._tasks = TaskRunner(store.write, ttl_s=self.config.task_ttl_s)
        orphans = await self._tasks.fail_orphans()
        if orphans:
            log.warning("%d task(s) left running by a stopped server process marked failed", orphans)
        self._summaries = SummaryService(
            fetch_episodes=self._summary_episodes,
            store_summary=self._store_summary,
            write=store.write,
            llm=summary_llm(self.config),
            settings=SummarySettings(
                max_lightweight_per_session=self.config.max_lightweight_per_session,
                auto_trigger_threshold=self.config.auto_trigger_threshold,
            ),
        )
        log.info("memory database %s (embedder %s)", self.config.db_path, self.embedder.name)
        return self

    async def _learn_dimension(self) -> None:
        """An endpoint embedder of unknown size takes it from the database it built, sparing a probe request."""
        if getattr(self.embedder, "dimension_known", True):
            return
        recorded = await anyio.to_thread.run_sync(recorded_embedder, self.config.db_path)
        if recorded is not None and recorded[0] == self.embedder.name:
            self.embedder.dimension = recorded[1]
            return
        try:
            await anyio.to_thread.run_sync(lambda: self.embedder.dimension)
        except EmbeddingError as exc:
            raise ConfigurationError(
                f"cannot learn the embedding dimension: {exc}; set MCP_MEMORY_EMBEDDING_DIMENSION"
            ) from None

    async def run_background(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Warm the embedder, then run `background_step` every TICK_S seconds until cancelled. Background
        summaries run in this runner's task group, so they outlive the request that started them and are
        cancelled (and recorded failed) with it."""
        async with anyio.create_task_group() as jobs:
            self._jobs = jobs
            try:
                task_status.started()
                await self._warm_up()
                while not self._closed:
                    await self.background_step()
                    await anyio.sleep(TICK_S)
            finally:
                self._jobs = None

    async def background_step(self) -> MaintenanceReport | None:
        """One tick of the background loop: the maintenance pass when it is due (returned), else sweeping
        idle sessions, indexing pending vectors and expiring finished tasks."""
        if await self._maintenance_due():
            return await self.maintain(trigger="schedule")
        with contextlib.suppress(Exception):
            await self.backfill()
        with contextlib.suppress(Exception):
            await self.tasks.expire()
        await self.sweep()
        return None

    async def _maintenance_due(self) -> bool:
        """Every maintenance_interval_s by the manager's clock; at the first tick, unless any process on
        this database ran a pass less than an interval ago (a short-lived stdio server still gets one)."""
        interval = self.config.maintenance_interval_s
        if interval <= 0:
            return False
        if self._maintained_at is None:
            last = await self.last_maintenance()
            elapsed = None if last is None else (self._now() - last.started_at).total_seconds()
            if elapsed is None or not 0 <= elapsed < interval:
                return True
            self._maintained_at = self._clock() - elapsed
        return self._clock() - self._maintained_at >= interval

    async def _warm_up(self) -> None:
        load = getattr(self.embedder, "load", None)
        if callable(load):
            try:
                await anyio.to_thread.run_sync(load)
            except Exception as exc:  # noqa: BLE001 - recall falls back to keywords
                log.warning("could not load the embedder %s: %s", self.embedder.name, exc)

    async def shutdown(self) -> None:
        """Flush and drop every live session and close the database; later calls fail."""
        if self._closed:
            return
        async with self._lock:
            self._closed = True
            for session in list(self._live.values()):
                await session.flush()
            self._live.clear()
            if self._engine is not None:
                if self._engine.cache is not None:
                    self._engine.cache.close()
                await anyio.to_thread.run_sync(self._engine.store.close)

    async def __aenter__(self) -> MemoryManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def engine(self) -> MemoryEngine:
        if self._closed:
            raise ManagerClosed("the memory manager has shut down; restart the server to use memory again")
        if self._engine is None:
            raise ManagerClosed("the memory manager has not been started; call start() first")
        return self._engine

    @property
    def tasks(self) -> TaskRunner:
        """Background tasks, kept in the database."""
        self.engine  # noqa: B018 - fails once shut down or before start
        assert self._tasks is not None
        return self._tasks

    @property
    def summaries(self) -> SummaryService:
        """Session summaries; replace `summaries.llm` to use another model."""
        self.engine  # noqa: B018
        assert self._summaries is not None
        return self._summaries

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args))

    # -- groups -------------------------------------------------------------------------

    async def create_group(
        self,
        group_id: str,
        user_ids: Sequence[str] = (),
        agent_ids: Sequence[str] = (),
        description: str | None = None,
        configuration: Mapping[str, Any] | None = None,
    ) -> GroupInfo:
        """Register a group and its permanent participants; an existing id is an error."""
        users, agents = _participants(user_ids, "user_ids"), _participants(agent_ids, "agent_ids")
        if not users and not agents:
            raise ValidationFailed("a group needs at least one participant; pass user_ids and/or agent_ids")
        effective_session_config(self.config.base_configuration, configuration)
        row = {
            "group_id": group_id,
            "user_ids": json.dumps(users),
            "agent_ids": json.dumps(agents),
            "description": description,
            "configuration": json.dumps(dict(configuration or {})),
            "created_at": iso(self._now()),
        }
        if not await self._run(self.engine.store.insert_group, row):
            raise GroupExists(
                f"group {group_id!r} already exists; use it as it is (open_session), or pick another group_id"
            )
        return await self.get_group(group_id)

    async def get_group(self, group_id: str) -> GroupInfo:
        row = await self._run(self.engine.store.get_group, group_id)
        if row is None:
            raise GroupNotFound(f"group {group_id!r} does not exist; call create_group first")
        return _group_info(row)

    async def list_groups(self) -> list[GroupInfo]:
        rows = await self._run(self.engine.store.list_groups, LIST_LIMIT)
        return [_group_info(r) for r in rows]

    async def group_detail(self, group_id: str) -> GroupDetail:
        group = await self.get_group(group_id)
        rows = await self._run(self.engine.store.list_sessions, group_id, LIST_LIMIT)
        return GroupDetail(group=group, sessions=[self._session_info(r) for r in rows])

    # -- sessions -----------------------------------------------------------------------

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
        async with self._lock:
            self.engine  # noqa: B018 - fails once shut down
            group = await self.get_group(group_id)
            created = await self._ensure_session(group, session_id, mode, configuration)
            session = await self._live_session(group_id, session_id)
            session.references[owner] += 1
            session.idle_since = None
            return session, created

    async def _ensure_session(
        self, group: GroupInfo, session_id: str, mode: str, configuration: Mapping[str, Any] | None
    ) -> bool:
        row = await self._run(self.engine.store.get_session, group.group_id, session_id)
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
            self.config.base_configuration, group.configuration, configuration
        )
        inserted = await self._run(
            self.engine.store.insert_session,
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
        session = self._live.get((group_id, session_id))
        if session is not None:
            return session
        row = await self._run(self.engine.store.get_session, group_id, session_id)
        if row is None:
            raise SessionNotFound(
                f"session {session_id!r} does not exist in group {group_id!r}; call open_session first"
            )
        session = MemorySession(
            manager=self,
            group_id=group_id,
            session_id=session_id,
            configuration=effective_session_config(json.loads(row["configuration"])),
            created_at=datetime.fromisoformat(row["created_at"]),
            idle_since=self._clock(),
        )
        self._live[session.key] = session
        return session

    async def close_session(
        self, group_id: str, session_id: str, *, owner: Hashable | None = None
    ) -> tuple[bool, int]:
        """Release one of `owner`'s references; returns whether one was released and how many are left."""
        owner = LOCAL_OWNER if owner is None else owner
        async with self._lock:
            self.engine  # noqa: B018
            session = self._live.get((group_id, session_id))
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
            for session in self._live.values():
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
            if self._closed:
                return []
            now = self._clock()
            idle = sorted(
                (s for s in self._live.values() if s.reference_count == 0 and s.idle_since is not None),
                key=lambda s: s.idle_since or 0.0,
            )
            expired = [s for s in idle if now - (s.idle_since or now) > self.config.max_life_time_s]
            overflow = max(0, len(self._live) - len(expired) - self.config.session_cache_size)
            survivors = [s for s in idle if s not in expired]
            evicted = expired + survivors[:overflow]
            for session in evicted:
                await session.flush()
                del self._live[session.key]
            return [s.key for s in evicted]

    async def delete_session(self, group_id: str, session_id: str) -> DeleteSessionResult:
        """Delete a session and all its episodes; a session someone has open is an error."""
        await self.get_group(group_id)
        async with self._lock:
            session = self._live.get((group_id, session_id))
            if session is not None and session.reference_count > 0:
                raise SessionInUse(
                    f"session {session_id!r} is open ({session.reference_count} reference(s)); "
                    "call close_session first"
                )
            if await self._run(self.engine.store.get_session, group_id, session_id) is None:
                raise _session_not_found(group_id, session_id)
            deleted = await self._run(self.engine.store.delete_session, group_id, session_id)
            self._live.pop((group_id, session_id), None)
        return DeleteSessionResult(group_id=group_id, session_id=session_id, deleted_episodes=deleted)

    async def session_info(self, group_id: str, session_id: str, *, created: bool = False) -> SessionInfo:
        row = await self._run(self.engine.store.get_session, group_id, session_id)
        if row is None:
            await self.get_group(group_id)
            raise _session_not_found(group_id, session_id)
        return self._session_info(row, created=created)

    def _session_info(self, row: Any, *, created: bool = False) -> SessionInfo:
        live = self._live.get((row["group_id"], row["session_id"]))
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
        if self._summaries is None or self._summaries.llm is None:
            return "off (no LLM configured)"
        return "on"

    async def session_detail(self, group_id: str, session_id: str) -> SessionDetail:
        info = await self.session_info(group_id, session_id)
        return SessionDetail(
            session=info,
            recent=await self.recent(group_id, session_id),
            rolling_summary=await self.rolling_summary(group_id, session_id),
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
        """`async with manager.opened(g, s) as session:`: a reference held for the block, released in finally."""
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

    # -- memories -----------------------------------------------------------------------

    async def add_memories(
        self, group_id: str, session_id: str, memories: Sequence[MemoryInput | dict[str, Any]]
    ) -> AddMemoryResult:
        """Validate every memory first, then store the batch in one transaction (retries are not duplicated)."""
        items = parse_memories(memories)
        async with self.opened(group_id, session_id) as session:
            group = await self.get_group(group_id)
            participants = group.user_ids + group.agent_ids
            now = self._now()
            episodes = [
                _prepare(i, item, participants, self.config.max_content_chars, now)
                for i, item in enumerate(items)
            ]
            index = session.configuration.long_term.enabled
            inserted, pending = await self._run(
                partial(self.engine.add, group_id, session_id, episodes, index_vectors=index)
            )
        added = [AddedMemory(id=r.id, sequence=r.sequence, duplicate=r.duplicate) for r in inserted]
        duplicates = sum(a.duplicate for a in added)
        if duplicates < len(added):
            self._schedule_auto_summary(group_id, session_id)
            self._schedule_roll(group_id, session_id)
        return AddMemoryResult(
            group_id=group_id,
            session_id=session_id,
            memories=added,
            stored=len(added) - duplicates,
            duplicates=duplicates,
            embedding_pending=pending,
        )

    async def recall(
        self,
        group_id: str,
        query: str,
        *,
        session_id: str | None = None,
        limit: int = 10,
        since: Any = None,
        until: Any = None,
        producer: str | None = None,
        role: str | None = None,
        memory_types: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        min_importance: float | None = None,
        strategy: RecallStrategy | None = None,
    ) -> RecallResult:
        """Hybrid recall over the group, or one session plus its recent window; filters apply inside the search."""
        if not query.strip():
            raise ValidationFailed("query is empty; say in plain words what to look for")
        if not re.search(r"\w", query):
            raise ValidationFailed("query has no words; say in plain words what to look for")
        if not 1 <= limit <= MAX_RECALL_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_RECALL_LIMIT}, got {limit}")
        group = await self.get_group(group_id)
        filters = _filters(session_id, since, until, producer, role, memory_types, metadata, min_importance)
        recent: list[Episode] = []
        summary: str | None = None
        if session_id is not None:
            await self.session_info(group_id, session_id)
            recent = await self.recent(group_id, session_id)
            summary = await self.rolling_summary(group_id, session_id)
        excluded = frozenset(e.id for e in recent)
        request = RecallQuery(
            group_id,
            query,
            filters,
            limit,
            excluded,
            strategy or RecallStrategy(),
            frozenset(group.user_ids + group.agent_ids),
        )
        hits, vector_ran = await self._run(self.engine.recall, request)
        return RecallResult(
            group_id=group_id,
            query=query,
            hits=hits,
            recent=recent,
            vector_search=vector_ran,
            rolling_summary=summary,
        )

    # -- the rolling summary ------------------------------------------------------------

    async def rolling_summary(self, group_id: str, session_id: str) -> str | None:
        """The session's rolling summary as callers see it (with a note on turns left out), if any."""
        current = await self._run(rolling.read, self.engine.store, group_id, session_id)
        return None if current is None else current.display

    async def roll_summary(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """One rolling-summary pass now (after any pass already running for the session); see rolling.py."""
        await self.session_info(group_id, session_id)
        async with self._roll_lock(group_id, session_id):
            return await self._roll(group_id, session_id)

    def _roll_lock(self, group_id: str, session_id: str) -> anyio.Lock:
        return self._roll_locks.setdefault((group_id, session_id), anyio.Lock())

    def _schedule_roll(self, group_id: str, session_id: str) -> None:
        """After new turns, fold what left the window into the rolling summary in the background."""
        summaries, key = self._summaries, (group_id, session_id)
        if summaries is None or summaries.llm is None or self._jobs is None or key in self._roll_queued:
            return  # no LLM, no background runner, or a pass that has not started yet will see these turns
        self._roll_queued.add(key)
        self._jobs.start_soon(self._background_roll, group_id, session_id)

    async def _background_roll(self, group_id: str, session_id: str) -> None:
        async with self._roll_lock(group_id, session_id):
            self._roll_queued.discard((group_id, session_id))
            try:
                await self._roll(group_id, session_id)
            except Exception as exc:  # noqa: BLE001 - a background pass must never bring the server down
                log.warning("rolling summary of session %r in group %r failed: %s", session_id, group_id, exc)

    async def _roll(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """The pass itself; the caller holds the session's lock."""
        info = await self.session_info(group_id, session_id)
        llm = self.summaries.llm
        if not effective_session_config(info.configuration).short_term.enabled or llm is None:
            return rolling.RollOutcome(
                status="off", covered_through_sequence=info.rolling_summary_covered_through
            )
        store = self.engine.store
        window = await self.recent(group_id, session_id)
        current = await self._run(rolling.read, store, group_id, session_id)
        covered = 0 if current is None else current.covered_through_sequence
        first = window[0].sequence if window else 0
        rows = await self._run(store.episodes_between, group_id, session_id, covered, first, NOT_TURNS)
        turns = [episode_from_row(r) for r in rows]
        if not turns:
            return rolling.RollOutcome(
                status="nothing to summarise", covered_through_sequence=None if current is None else covered
            )
        counter = await self._run(token_counter)

        async def complete(system: str, prompt: str, max_tokens: int) -> str:
            return await llm.complete(system, prompt, max_tokens=max_tokens)

        folder = rolling.Folder(
            complete=complete,
            count=counter.count,
            max_tokens=self.config.rolling_summary_max_tokens,
            input_tokens=self.config.rolling_summary_input_tokens,
        )
        try:
            text = await folder.fold("" if current is None else current.text, turns)
        except Exception as exc:  # noqa: BLE001 - the previous summary stays; the next add retries
            log.warning(
                "rolling summary of session %r in group %r not updated (the previous one is kept): %s",
                session_id, group_id, exc,
            )  # fmt: skip
            return rolling.RollOutcome(
                status="failed",
                llm_calls=folder.calls,
                covered_through_sequence=None if current is None else covered,
                error=str(exc),
            )
        updated = rolling.RollingSummary(
            text=text,
            covered_through_sequence=turns[-1].sequence,
            updated_at=iso(self._now()),
            omitted_sequences=([] if current is None else current.omitted_sequences) + folder.omitted,
        )
        await self._run(rolling.write, store, group_id, session_id, updated)
        return rolling.RollOutcome(
            status="updated",
            summarised=len(turns) - len(folder.omitted),
            omitted=folder.omitted,
            llm_calls=folder.calls,
            covered_through_sequence=updated.covered_through_sequence,
        )

    # -- summaries ----------------------------------------------------------------------

    async def summarize_session(
        self,
        group_id: str,
        session_id: str,
        *,
        mode: SummaryMode = "full",
        sync: bool = True,
        generate_embedding: bool = True,
        focus_topics: Sequence[str] | None = None,
        summary: Any = None,
        sampling: LLMClient | None = None,
    ) -> SummarizeResponse:
        """Summarise a session now (sync) or in a background task; see summaries.py for the sources.

        `sampling` (the client's model) is only used with sync: once the request is over, nobody
        is there to answer it.
        """
        await self.session_info(group_id, session_id)
        try:
            job = await self.summaries.prepare(
                group_id, session_id, mode=mode, generate_embedding=generate_embedding,
                focus_topics=focus_topics, summary=summary, sampling=sampling if sync else None,
            )  # fmt: skip
        except LLMNotConfigured as exc:
            if sync or sampling is None:
                raise
            raise LLMNotConfigured(
                f"{exc}. This client offers MCP sampling, which is used only with sync=true (the client's "
                "model must answer within the request): call again with sync=true"
            ) from None
        if sync:
            return SummarizeResponse.done(await job.run())
        jobs = self._jobs
        if jobs is None:
            await job.cancel()
            raise ConfigurationError(
                "background tasks are not running in this server process; call summarize_session with sync=true"
            )
        try:
            info = await self.tasks.submit(jobs, "summary", group_id, session_id, job.run)
        except BaseException:
            await job.cancel()
            raise
        return SummarizeResponse(
            status="processing", mode=job.mode, truncated=job.truncated, task_id=info.task_id
        )

    async def get_task(self, task_id: str) -> TaskInfo:
        """A background task as any server process on this database sees it."""
        if not task_id.strip():
            raise ValidationFailed("task_id is empty; pass the task_id summarize_session returned")
        return await self.tasks.get(task_id.strip())

    async def _summary_episodes(self, group_id: str, session_id: str) -> list[Episode]:
        rows = await self._run(
            self.engine.store.session_episodes, group_id, session_id, (SUMMARY_MEMORY_TYPE,)
        )
        return [episode_from_row(r) for r in rows]

    async def _store_summary(
        self, group_id: str, session_id: str, text: str, metadata: dict[str, Any], generate_embedding: bool
    ) -> int:
        """Store a summary as a memory of type summary, produced by the group's first agent (else user)."""
        group = await self.get_group(group_id)
        producer = (group.agent_ids or group.user_ids)[0]
        item = MemoryInput(
            content=text, producer=producer, role="system", memory_type=SUMMARY_MEMORY_TYPE, metadata=metadata
        )
        limit = max(self.config.max_content_chars, SUMMARY_MAX_CHARS)
        episode = _prepare(None, item, [producer], limit, self._now())
        async with self.opened(group_id, session_id) as session:
            index = generate_embedding and session.configuration.long_term.enabled
            inserted, _ = await self._run(
                partial(self.engine.add, group_id, session_id, [episode], index_vectors=index)
            )
        return inserted[0].id

    def _schedule_auto_summary(self, group_id: str, session_id: str) -> None:
        """After new turns, check the automatic trigger in the background (configured LLM only)."""
        summaries = self._summaries
        if summaries is None or summaries.settings.auto_trigger_threshold <= 0:
            return
        if summaries.llm is None:
            log.debug("no LLM configured: automatic summaries are off")
            return
        if self._jobs is None:
            log.debug("background tasks are not running: automatic summaries are off")
            return
        self._jobs.start_soon(self._auto_summarize, group_id, session_id)

    async def _auto_summarize(self, group_id: str, session_id: str) -> None:
        try:
            turns = await self._run(self.engine.store.count_episodes, group_id, session_id, NOT_TURNS)
            result = await self.summaries.maybe_auto_summarize(group_id, session_id, turns)
        except Exception as exc:  # noqa: BLE001 - a background check must never bring the server down
            log.warning(
                "automatic summary check of session %r in group %r failed: %s", session_id, group_id, exc
            )
            return
        if result is not None:
            log.info("automatic summary %d of session %r in group %r", result.memory_id, session_id, group_id)

    async def recent(self, group_id: str, session_id: str) -> list[Episode]:
        """The session's short-term window (empty when short-term memory is off for it)."""
        async with self.opened(group_id, session_id) as session:
            window = session.configuration.short_term
            if not window.enabled:
                return []
            # a few more than the count, so a tool call at the edge is seen with its results
            newest = await self._run(
                self.engine.recent, group_id, session_id, window.max_episodes + WINDOW_MARGIN
            )
            counter = await self._run(token_counter)
            return trim(
                newest, max_episodes=window.max_episodes, max_tokens=window.max_tokens, count=counter.count
            )

    async def delete_memories(
        self, group_id: str, memory_ids: Sequence[int] | None = None, session_id: str | None = None
    ) -> DeleteResult:
        """Delete episodes by id and/or session from the table and both indexes, in one transaction."""
        if memory_ids is None and session_id is None:
            raise ValidationFailed("pass memory_ids, session_id or both to say what to delete")
        await self.get_group(group_id)
        if session_id is not None:
            await self.session_info(group_id, session_id)
        deleted = await self._run(self.engine.store.delete_episodes, group_id, memory_ids, session_id)
        return DeleteResult(group_id=group_id, deleted=deleted)

    # -- facts --------------------------------------------------------------------------

    async def add_fact(
        self,
        group_id: str,
        subject: str | None = None,
        predicate: str | None = None,
        object: str | None = None,  # the tool's parameter name, shadowing the builtin here only
        *,
        text: str | None = None,
        session_id: str | None = None,
        source: str | None = None,
        confidence: float | None = None,
        valid_from: Any = None,
        replace: bool = False,
    ) -> FactResult:
        """Store a fact, or the facts a language model finds in `text`: everything is checked before anything
        is written, then the facts go in one transaction (an identical current fact is returned instead)."""
        triple = check_request(subject, predicate, object, text, self.config.max_content_chars)
        if triple is None and self.fact_completion is None:
            raise ConfigurationError(NOT_CONFIGURED)
        source, confidence = check_source(source), check_confidence(confidence)
        start = self._now() if valid_from is None else normalize_timestamp(valid_from, field="valid_from")
        group = await self.get_group(group_id)
        if session_id is not None:
            await self.session_info(group_id, session_id)
        triples, extraction = [triple] if triple is not None else [], None
        if triple is None:
            assert text is not None and self.fact_completion is not None  # checked just above
            extraction = await self._run(extract_facts, text, self.fact_completion)
            triples = extraction.triplets
        prepared = [
            prepare_fact(
                t, group=group, session_id=session_id, source=source, confidence=confidence,
                valid_from=start, max_content_chars=self.config.max_content_chars,
            )
            for t in triples
        ]  # fmt: skip
        stored, pending = await self._write_facts(group_id, session_id, prepared, replace)
        if extraction is None:
            return fact_result(group_id, stored, pending=pending)
        return fact_result(
            group_id, stored, pending=pending, extracted=extraction.found, malformed=extraction.malformed
        )

    async def _write_facts(
        self, group_id: str, session_id: str | None, prepared: list[tuple[NewFact, NewEpisode]], replace: bool
    ) -> tuple[StoredFacts | None, bool]:
        """Write into the session the facts were learned in, or the group's facts session (made on demand)."""
        if not prepared:
            return None, False
        mode = "open" if session_id else "open_or_create"
        async with self.opened(group_id, session_id or FACTS_SESSION, mode=mode) as session:
            return await self._run(
                partial(
                    self.engine.add_facts, group_id, session.session_id,
                    [fact for fact, _ in prepared], [episode for _, episode in prepared],
                    supersede=replace, index_vectors=session.configuration.long_term.enabled,
                )
            )  # fmt: skip

    async def list_facts(
        self, group_id: str, *, subject: str | None = None, predicate: str | None = None
    ) -> FactList:
        """The group's facts, current ones first; subject and predicate match in any case and spacing."""
        await self.get_group(group_id)
        rows, total = await self._run(
            self.engine.store.list_facts, group_id, subject or None, predicate or None, LIST_LIMIT
        )
        return FactList(group_id=group_id, facts=[fact_from_row(r) for r in rows], total=total)

    async def backfill(self) -> int:
        """Index episodes whose embedding failed earlier; returns how many were indexed."""
        total = 0
        while (done := await self._run(self.engine.backfill)) > 0:
            total += done
        return total

    async def reindex(self) -> dict[str, Any]:
        """Re-embed every memory with the current embedder (after changing it); returns the counts."""
        store = self.engine.store
        marked = await self._run(store.reset_vectors, self.embedder.name, self.embedder.dimension)
        indexed = await self.backfill()
        return {
            "embedder": self.embedder.name,
            "dimension": self.embedder.dimension,
            "marked": marked,
            "indexed": indexed,
        }

    async def maintain(self, *, trigger: MaintenanceTrigger = "on_demand") -> MaintenanceReport:
        """The maintenance pass: recompute effective importance (decay, in short transactions), fail orphaned
        tasks and delete expired ones, index pending vectors, evict idle sessions. Each step runs even if
        another fails; nothing is deleted by decay; running it twice in a row changes nothing the second time.
        The report is kept in the database for memory://stats."""
        store = self.engine.store
        async with self._maintenance_lock:
            started, timer, errors = self._now(), time.perf_counter(), []

            async def step(name: str, work: Callable[[], Awaitable[int]]) -> int:
                try:
                    return await work()
                except Exception as exc:  # noqa: BLE001 - one failing step must not stop the others
                    log.warning("maintenance: %s failed: %s", name, exc)
                    errors.append(f"{name}: {exc}")
                    return 0

            async def evict() -> int:
                return len(await self.sweep())

            decay = self.config.importance_decay_per_day
            report = MaintenanceReport(
                started_at=started,
                trigger=trigger,
                duration_ms=0.0,
                importance_decay_per_day=decay,
                importance_updated=await step(
                    "importance decay", partial(self._run, store.decay_importance, started, decay)
                ),
                orphaned_tasks_failed=await step("orphaned tasks", self.tasks.fail_orphans),
                tasks_expired=await step("expired tasks", self.tasks.expire),
                vectors_backfilled=await step("vector backfill", self.backfill),
                sessions_evicted=await step("session eviction", evict),
                errors=errors,
            )
            report.duration_ms = round((time.perf_counter() - timer) * 1000, 1)
            self._maintained_at = self._clock()
            await self._run(store.set_meta, LAST_MAINTENANCE_KEY, report.model_dump_json())
        log.info("maintenance (%s): %s", trigger, report.model_dump_json(exclude={"started_at", "trigger"}))
        return report

    async def last_maintenance(self) -> MaintenanceReport | None:
        """The newest maintenance pass by any process on this database, if any."""
        raw = await self._run(self.engine.store.get_meta, LAST_MAINTENANCE_KEY)
        if raw is None:
            return None
        try:
            return MaintenanceReport.model_validate_json(raw)
        except ValidationError:  # written by another version: the next pass replaces it
            return None

    async def stats(self) -> Stats:
        store = self.engine.store
        recent_since = iso(self._now() - timedelta(seconds=RECENT_TIER_S))
        counts = await self._run(store.stats, recent_since)
        return Stats(
            database_path=str(store.path),
            schema_version=await self._run(lambda: store.schema_version),
            embedder=self.embedder.name,
            embedding_dimension=self.embedder.dimension,
            embedder_warning=self.embedder_warning,
            live_sessions=len(self._live),
            open_references=sum(s.reference_count for s in self._live.values()),
            last_maintenance=await self.last_maintenance(),
            **counts,
        )


def summary_llm(config: Config) -> OpenAIChatLLM | None:
    """The configured OpenAI-compatible endpoint for summaries, or None when neither a key nor a URL is set."""
    if not (config.llm_api_key or config.llm_base_url):
        return None
    return OpenAIChatLLM(config.llm_base_url, config.llm_api_key, config.llm_model or DEFAULT_LLM_MODEL)


def _session_not_found(group_id: str, session_id: str) -> SessionNotFound:
    return SessionNotFound(
        f"session {session_id!r} does not exist in group {group_id!r}; call open_session to create it, "
        f"or read memory://groups/{group_id} for the group's sessions"
    )


def _participants(ids: Sequence[str], field: str) -> list[str]:
    cleaned = [i.strip() for i in ids]
    if any(not i for i in cleaned):
        raise ValidationFailed(f"{field} contains an empty id; every participant needs a name")
    return list(dict.fromkeys(cleaned))


def _group_info(row: Any) -> GroupInfo:
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
    )


def _prepare(
    index: int | None, item: MemoryInput, participants: list[str], max_chars: int, now: datetime
) -> Any:
    try:
        return prepare_episode(item, participants=participants, max_content_chars=max_chars, now=now)
    except ValidationFailed as exc:
        where = "" if index is None else f"memories[{index}]: "
        raise ValidationFailed(f"{where}{exc}; nothing was stored") from None


def _filters(
    session_id: str | None,
    since: Any,
    until: Any,
    producer: str | None,
    role: str | None,
    memory_types: Sequence[str] | None,
    metadata: Mapping[str, Any] | None,
    min_importance: float | None,
) -> Filters:
    start = None if since is None else normalize_timestamp(since, field="since").timestamp()
    end = None if until is None else normalize_timestamp(until, field="until").timestamp()
    if start is not None and end is not None and start > end:
        raise ValidationFailed("since is after until; swap them or widen the range")
    if role is not None and role not in ("user", "assistant", "system", "tool"):
        raise ValidationFailed(f"role {role!r} is not valid; use user, assistant, system or tool")
    if min_importance is not None and not 0 <= min_importance <= 1:
        raise ValidationFailed(f"min_importance {min_importance} is outside [0, 1]")
    return Filters(
        session_id=session_id,
        group_wide_types=(SUMMARY_MEMORY_TYPE,),
        since=start,
        until=end,
        producer=producer,
        role=role,
        memory_types=tuple(memory_types) if memory_types else None,
        metadata=_metadata_filters(metadata),
        min_importance=min_importance,
    )


def _metadata_filters(metadata: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    pairs = []
    for path, value in (metadata or {}).items():
        if not path or any(not part for part in path.split(".")):
            raise ValidationFailed(
                f"metadata filter key {path!r} is not a dotted path like 'project' or 'a.b'"
            )
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float | bool) for v in values):
            raise ValidationFailed(
                f"metadata filter {path!r} must be a string, number, boolean, or a list of them (any of)"
            )
        pairs.append((path, value))
    return tuple(pairs)
