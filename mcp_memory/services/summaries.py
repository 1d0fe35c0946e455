"""Session summaries through the manager: on request (now, or as a background task) and automatically.

`SummaryService` (llm/summaries.py) decides what to summarise and asks the model; this part gives it
the session's episodes, stores what it writes as a memory of type `summary`, runs requested
summaries as database-backed tasks (services/tasks.py), and checks the automatic trigger after new turns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from anyio.to_thread import run_sync

from mcp_memory.episodes import episode_from_row
from mcp_memory.errors import ConfigurationError, LLMNotConfigured, ValidationFailed
from mcp_memory.llm.client import LLMClient
from mcp_memory.llm.summaries import SUMMARY_MEMORY_TYPE
from mcp_memory.models import Episode, MemoryInput, SummarizeResponse, SummaryMode, TaskInfo
from mcp_memory.services.memories import prepare_memory
from mcp_memory.store.sqlite.facts import FACT_MEMORY_TYPE

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

log = logging.getLogger(__name__)

SUMMARY_MAX_CHARS = 8_000  # a full summary is at most about 4,300 characters (llm/summaries.py)
NOT_TURNS = (SUMMARY_MEMORY_TYPE, FACT_MEMORY_TYPE)  # what the automatic summary trigger does not count


class SummaryJobs:
    """Runs summaries for one manager, inline or in its background task group."""

    def __init__(self, manager: MemoryManager, *, now: Callable[[], datetime]) -> None:
        self._manager = manager
        self._now = now

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
        manager = self._manager
        await manager.session_info(group_id, session_id)
        try:
            job = await manager.summaries.prepare(
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
        jobs = manager._jobs
        if jobs is None:
            await job.cancel()
            raise ConfigurationError(
                "background tasks are not running in this server process; call summarize_session with sync=true"
            )
        try:
            info = await manager.tasks.submit(jobs, "summary", group_id, session_id, job.run)
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
        return await self._manager.tasks.get(task_id.strip())

    async def episodes(self, group_id: str, session_id: str) -> list[Episode]:
        """The session's episodes for `SummaryService`, earlier summaries left out."""
        rows = await run_sync(
            self._manager.engine.store.session_episodes, group_id, session_id, (SUMMARY_MEMORY_TYPE,)
        )
        return [episode_from_row(r) for r in rows]

    async def store_summary(
        self, group_id: str, session_id: str, text: str, metadata: dict[str, Any], generate_embedding: bool
    ) -> tuple[int, bool]:
        """Store a summary as a memory of type summary, produced by the group's first agent (else user);
        returns its id and whether it was already stored (the same summary as the session's newest memory)."""
        manager = self._manager
        group = await manager.get_group(group_id)
        producer = (group.agent_ids or group.user_ids)[0]
        item = MemoryInput(
            content=text, producer=producer, role="system", memory_type=SUMMARY_MEMORY_TYPE, metadata=metadata
        )
        limit = max(manager.config.max_content_chars, SUMMARY_MAX_CHARS)
        episode = prepare_memory(None, item, [producer], limit, self._now())
        async with manager.opened(group_id, session_id) as session:
            index = generate_embedding and session.configuration.long_term.enabled
            inserted, _ = await run_sync(
                partial(manager.engine.add, group_id, session_id, [episode], index_vectors=index)
            )
        return inserted[0].id, inserted[0].duplicate

    def schedule_auto_summary(self, group_id: str, session_id: str) -> None:
        """After new turns, check the automatic trigger in the background (configured LLM only)."""
        summaries, jobs = self._manager._summaries, self._manager._jobs
        if summaries is None or summaries.settings.auto_trigger_threshold <= 0:
            return
        if summaries.llm is None:
            log.debug("no LLM configured: automatic summaries are off")
            return
        if jobs is None:
            log.debug("background tasks are not running: automatic summaries are off")
            return
        jobs.start_soon(self._auto_summarize, group_id, session_id)

    async def _auto_summarize(self, group_id: str, session_id: str) -> None:
        manager = self._manager
        try:
            turns = await run_sync(manager.engine.store.count_episodes, group_id, session_id, NOT_TURNS)
            result = await manager.summaries.maybe_auto_summarize(group_id, session_id, turns)
        except Exception as exc:  # noqa: BLE001 - a background check must never bring the server down
            log.warning(
                "automatic summary check of session %r in group %r failed: %s", session_id, group_id, exc
            )
            return
        if result is not None:
            log.info("automatic summary %d of session %r in group %r", result.memory_id, session_id, group_id)
