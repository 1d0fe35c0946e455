"""The memory manager: groups, reference-counted live sessions, and their lifecycle.

One `MemoryManager` per server process (MemMachine's EpisodicMemoryManager). It holds no
SQL: persistence goes through the engine's Store, always on worker threads, so the
event loop never waits on the disk or the embedder.

The manager is the one entry point (server.py, the CLI, benchmarks and tests call only it). It
owns the lifecycle (start, the background runner, shutdown) and the parts that share it, and
delegates each concern to one of them; the parts reach each other only through the manager:

    services/groups.py     groups: create, read, list
    sessions.py   live sessions: open, close, reference counts, eviction
    services/memories.py   episodes: add, recall, the short-term window, delete
    services/facts.py      facts: given or extracted from text by a model, listed
    services/summaries.py  summaries: on request, as background tasks, automatically
    services/rolling.py    the rolling summary: when a pass runs, one per session at a time
    services/upkeep.py     the background tick, the maintenance pass, vector (re)indexing
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import anyio
import anyio.abc
from anyio.to_thread import run_sync

from mcp_memory.config import Config
from mcp_memory.episodes import iso, utc_now
from mcp_memory.errors import ConfigurationError, EmbeddingError, ManagerClosed
from mcp_memory.llm import rolling
from mcp_memory.llm.client import DEFAULT_LLM_MODEL, LLMClient, OpenAIChatLLM
from mcp_memory.llm.embeddings import Embedder, make_embedder
from mcp_memory.llm.summaries import SummaryService, SummarySettings
from mcp_memory.models import (
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
    MemoryFilter,
    MemoryInput,
    MemoryPage,
    RecallOptions,
    RecallResult,
    SessionDetail,
    SessionInfo,
    Stats,
    SummarizeResponse,
    SummaryMode,
    TaskInfo,
    UpdatedMemory,
)
from mcp_memory.recall.engine import MemoryEngine, RecallStrategy
from mcp_memory.recall.keywords import KeywordSearch
from mcp_memory.recall.vectors import VectorCache
from mcp_memory.services import transfer as manager_transfer
from mcp_memory.services.facts import Facts
from mcp_memory.services.groups import LIST_LIMIT, Groups
from mcp_memory.services.memories import MAX_RECALL_LIMIT, Memories
from mcp_memory.services.rolling import RollingPasses
from mcp_memory.services.summaries import SummaryJobs
from mcp_memory.services.tasks import TaskRunner
from mcp_memory.services.upkeep import Upkeep
from mcp_memory.session import MemorySession
from mcp_memory.sessions import LOCAL_OWNER, LiveSessions
from mcp_memory.store.sqlite.store import Store, recorded_embedder

__all__ = ["LOCAL_OWNER", "MAX_RECALL_LIMIT", "MemoryManager", "configured_llm"]

log = logging.getLogger(__name__)

TICK_S = 30.0  # how often the background loop sweeps sessions, indexes pending vectors and expires tasks
RECENT_TIER_S = 24 * 3600.0  # memory://stats counts episodes stored this recently as the "recent" tier


class MemoryManager:
    """Memory over one database: groups, live `MemorySession`s keyed by (group, session), and their upkeep."""

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
        self._now = now
        self._engine: MemoryEngine | None = None
        self._tasks: TaskRunner | None = None
        # the parts read these two directly: None before start, and while no background runner is running
        self._summaries: SummaryService | None = None
        self._jobs: anyio.abc.TaskGroup | None = None  # run_background's, for work that outlives a request
        # add_fact(text=...) asks this model (at temperature 0: the same text, the same facts); replace it
        # to use another LLMClient such as MCP sampling
        self.fact_llm: LLMClient | None = configured_llm(config, temperature=0.0)
        self._groups = Groups(self, now=now)
        self._sessions = LiveSessions(self, clock=clock, now=now)
        self._memories = Memories(self, now=now)
        self._facts = Facts(self, now=now)
        self._summary_jobs = SummaryJobs(self, now=now)
        self._rolling = RollingPasses(self, now=now)
        self._upkeep = Upkeep(self, clock=clock, now=now)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, check_embedder: bool = True) -> MemoryManager:
        """Open (and migrate) the database; cheap: no model is loaded here."""
        await self._learn_dimension()
        store = await run_sync(
            partial(
                Store,
                self.config.db_path,
                embedder_name=self.embedder.name,
                dimension=self.embedder.dimension,
                check_embedder=check_embedder,
                embedder_kind=self.config.embedder,
            )
        )
        cache = VectorCache(self.config.vector_cache_mb * 2**20) if self.config.vector_cache_mb > 0 else None
        keywords = (
            KeywordSearch(store, self.config.keyword_cache_mb * 2**20)
            if self.config.keyword_cache_mb > 0
            else None
        )
        self._engine = MemoryEngine(store, self.embedder, clock=self._now, cache=cache, keywords=keywords)
        self._tasks = TaskRunner(store.write, ttl_s=self.config.task_ttl_s)
        orphans = await self._tasks.fail_orphans()
        if orphans:
            log.warning("%d task(s) left running by a stopped server process marked failed", orphans)
        self._summaries = SummaryService(
            fetch_episodes=self._summary_jobs.episodes,
            store_summary=self._summary_jobs.store_summary,
            write=store.write,
            llm=configured_llm(self.config),
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
        recorded = await run_sync(recorded_embedder, self.config.db_path)
        if recorded is not None and recorded[0] == self.embedder.name:
            self.embedder.dimension = recorded[1]
            return
        try:
            await run_sync(lambda: self.embedder.dimension)
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
                while not self._sessions.closed:
                    await self.background_step()
                    await anyio.sleep(TICK_S)
            finally:
                self._jobs = None

    async def _warm_up(self) -> None:
        load = getattr(self.embedder, "load", None)
        if callable(load):
            try:
                await run_sync(load)
            except Exception as exc:  # noqa: BLE001 - recall falls back to keywords
                log.warning("could not load the embedder %s: %s", self.embedder.name, exc)

    async def shutdown(self) -> None:
        """Flush and drop every live session and close the database; later calls fail."""
        if self._sessions.closed:
            return
        async with self._sessions.closing():
            if self._engine is not None:
                await run_sync(self._engine.close)
                if self._engine.cache is not None:
                    self._engine.cache.close()
                await run_sync(self._engine.store.close)

    async def __aenter__(self) -> MemoryManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def engine(self) -> MemoryEngine:
        if self._sessions.closed:
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

    @property
    def _live(self) -> dict[tuple[str, str], MemorySession]:
        """The live sessions by (group, session) (tests look at the registry through this)."""
        return self._sessions.live

    # -- groups (services/groups.py) -------------------------------------------------------------------------

    async def create_group(
        self,
        group_id: str,
        user_ids: Sequence[str] = (),
        agent_ids: Sequence[str] = (),
        description: str | None = None,
        configuration: Mapping[str, Any] | None = None,
    ) -> GroupInfo:
        """Register a group and its permanent participants; the same group again returns it (created false),
        an existing id with other participants is an error."""
        return await self._groups.create_group(group_id, user_ids, agent_ids, description, configuration)

    async def add_participants(
        self, group_id: str, user_ids: Sequence[str] = (), agent_ids: Sequence[str] = ()
    ) -> GroupInfo:
        """Add users and agents to an existing group."""
        return await self._groups.add_participants(group_id, user_ids, agent_ids)

    async def get_group(self, group_id: str) -> GroupInfo:
        return await self._groups.get_group(group_id)

    async def list_groups(self) -> list[GroupInfo]:
        return await self._groups.list_groups()

    async def group_detail(self, group_id: str) -> GroupDetail:
        group = await self._groups.counted(await self.get_group(group_id))
        rows = await run_sync(self.engine.store.list_sessions, group_id, LIST_LIMIT)
        return GroupDetail(group=group, sessions=[self._sessions.info_from_row(r) for r in rows])

    # -- sessions (sessions.py) -------------------------------------------------

    async def open_session(
        self,
        group_id: str,
        session_id: str,
        *,
        mode: str = "open_or_create",
        configuration: Mapping[str, Any] | None = None,
        owner: Hashable = LOCAL_OWNER,
        user_ids: Sequence[str] = (),
        agent_ids: Sequence[str] = (),
    ) -> tuple[MemorySession, bool]:
        """Open (or create) a session and take a reference for `owner`; returns it and whether it was created.
        Given participants, a missing group is created with them first (MemMachine's get-or-create)."""
        if user_ids or agent_ids:
            await self._groups.ensure_group(group_id, user_ids, agent_ids)
        return await self._sessions.open_session(
            group_id, session_id, mode=mode, configuration=configuration, owner=owner
        )

    async def close_session(
        self, group_id: str, session_id: str, *, owner: Hashable | None = None
    ) -> tuple[bool, int]:
        """Release one of `owner`'s references; returns whether one was released and how many are left."""
        return await self._sessions.close_session(group_id, session_id, owner=owner)

    async def release_owner(self, owner: Hashable) -> int:
        """Release every reference `owner` holds (its client disconnected); returns how many."""
        return await self._sessions.release_owner(owner)

    async def sweep(self) -> list[tuple[str, str]]:
        """Drop unreferenced sessions idle past max_life_time, and the oldest idle ones over the cache bound."""
        return await self._sessions.sweep()

    async def delete_session(self, group_id: str, session_id: str) -> DeleteSessionResult:
        """Delete a session and all its episodes; a session someone has open is an error."""
        return await self._sessions.delete_session(group_id, session_id)

    async def session_info(self, group_id: str, session_id: str, *, created: bool = False) -> SessionInfo:
        return await self._sessions.session_info(group_id, session_id, created=created)

    async def session_detail(self, group_id: str, session_id: str) -> SessionDetail:
        return await self._sessions.session_detail(group_id, session_id)

    def opened(
        self,
        group_id: str,
        session_id: str,
        *,
        mode: str = "open",
        configuration: Mapping[str, Any] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[MemorySession]:
        """`async with manager.opened(g, s) as session:`: a reference held for the block, released in finally."""
        return self._sessions.opened(group_id, session_id, mode=mode, configuration=configuration)

    def created(
        self, group_id: str, session_id: str, configuration: Mapping[str, Any] | None = None
    ) -> contextlib.AbstractAsyncContextManager[MemorySession]:
        """Like `opened`, but the session must not exist yet."""
        return self.opened(group_id, session_id, mode="create", configuration=configuration)

    # -- memories (services/memories.py) -------------------------------------------------

    async def add_memories(
        self,
        group_id: str,
        session_id: str,
        memories: MemoryInput | Sequence[MemoryInput | dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> AddMemoryResult:
        """Validate every memory first, then store the batch in one transaction (retries are not duplicated);
        new turns start the automatic summary check and a rolling-summary pass in the background."""
        result = await self._memories.add_memories(
            group_id, session_id, memories, idempotency_key=idempotency_key
        )
        if result.stored:
            self._summary_jobs.schedule_auto_summary(group_id, session_id)
            self._rolling.schedule(group_id, session_id)
            await self._upkeep.inserted(result.stored)
        return result

    async def update_memory(
        self,
        group_id: str,
        memory_id: int,
        *,
        content: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        importance: float | None = None,
        memory_type: str | None = None,
    ) -> UpdatedMemory:
        """Correct a memory in place (id, session, sequence and time stay); keywords and vector follow."""
        return await self._memories.update_memory(
            group_id,
            memory_id,
            content=content,
            metadata=metadata,
            importance=importance,
            memory_type=memory_type,
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
        where: MemoryFilter | None = None,
        options: RecallOptions | None = None,
    ) -> RecallResult:
        """Hybrid recall over the group, or one session plus its recent window; filters apply inside the search
        (`where`, or the keyword filters when it is not given); `options`: tiers, threshold, neighbours."""
        return await self._memories.recall(
            group_id, query, session_id=session_id, limit=limit, since=since, until=until,
            producer=producer, role=role, memory_types=memory_types, metadata=metadata,
            min_importance=min_importance, strategy=strategy, where=where, options=options,
        )  # fmt: skip

    async def list_memories(
        self,
        group_id: str,
        *,
        session_id: str | None = None,
        where: MemoryFilter | None = None,
        order: str = "oldest",
        limit: int = 20,
        cursor: str | None = None,
    ) -> MemoryPage:
        """A page of memories in order, without a query (a session's by sequence, a group's by time)."""
        return await self._memories.list_memories(
            group_id, session_id=session_id, where=where, order=order, limit=limit, cursor=cursor
        )

    async def recent(self, group_id: str, session_id: str) -> list[Episode]:
        """The session's short-term window (empty when short-term memory is off for it)."""
        return await self._memories.recent(group_id, session_id)

    async def delete_memories(
        self,
        group_id: str,
        memory_ids: Sequence[int] | None = None,
        session_id: str | None = None,
        *,
        keep_system: bool = False,
    ) -> DeleteResult:
        """Delete episodes by id and/or session from the table and both indexes, in one transaction."""
        return await self._memories.delete_memories(group_id, memory_ids, session_id, keep_system=keep_system)

    # -- the rolling summary (services/rolling.py) ---------------------------------------

    async def rolling_summary(self, group_id: str, session_id: str) -> str | None:
        """The session's rolling summary as callers see it (with a note on turns left out), if any."""
        return await self._rolling.rolling_summary(group_id, session_id)

    async def roll_summary(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """One rolling-summary pass now (after any pass already running for the session); see llm/rolling.py."""
        return await self._rolling.roll_summary(group_id, session_id)

    # -- summaries and tasks (services/summaries.py) -------------------------------------

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
        """Summarise a session now (sync) or in a background task; see llm/summaries.py for the sources.

        `sampling` (the client's model) is only used with sync: once the request is over, nobody
        is there to answer it.
        """
        return await self._summary_jobs.summarize_session(
            group_id, session_id, mode=mode, sync=sync, generate_embedding=generate_embedding,
            focus_topics=focus_topics, summary=summary, sampling=sampling,
        )  # fmt: skip

    async def get_task(self, task_id: str) -> TaskInfo:
        """A background task as any server process on this database sees it."""
        return await self._summary_jobs.get_task(task_id)

    # -- facts (services/facts.py) -------------------------------------------------------

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
        replace: bool | None = None,
    ) -> FactResult:
        """Store a fact, or the facts a language model finds in `text`: everything is checked before anything
        is written, then the facts go in one transaction (an identical current fact is returned instead).
        `replace` (default: only for facts found in text) closes the current facts of the same subject and
        predicate."""
        return await self._facts.add_fact(
            group_id, subject, predicate, object, text=text, session_id=session_id, source=source,
            confidence=confidence, valid_from=valid_from, replace=replace,
        )  # fmt: skip

    async def list_facts(
        self, group_id: str, *, subject: str | None = None, predicate: str | None = None
    ) -> FactList:
        """The group's facts, current ones first; subject and predicate match in any case and spacing."""
        return await self._facts.list_facts(group_id, subject=subject, predicate=predicate)

    # -- upkeep (services/upkeep.py) and stats -------------------------------------------

    async def background_step(self) -> MaintenanceReport | None:
        """One tick of the background loop: the maintenance pass when it is due (returned), else sweeping
        idle sessions, indexing pending vectors and expiring finished tasks."""
        return await self._upkeep.step()

    async def maintain(self, *, trigger: MaintenanceTrigger = "on_demand") -> MaintenanceReport:
        """The maintenance pass: recompute effective importance (decay), fail orphaned tasks and delete
        expired ones, index pending vectors, evict idle sessions; see services/upkeep.py."""
        return await self._upkeep.maintain(trigger=trigger)

    async def last_maintenance(self) -> MaintenanceReport | None:
        """The newest maintenance pass by any process on this database, if any."""
        return await self._upkeep.last_maintenance()

    async def backfill(self) -> int:
        """Index episodes whose embedding failed earlier; returns how many were indexed."""
        return await self._upkeep.backfill()

    async def reindex(self) -> dict[str, Any]:
        """Re-embed every memory with the current embedder (after changing it); returns the counts."""
        return await self._upkeep.reindex()

    async def stats(self) -> Stats:
        store = self.engine.store
        recent_since = iso(self._now() - timedelta(seconds=RECENT_TIER_S))
        counts = await run_sync(store.stats, recent_since)
        return Stats(
            database_path=str(store.path),
            schema_version=await run_sync(lambda: store.schema_version),
            embedder=self.embedder.name,
            embedding_dimension=self.embedder.dimension,
            embedder_warning=self.embedder_warning,
            live_sessions=len(self._live),
            open_references=sum(s.reference_count for s in self._live.values()),
            last_maintenance=await self.last_maintenance(),
            **counts,
        )

    # -- save and load (services/transfer.py) --------------------------------------------

    async def export_memories(
        self,
        target: manager_transfer.ExportTarget,
        group_ids: Sequence[str] | None = None,
        *,
        overwrite: bool = False,
        progress: manager_transfer.ProgressCallback | None = None,
    ) -> manager_transfer.ExportResult:
        """Write these groups (default: all) as JSON Lines to a file, which appears whole or not at all (an
        existing one only with `overwrite`), or to a stream; see transfer/format.py for the format."""
        transfers = manager_transfer.Transfers(self, now=self._now)
        return await transfers.export(target, group_ids, overwrite=overwrite, progress=progress)

    async def import_memories(
        self,
        path: manager_transfer.ImportSource,
        group_id: str | None = None,
        *,
        progress: manager_transfer.ProgressCallback | None = None,
        index_budget_s: float | None = None,
    ) -> manager_transfer.ImportResult:
        """Import an export (only `group_id`'s part, if given) or a server-memory file (into `group_id`, default
        "memory"): every line is checked before anything is written, and importing twice adds nothing. The
        new memories are then embedded for up to `index_budget_s` (None: all); the upkeep does the rest."""
        transfers = manager_transfer.Transfers(self, now=self._now)
        return await transfers.import_file(path, group_id, progress=progress, index_budget_s=index_budget_s)


def configured_llm(config: Config, *, temperature: float | None = None) -> OpenAIChatLLM | None:
    """The configured OpenAI-compatible endpoint (for summaries and fact extraction), or None when neither
    a key nor a URL is set."""
    if not (config.llm_api_key or config.llm_base_url):
        return None
    return OpenAIChatLLM(
        config.llm_base_url,
        config.llm_api_key,
        config.llm_model or DEFAULT_LLM_MODEL,
        temperature=temperature,
    )
