"""A group's episodes: adding them, reading them (a search, or a listing in order), the short-term window,
correcting and deleting them.

Every argument is checked before anything is written or searched, and errors say what to fix.
The work itself runs on worker threads (the engine's Store and embedder), never on the event loop.
After a batch is stored, the services that follow new turns (the automatic summary, the rolling summary,
maintenance every N inserts) are told through `on_added`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any

from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import (
    check_content,
    check_importance,
    check_memory_type,
    content_digest,
    metadata_json_text,
    parse_memories,
    prepare_episode,
    with_retry_keys,
)
from mcp_memory.errors import MemoryNotFound, ValidationFailed
from mcp_memory.models import (
    MAX_LIST_LIMIT,
    MAX_RECALL_LIMIT,
    AddedMemory,
    AddMemoryResult,
    DeleteResult,
    Episode,
    GroupInfo,
    MemoryInput,
    MemoryPage,
    RecallHit,
    RecallResult,
    SessionDetail,
    UpdatedMemory,
)
from mcp_memory.recall.engine import MemoryEngine, RecallQuery
from mcp_memory.recall.request import RecallRequest
from mcp_memory.recall.selection import decode_cursor, encode_cursor, store_filters
from mcp_memory.services.groups import Groups
from mcp_memory.sessions import Sessions
from mcp_memory.store.protocol import Store
from mcp_memory.store.records import (
    FACT_MEMORY_TYPE,
    SUMMARY_MEMORY_TYPE,
    EpisodeChange,
    Filters,
)
from mcp_memory.tokens import token_counter
from mcp_memory.window import trim

WINDOW_MARGIN = 8
TIERS = ("recent", "long_term", "summaries")
# A session's recall also finds the group's summaries and facts: they belong to no one conversation.
GROUP_WIDE_TYPES = (SUMMARY_MEMORY_TYPE, FACT_MEMORY_TYPE)
SEARCH_ONLY = ("tiers", "min_similarity", "neighbours")
AddedListener = Callable[[str, str, int], Awaitable[None]]
"""`listener(group_id, session_id, stored)`: called after a batch stored `stored` new memories."""


class Memories:
    """Episodes in and out: add, read (search or listing), the recent window, correct, delete."""

    def __init__(
        self,
        engine: MemoryEngine,
        store: Store,
        sessions: Sessions,
        groups: Groups,
        *,
        max_content_chars: int,
        base_configuration: Mapping[str, Any],
        now: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._store = store
        self._sessions = sessions
        self._groups = groups
        self._max_chars = max_content_chars
        self._base = base_configuration
        self._now = now
        self.on_added: list[AddedListener] = []

    async def add_memories(
        self,
        group_id: str,
        session_id: str,
        memories: MemoryInput | Sequence[MemoryInput | dict[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> AddMemoryResult:
        """Validate every memory first, then store the batch in one transaction (retries are not duplicated).
        A single MemoryInput is one memory: its errors name the field, not `memories[0]`."""
        single = isinstance(memories, MemoryInput)
        items = parse_memories([memories] if isinstance(memories, MemoryInput) else memories)
        if idempotency_key is not None and not idempotency_key.strip():
            raise ValidationFailed("idempotency_key is empty; leave it out or send a unique text per call")
        async with self._sessions.opened(group_id, session_id) as session:
            group = await self._groups.get_group(group_id)
            participants, now = group.user_ids + group.agent_ids, self._now()
            episodes = with_retry_keys(
                [
                    prepare_memory(None if single else i, item, participants, self._max_chars, now)
                    for i, item in enumerate(items)
                ],
                idempotency_key,
            )
            index = session.configuration.long_term.enabled
            inserted, pending = await run_sync(
                partial(self._engine.add, group_id, session_id, episodes, index_vectors=index)
            )
        added = [AddedMemory(id=r.id, sequence=r.sequence, duplicate=r.duplicate) for r in inserted]
        duplicates = sum(a.duplicate for a in added)
        result = AddMemoryResult(
            group_id=group_id, session_id=session_id, memories=added, stored=len(added) - duplicates,
            duplicates=duplicates, embedding_pending=pending,
        )  # fmt: skip
        if result.stored:
            for listener in self.on_added:
                await listener(group_id, session_id, result.stored)
        return result

    async def recall(self, request: RecallRequest) -> RecallResult:
        """A search when the request has a query (hybrid, best first; with a session, only that session plus
        the group's summaries and facts, and its recent window), else a listing in order. Filters apply inside
        the search."""
        if request.query is None:
            return RecallResult.listing(await self._list(request))
        query, options = request.query, request.options
        _only_for(
            "a listing", "leave the query out, or leave it out",
            order=None if options.order == "oldest" else options.order, cursor=options.cursor,
        )  # fmt: skip
        if not re.search(r"\w", query):
            problem = "is empty" if not query.strip() else "has no words"
            raise ValidationFailed(
                f"query {problem}; say in plain words what to look for, or leave the query out to list memories"
            )
        _check_limit(request.limit, MAX_RECALL_LIMIT)
        group = await self._groups.get_group(request.group_id)
        tiers = set(options.tiers or TIERS)
        filters = in_tiers(store_filters(request.filters, request.session_id, GROUP_WIDE_TYPES), tiers)
        recent, summary = await self._window(request.group_id, request.session_id, "recent" in tiers)
        hits: list[RecallHit] = []
        vector_ran = False
        if tiers & {"long_term", "summaries"}:
            search = RecallQuery(
                group.group_id, query, filters, request.limit, frozenset(e.id for e in recent), request.strategy,
                frozenset(group.user_ids + group.agent_ids), await self._min_similarity(group, request),
            )  # fmt: skip
            hits, vector_ran = await run_sync(self._engine.recall, search)
        if options.neighbours:
            hits = await self._with_context(group.group_id, hits, options.neighbours, {e.id for e in recent})
        return RecallResult(
            group_id=group.group_id, query=query, hits=hits, recent=recent, vector_search=vector_ran,
            rolling_summary=summary,
        )  # fmt: skip

    async def _window(
        self, group_id: str, session_id: str | None, wanted: bool
    ) -> tuple[list[Episode], str | None]:
        """The session's recent window and rolling summary (none without a session, or when not wanted)."""
        if session_id is None:
            return [], None
        await self._sessions.session_info(group_id, session_id)
        if not wanted:
            return [], None
        return await self.recent(group_id, session_id), await self.rolling_summary(group_id, session_id)

    async def rolling_summary(self, group_id: str, session_id: str) -> str | None:
        """The session's rolling summary as callers see it (with a note on turns left out), if any."""
        current = await run_sync(self._store.rolling_summary, group_id, session_id)
        return None if current is None else current.display

    async def session_detail(self, group_id: str, session_id: str) -> SessionDetail:
        """The session's info, its recent window and its rolling summary (memory://.../sessions/...)."""
        return SessionDetail(
            session=await self._sessions.session_info(group_id, session_id),
            recent=await self.recent(group_id, session_id),
            rolling_summary=await self.rolling_summary(group_id, session_id),
        )

    async def _min_similarity(self, group: GroupInfo, request: RecallRequest) -> float:
        """The call's threshold, else the session's (or, for the whole group, its configured) long_term one."""
        if request.options.min_similarity is not None:
            return request.options.min_similarity
        if request.session_id is not None:
            async with self._sessions.opened(group.group_id, request.session_id) as session:
                return session.configuration.long_term.min_similarity
        return effective_session_config(self._base, group.configuration).long_term.min_similarity

    async def _with_context(
        self, group_id: str, hits: list[RecallHit], neighbours: int, shown: set[int]
    ) -> list[RecallHit]:
        """Each hit with its session's `neighbours` turns before and after, none shown twice in the result."""
        spans = [(hit.session_id, hit.sequence - neighbours, hit.sequence + neighbours) for hit in hits]
        found = await run_sync(self._store.episodes_in_spans, group_id, spans)
        seen = shown | {hit.id for hit in hits}
        with_context = []
        for hit, (session, low, high) in zip(hits, spans, strict=True):
            around = [e for e in found if e.session_id == session and low <= e.sequence <= high]
            context = [e for e in around if e.id not in seen]
            seen |= {e.id for e in context}
            with_context.append(hit.model_copy(update={"context": context}))
        return with_context

    async def _list(self, request: RecallRequest) -> MemoryPage:
        """A page of memories in order, without a query: a session's by sequence, a group's by time; filters
        as in a search (and step ranges); `options.cursor` is the previous page's next_cursor."""
        options, group_id, session_id = request.options, request.group_id, request.session_id
        _only_for(
            "a search", "pass a query, or leave it out to list",
            tiers=options.tiers, min_similarity=options.min_similarity, neighbours=options.neighbours or None,
        )  # fmt: skip
        _check_limit(request.limit, MAX_LIST_LIMIT)
        await self._groups.get_group(group_id)
        if session_id is not None:
            await self._sessions.session_info(group_id, session_id)
        filters = store_filters(request.filters, session_id)
        width = 1 if session_id is not None else 2
        after = None if options.cursor is None else decode_cursor(options.cursor, width)
        order, limit = options.order, request.limit
        page = await run_sync(
            partial(
                self._store.list_episodes, filters, group_id,
                newest_first=order == "newest", after=after, limit=limit,
            )
        )  # fmt: skip
        return MemoryPage(
            group_id=group_id,
            session_id=session_id,
            order=order,
            memories=page.episodes,
            next_cursor=None if page.next_after is None else encode_cursor(page.next_after),
        )

    async def recent(self, group_id: str, session_id: str) -> list[Episode]:
        """The session's short-term window (empty when short-term memory is off for it)."""
        async with self._sessions.opened(group_id, session_id) as session:
            window = session.configuration.short_term
            if not window.enabled:
                return []
            # a few more than the count, so a tool call at the edge is seen with its results
            newest = await run_sync(
                self._engine.recent, group_id, session_id, window.max_episodes + WINDOW_MARGIN
            )
            counter = await run_sync(token_counter)
            return trim(
                newest, max_episodes=window.max_episodes, max_tokens=window.max_tokens, count=counter.count
            )

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
        """Correct a memory in place: its id, session, sequence and time stay; keywords and vector follow."""
        if content is None and metadata is None and importance is None and memory_type is None:
            raise ValidationFailed("pass content, metadata, importance or memory_type: what to correct")
        await self._groups.get_group(group_id)
        stored = await self._stored(group_id, memory_id)
        if FACT_MEMORY_TYPE in (stored.memory_type, memory_type):
            raise ValidationFailed(
                f"memory {memory_id} is a fact's memory (or would become one); change facts with add_fact "
                "and replace=true, which keeps the old value as history"
            )
        change = EpisodeChange(
            content=None if content is None else check_content(content, self._max_chars),
            metadata_json=None if metadata is None else metadata_json_text(dict(metadata)),
            importance=None if importance is None else check_importance(importance),
            memory_type=None if memory_type is None else check_memory_type(memory_type),
        )
        if change.content is not None:
            change = replace(change, content_hash=content_digest(change.content))
        episode, pending = await run_sync(
            partial(
                self._engine.update, group_id, memory_id, change,
                producer=stored.producer, embed=await run_sync(self._store.keeps_vector, memory_id),
            )
        )  # fmt: skip
        if episode is None:  # deleted by another call since it was read
            raise _memory_not_found(group_id, memory_id)
        return UpdatedMemory(memory=episode, embedding_pending=pending)

    async def _stored(self, group_id: str, memory_id: int) -> Episode:
        found = (await run_sync(self._store.fetch_episodes, [memory_id])).get(memory_id)
        if found is None or found.group_id != group_id:
            raise _memory_not_found(group_id, memory_id)
        return found

    async def delete_memories(
        self,
        group_id: str,
        memory_ids: Sequence[int] | None = None,
        session_id: str | None = None,
        *,
        keep_system: bool = False,
    ) -> DeleteResult:
        """Delete episodes by id and/or session from the table and both indexes, in one transaction;
        `keep_system` keeps the system messages (a session reset that keeps its system prompt)."""
        if memory_ids is None and session_id is None:
            raise ValidationFailed("pass memory_ids, session_id or both to say what to delete")
        await self._groups.get_group(group_id)
        if session_id is not None:
            await self._sessions.session_info(group_id, session_id)
        keep = ("system",) if keep_system else ()
        deleted = await run_sync(self._store.delete_episodes, group_id, memory_ids, session_id, keep)
        return DeleteResult(group_id=group_id, deleted=deleted)


def prepare_memory(
    index: int | None, item: MemoryInput, participants: list[str], max_chars: int, now: datetime
) -> Any:
    """A checked episode ready to store; an error names the item (`memories[index]`) and says nothing was stored."""
    try:
        return prepare_episode(item, participants=participants, max_content_chars=max_chars, now=now)
    except ValidationFailed as exc:
        where = "" if index is None else f"memories[{index}]: "
        raise ValidationFailed(f"{where}{exc}; nothing was stored") from None


def _check_limit(limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise ValidationFailed(f"limit must be between 1 and {most}, got {limit}")


def _only_for(kind: str, instead: str, **given: object) -> None:
    """Options of a search refused in a listing, and the other way round."""
    for name, value in given.items():
        if value is not None:
            raise ValidationFailed(f"options.{name} applies to {kind}; {instead}")


def _memory_not_found(group_id: str, memory_id: int) -> MemoryNotFound:
    return MemoryNotFound(
        f"memory {memory_id} does not exist in group {group_id!r}; recall finds memories and their ids"
    )


def in_tiers(filters: Filters, tiers: set[str]) -> Filters:
    """`filters` limited to the stored tiers asked for: long_term (all but summaries) and summaries."""
    if "long_term" not in tiers:
        wanted = filters.memory_types or (SUMMARY_MEMORY_TYPE,)
        kept = tuple(t for t in wanted if t == SUMMARY_MEMORY_TYPE) or ("",)  # nothing but summaries
        return replace(filters, memory_types=kept)
    if "summaries" not in tiers:
        return replace(filters, exclude_types=(*filters.exclude_types, SUMMARY_MEMORY_TYPE))
    return filters
