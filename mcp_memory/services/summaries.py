"""Session summaries: on request (now, or as a background task kept in the database) and automatically.

`SummaryService` checks a request before anything is generated, takes the lightweight slot, asks the model
(or takes the summary the caller wrote), validates the answer and stores it; `SummaryJob` is one checked
request, run now or in a task. `Summaries` is what the manager exposes: it gives the service the session's
episodes, stores what it writes as a memory of type `summary`, runs requested summaries as database-backed
tasks (services/tasks.py), and checks the automatic trigger after new turns. The prompts, limits and the
lenient reading of a model's answer are llm/summaries.py's.

Lightweight summaries are limited per session (`MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION`, default 3,
automatic ones included). Like Memoria, the slot is counted before generation, in the same write
transaction that checks it, so concurrent requests (from any process) never pass the limit;
unlike Memoria, a generation that fails gives its slot back, so an LLM outage does not use up a
session's summaries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import anyio
from anyio.to_thread import run_sync

from mcp_memory.errors import (
    ConfigurationError,
    InvalidSummary,
    LLMNotConfigured,
    MemoryServerError,
    NoEpisodes,
    RateLimited,
    ValidationFailed,
)
from mcp_memory.llm.client import LanguageModels, LLMClient, not_configured_message
from mcp_memory.llm.summaries import (
    REPLY_MAX_TOKENS,
    SummarySettings,
    build_prompt,
    check_focus_topics,
    count_tokens,
    limits_for,
    parse_summary,
    render_content,
    select_episodes,
    shape_hint,
    should_auto_summarize,
)
from mcp_memory.models import (
    Episode,
    MemoryInput,
    SummarizeResponse,
    SummaryMode,
    SummaryResult,
    SummarySource,
    TaskInfo,
)
from mcp_memory.recall.engine import MemoryEngine
from mcp_memory.services.background import Background
from mcp_memory.services.groups import Groups
from mcp_memory.services.memories import prepare_memory
from mcp_memory.services.tasks import TaskRunner
from mcp_memory.sessions import Sessions
from mcp_memory.store.protocol import Store, SummaryStore
from mcp_memory.store.records import FACT_MEMORY_TYPE, SUMMARY_MEMORY_TYPE

log = logging.getLogger(__name__)

SUMMARY_MAX_CHARS = 8_000  # a full summary is at most about 4,300 characters (llm/summaries.py)
NOT_TURNS = (SUMMARY_MEMORY_TYPE, FACT_MEMORY_TYPE)  # what the automatic summary trigger does not count


FetchEpisodes = Callable[[str, str], Awaitable[Sequence[Episode]]]
"""`fetch_episodes(group_id, session_id)`: the session's episodes, oldest first."""
StoreSummary = Callable[[str, str, str, dict[str, Any], bool], Awaitable[tuple[int, bool]]]
"""`store_summary(group_id, session_id, text, metadata, generate_embedding)`: the memory's id, and whether
the same summary was already the session's newest memory (then nothing new was stored)."""


@dataclass
class SummaryJob:
    """A checked summary request, its lightweight slot already taken: `run()` produces and stores it."""

    service: SummaryService
    group_id: str
    session_id: str
    mode: SummaryMode
    session: list[Episode]
    selected: list[Episode]
    truncated: bool
    source: SummarySource
    generate_embedding: bool
    auto_triggered: bool = False
    focus_topics: list[str] = field(default_factory=list)
    given: dict[str, Any] | None = None
    llm: LLMClient | None = None
    reserved: bool = False

    async def run(self) -> SummaryResult:
        """Generate (or take what the caller wrote), validate and store; a failure gives the slot back."""
        try:
            fields = (
                self.given if self.source == "caller" and self.given is not None else await self._generate()
            )
            content = render_content(self.mode, fields)
            metadata = self._metadata(fields)
            memory_id, duplicate = await self.service.store_summary(
                self.group_id, self.session_id, content, metadata, self.generate_embedding
            )
        except BaseException:
            await self.cancel()
            raise
        if duplicate:  # the same summary again: it takes no second slot
            await self.cancel()
        return SummaryResult(
            memory_id=memory_id,
            content=content,
            truncated=self.truncated,
            mode=self.mode,
            metadata=metadata,
            auto_triggered=self.auto_triggered,
            duplicate=duplicate,
        )

    async def cancel(self) -> None:
        """Give back the lightweight slot of a job that will not run (or did not succeed)."""
        if self.reserved:
            self.reserved = False
            with anyio.CancelScope(shield=True):
                await run_sync(self.service.store.release_lightweight, self.group_id, self.session_id)

    async def _generate(self) -> dict[str, Any]:
        assert self.llm is not None
        system, prompt = build_prompt(self.mode, self.session, self.selected, self.focus_topics)
        reply = await self.llm.complete(system, prompt, max_tokens=REPLY_MAX_TOKENS[self.mode])
        try:
            return parse_summary(self.mode, reply)
        except ValueError as exc:
            name = getattr(self.llm, "name", "the language model")
            raise InvalidSummary(
                f"{name} returned an unusable {self.mode} summary ({exc}); nothing was stored. "
                "Try again, or write the summary yourself and pass it as `summary`"
            ) from None

    def _metadata(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "mode": self.mode,
            **fields,
            "source_episode_ids": [episode.id for episode in self.selected],
            "source": self.source,
            "auto_triggered": self.auto_triggered,
            **({"focus_topics": self.focus_topics} if self.focus_topics else {}),
        }


class SummaryService:
    """Produces and stores session summaries: given where episodes come from and where a summary goes, the
    counters' store, and the language models (`models.chat` writes them)."""

    def __init__(
        self,
        *,
        fetch_episodes: FetchEpisodes,
        store_summary: StoreSummary,
        store: SummaryStore,
        models: LanguageModels,
        settings: SummarySettings | None = None,
        count: Callable[[str], int] = count_tokens,
    ) -> None:
        self.fetch_episodes = fetch_episodes
        self.store_summary = store_summary
        self.store = store
        self.models = models
        self.settings = settings or SummarySettings()
        self._count = count

    @property
    def llm(self) -> LLMClient | None:
        return self.models.chat

    async def summarize(self, group_id: str, session_id: str, **options: Any) -> SummaryResult:
        """Summarise the session now and store the summary; takes `prepare`'s keywords and raises its errors."""
        job = await self.prepare(group_id, session_id, **options)
        return await job.run()

    async def prepare(
        self,
        group_id: str,
        session_id: str,
        *,
        mode: SummaryMode = "full",
        generate_embedding: bool = True,
        focus_topics: Sequence[str] | None = None,
        summary: Any = None,
        sampling: LLMClient | None = None,
        auto_triggered: bool = False,
    ) -> SummaryJob:
        """Check everything that can fail before generation and take the lightweight slot.

        Raises ValidationFailed (mode, focus_topics), InvalidSummary (a malformed `summary`),
        LLMNotConfigured, NoEpisodes and RateLimited. Run the job now (sync) or in a task.
        """
        limits_for(mode)
        topics = check_focus_topics(focus_topics)
        given = None if summary is None else self._caller_fields(mode, summary)
        source, llm = self._source(given, sampling)
        session = await self._episodes(group_id, session_id)
        selected, truncated = await run_sync(partial(select_episodes, session, mode, count=self._count))
        job = SummaryJob(
            service=self,
            group_id=group_id,
            session_id=session_id,
            mode=mode,
            session=session,
            selected=selected,
            truncated=truncated,
            source=source,
            generate_embedding=generate_embedding,
            auto_triggered=auto_triggered,
            focus_topics=topics,
            given=given,
            llm=llm,
        )
        if mode == "lightweight":
            await self._reserve(group_id, session_id)
            job.reserved = True
        return job

    def _caller_fields(self, mode: str, summary: Any) -> dict[str, Any]:
        try:
            return parse_summary(mode, summary)
        except ValueError as exc:
            raise InvalidSummary(
                f"summary is not a valid {mode} summary ({exc}); {shape_hint(mode)}; nothing was stored"
            ) from None

    def _source(
        self, given: dict[str, Any] | None, sampling: LLMClient | None
    ) -> tuple[SummarySource, LLMClient | None]:
        # The order: the configured LLM, else MCP sampling, else what the caller wrote.
        if self.llm is not None:
            return "llm", self.llm
        if sampling is not None:
            return "sampling", sampling
        if given is not None:
            return "caller", None
        raise LLMNotConfigured(not_configured_message())

    async def _episodes(self, group_id: str, session_id: str) -> list[Episode]:
        episodes = [
            e for e in await self.fetch_episodes(group_id, session_id) if e.memory_type != SUMMARY_MEMORY_TYPE
        ]
        if not episodes:
            raise NoEpisodes(
                f"session {session_id!r} in group {group_id!r} has no episodes to summarise (earlier "
                "summaries are not summarised again); store the conversation with add_memory first, "
                "or check the session_id"
            )
        return episodes

    async def _reserve(self, group_id: str, session_id: str) -> None:
        limit = self.settings.max_lightweight_per_session
        if await run_sync(self.store.reserve_lightweight, group_id, session_id, limit):
            return
        raise RateLimited(
            f"rate limit exceeded: session {session_id!r} in group {group_id!r} has had its {limit} "
            "lightweight summaries (automatic ones count too); use mode='full', which is not limited, "
            "or raise MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION"
        )

    async def maybe_auto_summarize(
        self, group_id: str, session_id: str, turn_count: int, *, sampling: LLMClient | None = None
    ) -> SummaryResult | None:
        """A lightweight `auto_triggered` summary when `turn_count` reaches the next multiple of the threshold.

        Returns None when none is due or it cannot be made (no LLM, limit reached; any other
        failure of ours, such as a failed generation, is logged). A multiple is claimed before generating, so each is tried once.
        """
        threshold = self.settings.auto_trigger_threshold
        if threshold <= 0 or turn_count < threshold or (self.llm is None and sampling is None):
            return None
        done = await run_sync(self.store.auto_multiple, group_id, session_id)
        if not should_auto_summarize(turn_count, threshold, done):
            return None
        if not await run_sync(self.store.claim_auto, group_id, session_id, turn_count // threshold):
            return None
        try:
            return await self.summarize(
                group_id, session_id, mode="lightweight", sampling=sampling, auto_triggered=True
            )
        except (RateLimited, NoEpisodes):
            return None
        except MemoryServerError as exc:
            log.warning("automatic summary of session %r in group %r failed: %s", session_id, group_id, exc)
            return None


class Summaries:
    """Session summaries on request (now, or as a database-backed task) and automatically after new turns."""

    def __init__(
        self,
        engine: MemoryEngine,
        store: Store,
        sessions: Sessions,
        groups: Groups,
        tasks: TaskRunner,
        background: Background,
        models: LanguageModels,
        *,
        settings: SummarySettings,
        max_content_chars: int,
        now: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._store = store
        self._sessions = sessions
        self._groups = groups
        self._tasks = tasks
        self._background = background
        self._max_chars = max_content_chars
        self._now = now
        self.service = SummaryService(
            fetch_episodes=self.episodes, store_summary=self.store_summary, store=store, models=models,
            settings=settings,
        )  # fmt: skip

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
        await self._sessions.session_info(group_id, session_id)
        try:
            job = await self.service.prepare(
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
        jobs = self._background.group
        if jobs is None:
            await job.cancel()
            raise ConfigurationError(
                "background tasks are not running in this server process; call summarize_session with sync=true"
            )
        try:
            info = await self._tasks.submit(jobs, "summary", group_id, session_id, job.run)
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
        return await self._tasks.get(task_id.strip())

    async def episodes(self, group_id: str, session_id: str) -> list[Episode]:
        """The session's episodes for `SummaryService`, earlier summaries left out."""
        return await run_sync(self._store.session_episodes, group_id, session_id, (SUMMARY_MEMORY_TYPE,))

    async def store_summary(
        self, group_id: str, session_id: str, text: str, metadata: dict[str, Any], generate_embedding: bool
    ) -> tuple[int, bool]:
        """Store a summary as a memory of type summary, produced by the group's first agent (else user);
        returns its id and whether it was already stored (the same summary as the session's newest memory)."""
        group = await self._groups.get_group(group_id)
        producer = (group.agent_ids or group.user_ids)[0]
        item = MemoryInput(
            content=text, producer=producer, role="system", memory_type=SUMMARY_MEMORY_TYPE, metadata=metadata
        )
        limit = max(self._max_chars, SUMMARY_MAX_CHARS)
        episode = prepare_memory(None, item, [producer], limit, self._now())
        async with self._sessions.opened(group_id, session_id) as session:
            index = generate_embedding and session.configuration.long_term.enabled
            inserted, _ = await run_sync(
                partial(self._engine.add, group_id, session_id, [episode], index_vectors=index)
            )
        return inserted[0].id, inserted[0].duplicate

    async def after_add(self, group_id: str, session_id: str, stored: int) -> None:
        """After new turns, check the automatic trigger in the background (configured LLM only)."""
        if self.service.settings.auto_trigger_threshold <= 0:
            return
        if self.service.llm is None:
            log.debug("no LLM configured: automatic summaries are off")
            return
        if not self._background.start_soon(self._auto_summarize, group_id, session_id):
            log.debug("background tasks are not running: automatic summaries are off")

    async def _auto_summarize(self, group_id: str, session_id: str) -> None:
        try:
            turns = await run_sync(self._store.count_episodes, group_id, session_id, NOT_TURNS)
            result = await self.service.maybe_auto_summarize(group_id, session_id, turns)
        except Exception as exc:  # noqa: BLE001 - a background check must never bring the server down
            log.warning(
                "automatic summary check of session %r in group %r failed: %s", session_id, group_id, exc
            )
            return
        if result is not None:
            log.info("automatic summary %d of session %r in group %r", result.memory_id, session_id, group_id)
