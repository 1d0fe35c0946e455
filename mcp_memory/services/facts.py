"""Facts: storing one given triple, or the triples a language model finds in
text, and listing a group's facts.

When storing, everything is checked (and extracted) before anything is written; then the facts,
and the episodes that make them recallable, go in one transaction into the session they were
learned in or the group's facts session (made on demand). The rules for one fact are services/triples.py's,
the SQL store/sqlite/facts.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from anyio.to_thread import run_sync

from mcp_memory.errors import ConfigurationError, FactNotNewer
from mcp_memory.llm.client import LanguageModels
from mcp_memory.llm.extraction import NOT_CONFIGURED, extract_facts
from mcp_memory.models import FactList, FactResult
from mcp_memory.recall.engine import MemoryEngine
from mcp_memory.services.groups import LIST_LIMIT, Groups
from mcp_memory.services.triples import (
    FACTS_SESSION,
    check_confidence,
    check_request,
    check_source,
    fact_result,
    prepare_fact,
)
from mcp_memory.sessions import Sessions
from mcp_memory.store.protocol import Store
from mcp_memory.store.records import NewEpisode, NewFact, StoredFacts
from mcp_memory.times import normalize_timestamp

STAMP_ATTEMPTS = 3  # a fact stamped "now" is stamped again when another server stored a newer value meanwhile


class Facts:
    """The facts of a database's groups; `models.facts` is asked when given text."""

    def __init__(
        self,
        engine: MemoryEngine,
        store: Store,
        sessions: Sessions,
        groups: Groups,
        models: LanguageModels,
        *,
        max_content_chars: int,
        now: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._store = store
        self._sessions = sessions
        self._groups = groups
        self._models = models
        self._max_chars = max_content_chars
        self._now = now

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
        is written, then the facts go in one transaction (an identical current fact is returned instead)."""
        max_chars, llm = self._max_chars, self._models.facts
        triple = check_request(subject, predicate, object, text, max_chars)
        if triple is None and llm is None:
            raise ConfigurationError(NOT_CONFIGURED)
        source, confidence = check_source(source), check_confidence(confidence)
        start = self._now() if valid_from is None else normalize_timestamp(valid_from, field="valid_from")
        group = await self._groups.get_group(group_id)
        if session_id is not None:
            await self._sessions.session_info(group_id, session_id)
        triples, extraction = [triple] if triple is not None else [], None
        if triple is None:
            assert text is not None and llm is not None  # checked just above
            extraction = await extract_facts(text, llm)
            triples = extraction.triplets

        def prepared(start: datetime) -> list[tuple[NewFact, NewEpisode]]:
            return [
                prepare_fact(
                    t, group=group, session_id=session_id, source=source, confidence=confidence,
                    valid_from=start, max_content_chars=max_chars,
                )
                for t in triples
            ]  # fmt: skip

        if replace is None:  # what a text says is the newest word on its subjects: it updates them
            replace = triple is None
        for attempt in range(STAMP_ATTEMPTS):
            try:
                stored, pending = await self._write_facts(group_id, session_id, prepared(start), replace)
                break
            except FactNotNewer:
                # "now" was stamped before another server stored a newer value of this fact: now is later
                if valid_from is not None or attempt == STAMP_ATTEMPTS - 1:
                    raise
                start = self._now()
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
        async with self._sessions.opened(group_id, session_id or FACTS_SESSION, mode=mode) as session:
            return await run_sync(
                partial(
                    self._engine.add_facts, group_id, session.session_id,
                    [fact for fact, _ in prepared], [episode for _, episode in prepared],
                    supersede=replace, index_vectors=session.configuration.long_term.enabled,
                )
            )  # fmt: skip

    async def list_facts(
        self, group_id: str, *, subject: str | None = None, predicate: str | None = None
    ) -> FactList:
        """The group's facts, current ones first; subject and predicate match in any case and spacing."""
        await self._groups.get_group(group_id)
        facts, total = await run_sync(
            self._store.list_facts, group_id, subject or None, predicate or None, LIST_LIMIT
        )
        return FactList(group_id=group_id, facts=facts, total=total)
