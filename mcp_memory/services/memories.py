"""A group's episodes through the manager: adding them, recalling them, the short-term window, deleting.

Every argument is checked before anything is written or searched, and errors say what to fix.
The work itself runs on worker threads (the engine's Store and embedder), never on the event loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import (
    check_content,
    check_importance,
    check_memory_type,
    content_digest,
    episode_from_row,
    metadata_json_text,
    parse_memories,
    prepare_episode,
    with_retry_keys,
)
from mcp_memory.errors import MemoryNotFound, ValidationFailed
from mcp_memory.llm.summaries import SUMMARY_MEMORY_TYPE
from mcp_memory.models import (
    MAX_LIST_LIMIT,
    MAX_RECALL_LIMIT,
    AddedMemory,
    AddMemoryResult,
    DeleteResult,
    Episode,
    GroupInfo,
    MemoryFilter,
    MemoryInput,
    MemoryPage,
    RecallHit,
    RecallOptions,
    RecallResult,
    UpdatedMemory,
)
from mcp_memory.recall.engine import RecallQuery, RecallStrategy
from mcp_memory.recall.selection import decode_cursor, encode_cursor, store_filters
from mcp_memory.store.sqlite.facts import FACT_MEMORY_TYPE
from mcp_memory.store.sqlite.store import NOT_INDEXED, EpisodeChange, Filters
from mcp_memory.tokens import token_counter
from mcp_memory.window import trim

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

WINDOW_MARGIN = 8
DEFAULT_LIST_LIMIT = 20
TIERS = ("recent", "long_term", "summaries")
# A session's recall also finds the group's summaries and facts: they belong to no one conversation.
GROUP_WIDE_TYPES = (SUMMARY_MEMORY_TYPE, FACT_MEMORY_TYPE)


class Memories:
    """Episodes in and out for one manager: add, recall, recent window, delete."""

    def __init__(self, manager: MemoryManager, *, now: Callable[[], datetime]) -> None:
        self._manager = manager
        self._now = now

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
        manager = self._manager
        async with manager.opened(group_id, session_id) as session:
            group = await manager.get_group(group_id)
            participants = group.user_ids + group.agent_ids
            now = self._now()
            episodes = with_retry_keys(
                [
                    prepare_memory(
                        None if single else i, item, participants, manager.config.max_content_chars, now
                    )
                    for i, item in enumerate(items)
                ],
                idempotency_key,
            )
            index = session.configuration.long_term.enabled
            inserted, pending = await run_sync(
                partial(manager.engine.add, group_id, session_id, episodes, index_vectors=index)
            )
        added = [AddedMemory(id=r.id, sequence=r.sequence, duplicate=r.duplicate) for r in inserted]
        duplicates = sum(a.duplicate for a in added)
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
        where: MemoryFilter | None = None,
        options: RecallOptions | None = None,
    ) -> RecallResult:
        """Hybrid recall over the group, or one session plus its recent window; filters apply inside the search."""
        if not re.search(r"\w", query):
            problem = "is empty" if not query.strip() else "has no words"
            raise ValidationFailed(
                f"query {problem}; say in plain words what to look for, or read without a query with list_memories"
            )
        if not 1 <= limit <= MAX_RECALL_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_RECALL_LIMIT}, got {limit}")
        options = options or RecallOptions()
        tiers = set(options.tiers or TIERS)
        manager = self._manager
        group = await manager.get_group(group_id)
        if where is None:
            where = MemoryFilter.model_validate(
                {"since": since, "until": until, "producer": producer, "role": role, "memory_types": memory_types,
                 "metadata": metadata, "min_importance": min_importance},
                strict=False,
            )  # fmt: skip
        filters = in_tiers(store_filters(where, session_id, GROUP_WIDE_TYPES), tiers)
        recent, summary = await self._window(group_id, session_id, "recent" in tiers)
        hits: list[RecallHit] = []
        vector_ran = False
        if tiers & {"long_term", "summaries"}:
            request = RecallQuery(
                group_id, query, filters, limit, frozenset(e.id for e in recent), strategy or RecallStrategy(),
                frozenset(group.user_ids + group.agent_ids), await self._min_similarity(group, session_id, options),
            )  # fmt: skip
            hits, vector_ran = await run_sync(manager.engine.recall, request)
        if options.neighbours:
            hits = await self._with_context(group_id, hits, options.neighbours, {e.id for e in recent})
        return RecallResult(
            group_id=group_id,
            query=query,
            hits=hits,
            recent=recent,
            vector_search=vector_ran,
            rolling_summary=summary,
        )

    async def _window(
        self, group_id: str, session_id: str | None, wanted: bool
    ) -> tuple[list[Episode], str | None]:
        """The session's recent window and rolling summary (none without a session, or when not wanted)."""
        if session_id is None:
            return [], None
        await self._manager.session_info(group_id, session_id)
        if not wanted:
            return [], None
        return await self.recent(group_id, session_id), await self._manager.rolling_summary(
            group_id, session_id
        )

    async def _min_similarity(
        self, group: GroupInfo, session_id: str | None, options: RecallOptions
    ) -> float:
        """The call's threshold, else the session's (or, for the whole group, its configured) long_term one."""
        if options.min_similarity is not None:
            return options.min_similarity
        if session_id is not None:
            async with self._manager.opened(group.group_id, session_id) as session:
                return session.configuration.long_term.min_similarity
        base = self._manager.config.base_configuration
        return effective_session_config(base, group.configuration).long_term.min_similarity

    async def _with_context(
        self, group_id: str, hits: list[RecallHit], neighbours: int, shown: set[int]
    ) -> list[RecallHit]:
        """Each hit with its session's `neighbours` turns before and after, none shown twice in the result."""
        spans = [(hit.session_id, hit.sequence - neighbours, hit.sequence + neighbours) for hit in hits]
        rows = await run_sync(self._manager.engine.store.episodes_in_spans, group_id, spans)
        seen = shown | {hit.id for hit in hits}
        with_context = []
        for hit, (session, low, high) in zip(hits, spans, strict=True):
            around = [r for r in rows if r["session_id"] == session and low <= r["sequence"] <= high]
            context = [episode_from_row(r) for r in around if r["id"] not in seen]
            seen |= {e.id for e in context}
            with_context.append(hit.model_copy(update={"context": context}))
        return with_context

    async def list_memories(
        self,
        group_id: str,
        *,
        session_id: str | None = None,
        where: MemoryFilter | None = None,
        order: str = "oldest",
        limit: int = DEFAULT_LIST_LIMIT,
        cursor: str | None = None,
    ) -> MemoryPage:
        """A page of memories in order, without a query: a session's by sequence, a group's by time; filters
        as in recall (and step ranges); `cursor` is the previous page's next_cursor."""
        if order not in ("oldest", "newest"):
            raise ValidationFailed(f"order {order!r} is not valid; use 'oldest' or 'newest'")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValidationFailed(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        manager = self._manager
        await manager.get_group(group_id)
        if session_id is not None:
            await manager.session_info(group_id, session_id)
        filters = store_filters(where or MemoryFilter(), session_id)
        width = 1 if session_id is not None else 2
        after = None if cursor is None else decode_cursor(cursor, width)
        rows = await run_sync(
            partial(
                manager.engine.store.list_episodes, filters, group_id,
                newest_first=order == "newest", after=after, limit=limit + 1,
            )
        )  # fmt: skip
        page, more = rows[:limit], len(rows) > limit
        last = page[-1] if page else None
        key = (
            None if last is None else ((last["sequence"],) if width == 1 else (last["ts_epoch"], last["id"]))
        )
        return MemoryPage(
            group_id=group_id,
            session_id=session_id,
            order=order,  # type: ignore[arg-type]
            memories=[episode_from_row(row) for row in page],
            next_cursor=encode_cursor(key) if more and key is not None else None,
        )

    async def recent(self, group_id: str, session_id: str) -> list[Episode]:
        """The session's short-term window (empty when short-term memory is off for it)."""
        manager = self._manager
        async with manager.opened(group_id, session_id) as session:
            window = session.configuration.short_term
            if not window.enabled:
                return []
            # a few more than the count, so a tool call at the edge is seen with its results
            newest = await run_sync(
                manager.engine.recent, group_id, session_id, window.max_episodes + WINDOW_MARGIN
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
        manager = self._manager
        await manager.get_group(group_id)
        stored = await self._stored(group_id, memory_id)
        if FACT_MEMORY_TYPE in (stored["memory_type"], memory_type):
            raise ValidationFailed(
                f"memory {memory_id} is a fact's memory (or would become one); change facts with add_fact "
                "and replace=true, which keeps the old value as history"
            )
        change = EpisodeChange(
            content=None if content is None else check_content(content, manager.config.max_content_chars),
            metadata_json=None if metadata is None else metadata_json_text(dict(metadata)),
            importance=None if importance is None else check_importance(importance),
            memory_type=None if memory_type is None else check_memory_type(memory_type),
        )
        if change.content is not None:
            change = replace(change, content_hash=content_digest(change.content))
        episode, pending = await run_sync(
            partial(
                manager.engine.update, group_id, memory_id, change,
                producer=stored["producer_id"], embed=stored["indexed"] != NOT_INDEXED,
            )
        )  # fmt: skip
        if episode is None:  # deleted by another call since it was read
            raise _memory_not_found(group_id, memory_id)
        return UpdatedMemory(memory=episode, embedding_pending=pending)

    async def _stored(self, group_id: str, memory_id: int) -> Any:
        rows = await run_sync(self._manager.engine.store.fetch_episodes, [memory_id])
        row = rows.get(memory_id)
        if row is None or row["group_id"] != group_id:
            raise _memory_not_found(group_id, memory_id)
        return row

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
        manager = self._manager
        await manager.get_group(group_id)
        if session_id is not None:
            await manager.session_info(group_id, session_id)
        keep = ("system",) if keep_system else ()
        deleted = await run_sync(manager.engine.store.delete_episodes, group_id, memory_ids, session_id, keep)
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
