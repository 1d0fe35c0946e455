"""BM25 over an in-memory copy of each group's keyword index: ranked within the group, without FTS5's
per-match cost.

FTS5's bm25() computes a score for every row holding any query word before it can sort them;
in a large group that is most of a recall's time (55 ms of 69 at 100k memories, where common
words are in a third of the rows). This module holds a group's postings in numpy arrays
(token -> the group's rows holding it, with its count in each column) and computes BM25 as FTS5 does
(its constants, per-column weights from store/sqlite/fts.py, length normalisation), with Lucene's idf (see
`fts.idf`), over the group's own statistics (its rows, their mean length, how many of them hold each word):
what one group stores never changes another group's ranking. tests/test_keyword_index.py checks the ranking
against a plain-Python BM25 over the tokens FTS5 holds, and that BM25, given FTS5's idf, against FTS5.

A group's copy is loaded the first time it is searched or written in this process, with the tokens FTS5
holds (store/sqlite/keywords.py), and kept current from the change log (`fts_changes`, store/sqlite/fts.py),
which names each change's group: a write in this process catches the group's copy up at once (the rows it
re-indexed are tokenised then, not by the next recall), a write by another process on the next search of
that group. The copies share one memory budget; the least recently used groups are dropped first. While a
large group's copy loads in the background, or when it would not fit the budget, recall asks the store, which
computes the same ranking from the FTS5 index itself (Store.search_keywords, store/sqlite/keywords.py): no
recall waits for a large load, no answer comes from a stale copy, and the ranking is the same either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np

from mcp_memory.recall.vectors import Column, cache_conditions, grown, where_mask
from mcp_memory.store.protocol import KeywordFeed, SearchStore
from mcp_memory.store.records import Filters, KeywordRows, RowTokens, TermCodes
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.fts import K1, B, idf

log = logging.getLogger(__name__)

WEIGHTS = np.asarray(fts.COLUMN_WEIGHTS, np.float64)
CATEGORIES = ("group_id", "session_id", "producer_id", "role", "memory_type")
# The budget check before a load, from the table's running totals: at most one posting (row id and
# four counts, 8 bytes) per token, and the per-row arrays.
BYTES_PER_TOKEN = 8
BYTES_PER_ROW = 64
SYNC_LOAD_ROWS = 20_000  # a load this cheap runs in the call that needs it (about 0.4 s of vocabulary scan)
# Tokenising a group's rows again costs about this many rows of the whole-table vocabulary scan per row: a
# group under 1/TOKENIZE_COST of the table is tokenised, a larger one read from the scan.
TOKENIZE_COST = 6
MAX_CATCH_UP = 5_000  # more log entries than this since the copy's point: reload instead of replaying
# Rows re-read since the load beyond this share of it (and at least RELOAD_MIN): reload in the background.
RELOAD_SHARE = 0.1
RELOAD_MIN = 2_000
RETRY_AFTER_S = 60.0  # after a load failed or did not fit, when to look again
MAX_WORDS = 50_000  # the word -> token memo is cleared past this


class KeywordIndex:
    """The FTS table's postings and row attributes at one point of the change log."""

    def __init__(self, head: int, rows: KeywordRows, codes: TermCodes) -> None:
        self.seq = head
        self.base_rows = len(rows.ids)
        self.size = 0
        self._base_ids = rows.ids
        self._ids = np.empty(0, np.int64)
        self._alive = np.empty(0, np.bool_)
        self._length = np.empty(0, np.float64)
        self._ts = np.empty(0, np.float64)
        self._columns = {name: Column(np.empty(0, np.int32)) for name in CATEGORIES}
        self._append_rows(rows, np.zeros(len(rows.ids)))
        self.rows = self.base_rows
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for token, occurrences in codes:
            posting = self._posting(occurrences)
            if len(posting[0]):  # a token only other groups' rows hold (the whole-table scan) is left out
                self._postings[token] = posting
        self.tokens = float(self._length[: self.size].sum())
        self._moved: dict[int, int] = {}  # id -> row, for rows re-read since the load
        self._added: dict[str, tuple[list[int], list[list[int]]]] = {}
        self._norm_key: tuple[int, int, float] | None = None
        self._norm_cache = np.empty(0)

    def _posting(self, occurrences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, counts per column) from one token's occurrences (row id * 4 + column, ascending)."""
        starts = np.flatnonzero(np.r_[True, occurrences[1:] != occurrences[:-1]])
        unique = occurrences[starts]
        counts = np.diff(np.r_[starts, len(occurrences)])
        rows = np.searchsorted(self._base_ids, unique >> 2)
        known = rows < self.base_rows
        known[known] = self._base_ids[rows[known]] == unique[known] >> 2
        rows, columns, counts = rows[known], unique[known] & 3, counts[known]
        np.add.at(self._length, rows, counts)
        first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.empty(0, np.bool_)
        slot = np.cumsum(first) - 1
        table = np.zeros(
            (int(first.sum()), len(WEIGHTS)), np.uint8 if counts.max(initial=0) < 256 else np.uint16
        )
        table[slot, columns] = counts
        return rows[first].astype(np.int32), table

    # -- catching up ------------------------------------------------------------------------

    @property
    def added_rows(self) -> int:
        return self.size - self.base_rows

    def apply(self, head: int, changed: Sequence[int], rows: KeywordRows, tokens: RowTokens) -> None:
        """The changed ids as they are now: `rows` (with their tokens) replace them, the rest are gone."""
        for episode_id in changed:
            row = self._row_of(episode_id)
            if row is not None:
                self._alive[row] = False
                self.rows -= 1
                self.tokens -= self._length[row]
        first = self.size
        lengths = np.asarray([sum(map(sum, tokens.get(int(i), {}).values())) for i in rows.ids], np.float64)
        self._append_rows(rows, lengths)
        for offset, episode_id in enumerate(rows.ids.tolist()):
            row = first + offset
            self._moved[episode_id] = row
            for token, counts in tokens.get(episode_id, {}).items():
                added = self._added.setdefault(token, ([], []))
                added[0].append(row)
                added[1].append(counts)
        self.rows += len(rows.ids)
        self.tokens += float(lengths.sum())
        self.seq = head

    def _row_of(self, episode_id: int) -> int | None:
        row = self._moved.get(episode_id)
        if row is None:
            found = int(np.searchsorted(self._base_ids, episode_id))
            if found >= self.base_rows or self._base_ids[found] != episode_id:
                return None
            row = found
        return row if self._alive[row] else None

    def _append_rows(self, rows: KeywordRows, lengths: np.ndarray) -> None:
        count, end = len(rows.ids), self.size + len(rows.ids)
        if end > len(self._ids):
            capacity = max(end, 2 * len(self._ids) if self.size else end, 64)
            self._ids, self._alive, self._length, self._ts = (
                grown(a, capacity) for a in (self._ids, self._alive, self._length, self._ts)
            )
            for column in self._columns.values():
                column.codes = grown(column.codes, capacity)
        self._ids[self.size : end] = rows.ids
        self._alive[self.size : end] = True
        self._length[self.size : end] = lengths
        self._ts[self.size : end] = rows.ts
        for name, column in self._columns.items():
            column.codes[self.size : end] = column.encode(getattr(rows, name))
        self.size += count

    # -- searching --------------------------------------------------------------------------

    def search(
        self,
        phrases: Sequence[tuple[str, tuple[int, ...]]],
        group_id: str,
        where: dict[str, object],
        allowed: np.ndarray | None,
        k: int,
    ) -> list[tuple[int, float]]:
        """The group's k best rows for (token, columns) phrases ORed, as (id, bm25) like FTS5: lower is better."""
        groups = self._columns["group_id"]
        group = groups.lookup.get(group_id)
        if group is None or self.rows == 0 or k <= 0:
            return []
        alone = len(groups.lookup) == 1  # the common case: one group, nothing to mask out
        norm = self._norm()
        scores = np.zeros(self.size)
        for token, columns in phrases:
            rows, weighted = self._matches(token, columns)
            hits = len(rows)
            weight = idf(self.rows, hits)
            if not alone:
                mine = groups.codes[rows] == group
                rows, weighted = rows[mine], weighted[mine]
            scores[rows] += weight * (weighted * (K1 + 1)) / (weighted + norm[rows])
        candidates = np.flatnonzero(scores)
        mask = where_mask(self._columns, candidates, self._ts, self._ids, where, allowed)
        if mask is not None:
            candidates = candidates[mask]
        values = scores[candidates]
        if k < len(candidates):  # keep all tied with the k-th best: ties go by id, as in FTS5's order
            keep = values >= np.partition(values, len(values) - k)[len(values) - k]
            candidates, values = candidates[keep], values[keep]
        order = np.lexsort((self._ids[candidates], -values))[:k]
        return [(int(self._ids[candidates[i]]), -float(values[i])) for i in order]

    def _norm(self) -> np.ndarray:
        """Each row's length normalisation, k1 * (1 - b + b * length / mean length), kept until rows change."""
        key = (self.size, self.rows, self.tokens)
        if self._norm_key != key:
            mean_length = self.tokens / self.rows
            self._norm_cache = K1 * (1 - B + B * self._length[: self.size] / mean_length)
            self._norm_key = key
        return self._norm_cache

    def _matches(self, token: str, columns: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Every live row holding the token in one of the columns, with its column-weighted count."""
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        base = self._postings.get(token)
        if base is not None:
            parts.append(base)
        added = self._added.get(token)
        if added is not None:
            parts.append((np.asarray(added[0], np.int32), np.asarray(added[1], np.int64)))
        found_rows, found_weights = [], []
        for rows, table in parts:
            weighted = table[:, columns] @ WEIGHTS[list(columns)]
            keep = (weighted > 0) & self._alive[rows]
            found_rows.append(rows[keep])
            found_weights.append(weighted[keep])
        if not found_rows:
            return np.empty(0, np.int32), np.empty(0, np.float64)
        return np.concatenate(found_rows), np.concatenate(found_weights)

    @property
    def nbytes(self) -> int:
        postings = sum(rows.nbytes + table.nbytes for rows, table in self._postings.values())
        per_row = self._ids.nbytes + self._alive.nbytes + self._length.nbytes + self._ts.nbytes
        return int(postings + per_row + 4 * len(CATEGORIES) * len(self._ids) + 64 * len(self._moved))


class Store(KeywordFeed, SearchStore, Protocol):
    """What the copies are loaded from, and the candidate ids of filters they cannot check."""


class KeywordSearch:
    """Keeps a KeywordIndex per group current with the database and answers from it; None: ask the store."""

    def __init__(self, store: Store, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.sync_load_rows = SYNC_LOAD_ROWS
        self._groups: OrderedDict[str, KeywordIndex] = OrderedDict()  # least recently used first
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._words: dict[str, tuple[str, ...]] = {}
        self._loader: ThreadPoolExecutor | None = None
        self._loads: dict[str, Future[None]] = {}
        self._wait_until: dict[str, float] = {}
        self._closed = False
        self._deferred = threading.local()  # per recall: the background loads it asked for

    def close(self) -> None:
        """Stop the loads under way (waiting for them) and let the copies go."""
        with self._lock:
            self._closed = True
            loader, self._loader = self._loader, None
            self._groups.clear()
            self._sizes.clear()
        if loader is not None:
            loader.shutdown(wait=True, cancel_futures=True)

    @property
    def nbytes(self) -> int:
        """What the copies held now take, as measured when each was loaded."""
        return sum(self._sizes.values())

    def search_text(
        self, text: str, participants: Iterable[str], group_id: str, filters: Filters, k: int
    ) -> list[tuple[int, float]] | None:
        """The group's k best matches for a query (its words as fts.query_words reads them); None: ask the store."""
        words = fts.query_words(text, participants)
        return self.search(words, group_id, filters, k) if words else []

    def search(
        self, words: Sequence[tuple[str, tuple[int, ...]]], group_id: str, filters: Filters, k: int
    ) -> list[tuple[int, float]] | None:
        """The group's k best matches for fts.query_words output, ranked by the group's BM25; None: ask the store."""
        index = self.current(group_id)
        if index is None:
            return None
        tokens = self._tokens([word for word, _ in words])
        if any(len(t) != 1 for t in tokens):  # a phrase of several tokens, or none: the store ranks it
            return None
        phrases = [(t[0], columns) for t, (_, columns) in zip(tokens, words, strict=True)]
        allowed = None
        if filters.beyond_cache:
            allowed = self.store.candidate_ids(group_id, filters)
        with self._lock:
            return index.search(phrases, group_id, cache_conditions(filters), allowed, k)

    def defer_loads(self) -> None:
        """Hold back the background loads this thread asks for until start_deferred_loads (a recall defers
        them until it has answered, so they do not compete with the store searching in the copy's place)."""
        self._deferred.loads = []

    def start_deferred_loads(self) -> None:
        loads, self._deferred.loads = getattr(self._deferred, "loads", None) or [], None
        for group_id, whole_table in loads:
            with self._lock:
                if not self._closed:
                    self._submit(group_id, whole_table)

    def refresh(self, group_id: str) -> None:
        """After this process wrote to the group: bring its copy up to date now (loading it if it is small),
        so the next recall reads and tokenises nothing."""
        self.current(group_id)

    def current(self, group_id: str) -> KeywordIndex | None:
        """The group's copy, caught up with the change log; None while there is none to answer from."""
        head, start = self.store.keyword_log(group_id)
        with self._lock:
            if self._closed:
                return None
            index = self._groups.get(group_id)
            if index is not None and index.seq < head and not self._catch_up(group_id, index, start):
                self._drop(group_id)
                index = None
            if index is None:
                return self._begin_load(group_id)
            self._groups.move_to_end(group_id)
            if index.added_rows > max(RELOAD_MIN, RELOAD_SHARE * index.base_rows):
                self._begin_load(group_id, background=True)
            return index

    def _catch_up(self, group_id: str, index: KeywordIndex, start: int) -> bool:
        if start > index.seq + 1:
            return False  # the log has forgotten changes after the copy's point
        changes = self.store.keyword_changes(group_id, index.seq, MAX_CATCH_UP + 1)
        if len(changes) > MAX_CATCH_UP:
            return False  # more than is worth replaying
        if changes:
            changed = sorted({episode_id for _, episode_id in changes})
            rows, tokens = self.store.keyword_rows(changed)
            index.apply(changes[-1][0], changed, rows, tokens)
        return True

    def _drop(self, group_id: str) -> None:
        self._groups.pop(group_id, None)
        self._sizes.pop(group_id, None)

    def _begin_load(self, group_id: str, *, background: bool = False) -> KeywordIndex | None:
        """Load the group now (a cheap load, no copy yet) or on the loader thread; returns what answers now."""
        loading = self._loads.get(group_id)
        if time.monotonic() < self._wait_until.get(group_id, 0.0) or (
            loading is not None and not loading.done()
        ):
            return self._groups.get(group_id)
        table_rows, table_tokens = self.store.keyword_index_size()
        rows = self.store.keyword_group_rows(group_id)
        tokens = rows * table_tokens / table_rows if table_rows else 0.0
        if tokens * BYTES_PER_TOKEN + rows * BYTES_PER_ROW > self.max_bytes:
            log.info(
                "keyword index of group %r (%d rows) is over its memory budget: the store answers",
                group_id,
                rows,
            )
            self._wait_until[group_id] = time.monotonic() + RETRY_AFTER_S
            return self._groups.get(group_id)
        whole_table = rows * TOKENIZE_COST > table_rows
        effort = table_rows if whole_table else rows * TOKENIZE_COST
        if not background and group_id not in self._groups and effort <= self.sync_load_rows:
            index = self._load_now(group_id, whole_table)
            if index is not None:
                self._adopt(group_id, index)
            return index
        deferred = getattr(self._deferred, "loads", None)
        if deferred is not None:
            deferred.append((group_id, whole_table))
        else:
            self._submit(group_id, whole_table)
        return self._groups.get(group_id)

    def _submit(self, group_id: str, whole_table: bool) -> None:
        """Load the group on the loader thread, unless a load of it is under way (the caller holds the lock)."""
        loading = self._loads.get(group_id)
        if loading is not None and not loading.done():
            return
        if self._loader is None:
            self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcp-memory-keywords")
        self._loads[group_id] = self._loader.submit(self._load_in_background, group_id, whole_table)

    def _load_now(self, group_id: str, whole_table: bool) -> KeywordIndex | None:
        try:
            return self.store.scan_group_keywords(group_id, KeywordIndex, whole_table=whole_table)
        except Exception as exc:  # noqa: BLE001 - the store keeps answering; look again later
            log.warning("could not load the keyword index of group %r into memory: %s", group_id, exc)
            self._wait_until[group_id] = time.monotonic() + RETRY_AFTER_S
            return None

    def _load_in_background(self, group_id: str, whole_table: bool) -> None:
        index = self._load_now(group_id, whole_table)
        if index is not None:
            with self._lock:
                if not self._closed:
                    self._adopt(group_id, index)

    def _adopt(self, group_id: str, index: KeywordIndex) -> None:
        """Hold the group's copy; drop the least recently used others while the copies exceed the budget."""
        self._groups[group_id] = index
        self._groups.move_to_end(group_id)
        self._sizes[group_id] = index.nbytes
        while self.nbytes > self.max_bytes and len(self._groups) > 1:
            oldest = next(iter(self._groups))
            self._drop(oldest)

    def _tokens(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        known = {word: self._words.get(word) for word in words}
        new = [word for word, tokens in known.items() if tokens is None]
        if new:
            fresh = dict(zip(new, self.store.tokenize_words(new), strict=True))
            known.update(fresh)
            if len(self._words) > MAX_WORDS:
                self._words = {}
            self._words.update(fresh)
        return [known[word] or () for word in words]
