"""The memory engine: storing episodes with their vectors and hybrid recall.

Synchronous and thread-safe; the manager calls it from worker threads. It knows
nothing of sessions' lifecycles or of MCP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from mcp_memory.embeddings import Embedder
from mcp_memory.episodes import embedding_text, episode_from_row, iso
from mcp_memory.models import Episode, RecallHit
from mcp_memory.store import Filters, Inserted, NewEpisode, Store

log = logging.getLogger(__name__)

RRF_K = 60
KEYWORD_WEIGHT = 1.0
VECTOR_WEIGHT = 0.5
MIN_CANDIDATES = 50
CANDIDATES_PER_RESULT = 5
RETRY_WINDOW_S = 300
BACKFILL_BATCH = 64
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves did does tell ever
    """.split()  # noqa: SIM905 - a word list reads best as text
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class RecallStrategy:
    """How recall ranks: the weight of each retriever in the fusion (0 turns one off)."""

    keyword_weight: float = KEYWORD_WEIGHT
    vector_weight: float = VECTOR_WEIGHT

    @classmethod
    def keyword_only(cls) -> RecallStrategy:
        return cls(keyword_weight=1.0, vector_weight=0.0)

    @classmethod
    def vector_only(cls) -> RecallStrategy:
        return cls(keyword_weight=0.0, vector_weight=1.0)


@dataclass
class RecallQuery:
    """One recall: the text, where to look and how many to return."""

    group_id: str
    text: str
    filters: Filters = field(default_factory=Filters)
    limit: int = 10
    exclude_ids: frozenset[int] = frozenset()
    strategy: RecallStrategy = field(default_factory=RecallStrategy)


def fts_query(text: str) -> str | None:
    """An FTS5 expression that ORs the query's content words (stopwords out), each quoted; None if no words."""
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in words if w not in STOPWORDS] or words
    unique = list(dict.fromkeys(content))
    return " OR ".join(f'"{w}"' for w in unique) if unique else None


def fuse(ranked_lists: Sequence[tuple[float, Sequence[int]]]) -> dict[int, float]:
    """Weighted reciprocal-rank fusion: each list adds weight / (RRF_K + rank) to its ids."""
    scores: dict[int, float] = {}
    for weight, ids in ranked_lists:
        for rank, episode_id in enumerate(ids, start=1):
            scores[episode_id] = scores.get(episode_id, 0.0) + weight / (RRF_K + rank)
    return scores


class MemoryEngine:
    """Episodes in, ranked memories out, over one Store and one Embedder."""

    def __init__(self, store: Store, embedder: Embedder, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.embedder = embedder
        self.clock = clock

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
        inserted = self.store.insert_episodes(
            group_id,
            session_id,
            episodes,
            vectors,
            index_vectors=index_vectors,
            created_at=iso(now),
            retry_window_start=iso(now - timedelta(seconds=RETRY_WINDOW_S)),
        )
        return inserted, pending

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
        vectors = self.embedder.embed([embedding_text(r["producer_id"], r["content"]) for r in rows])
        return self.store.set_vectors(rows, vectors)

    # -- reading ------------------------------------------------------------------------

    def recall(self, query: RecallQuery) -> tuple[list[RecallHit], bool]:
        """Hybrid recall: BM25 and vector candidates fused by weighted RRF; returns hits and whether vectors ran."""
        pool = max(MIN_CANDIDATES, (query.limit + len(query.exclude_ids)) * CANDIDATES_PER_RESULT)
        weights = query.strategy
        keyword = self._keyword_ids(query, pool) if weights.keyword_weight > 0 else []
        vector, vector_ran = self._vector_ids(query, pool) if weights.vector_weight > 0 else ([], False)
        scores = fuse([(weights.keyword_weight, keyword), (weights.vector_weight, vector)])
        ranked = [i for i in sorted(scores, key=lambda i: -scores[i]) if i not in query.exclude_ids]
        chosen = ranked[: query.limit]
        rows = self.store.fetch_episodes(chosen)
        keyword_set, vector_set = set(keyword), set(vector)
        hits = [_hit(rows[i], scores[i], keyword_set, vector_set) for i in chosen if i in rows]
        self.store.touch([h.id for h in hits], iso(self.clock()))
        return hits, vector_ran

    def _keyword_ids(self, query: RecallQuery, pool: int) -> list[int]:
        match = fts_query(query.text)
        if match is None:
            return []
        return [i for i, _ in self.store.keyword_search(query.group_id, match, query.filters, pool)]

    def _vector_ids(self, query: RecallQuery, pool: int) -> tuple[list[int], bool]:
        try:
            vector = self.embedder.embed([query.text])[0]
        except Exception as exc:  # noqa: BLE001 - keyword search still answers
            log.warning("query embedding failed, recalling by keywords only: %s", exc)
            return [], False
        if not np.any(vector):  # nothing the embedder could read: no direction to search in
            return [], False
        return [i for i, _ in self.store.vector_search(query.group_id, vector, query.filters, pool)], True

    def recent(self, group_id: str, session_id: str, limit: int) -> list[Episode]:
        """The session's newest `limit` episodes, oldest first."""
        return [episode_from_row(r) for r in self.store.recent_episodes(group_id, session_id, limit)]


def _hit(row: object, score: float, keyword: set[int], vector: set[int]) -> RecallHit:
    episode = episode_from_row(row)
    matched = [name for name, ids in (("keyword", keyword), ("vector", vector)) if episode.id in ids]
    return RecallHit(**episode.model_dump(), score=round(score, 6), matched_by=matched)  # type: ignore[arg-type]
