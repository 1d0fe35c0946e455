"""Writing a checked import: records of the export format (transfer/format.py) as the Store's import chunks
(store/sqlite/transfer.py), one group or session at a time, and the totals of what was added or already there.

A session's records go in chunks of at most CHUNK_MEMORIES memories, each one transaction: the session
with the first, its rolling summary and counters with the last, each fact with its memory; what earlier
chunks wrote (their ids and sequences) carries over, so references find the new rows. Runs on a worker
thread (services/transfer.py starts it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import content_digest, metadata_json_text
from mcp_memory.store.protocol import Store
from mcp_memory.store.records import (
    SUMMARY_MEMORY_TYPE,
    ChunkOutcome,
    ImportChunk,
    ImportedEpisode,
    ImportedFact,
    ImportedGroup,
    ImportedRolling,
    ImportedSession,
)
from mcp_memory.transfer.check import Block
from mcp_memory.transfer.format import FactLine, GroupLine, MemoryLine, RollingSummaryLine, SessionLine

CHUNK_MEMORIES = 1000  # the most memories one import transaction writes


class Tally(BaseModel):
    added: int = 0
    existing: int = Field(0, description="Already there: left as they were.")


class ImportResult(BaseModel):
    """What an import added, and what it found already there."""

    path: str
    format: Literal["mcp-memory", "server-memory"]
    groups: Tally = Field(default_factory=Tally)
    sessions: Tally = Field(default_factory=Tally)
    memories: Tally = Field(default_factory=Tally)
    facts: Tally = Field(default_factory=Tally)
    rolling_summaries: Tally = Field(default_factory=Tally)
    participants_added: dict[str, list[str]] = Field(
        default_factory=dict, description="Users and agents added to groups that existed, by group."
    )
    lines_skipped: int = Field(
        0, description="Blank lines, other groups' lines, server-memory's other types."
    )
    vectors_indexed: int = 0
    vectors_pending: int = Field(
        0, description="Memories still waiting for a vector (indexed in the background)."
    )


class Writer:
    """Writes checked records, one group or session at a time, keeping the totals (on a worker thread)."""

    def __init__(
        self, store: Store, wrote: Callable[[int], None], result: ImportResult, database_id: str
    ) -> None:
        self.store = store
        self.wrote = wrote  # told how many memories are written so far
        self.result = result
        self.database_id = database_id
        self.written = 0

    def write_all(self, items: Iterable[GroupLine | Block], selected: set[str]) -> None:
        for item in items:
            if item.group_id not in selected:
                continue
            if isinstance(item, GroupLine):
                self.group(item)
            else:
                self.block(item)

    def group(self, line: GroupLine) -> None:
        created, users, agents = self.store.import_group(_group(line))
        tally(self.result.groups, created)
        if users or agents:
            self.result.participants_added[line.group_id] = users + agents

    def block(self, block: Block) -> None:
        """A session's records in chunks; the ids and sequences of earlier chunks carry over."""
        index_vectors = self._long_term(block)
        ids: dict[int, int] = {}
        sequences: dict[int, int] = {}
        after = 0
        parts = [
            block.memories[i : i + CHUNK_MEMORIES] for i in range(0, len(block.memories), CHUNK_MEMORIES)
        ]
        for n, memories in enumerate(parts or [[]]):
            chunk = self._chunk(block, n, memories, last=n >= len(parts) - 1)
            out = self.store.import_chunk(
                replace(chunk, index_vectors=index_vectors, after=after), ids, sequences
            )
            ids.update(out.ids)
            sequences.update(out.sequences)
            after = out.last_sequence
            if n == 0 and block.session is not None:
                tally(self.result.sessions, out.session_created)
            self._count(out)
            self.written += len(memories)
            self.wrote(self.written)

    def _chunk(self, block: Block, n: int, memories: list[MemoryLine], *, last: bool) -> ImportChunk:
        """The n-th chunk: the session with the first, the rolling summary and counters with the last."""
        in_chunk = {m.id for m in memories}
        rolling, counts = block.rolling_summary, block.summary_count
        return ImportChunk(
            group_id=block.group_id,
            session_id=block.session_id,
            session=_session(block.session) if n == 0 and block.session is not None else None,
            episodes=[self._episode(m) for m in memories],
            facts=[_fact(f) for f in block.facts if f.memory_id in in_chunk],
            rolling=_rolling(rolling) if last and rolling is not None else None,
            summary_count=(counts.lightweight, counts.auto_multiple) if last and counts is not None else None,
        )

    def _long_term(self, block: Block) -> bool:
        """Whether the session keeps vectors: as configured here, or in the file when it is new here."""
        stored = self.store.session_configuration(block.group_id, block.session_id)
        if stored is not None:
            return effective_session_config(stored).long_term.enabled
        assert block.session is not None  # a block without its session line is written into one that exists
        return effective_session_config(block.session.configuration).long_term.enabled

    def _count(self, out: ChunkOutcome) -> None:
        result = self.result
        result.memories.added += out.added
        result.memories.existing += out.existing
        result.facts.added += out.facts_added
        result.facts.existing += out.facts_existing
        if out.rolling_added:
            result.rolling_summaries.added += 1

    def _episode(self, line: MemoryLine) -> ImportedEpisode:
        return ImportedEpisode(
            old_id=line.id,
            old_sequence=line.sequence,
            dedup_key=line.dedup_key,
            fallback_key=f"import\x1f{self.database_id}\x1f{line.id}",
            producer_id=line.producer,
            producer_role=line.role,
            produced_for_id=line.produced_for,
            content=line.content,
            content_hash=content_digest(line.content),
            memory_type=line.memory_type,
            importance=line.importance,
            effective_importance=line.effective_importance,
            metadata_json=metadata_json_text(line.metadata),
            timestamp=line.timestamp,
            ts_epoch=datetime.fromisoformat(line.timestamp).timestamp(),
            created_at=line.created_at,
            updated_at=line.updated_at,
            retrieval_count=line.retrieval_count,
            last_accessed_at=line.last_accessed_at,
            step=line.step,
            message_json=_message_json(line.message),
            vector=line.vector,
            source_ids=_source_ids(line),
        )


def tally(counts: Tally, added: bool) -> None:
    if added:
        counts.added += 1
    else:
        counts.existing += 1


def _group(line: GroupLine) -> ImportedGroup:
    return ImportedGroup(
        line.group_id, list(line.user_ids), list(line.agent_ids), line.description, dict(line.configuration),
        line.created_at, line.owner,
    )  # fmt: skip


def _session(line: SessionLine) -> ImportedSession:
    return ImportedSession(
        line.group_id, line.session_id, dict(line.configuration), dict(line.overrides), line.created_at
    )


def _message_json(message: dict[str, Any] | None) -> str | None:
    """As episodes.py stores a message's extras (so an export's come back byte for byte)."""
    return json.dumps(message, ensure_ascii=False, sort_keys=True) if message else None


def _source_ids(line: MemoryLine) -> tuple[int, ...] | None:
    """A summary's source episodes (metadata.source_episode_ids), which follow their memories' new ids."""
    ids = line.metadata.get("source_episode_ids")
    if line.memory_type != SUMMARY_MEMORY_TYPE or not isinstance(ids, list):
        return None
    return tuple(i for i in ids if isinstance(i, int) and not isinstance(i, bool))


def _fact(line: FactLine) -> ImportedFact:
    return ImportedFact(
        old_id=line.id,
        old_memory_id=line.memory_id,
        session_id=line.session_id,
        subject=line.subject,
        predicate=line.predicate,
        object=line.object,
        source=line.source,
        confidence=line.confidence,
        valid_from=line.valid_from,
        valid_to=line.valid_to,
        created_at=line.created_at,
    )


def _rolling(line: RollingSummaryLine) -> ImportedRolling:
    return ImportedRolling(
        line.text, line.covered_through_sequence, line.updated_at, tuple(line.omitted_sequences)
    )
