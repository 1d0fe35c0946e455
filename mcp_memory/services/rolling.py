"""Driving the rolling summary: when a pass runs, and what it reads and writes (the folding is llm/rolling.py).

After new turns a pass is scheduled in the background task group. Passes of one
session run one at a time, in order, and at most one more waits: a pass that has not started
yet will see every turn added before it starts, so further adds need not queue another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.llm import rolling
from mcp_memory.services.summaries import NOT_TURNS
from mcp_memory.store.records import RollingSummary
from mcp_memory.times import iso
from mcp_memory.tokens import token_counter

if TYPE_CHECKING:
    from mcp_memory.llm.client import LanguageModels
    from mcp_memory.services.background import Background
    from mcp_memory.services.memories import Memories
    from mcp_memory.sessions import Sessions
    from mcp_memory.store.protocol import Store

log = logging.getLogger(__name__)


def rolling_status(configuration: Mapping[str, Any], models: LanguageModels) -> str:
    """Whether a session with this configuration keeps a rolling summary: "on", or why it is off."""
    if not effective_session_config(configuration).short_term.enabled:
        return "off (short-term memory disabled)"
    return "off (no LLM configured)" if models.chat is None else "on"


class Rolling:
    """Rolling-summary passes for a database's sessions, one per session at a time."""

    def __init__(
        self,
        store: Store,
        sessions: Sessions,
        memories: Memories,
        background: Background,
        models: LanguageModels,
        *,
        max_tokens: int,
        input_tokens: int,
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._sessions = sessions
        self._memories = memories
        self._background = background
        self._models = models
        self._max_tokens = max_tokens
        self._input_tokens = input_tokens
        self._now = now
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._queued: set[tuple[str, str]] = set()

    def status(self, configuration: Mapping[str, Any]) -> str:
        """Whether a session with this configuration keeps a rolling summary: "on", or why it is off."""
        return rolling_status(configuration, self._models)

    async def roll_summary(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """One rolling-summary pass now (after any pass already running for the session); see llm/rolling.py."""
        await self._sessions.session_info(group_id, session_id)
        async with self._lock(group_id, session_id):
            return await self._roll(group_id, session_id)

    def _lock(self, group_id: str, session_id: str) -> anyio.Lock:
        return self._locks.setdefault((group_id, session_id), anyio.Lock())

    async def after_add(self, group_id: str, session_id: str, stored: int) -> None:
        """After new turns, fold what left the window into the rolling summary in the background."""
        key = (group_id, session_id)
        if self._models.chat is None or not self._background.running or key in self._queued:
            return  # no LLM, no background runner, or a pass that has not started yet will see these turns
        self._queued.add(key)
        self._background.start_soon(self._background_roll, group_id, session_id)

    async def _background_roll(self, group_id: str, session_id: str) -> None:
        async with self._lock(group_id, session_id):
            self._queued.discard((group_id, session_id))
            try:
                await self._roll(group_id, session_id)
            except Exception as exc:  # noqa: BLE001 - a background pass must never bring the server down
                log.warning("rolling summary of session %r in group %r failed: %s", session_id, group_id, exc)

    async def _roll(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """The pass itself; the caller holds the session's lock."""
        info = await self._sessions.session_info(group_id, session_id)
        llm = self._models.chat
        if not effective_session_config(info.configuration).short_term.enabled or llm is None:
            return rolling.RollOutcome(
                status="off", covered_through_sequence=info.rolling_summary_covered_through
            )
        store = self._store
        window = await self._memories.recent(group_id, session_id)
        current = await run_sync(store.rolling_summary, group_id, session_id)
        covered = 0 if current is None else current.covered_through_sequence
        first = window[0].sequence if window else 0
        turns = await run_sync(store.episodes_between, group_id, session_id, covered, first, NOT_TURNS)
        if not turns:
            return rolling.RollOutcome(
                status="nothing to summarise", covered_through_sequence=None if current is None else covered
            )
        counter = await run_sync(token_counter)

        async def complete(system: str, prompt: str, max_tokens: int) -> str:
            return await llm.complete(system, prompt, max_tokens=max_tokens)

        folder = rolling.Folder(
            complete=complete,
            count=counter.count,
            max_tokens=self._max_tokens,
            input_tokens=self._input_tokens,
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
        updated = RollingSummary(
            text=text,
            covered_through_sequence=turns[-1].sequence,
            updated_at=iso(self._now()),
            omitted_sequences=([] if current is None else current.omitted_sequences) + folder.omitted,
        )
        await run_sync(store.save_rolling_summary, group_id, session_id, updated)
        return rolling.RollOutcome(
            status="updated",
            summarised=len(turns) - len(folder.omitted),
            omitted=folder.omitted,
            llm_calls=folder.calls,
            covered_through_sequence=updated.covered_through_sequence,
        )
