"""The memory manager: builds the services over one database and owns their lifecycle.

One `MemoryManager` per server process (MemMachine's EpisodicMemoryManager). It opens the store, builds
the engine and the services with explicit dependencies (none holds a reference back to the manager),
runs the background loop and shuts everything down. Callers (the MCP server, the CLI, benchmarks and
tests) use the services it exposes directly:

    manager.groups     groups: create, read, list (services/groups.py)
    manager.sessions   live sessions: open, close, reference counts, eviction (sessions.py)
    manager.memories   episodes: add, read (search or listing), the short-term window, correct, delete
    manager.facts      facts: given or extracted from text by a model, listed
    manager.summaries  summaries: on request, as background tasks, automatically
    manager.rolling    the rolling summary: one pass per session at a time
    manager.upkeep     the background tick, the maintenance pass, vector (re)indexing, statistics
    manager.transfer   save and load (JSON Lines)

It holds no SQL: persistence goes through the Store, always on worker threads, so the event loop never
waits on the disk or the embedder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import anyio
import anyio.abc
from anyio.to_thread import run_sync

from mcp_memory.config import Config
from mcp_memory.errors import ConfigurationError, EmbeddingError, ManagerClosed
from mcp_memory.llm.client import DEFAULT_LLM_MODEL, LanguageModels, OpenAIChatLLM
from mcp_memory.llm.embeddings import Embedder, make_embedder
from mcp_memory.llm.summaries import SummarySettings
from mcp_memory.recall.engine import MemoryEngine
from mcp_memory.recall.keywords import KeywordSearch
from mcp_memory.recall.vectors import VectorCache
from mcp_memory.services.background import Background
from mcp_memory.services.facts import Facts
from mcp_memory.services.groups import Groups
from mcp_memory.services.memories import Memories
from mcp_memory.services.rolling import Rolling, rolling_status
from mcp_memory.services.summaries import Summaries
from mcp_memory.services.tasks import TaskRunner
from mcp_memory.services.transfer import Transfers
from mcp_memory.services.upkeep import Upkeep
from mcp_memory.sessions import LOCAL_OWNER, Sessions
from mcp_memory.store.protocol import Store
from mcp_memory.store.sqlite.store import Store as SQLiteStore
from mcp_memory.store.sqlite.store import recorded_embedder
from mcp_memory.times import utc_now

__all__ = ["LOCAL_OWNER", "MemoryManager", "configured_llm"]

log = logging.getLogger(__name__)

TICK_S = 30.0  # how often the background loop sweeps sessions, indexes pending vectors and expires tasks


@dataclass(frozen=True)
class Services:
    """Everything a started manager is made of."""

    store: Store
    engine: MemoryEngine
    tasks: TaskRunner
    groups: Groups
    sessions: Sessions
    memories: Memories
    facts: Facts
    summaries: Summaries
    rolling: Rolling
    upkeep: Upkeep
    transfer: Transfers


class MemoryManager:
    """Memory over one database: the services, started together and shut down together."""

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
        # replace models.chat (summaries) or models.facts (extraction) to use another LLMClient
        self.models = LanguageModels(
            chat=configured_llm(config), facts=configured_llm(config, temperature=0.0)
        )
        self.background = Background()
        self._clock = clock
        self._now = now
        self._services: Services | None = None
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, check_embedder: bool = True) -> MemoryManager:
        """Open (and migrate) the database and build the services; cheap: no model is loaded here."""
        await self._learn_dimension()
        config = self.config
        store = await run_sync(partial(open_store, config, self.embedder, check_embedder=check_embedder))
        self._services = self._build(store)
        orphans = await self._services.tasks.fail_orphans()
        if orphans:
            log.warning("%d task(s) left running by a stopped server process marked failed", orphans)
        log.info("memory database %s (embedder %s)", config.database, self.embedder.name)
        return self

    def _build(self, store: Store) -> Services:
        """The engine and the services, each given what it uses."""
        config, now, background, models = self.config, self._now, self.background, self.models
        cache = VectorCache(config.vector_cache_mb * 2**20) if config.vector_cache_mb > 0 else None
        keywords = (
            KeywordSearch(store, config.keyword_cache_mb * 2**20) if config.keyword_cache_mb > 0 else None
        )
        engine = MemoryEngine(store, self.embedder, clock=now, cache=cache, keywords=keywords)
        tasks = TaskRunner(store, ttl_s=config.task_ttl_s, now=now)
        groups = Groups(store, base_configuration=config.base_configuration, now=now)
        sessions = Sessions(
            store, groups, config=config, rolling_status=partial(rolling_status, models=models),
            clock=self._clock, now=now, holder=tasks.owner,
        )  # fmt: skip
        memories = Memories(
            engine, store, sessions, groups, max_content_chars=config.max_content_chars,
            base_configuration=config.base_configuration, now=now,
        )  # fmt: skip
        settings = SummarySettings(config.max_lightweight_per_session, config.auto_trigger_threshold)
        summaries = Summaries(
            engine, store, sessions, groups, tasks, background, models, settings=settings,
            max_content_chars=config.max_content_chars, now=now,
        )  # fmt: skip
        rolling = Rolling(
            store, sessions, memories, background, models, max_tokens=config.rolling_summary_max_tokens,
            input_tokens=config.rolling_summary_input_tokens, now=now,
        )  # fmt: skip
        upkeep = Upkeep(
            store, engine, sessions, tasks, background, self.embedder, config=config,
            embedder_warning=self.embedder_warning, clock=self._clock, now=now,
        )  # fmt: skip
        memories.on_added += [summaries.after_add, rolling.after_add, upkeep.after_add]
        return Services(
            store=store, engine=engine, tasks=tasks, groups=groups, sessions=sessions, memories=memories,
            facts=Facts(engine, store, sessions, groups, models, max_content_chars=config.max_content_chars, now=now),
            summaries=summaries, rolling=rolling, upkeep=upkeep,
            transfer=Transfers(
                store, engine, groups, sessions, embedder_name=self.embedder.name,
                max_content_chars=config.max_content_chars, now=now,
            ),
        )  # fmt: skip

    async def _learn_dimension(self) -> None:
        """An endpoint embedder of unknown size takes it from the database it built, sparing a probe request."""
        if getattr(self.embedder, "dimension_known", True):
            return
        recorded = None if self.config.db_url else await run_sync(recorded_embedder, self.config.db_path)
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
        """Warm the embedder, then run the upkeep's step every TICK_S seconds until cancelled. Background
        jobs (summaries, rolling-summary passes) run in this runner's task group, so they outlive the request
        that started them and are cancelled (and recorded failed) with it."""
        async with anyio.create_task_group() as jobs:
            self.background.group = jobs
            try:
                task_status.started()
                await self._warm_up()
                while not self._closed:
                    await self.upkeep.step()
                    await anyio.sleep(TICK_S)
            finally:
                self.background.group = None

    async def _warm_up(self) -> None:
        load = getattr(self.embedder, "load", None)
        if callable(load):
            try:
                await run_sync(load)
            except Exception as exc:  # noqa: BLE001 - recall falls back to keywords
                log.warning("could not load the embedder %s: %s", self.embedder.name, exc)

    async def shutdown(self) -> None:
        """Drop every live session and close the database; later calls fail."""
        if self._closed:
            return
        self._closed = True
        services = self._services
        if services is None:
            return
        async with services.sessions.closing():
            await run_sync(services.engine.close)
            if services.engine.cache is not None:
                services.engine.cache.close()
            await run_sync(services.store.close)

    async def __aenter__(self) -> MemoryManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- the services -------------------------------------------------------------------

    def _ready(self) -> Services:
        if self._closed:
            raise ManagerClosed("the memory manager has shut down; restart the server to use memory again")
        if self._services is None:
            raise ManagerClosed("the memory manager has not been started; call start() first")
        return self._services

    @property
    def store(self) -> Store:
        return self._ready().store

    @property
    def engine(self) -> MemoryEngine:
        return self._ready().engine

    @property
    def tasks(self) -> TaskRunner:
        return self._ready().tasks

    @property
    def groups(self) -> Groups:
        return self._ready().groups

    @property
    def sessions(self) -> Sessions:
        return self._ready().sessions

    @property
    def memories(self) -> Memories:
        return self._ready().memories

    @property
    def facts(self) -> Facts:
        return self._ready().facts

    @property
    def summaries(self) -> Summaries:
        return self._ready().summaries

    @property
    def rolling(self) -> Rolling:
        return self._ready().rolling

    @property
    def upkeep(self) -> Upkeep:
        return self._ready().upkeep

    @property
    def transfer(self) -> Transfers:
        return self._ready().transfer


def open_store(config: Config, embedder: Embedder, *, check_embedder: bool = True) -> Store:
    """The database the configuration names: PostgreSQL for a URL (the postgres extra), else the SQLite file."""
    if config.db_url is not None:
        from mcp_memory.store.postgres.store import PostgresStore

        return PostgresStore(
            config.db_url, embedder_name=embedder.name, dimension=embedder.dimension,
            check_embedder=check_embedder, embedder_kind=config.embedder,
        )  # fmt: skip
    return SQLiteStore(
        config.db_path, embedder_name=embedder.name, dimension=embedder.dimension,
        check_embedder=check_embedder, embedder_kind=config.embedder,
    )  # fmt: skip


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
