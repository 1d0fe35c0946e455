"""Driving the rolling summary: when a pass runs, and what it reads and writes (the folding is llm/rolling.py).

After new turns the manager schedules a pass in its background task group. Passes of one
session run one at a time, in order, and at most one more waits: a pass that has not started
yet will see every turn added before it starts, so further adds need not queue another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import anyio
from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import episode_from_row, iso
from mcp_memory.llm import rolling
from mcp_memory.services.summaries import NOT_TURNS
from mcp_memory.tokens import token_counter

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

log = logging.getLogger(__name__)


class RollingPasses:
    """Rolling-summary passes for one manager's sessions, one per session at a time."""

    def __init__(self, manager: MemoryManager, *, now: Callable[[], datetime]) -> None:
        self._manager = manager
        self._now = now
        self._locks: dict[tuple[str, str], anyio.Lock] = {}
        self._queued: set[tuple[str, str]] = set()

    async def rolling_summary(self, group_id: str, session_id: str) -> str | None:
        """The session's rolling summary as callers see it (with a note on turns left out), if any."""
        current = await run_sync(rolling.read, self._manager.engine.store, group_id, session_id)
        return None if current is None else current.display

    async def roll_summary(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """One rolling-summary pass now (after any pass already running for the session); see llm/rolling.py."""
        await self._manager.session_info(group_id, session_id)
        async with self._lock(group_id, session_id):
            return await self._roll(group_id, session_id)

    def _lock(self, group_id: str, session_id: str) -> anyio.Lock:
        return self._locks.setdefault((group_id, session_id), anyio.Lock())

    def schedule(self, group_id: str, session_id: str) -> None:
        """After new turns, fold what left the window into the rolling summary in the background."""
        summaries, jobs, key = self._manager._summaries, self._manager._jobs, (group_id, session_id)
        if summaries is None or summaries.llm is None or jobs is None or key in self._queued:
            return  # no LLM, no background runner, or a pass that has not started yet will see these turns
        self._queued.add(key)
        jobs.start_soon(self._background_roll, group_id, session_id)

    async def _background_roll(self, group_id: str, session_id: str) -> None:
        async with self._lock(group_id, session_id):
            self._queued.discard((group_id, session_id))
            try:
                await self._roll(group_id, session_id)
            except Exception as exc:  # noqa: BLE001 - a background pass must never bring the server down
                log.warning("rolling summary of session %r in group %r failed: %s", session_id, group_id, exc)

    async def _roll(self, group_id: str, session_id: str) -> rolling.RollOutcome:
        """The pass itself; the caller holds the session's lock."""
        manager = self._manager
        info = await manager.session_info(group_id, session_id)
        llm = manager.summaries.llm
        if not effective_session_config(info.configuration).short_term.enabled or llm is None:
            return rolling.RollOutcome(
                status="off", covered_through_sequence=info.rolling_summary_covered_through
            )
        store = manager.engine.store
        window = await manager.recent(group_id, session_id)
        current = await run_sync(rolling.read, store, group_id, session_id)
        covered = 0 if current is None else current.covered_through_sequence
        first = window[0].sequence if window else 0
        rows = await run_sync(store.episodes_between, group_id, session_id, covered, first, NOT_TURNS)
        turns = [episode_from_row(r) for r in rows]
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
            max_tokens=manager.config.rolling_summary_max_tokens,
            input_tokens=manager.config.rolling_summary_input_tokens,
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
        await run_sync(rolling.write, store, group_id, session_id, updated)
        return rolling.RollOutcome(
            status="updated",
            summarised=len(turns) - len(folder.omitted),
            omitted=folder.omitted,
            llm_calls=folder.calls,
            covered_through_sequence=updated.covered_through_sequence,
        )
