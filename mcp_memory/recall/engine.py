"""The memory engine: storing episodes with their vectors and hybrid recall.

Synchronous and thread-safe; the manager calls it from worker threads. It knows
nothing of sessions' lifecycles or of MCP.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from mcp_memory.episodes import DEFAULT_IMPORTANCE, embedding_text
from mcp_memory.llm.embeddings import Embedder
from mcp_memory.models import Episode, RecallHit
from mcp_memory.recall.keywords import KeywordSearch
from mcp_memory.recall.request import RecallStrategy
from mcp_memory.recall.vectors import GroupVectors, VectorCache, cache_conditions
from mcp_memory.recall.when import named_period
from mcp_memory.store.protocol import Store
from mcp_memory.store.records import (
    EpisodeChange,
    Filters,
    Inserted,
    NewEpisode,
    NewFact,
    StoredFacts,
    VectorRows,
)
from mcp_memory.times import iso

log = logging.getLogger(__name__)

# Tuned on LoCoMo conversations 0-2 only (bench/locomo.py): MiniLM alone is far weaker than
# BM25 over turns with their neighbours, so it gets a fifth of the weight; a smaller RRF
# constant lets the top ranks of each list count for more.
RRF_K = 30
MIN_CANDIDATES = 50
CANDIDATES_PER_RESULT = 5
RETRY_WINDOW_S = 300
BACKFILL_BATCH = 64
# A fact replaced by a newer one keeps this share of its score: "where does Ana live" ranks the
# current answer above the old one, and the old one is still found when asked about.
CLOSED_FACT_WEIGHT = 0.5
# A memory's effective importance (store/sqlite/decay.py) scales its score by 1 + IMPORTANCE_WEIGHT * (importance
# - 0.5): from 0.99 to 1.01, exactly 1 at the default 0.5. Relevance leads: neighbouring ranks of one list
# differ by more than 2% down to rank 10 (1/(RRF_K + r)), so importance (and the retrieval count that feeds
# it) only orders memories that are about equally relevant; at 0.3 (0.85 to 1.15) a memory without the
# query's word outranked the only one that had it, and each recall then reinforced the wrong answer.
IMPORTANCE_WEIGHT = 0.02
# A candidate stored in the period the query names ("in May 2023", recall/when.py) gains TIME_WEIGHT
# (recall/request.py), and the period is widened by TIME_SLACK on each side: what was said on the 3rd is
# often told on the 5th. Tuned on LoCoMo conversations 0-2 (+1.4 points of R@10 there).
TIME_SLACK = timedelta(days=3)
# A group with more vectors than this is loaded into the cache on a background thread; until it is
# ready (and while a copy made stale by another process reloads) sqlite-vec answers, so no recall
# waits for a load (about 3 s for 100k vectors, 30 s for 1M). Smaller groups load in the call.
SYNC_LOAD_ROWS = 20_000
MAX_VECTOR_CATCH_UP = 5_000  # more vector changes than this since a copy's revision: load it again


@dataclass
class RecallQuery:
    """One recall: the text, where to look and how many to return."""

    group_id: str
    text: str
    filters: Filters = field(default_factory=Filters)
    limit: int = 10
    exclude_ids: frozenset[int] = frozenset()
    strategy: RecallStrategy = field(default_factory=RecallStrategy)
    participants: frozenset[str] = frozenset()
    # Memories found by meaning alone whose cosine similarity to the query is below this are dropped
    # (MemMachine's long-term score threshold); keyword matches always stay.
    min_similarity: float = -1.0


def fuse(ranked_lists: Sequence[tuple[float, Sequence[tuple[int, float]]]]) -> dict[int, float]:
    """Weighted reciprocal-rank fusion of (id, score) lists, best first: each list adds weight / (RRF_K + rank)
    to its ids. Ids with the same score share a rank (1, 1, 3), so equally relevant memories score alike."""
    scores: dict[int, float] = {}
    for weight, ranked in ranked_lists:
        rank, previous = 0, None
        for position, (episode_id, score) in enumerate(ranked, start=1):
            if previous is None or not math.isclose(score, previous, rel_tol=1e-9, abs_tol=1e-12):
                rank = position
            previous = score
            scores[episode_id] = scores.get(episode_id, 0.0) + weight / (RRF_K + rank)
    return scores


class MemoryEngine:
    """Episodes in, ranked memories out, over one Store and one Embedder."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        *,
        clock: Callable[[], datetime],
        cache: VectorCache | None = None,
        keywords: KeywordSearch | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.clock = clock
        self.cache = cache
        self.keywords = keywords
        self.sync_load_rows = SYNC_LOAD_ROWS
        self._uncacheable: set[str] = set()
        self._sizes: dict[str, int] = {}
        self._loads: dict[str, Future[None]] = {}
        self._loads_lock = threading.Lock()
        self._deferred = threading.local()  # per recall: the vector loads it asked for
        self._loader: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop loading in the background (waiting for a load under way); call before closing the store."""
        if self.keywords is not None:
            self.keywords.close()
        with self._loads_lock:
            loader, self._loader = self._loader, None
        if loader is not None:
            loader.shutdown(wait=True, cancel_futures=True)

    # -- writing ------------------------------------------------------------------------

    def add(
        self, group_id: str, session_id: str, episodes: Sequence[NewEpisode], *, index_vectors: bool
    ) -> tuple[list[Inserted], bool]:
        """Store a batch atomically; returns the results and whether embedding failed (left pending)."""
        vectors, pending = None, False
        if index_vectors:
            vectors = self._try_embed([embedding_text(e.producer_id, e.content) for e in episodes])
            pending = vectors is None
        now = self.clock()
        batch = self.store.insert_episodes(
            group_id,
            session_id,
            episodes,
            vectors,
            index_vectors=index_vectors,
            created_at=iso(now),
            retry_window_start=iso(now - timedelta(seconds=RETRY_WINDOW_S)),
        )
        if self.cache is not None and vectors is not None:
            new = [i for i, item in enumerate(batch.items) if not item.duplicate]
            rows = _vector_rows(
                session_id, [episodes[i] for i in new], [batch.items[i].id for i in new], vectors[new]
            )
            self.cache.appended(group_id, rows, batch.revision_before, batch.revision_after)
        self._written(group_id)
        return batch.items, pending

    def add_facts(
        self,
        group_id: str,
        session_id: str,
        facts: Sequence[NewFact],
        episodes: Sequence[NewEpisode],
        *,
        supersede: bool,
        index_vectors: bool,
    ) -> tuple[StoredFacts, bool]:
        """Store facts with their episodes atomically; returns the outcome and whether embedding failed."""
        vectors, pending = None, False
        if index_vectors:
            vectors = self._try_embed([embedding_text(e.producer_id, e.content) for e in episodes])
            pending = vectors is None
        stored = self.store.insert_facts(
            group_id, session_id, facts, episodes, vectors,
            supersede=supersede, index_vectors=index_vectors, created_at=iso(self.clock()),
        )  # fmt: skip
        if self.cache is not None and vectors is not None:
            new = [i for i, _ in stored.new_episodes]
            ids = [memory_id for _, memory_id in stored.new_episodes]
            rows = _vector_rows(session_id, [episodes[i] for i in new], ids, vectors[new])
            self.cache.appended(group_id, rows, stored.revision_before, stored.revision_after)
        self._written(group_id)
        return stored, pending

    def update(
        self, group_id: str, episode_id: int, change: EpisodeChange, *, producer: str, embed: bool
    ) -> tuple[Episode | None, bool]:
        """Correct an episode in place, re-embedding new text when it has a vector; returns the episode
        (None if the group has no such episode) and whether its new vector is pending."""
        vector, pending = None, False
        if embed and change.content is not None:
            vectors = self._try_embed([embedding_text(producer, change.content)])
            vector, pending = (None, True) if vectors is None else (vectors[0], False)
        updated = self.store.update_episode(group_id, episode_id, change, vector, iso(self.clock()))
        self._written(group_id)
        return updated, pending

    def _written(self, group_id: str) -> None:
        """After a write of this process: the group's keyword copy takes it in now, not at the next recall."""
        if self.keywords is None:
            return
        try:
            self.keywords.refresh(group_id)
        except Exception as exc:  # noqa: BLE001 - stored already; the next recall catches up or asks the store
            log.warning("keyword index of group %r not refreshed after a write: %s", group_id, exc)

    def _try_embed(self, texts: list[str]) -> np.ndarray | None:
        try:
            return self.embedder.embed(texts)
        except Exception as exc:  # noqa: BLE001 - the episode is kept and indexed later
            log.warning("embedding failed, memories stored and queued for indexing: %s", exc)
            return None

    def backfill(self, limit: int = BACKFILL_BATCH) -> int:
        """Embed and index up to `limit` pending episodes; returns how many were indexed."""
        rows = self.store.pending_vectors(limit)
        if not rows:
            return 0
        vectors = self.embedder.embed([embedding_text(r.producer_id, r.content) for r in rows])
        return self.store.set_vectors(rows, vectors)

    # -- reading ------------------------------------------------------------------------

    def recall(self, query: RecallQuery) -> tuple[list[RecallHit], bool]:
        """Hybrid recall: BM25 and vector candidates fused by weighted RRF; returns hits and whether vectors ran.

        The loads of in-memory copies this recall finds missing begin once it has its answer: started at
        once, they would compete (two cores, one GIL) with the store searching in their place."""
        self._deferred.groups = []
        if self.keywords is not None:
            self.keywords.defer_loads()
        try:
            return self._recall(query)
        finally:
            groups, self._deferred.groups = self._deferred.groups, None
            for group_id in groups:
                self._load_in_background(group_id)
            if self.keywords is not None:
                self.keywords.start_deferred_loads()

    def _recall(self, query: RecallQuery) -> tuple[list[RecallHit], bool]:
        pool = max(MIN_CANDIDATES, (query.limit + len(query.exclude_ids)) * CANDIDATES_PER_RESULT)
        weights = query.strategy
        keyword = self._keyword_hits(query, pool) if weights.keyword_weight > 0 else []
        vector, vector_ran = self._vector_hits(query, pool) if weights.vector_weight > 0 else ([], False)
        by_keyword = {i for i, _ in keyword}
        similarity = {i: 1.0 - distance for i, distance in vector}
        vector = [(i, d) for i, d in vector if i in by_keyword or similarity[i] >= query.min_similarity]
        scores = fuse([(weights.keyword_weight, keyword), (weights.vector_weight, vector)])
        in_time = self._in_named_period(query, list(scores)) if weights.time_weight > 0 else set()
        for episode_id in in_time:
            scores[episode_id] += weights.time_weight / (RRF_K + 1)
        for closed in self.store.closed_fact_episodes(list(scores)):
            scores[closed] *= CLOSED_FACT_WEIGHT
        for episode_id, importance in self.store.effective_importance(
            list(scores), DEFAULT_IMPORTANCE
        ).items():
            scores[episode_id] *= importance_factor(importance)
        ranked = [i for i in sorted(scores, key=lambda i: -scores[i]) if i not in query.exclude_ids]
        chosen = ranked[: query.limit]
        found = self.store.fetch_episodes(chosen)
        matched = {"keyword": by_keyword, "vector": {i for i, _ in vector}, "time": in_time}
        hits = [_hit(found[i], scores[i], matched, similarity.get(i)) for i in chosen if i in found]
        self.store.touch([h.id for h in hits], iso(self.clock()))
        return hits, vector_ran

    def _in_named_period(self, query: RecallQuery, candidates: list[int]) -> set[int]:
        """The candidates stored within the period the query's words name (none if it names no time)."""
        period = named_period(query.text, self.clock())
        if period is None or not candidates:
            return set()
        since, until = period.start - TIME_SLACK, period.end + TIME_SLACK
        return self.store.in_period(candidates, since.timestamp(), until.timestamp())

    def _keyword_hits(self, query: RecallQuery, pool: int) -> list[tuple[int, float]]:
        return self.keyword_search(query.group_id, query.text, query.filters, pool, query.participants)

    def keyword_search(
        self, group_id: str, text: str, filters: Filters, k: int, participants: Iterable[str] = ()
    ) -> list[tuple[int, float]]:
        """The group's k best BM25 matches for the text's words as (id, bm25), best (lowest) first:
        from the in-memory copy of the index when it is current, else from the store; both rank alike."""
        if self.keywords is not None:
            found = self.keywords.search_text(text, participants, group_id, filters, k)
            if found is not None:
                return found
        return self.store.search_keywords(group_id, text, participants, filters, k)

    def _vector_hits(self, query: RecallQuery, pool: int) -> tuple[list[tuple[int, float]], bool]:
        try:
            vector = self.embedder.embed([query.text])[0]
        except Exception as exc:  # noqa: BLE001 - keyword search still answers
            log.warning("query embedding failed, recalling by keywords only: %s", exc)
            return [], False
        if not np.any(vector):  # nothing the embedder could read: no direction to search in
            return [], False
        return self.vector_search(query.group_id, vector, query.filters, pool), True

    def vector_search(
        self, group_id: str, vector: np.ndarray, filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The k nearest episodes of the group as (id, cosine distance): exact, in memory when the group fits."""
        group = self._cached_group(group_id)
        if group is None or self.cache is None:
            return self.store.vector_search(group_id, vector, filters, k)
        allowed = None
        if filters.beyond_cache:
            allowed = self.store.candidate_ids(group_id, filters)
        return group.search(vector, k, cache_conditions(filters), allowed, self.cache.pool)

    def _cached_group(self, group_id: str) -> GroupVectors | None:
        """The group's current vectors in memory; None means: search sqlite-vec this time."""
        if self.cache is None or group_id in self._uncacheable:
            return None
        revision = self.store.vector_revision(group_id)
        group = self.cache.get(group_id, revision)
        if group is not None:
            return group
        group = self._catch_up(group_id, revision)
        if group is not None:
            return group
        if group_id not in self._sizes:
            self._sizes[group_id] = self.store.vector_count(group_id)
        if self._sizes[group_id] > self.sync_load_rows:
            self._load_in_background(group_id)
            return None
        return self._load(group_id)

    def _catch_up(self, group_id: str, revision: int) -> GroupVectors | None:
        """The group's copy brought up to date from the store's log of vector changes; None when there is no
        copy, no log, or more changed than is worth replaying (the copy loads again)."""
        assert self.cache is not None
        held = self.cache.held(group_id)
        if held is None or held.revision > revision:
            return None
        changes = self.store.vector_changes(group_id, held.revision, MAX_VECTOR_CATCH_UP + 1)
        if not changes or len(changes) > MAX_VECTOR_CATCH_UP:
            return None  # no log, or too much to replay
        numbers = [number for number, _ in changes]
        if (
            numbers != list(range(held.revision + 1, held.revision + 1 + len(numbers)))
            or numbers[-1] < revision
        ):
            return None  # a gap (the log trimmed, or every vector reset): only a reload is sure
        changed = np.asarray(sorted({episode_id for _, episode_id in changes}), np.int64)
        rows = self.store.vector_rows(group_id, changed.tolist())
        self.cache.caught_up(group_id, held, changed, rows, numbers[-1])
        return self.cache.get(group_id, numbers[-1])

    def _load(self, group_id: str) -> GroupVectors | None:
        assert self.cache is not None
        with self.cache.loading_lock(group_id):
            group = self.cache.get(group_id, self.store.vector_revision(group_id))
            if group is None:
                group = GroupVectors(*self.store.scan_group_vectors(group_id))
                self._sizes[group_id] = group.size
                if not self.cache.put(group_id, group):
                    self._uncacheable.add(group_id)
                    return None
        return group

    def _load_in_background(self, group_id: str) -> None:
        deferred = getattr(self._deferred, "groups", None)
        if deferred is not None:  # inside a recall: once it has answered
            deferred.append(group_id)
            return
        with self._loads_lock:
            running = self._loads.get(group_id)
            if running is not None and not running.done():
                return
            if self._loader is None:
                self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-memory-load")
            self._loads[group_id] = self._loader.submit(self._load_logged, group_id)

    def _load_logged(self, group_id: str) -> None:
        try:
            self._load(group_id)
        except Exception as exc:  # noqa: BLE001 - sqlite-vec keeps answering; the next search retries
            log.warning("could not load group %r's vectors into memory: %s", group_id, exc)

    def recent(self, group_id: str, session_id: str, limit: int) -> list[Episode]:
        """The session's newest `limit` episodes, oldest first."""
        return self.store.recent_episodes(group_id, session_id, limit)


def importance_factor(importance: float) -> float:
    """What an effective importance multiplies a fused score by (1 at the default importance)."""
    return 1.0 + IMPORTANCE_WEIGHT * (importance - DEFAULT_IMPORTANCE)


def _vector_rows(
    session_id: str, episodes: Sequence[NewEpisode], ids: Sequence[int], vectors: np.ndarray
) -> VectorRows:
    return VectorRows(
        ids=np.asarray(ids, dtype=np.int64),
        matrix=vectors,
        session_id=[session_id] * len(ids),
        producer_id=[e.producer_id for e in episodes],
        role=[e.producer_role for e in episodes],
        memory_type=[e.memory_type for e in episodes],
        ts=np.asarray([e.ts_epoch for e in episodes], dtype=np.float64),
    )


def _hit(episode: Episode, score: float, matched: dict[str, set[int]], similarity: float | None) -> RecallHit:
    by = [name for name, ids in matched.items() if episode.id in ids]
    return RecallHit(
        **episode.model_dump(),
        score=round(score, 6),
        matched_by=by,  # type: ignore[arg-type]
        similarity=None if similarity is None else round(similarity, 4),
    )
