"""The Store protocol: what the engine and the services need from a database, in typed records.

Every backend implements it (store/sqlite/ today); nothing outside a backend sees a connection, a row or
SQL. Each part is a protocol of its own, so a service names only what it uses (the task runner takes a
`TaskStore`), and `Store` is all of them. Methods are synchronous and thread-safe: callers run them on
worker threads. Times go in and come out as aware datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import numpy as np

from mcp_memory.models import Episode, Fact, GroupInfo, TaskInfo, TaskStatus
from mcp_memory.store.records import (
    ChunkOutcome,
    EpisodeChange,
    EpisodePage,
    Filters,
    ImportChunk,
    ImportedGroup,
    InsertBatch,
    KeywordRows,
    NewEpisode,
    NewFact,
    PendingVector,
    RollingSummary,
    RowTokens,
    SessionRecord,
    StoredFacts,
    TermCodes,
    VectorRows,
    Visible,
)

T = TypeVar("T")


class GroupStore(Protocol):
    """Groups: who takes part, and the configuration their sessions start from."""

    def insert_group(self, group: GroupInfo) -> bool:
        """Insert a group; False when one with that id exists already (nothing changes then)."""
        ...

    def add_participants(self, group_id: str, user_ids: Sequence[str], agent_ids: Sequence[str]) -> None:
        """Append the users and agents the group does not have yet, in order, in one transaction."""
        ...

    def get_group(self, group_id: str) -> GroupInfo | None: ...

    def group_counts(self, group_id: str) -> tuple[int, int]:
        """How many sessions and episodes the group has."""
        ...

    def list_groups(self, limit: int, offset: int = 0, visible: Visible | None = None) -> list[GroupInfo]:
        """The groups in id order, with their session and episode counts; only the `visible` ones when given."""
        ...


class SessionStore(Protocol):
    """Sessions: a group's conversations, each with the configuration frozen when it was created."""

    def insert_session(self, session: SessionRecord) -> bool:
        """Insert a session; False when it exists already (nothing changes then)."""
        ...

    def get_session(self, group_id: str, session_id: str) -> SessionRecord | None: ...

    def list_sessions(self, group_id: str, limit: int) -> list[SessionRecord]:
        """The group's sessions, newest first."""
        ...

    def delete_session(self, group_id: str, session_id: str) -> int:
        """Delete a session and every episode of it (both indexes follow); returns the episodes removed."""
        ...

    def hold_sessions(self, holder: str, sessions: Sequence[tuple[str, str]], until: str) -> None:
        """Record that `holder` (a server) has these (group, session) open until `until`, replacing its
        earlier leases; servers sharing the database see them."""
        ...

    def session_holders(self, group_id: str, session_id: str, now: str) -> list[str]:
        """The servers whose lease on the session has not lapsed at `now`."""
        ...


class EpisodeStore(Protocol):
    """Episodes: written in batches (a retried batch is found, not stored twice), corrected, read, deleted.
    Times are fixed-width UTC ISO 8601 text (times.iso); `ts_epoch` of a NewEpisode is its time in seconds."""

    def insert_episodes(
        self,
        group_id: str,
        session_id: str,
        episodes: Sequence[NewEpisode],
        vectors: np.ndarray | None,
        *,
        index_vectors: bool,
        created_at: str,
        retry_window_start: str,
    ) -> InsertBatch:
        """Write a batch in one transaction, numbered on from the session's last sequence. A memory whose
        retry key is stored already, or a batch equal to the session's newest written since
        `retry_window_start`, returns the stored ids (duplicate=True). Without vectors and with
        `index_vectors`, the episodes wait for one (pending); without `index_vectors` they never get one."""
        ...

    def update_episode(
        self,
        group_id: str,
        episode_id: int,
        change: EpisodeChange,
        vector: np.ndarray | None,
        updated_at: str,
    ) -> Episode | None:
        """Correct an episode in place (id, session, sequence and time stay), its keywords and vector with it;
        None when the group has no such episode."""
        ...

    def touch(self, ids: Sequence[int], now: str) -> None:
        """Count one retrieval of each episode and set its last access time."""
        ...

    def delete_episodes(
        self, group_id: str, ids: Sequence[int] | None, session_id: str | None, keep_roles: Sequence[str] = ()
    ) -> int:
        """Delete the group's episodes by id and/or session, except those of `keep_roles`; returns how many."""
        ...

    def recent_episodes(self, group_id: str, session_id: str, limit: int) -> list[Episode]:
        """The session's newest `limit` episodes, oldest first."""
        ...

    def session_episodes(
        self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()
    ) -> list[Episode]:
        """Every episode of the session, oldest first, leaving out those of `exclude_types`."""
        ...

    def episodes_between(
        self, group_id: str, session_id: str, after: int, before: int, exclude_types: Sequence[str] = ()
    ) -> list[Episode]:
        """The session's episodes with after < sequence < before, oldest first, leaving out `exclude_types`."""
        ...

    def count_episodes(self, group_id: str, session_id: str, exclude_types: Sequence[str] = ()) -> int: ...

    def list_episodes(
        self,
        filters: Filters,
        group_id: str,
        *,
        newest_first: bool,
        after: tuple[float, ...] | None,
        limit: int,
    ) -> EpisodePage:
        """A page of the group's episodes meeting `filters`, in order after the position `after`: a session's
        by sequence, a group's by time then id."""
        ...

    def episodes_in_spans(self, group_id: str, spans: Sequence[tuple[str, int, int]]) -> list[Episode]:
        """The group's episodes in any of these (session, first sequence, last sequence) spans, in order."""
        ...

    def fetch_episodes(self, ids: Sequence[int]) -> dict[int, Episode]:
        """The episodes with these ids, of any group (callers check it), by id."""
        ...

    def keeps_vector(self, episode_id: int) -> bool:
        """Whether the episode has or waits for a vector (False: stored without one, or not found)."""
        ...

    def in_period(self, ids: Sequence[int], since: float, until: float) -> set[int]:
        """Which of these episodes have a time (epoch seconds) in [since, until]."""
        ...

    def effective_importance(self, ids: Sequence[int], neutral: float) -> dict[int, float]:
        """The effective importance of those of these episodes whose value is not `neutral`."""
        ...

    def decay_importance(self, now: datetime, decay_per_day: float) -> int:
        """Recompute every episode's effective importance at `now`; returns how many changed."""
        ...


class FactStore(Protocol):
    """Facts: triples with a validity period, each stored with the episode recall finds it by."""

    def insert_facts(
        self,
        group_id: str,
        session_id: str,
        facts: Sequence[NewFact],
        episodes: Sequence[NewEpisode],
        vectors: np.ndarray | None,
        *,
        supersede: bool,
        index_vectors: bool,
        created_at: str,
    ) -> StoredFacts:
        """Store facts and their episodes in one transaction; a triple current already comes back as a
        duplicate; with `supersede`, the other current facts of the same subject and predicate are closed."""
        ...

    def list_facts(
        self, group_id: str, subject: str | None, predicate: str | None, limit: int
    ) -> tuple[list[Fact], int]:
        """The group's facts (subject and predicate compared by fact_key), current first, and how many match."""
        ...

    def closed_fact_episodes(self, ids: Sequence[int]) -> set[int]:
        """Which of these episodes hold facts that are no longer current."""
        ...


class SearchStore(Protocol):
    """Search inside a group, and the group's vectors: what recall asks when no in-memory copy answers, and
    what it loads one from. Scores are distances: lower is better."""

    def search_keywords(
        self, group_id: str, text: str, participants: Iterable[str], filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The group's k best keyword matches for a query (a participant's name matches what they said)."""
        ...

    def vector_search(
        self, group_id: str, query: np.ndarray, filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The group's k nearest episodes to a unit vector, as (id, cosine distance), filters inside."""
        ...

    def candidate_ids(self, group_id: str, filters: Filters) -> np.ndarray:
        """Ids of the group's episodes meeting the filters an in-memory copy cannot check (metadata,
        importance, steps)."""
        ...

    def vector_revision(self, group_id: str) -> int:
        """How many times the group's vectors have changed, by any process (an in-memory copy's clock)."""
        ...

    def vector_count(self, group_id: str) -> int: ...

    def vector_changes(self, group_id: str, after: int, limit: int) -> list[tuple[int, int]] | None:
        """Up to `limit` (revision, episode id) changes of the group's vectors after revision `after`, oldest
        first; None when the backend keeps no such log (an in-memory copy then loads the group again)."""
        ...

    def vector_rows(self, group_id: str, ids: Sequence[int]) -> VectorRows:
        """The group's vectors of these episodes as they are now (episodes without one left out)."""
        ...

    def scan_group_vectors(self, group_id: str) -> tuple[int, VectorRows]:
        """Every vector of the group with its filter columns, and the revision they are at (one snapshot)."""
        ...

    def pending_vectors(self, limit: int) -> list[PendingVector]:
        """Episodes that wait for their vector (the embedder failed, or an import left them so)."""
        ...

    def set_vectors(self, pending: Sequence[PendingVector], vectors: np.ndarray) -> int:
        """Index these vectors for the episodes still waiting for them; returns how many were indexed."""
        ...

    def pending_count(self) -> int: ...

    def reset_vectors(self, name: str, dimension: int) -> int:
        """Drop every vector, record a new embedder, and mark every indexable episode pending."""
        ...


class KeywordFeed(Protocol):
    """What an in-memory copy of a group's keyword index (recall/keywords.py) is loaded and kept current from:
    the group's rows with their tokens (as FTS5's tokenizer splits them), and the group's change feed, whose
    numbers follow commit order within the group."""

    def keyword_log(self, group_id: str) -> tuple[int, int]:
        """(the group's newest change, the oldest change the feed still holds; 0 for none)."""
        ...

    def keyword_changes(self, group_id: str, after: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` (seq, episode id) changes of the group after `after`, oldest first."""
        ...

    def keyword_index_size(self) -> tuple[int, int]:
        """(rows, tokens) of the whole keyword index, read cheaply (what a load's budget check estimates from)."""
        ...

    def keyword_group_rows(self, group_id: str) -> int: ...

    def scan_group_keywords(
        self, group_id: str, consume: Callable[[int, KeywordRows, TermCodes], T], *, whole_table: bool
    ) -> T:
        """`consume(feed head, rows, term codes)` with the group's rows and tokens from one snapshot."""
        ...

    def keyword_rows(self, ids: Sequence[int]) -> tuple[KeywordRows, RowTokens]:
        """The rows with these ids that exist now, and their tokens."""
        ...

    def tokenize_words(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """Each word as the index's tokenizer splits and folds it, its tokens in order."""
        ...


class TransferStore(Protocol):
    """Save and load: every record of some groups at one moment, and an export's records written back
    (what is already there found and kept, so a second import adds nothing)."""

    def export_group_ids(self) -> list[str]: ...

    def export_records(self, group_ids: Sequence[str]) -> Generator[tuple[str, dict[str, Any]]]:
        """("counts", {...}) first, then each record as the line transfer/format.py reads, in file order,
        all read in one transaction (close the generator to end it)."""
        ...

    def import_group(self, group: ImportedGroup) -> tuple[bool, list[str], list[str]]:
        """Create the group, or add the participants it lacks: (created, users added, agents added)."""
        ...

    def import_chunk(
        self, chunk: ImportChunk, known_ids: Mapping[int, int], known_sequences: Mapping[int, int]
    ) -> ChunkOutcome:
        """Write part of a session's records in one transaction; `known_*` map earlier chunks' exported ids
        and sequences to the new ones."""
        ...

    def session_configuration(self, group_id: str, session_id: str) -> dict[str, Any] | None: ...


class MetaStore(Protocol):
    """The database itself: settings kept in it, its counts, its identity."""

    @property
    def location(self) -> str:
        """Where the database is, as a person would name it (a file path)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    @property
    def schema_version(self) -> int: ...

    def stats(self, recent_since: str) -> dict[str, Any]:
        """Counts by group, session, memory type and tier, importance and retrieval totals, pending vectors."""
        ...

    def claim_maintenance(self, now: str, due_before: str) -> bool:
        """Take the maintenance pass: True for exactly one of the servers asking while the last claim is
        older than `due_before`."""
        ...

    def database_id(self) -> str:
        """This database's random identity (made the first time it is asked for)."""
        ...

    def close(self) -> None:
        """Release the database; later calls fail with StoreError."""
        ...


class SummaryStore(Protocol):
    """The counters that pace summaries, and each session's rolling summary."""

    def reserve_lightweight(self, group_id: str, session_id: str, limit: int) -> bool:
        """Take one of the session's `limit` lightweight summaries; False when all are taken."""
        ...

    def release_lightweight(self, group_id: str, session_id: str) -> None:
        """Give back a reservation whose summary was never stored."""
        ...

    def lightweight_used(self, group_id: str, session_id: str) -> int: ...

    def auto_multiple(self, group_id: str, session_id: str) -> int:
        """The last multiple of the auto-summary threshold a summary was started for."""
        ...

    def claim_auto(self, group_id: str, session_id: str, multiple: int) -> bool:
        """Claim the automatic summary for `multiple`; False when this or a later one is claimed already."""
        ...

    def rolling_summary(self, group_id: str, session_id: str) -> RollingSummary | None: ...

    def save_rolling_summary(self, group_id: str, session_id: str, summary: RollingSummary) -> None: ...


class TaskStore(Protocol):
    """Background tasks as records every server on the database sees (services/tasks.py gives them meaning)."""

    def create_task(
        self,
        *,
        kind: str,
        group_id: str,
        session_id: str | None,
        owner: str,
        now: datetime,
        lease_until: datetime,
    ) -> TaskInfo: ...

    def finish_task(
        self,
        task_id: str,
        owner: str,
        *,
        status: TaskStatus,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        now: datetime,
        expires_at: datetime,
    ) -> bool: ...

    def renew_task_lease(self, task_id: str, owner: str, until: datetime) -> bool: ...

    def get_task(self, task_id: str) -> TaskInfo | None: ...

    def fail_lapsed_tasks(self, reason: str, *, now: datetime, expires_at: datetime) -> int: ...

    def processing_task_owners(self) -> list[str]: ...

    def fail_owners_tasks(
        self, owners: Sequence[str], reason: str, *, now: datetime, expires_at: datetime
    ) -> int: ...

    def expire_tasks(self, before: datetime) -> int: ...


class Store(
    GroupStore,
    SessionStore,
    EpisodeStore,
    FactStore,
    SearchStore,
    KeywordFeed,
    SummaryStore,
    TaskStore,
    TransferStore,
    MetaStore,
    Protocol,
):
    """Everything the engine and the services ask of a database."""
