"""Typed records the Store takes and returns: what a backend keeps, in the shape the services use.

Pydantic models the tools return (models.py) serve as records where they fit (`TaskInfo`, `Episode`); the
records here are the ones no tool returns as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mcp_memory.models import Episode, Fact

if TYPE_CHECKING:
    import numpy as np  # the records hold arrays; importing them needs no numpy (the server starts without it)


@dataclass(frozen=True)
class RollingSummary:
    """A session's rolling summary: the text, the last sequence it covers, and the turns left out of it."""

    text: str
    covered_through_sequence: int
    updated_at: str
    omitted_sequences: list[int] = field(default_factory=list)

    @property
    def display(self) -> str:
        """The text callers see: the summary, and a note when turns were left out."""
        if not self.omitted_sequences:
            return self.text
        count = len(self.omitted_sequences)
        turns = (
            "turn was too long to summarise and is"
            if count == 1
            else "turns were too long to summarise and are"
        )
        note = f"({count} earlier {turns} kept in long-term memory)"
        return f"{self.text}\n\n{note}" if self.text else note


@dataclass(frozen=True)
class SessionRecord:
    """A stored session: its frozen configuration (the effective one, and the overrides it was created with)."""

    group_id: str
    session_id: str
    configuration: dict[str, Any]
    overrides: dict[str, Any]
    created_at: datetime
    episode_count: int = 0
    rolling_covered_through: int | None = None


# -- constants every backend shares -------------------------------------------------------------------

FACT_MEMORY_TYPE = "fact"
SUMMARY_MEMORY_TYPE = "summary"
INDEXED, PENDING, NOT_INDEXED = (
    1,
    0,
    -1,
)  # an episode's vector: indexed, waiting for the embedder, none wanted


# -- episodes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEpisode:
    """An episode ready to be written: validated and normalised by the caller."""

    producer_id: str
    producer_role: str
    produced_for_id: str | None
    content: str
    memory_type: str
    importance: float
    metadata_json: str
    timestamp: str
    ts_epoch: float
    content_hash: str
    dedup_key: str | None
    step: int | None = None
    message_json: str | None = None  # a conversation message's extras (name, tool calls, images, data)


@dataclass(frozen=True)
class Inserted:
    """What happened to one episode of an insert: its id, sequence and whether it already existed."""

    id: int
    sequence: int
    duplicate: bool


@dataclass(frozen=True)
class InsertBatch:
    """The outcome of one insert transaction and the group's vector revision around it."""

    items: list[Inserted]
    revision_before: int
    revision_after: int


KEYED = "key\x1f"  # dedup keys from an idempotency key are readable text; the others are SHA-256 hex digests


def keyed_retry_key(idempotency_key: str, size: int, position: int) -> str:
    """The dedup key of the memory at `position` of a call of `size` memories sent with `idempotency_key`."""
    return f"{KEYED}{idempotency_key}\x1f{size}\x1f{position}"


@dataclass(frozen=True)
class EpisodeChange:
    """What a correction changes; None keeps the stored value."""

    content: str | None = None
    content_hash: str | None = None
    memory_type: str | None = None
    importance: float | None = None
    metadata_json: str | None = None


@dataclass(frozen=True)
class EpisodePage:
    """A page of a listing, and the position to go on from (None on the last page): a session's pages are
    keyed by (sequence,), a group's by (time, id)."""

    episodes: list[Episode]
    next_after: tuple[float, ...] | None


@dataclass(frozen=True)
class PendingVector:
    """An episode stored without its vector (the embedder failed): what embedding and indexing it takes."""

    id: int
    group_id: str
    session_id: str
    producer_id: str
    role: str
    memory_type: str
    ts_epoch: float
    content: str


@dataclass
class VectorRows:
    """Rows of a group's vectors with the columns recall filters on."""

    ids: np.ndarray  # int64
    matrix: np.ndarray  # float32 (n, dimension), rows L2-normalised
    session_id: Sequence[str]
    producer_id: Sequence[str]
    role: Sequence[str]
    memory_type: Sequence[str]
    ts: np.ndarray  # float64 epoch seconds


# -- the keyword index -------------------------------------------------------------------------------


@dataclass
class KeywordRows:
    """Rows of a group's keyword index with the episode columns recall filters on; ids ascending."""

    ids: np.ndarray  # int64
    group_id: list[str]
    session_id: list[str]
    producer_id: list[str]
    role: list[str]
    memory_type: list[str]
    ts: np.ndarray  # float64 epoch seconds


TermCodes = Iterator[tuple[str, "np.ndarray"]]
"""(token, every occurrence of it as row id * 4 + column index, ascending), token by token."""

RowTokens = dict[int, dict[str, list[int]]]
"""Row id -> token -> its count in each of the four columns."""


# -- what recall filters on ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Conditions every recalled episode must meet; applied inside each search."""

    session_id: str | None = None
    # With session_id: memories of these types from every session of the group match too
    # (a session's recall also finds the group's summaries).
    group_wide_types: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None
    producer: str | None = None
    role: str | None = None
    memory_types: tuple[str, ...] | None = None
    metadata: tuple[tuple[str, Any], ...] = ()
    min_importance: float | None = None
    max_importance: float | None = None
    step_from: int | None = None
    step_to: int | None = None
    exclude_types: tuple[str, ...] = ()

    @property
    def beyond_cache(self) -> bool:
        """Whether a condition is set that the in-memory copies cannot check themselves (they hold no
        metadata, importance or step): their searches then take the matching ids from SQL."""
        return bool(self.metadata or self.exclude_types) or any(
            value is not None
            for value in (self.min_importance, self.max_importance, self.step_from, self.step_to)
        )


RANGE_OPERATORS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


# -- facts ------------------------------------------------------------------------------------------


def fact_key(text: str) -> str:
    """The form facts are compared in: trimmed, whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class NewFact:
    """A validated fact ready to be written; `valid_from` is fixed-width UTC ISO text."""

    subject: str
    predicate: str
    object: str
    session_id: str | None
    source: str | None
    confidence: float | None
    valid_from: str

    @property
    def keys(self) -> tuple[str, str, str]:
        return fact_key(self.subject), fact_key(self.predicate), fact_key(self.object)


@dataclass(frozen=True)
class StoredFacts:
    """The outcome of one insert: each fact's row in input order, whether it already existed, the facts
    closed by replace, the new episodes (input index, episode id) and the group's vector revision."""

    facts: list[Fact]
    duplicate: list[bool]
    closed: list[int]
    new_episodes: list[tuple[int, int]]
    revision_before: int
    revision_after: int


# -- save and load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedGroup:
    """A group as an export holds it (its time as the exported text)."""

    group_id: str
    user_ids: list[str]
    agent_ids: list[str]
    description: str | None
    configuration: dict[str, Any]
    created_at: str
    owner: str | None = None


@dataclass(frozen=True)
class ImportedSession:
    group_id: str
    session_id: str
    configuration: dict[str, Any]
    overrides: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class ImportedEpisode:
    """A memory to import: its columns as they will be stored, and what it was in the exporting database."""

    old_id: int
    old_sequence: int
    dedup_key: str | None
    fallback_key: str  # the key of a memory that had none, unique to the exporting database and its id
    producer_id: str
    producer_role: str
    produced_for_id: str | None
    content: str
    content_hash: str
    memory_type: str
    importance: float
    effective_importance: float
    metadata_json: str
    timestamp: str
    ts_epoch: float
    created_at: str
    updated_at: str | None
    retrieval_count: int
    last_accessed_at: str | None
    step: int | None
    message_json: str | None
    vector: bool
    source_ids: tuple[int, ...] | None = None  # a summary's source episodes, mapped to their new ids


@dataclass(frozen=True)
class ImportedFact:
    old_id: int
    old_memory_id: int
    session_id: str | None
    subject: str
    predicate: str
    object: str
    source: str | None
    confidence: float | None
    valid_from: str
    valid_to: str | None
    created_at: str

    @property
    def keys(self) -> tuple[str, str, str]:
        return fact_key(self.subject), fact_key(self.predicate), fact_key(self.object)


@dataclass(frozen=True)
class ImportedRolling:
    text: str
    covered_through_sequence: int  # as exported: mapped to the new sequences on import
    updated_at: str
    omitted_sequences: tuple[int, ...]


@dataclass(frozen=True)
class ImportChunk:
    """Part of one session's records, written in one transaction."""

    group_id: str
    session_id: str
    session: ImportedSession | None  # inserted when the session does not exist
    episodes: Sequence[ImportedEpisode]
    facts: Sequence[ImportedFact] = ()
    rolling: ImportedRolling | None = None
    summary_count: tuple[int, int] | None = None  # lightweight, auto_multiple
    index_vectors: bool = True  # the session keeps long-term vectors
    after: int = 0  # the highest sequence an earlier chunk of this session wrote


@dataclass
class ChunkOutcome:
    """What one chunk wrote, and where its exported ids and sequences now point."""

    ids: dict[int, int] = field(default_factory=dict)
    sequences: dict[int, int] = field(default_factory=dict)
    session_created: bool = False
    added: int = 0
    existing: int = 0
    facts_added: int = 0
    facts_existing: int = 0
    rolling_added: bool = False
    last_sequence: int = 0


@dataclass(frozen=True)
class Visible:
    """The groups one principal may see in a listing: those it owns, and these ids."""

    owner: str
    group_ids: tuple[str, ...] = ()
