"""Upkeep of a database: the background tick, the maintenance pass, vector (re)indexing, and statistics.

Each tick of the background loop either runs the maintenance pass, when one is due, or does the
cheap work: index pending vectors, expire finished tasks, evict idle sessions. The last pass's
report is kept in the database's meta table, so every process on the file sees it (importance
decay itself is store/sqlite/decay.py, run through the Store).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import anyio
from anyio.to_thread import run_sync
from pydantic import ValidationError

from mcp_memory.config import Config
from mcp_memory.llm.embeddings import Embedder
from mcp_memory.models import MaintenanceReport, MaintenanceTrigger, Stats
from mcp_memory.recall.engine import MemoryEngine
from mcp_memory.services.background import Background
from mcp_memory.services.tasks import TaskRunner
from mcp_memory.sessions import Sessions
from mcp_memory.store.protocol import Store
from mcp_memory.times import iso

log = logging.getLogger(__name__)

LAST_MAINTENANCE_KEY = "last_maintenance"  # in the meta table: every process on the file sees the last pass
RECENT_TIER_S = 24 * 3600.0  # memory://stats counts episodes stored this recently as the "recent" tier


class Upkeep:
    """Maintenance of a database: when a pass is due, the pass itself, vector backfill and re-indexing."""

    def __init__(
        self,
        store: Store,
        engine: MemoryEngine,
        sessions: Sessions,
        tasks: TaskRunner,
        background: Background,
        embedder: Embedder,
        *,
        config: Config,
        embedder_warning: str | None = None,
        clock: Callable[[], float],
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._engine = engine
        self._sessions = sessions
        self._tasks = tasks
        self._background = background
        self._embedder = embedder
        self._embedder_warning = embedder_warning
        self._config = config
        self._clock = clock
        self._now = now
        self._lock = anyio.Lock()
        self._maintained_at: float | None = None  # self._clock() at this process's last maintenance pass
        self._inserts = 0  # memories this process stored since its last pass

    async def after_add(self, group_id: str, session_id: str, stored: int) -> None:
        """Count stored memories; every maintenance_every_inserts of them, a pass runs (in the background when
        a runner is there, else now)."""
        every = self._config.maintenance_every_inserts
        self._inserts += stored
        if every <= 0 or self._inserts < every:
            return
        self._inserts = 0
        if not self._background.start_soon(partial(self.maintain, trigger="inserts")):
            await self.maintain(trigger="inserts")

    async def step(self) -> MaintenanceReport | None:
        """One tick of the background loop: the maintenance pass when it is due (returned), else sweeping
        idle sessions, indexing pending vectors and expiring finished tasks."""
        if await self._due():
            if await self._claim():
                return await self.maintain(trigger="schedule")
            self._maintained_at = self._clock()  # another server sharing the database runs this one
        with contextlib.suppress(Exception):
            await self._sessions.renew_leases()
        with contextlib.suppress(Exception):
            await self.backfill()
        with contextlib.suppress(Exception):
            await self._tasks.expire()
        await self._sessions.sweep()
        return None

    async def _due(self) -> bool:
        """Every maintenance_interval_s by the manager's clock; at the first tick, unless any process on
        this database ran a pass less than an interval ago (a short-lived stdio server still gets one)."""
        interval = self._config.maintenance_interval_s
        if interval <= 0:
            return False
        if self._maintained_at is None:
            last = await self.last_maintenance()
            elapsed = None if last is None else (self._now() - last.started_at).total_seconds()
            if elapsed is None or not 0 <= elapsed < interval:
                return True
            self._maintained_at = self._clock() - elapsed
        return self._clock() - self._maintained_at >= interval

    async def _claim(self) -> bool:
        """Whether this server runs the scheduled pass: of the servers on one database whose pass falls due
        together, one claims it (the claim is a conditional write in the database)."""
        now = self._now()
        interval = timedelta(seconds=self._config.maintenance_interval_s)
        return bool(await run_sync(self._store.claim_maintenance, iso(now), iso(now - interval / 2)))

    async def maintain(self, *, trigger: MaintenanceTrigger = "on_demand") -> MaintenanceReport:
        """The maintenance pass: recompute effective importance (decay, in short transactions), fail orphaned
        tasks and delete expired ones, index pending vectors, evict idle sessions. Each step runs even if
        another fails; nothing is deleted by decay; running it twice in a row changes nothing the second time.
        The report is kept in the database for memory://stats."""
        store = self._store
        async with self._lock:
            started, timer, errors = self._now(), time.perf_counter(), []

            async def step(name: str, work: Callable[[], Awaitable[int]]) -> int:
                try:
                    return await work()
                except Exception as exc:  # noqa: BLE001 - one failing step must not stop the others
                    log.warning("maintenance: %s failed: %s", name, exc)
                    errors.append(f"{name}: {exc}")
                    return 0

            async def evict() -> int:
                return len(await self._sessions.sweep())

            decay = self._config.importance_decay_per_day
            report = MaintenanceReport(
                started_at=started,
                trigger=trigger,
                duration_ms=0.0,
                importance_decay_per_day=decay,
                importance_updated=await step(
                    "importance decay", partial(run_sync, store.decay_importance, started, decay)
                ),
                orphaned_tasks_failed=await step("orphaned tasks", self._tasks.fail_orphans),
                tasks_expired=await step("expired tasks", self._tasks.expire),
                vectors_backfilled=await step("vector backfill", self.backfill),
                sessions_evicted=await step("session eviction", evict),
                errors=errors,
            )
            report.duration_ms = round((time.perf_counter() - timer) * 1000, 1)
            self._maintained_at = self._clock()
            self._inserts = 0
            await run_sync(store.set_meta, LAST_MAINTENANCE_KEY, report.model_dump_json())
        log.info("maintenance (%s): %s", trigger, report.model_dump_json(exclude={"started_at", "trigger"}))
        return report

    async def last_maintenance(self) -> MaintenanceReport | None:
        """The newest maintenance pass by any process on this database, if any."""
        raw = await run_sync(self._store.get_meta, LAST_MAINTENANCE_KEY)
        if raw is None:
            return None
        try:
            return MaintenanceReport.model_validate_json(raw)
        except ValidationError:  # written by another version: the next pass replaces it
            return None

    async def backfill(self) -> int:
        """Index episodes whose embedding failed earlier; returns how many were indexed."""
        total = 0
        while (done := await run_sync(self._engine.backfill)) > 0:
            total += done
        return total

    async def reindex(self) -> dict[str, Any]:
        """Re-embed every memory with the current embedder (after changing it); returns the counts."""
        embedder = self._embedder
        marked = await run_sync(self._store.reset_vectors, embedder.name, embedder.dimension)
        indexed = await self.backfill()
        return {
            "embedder": embedder.name,
            "dimension": embedder.dimension,
            "marked": marked,
            "indexed": indexed,
        }

    async def stats(self) -> Stats:
        """Database-wide statistics (memory://stats) with this process's live sessions and embedder."""
        store = self._store
        recent_since = iso(self._now() - timedelta(seconds=RECENT_TIER_S))
        counts = await run_sync(store.stats, recent_since)
        live = self._sessions.live.values()
        return Stats(
            database_path=store.location,
            schema_version=await run_sync(lambda: store.schema_version),
            embedder=self._embedder.name,
            embedding_dimension=self._embedder.dimension,
            embedder_warning=self._embedder_warning,
            live_sessions=len(live),
            open_references=sum(s.reference_count for s in live),
            last_maintenance=await self.last_maintenance(),
            **counts,
        )
