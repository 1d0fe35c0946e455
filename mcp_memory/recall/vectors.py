"""Exact vector search over a group's vectors held in memory.

sqlite-vec's `vec0` table stays the index of record: it is what every process writes and
what a cold or over-large group is searched with. A group searched once is loaded into a
float32 matrix (its rows L2-normalised, so a dot product is the cosine similarity) and
searched exactly with numpy: at 100k vectors a matrix-vector product is several times
faster than a `vec0` KNN scan and loses nothing against exact search. The group's
`vector_revision` (bumped by triggers on every vector change, from any process) tells
whether the copy is current; this process's own inserts are appended in place, and where the store keeps a
log of its vector changes (PostgreSQL), a copy behind catches up on just the rows that changed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from mcp_memory.store.records import Filters, VectorRows

PARALLEL_ROWS = 20_000
CATEGORIES = ("session_id", "producer_id", "role", "memory_type")


@dataclass
class Column:
    """A text column as integer codes, so a filter is one vectorised comparison."""

    codes: np.ndarray
    lookup: dict[str, int] = field(default_factory=dict)

    def encode(self, values: Sequence[str]) -> np.ndarray:
        return np.fromiter(
            (self.lookup.setdefault(v, len(self.lookup)) for v in values), np.int32, len(values)
        )


class GroupVectors:
    """One group's vectors in growable arrays; appends write in place, searches read a prefix."""

    def __init__(self, revision: int, rows: VectorRows) -> None:
        """Adopt the loaded rows' arrays as they are (normalised in place), without copying the matrix."""
        self.revision = revision
        self.size = len(rows.ids)
        self.dimension = rows.matrix.shape[1]
        self._ids = np.asarray(rows.ids, np.int64)
        self._matrix = _normalise_in_place(np.asarray(rows.matrix, np.float32))
        self._ts = np.asarray(rows.ts, np.float64)
        self._columns = {name: Column(np.empty(0, np.int32)) for name in CATEGORIES}
        for name, column in self._columns.items():
            column.codes = column.encode(getattr(rows, name))

    @property
    def nbytes(self) -> int:
        return int(
            self._matrix.nbytes + self._ids.nbytes + self._ts.nbytes + 4 * len(CATEGORIES) * len(self._ids)
        )

    def append(self, rows: VectorRows) -> None:
        """Add rows at the end, growing the arrays by doubling when full."""
        count = len(rows.ids)
        self._reserve(self.size + count)
        end = self.size + count
        self._ids[self.size : end] = rows.ids
        self._matrix[self.size : end] = _normalised(rows.matrix)
        self._ts[self.size : end] = rows.ts
        for name, column in self._columns.items():
            column.codes[self.size : end] = column.encode(getattr(rows, name))
        self.size = end

    def without(self, ids: np.ndarray) -> GroupVectors:
        """A new copy holding every row but those of these ids (the arrays of this one stay as they are, so
        searches running on it are not disturbed)."""
        n = self.size
        keep = ~np.isin(self._ids[:n], ids)
        names = {name: list(column.lookup) for name, column in self._columns.items()}
        rows = VectorRows(
            ids=self._ids[:n][keep].copy(),
            matrix=self._matrix[:n][keep],  # a copy (boolean indexing); already normalised
            ts=self._ts[:n][keep].copy(),
            **{
                name: [names[name][code] for code in column.codes[:n][keep]]
                for name, column in self._columns.items()
            },
        )
        return GroupVectors(self.revision, rows)

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._ids):
            return
        capacity = max(needed, 2 * len(self._ids), 1024)
        self._ids = grown(self._ids, capacity)
        self._matrix = grown(self._matrix, capacity)
        self._ts = grown(self._ts, capacity)
        for column in self._columns.values():
            column.codes = grown(column.codes, capacity)

    def search(
        self,
        query: np.ndarray,
        k: int,
        where: dict[str, object],
        allowed: np.ndarray | None,
        pool: ThreadPoolExecutor,
    ) -> list[tuple[int, float]]:
        """The k most similar rows meeting every condition, as (id, cosine distance), nearest first."""
        n = self.size
        ids, matrix = self._ids[:n], self._matrix[:n]
        scores = _similarities(matrix, _normalised(query[None, :])[0], pool)
        mask = self._mask(n, where, allowed)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        k = min(k, n if mask is None else int(mask.sum()))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(1.0 - scores[i])) for i in top]

    def _mask(self, n: int, where: dict[str, object], allowed: np.ndarray | None) -> np.ndarray | None:
        return where_mask(self._columns, slice(0, n), self._ts, self._ids, where, allowed)


def cache_conditions(filters: Filters) -> dict[str, object]:
    """The filters an in-memory copy checks itself (where_mask); metadata and importance are not among them."""
    conditions: dict[str, object] = {
        "session_id": filters.session_id,
        "producer_id": filters.producer,
        "role": filters.role,
        "memory_type": filters.memory_types,
        "since": filters.since,
        "until": filters.until,
    }
    if filters.session_id is not None and filters.group_wide_types:
        del conditions["session_id"]
        conditions["session_scope"] = (filters.session_id, filters.group_wide_types)
    return {name: value for name, value in conditions.items() if value is not None}


def where_mask(
    columns: Mapping[str, Column],
    rows: slice | np.ndarray,
    ts: np.ndarray,
    ids: np.ndarray,
    where: Mapping[str, object],
    allowed: np.ndarray | None,
) -> np.ndarray | None:
    """Which of `rows` meet every condition (and are `allowed`, when given); None when nothing is asked.

    `where` holds store_filters.cache_conditions(): a category column's value or tuple of values, "since" and
    "until" on the timestamps, and "session_scope", (session_id, types): the session's rows or rows of those types.
    """
    mask: np.ndarray | None = None

    def both(condition: np.ndarray) -> None:
        nonlocal mask
        mask = condition if mask is None else mask & condition

    for name, value in where.items():
        if name == "session_scope":
            session_id, types = cast(tuple[str, tuple[str, ...]], value)
            sessions, kinds = columns["session_id"], columns["memory_type"]
            in_session = sessions.codes[rows] == sessions.lookup.get(session_id, -1)
            both(in_session | np.isin(kinds.codes[rows], [kinds.lookup.get(t, -1) for t in types]))
            continue
        if name in ("since", "until"):
            times = ts[rows]
            both(times >= value if name == "since" else times <= value)  # type: ignore[operator]
            continue
        column = columns[name]
        wanted = [column.lookup.get(v, -1) for v in (value if isinstance(value, tuple) else (value,))]
        both(np.isin(column.codes[rows], wanted))
    if allowed is not None:
        both(np.isin(ids[rows], allowed))
    return mask


def _similarities(matrix: np.ndarray, query: np.ndarray, pool: ThreadPoolExecutor) -> np.ndarray:
    """matrix @ query, in two halves on two threads for large groups (numpy releases the GIL)."""
    if len(matrix) < PARALLEL_ROWS:
        return matrix @ query
    half = len(matrix) // 2
    parts = list(pool.map(lambda part: part @ query, (matrix[:half], matrix[half:])))
    return np.concatenate(parts)


def _normalised(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def _normalise_in_place(matrix: np.ndarray) -> np.ndarray:
    if not matrix.flags.writeable:
        matrix = matrix.copy()
    for start in range(0, len(matrix), 8192):  # in slices: no full-size temporary
        part = matrix[start : start + 8192]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        part /= np.where(norms == 0, 1, norms)
    return matrix


def grown(array: np.ndarray, capacity: int) -> np.ndarray:
    """A copy of the array with room for `capacity` rows, its rows kept at the front."""
    out = np.empty((capacity, *array.shape[1:]), array.dtype)
    out[: len(array)] = array
    return out


class VectorCache:
    """Groups' vectors in memory, least recently used first out, within a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._groups: OrderedDict[str, GroupVectors] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mcp-memory-search")

    def get(self, group_id: str, revision: int) -> GroupVectors | None:
        """The group's vectors if cached at this revision."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is None or group.revision != revision:
                return None
            self._groups.move_to_end(group_id)
            return group

    def loading_lock(self, group_id: str) -> threading.Lock:
        """Held while one thread loads a group, so others wait instead of loading it again."""
        with self._lock:
            return self._loading.setdefault(group_id, threading.Lock())

    def put(self, group_id: str, group: GroupVectors) -> bool:
        """Keep a loaded group, evicting the least recently used; False when it alone exceeds the budget."""
        with self._lock:
            return self._keep(group_id, group)

    def _keep(self, group_id: str, group: GroupVectors) -> bool:
        self._groups.pop(group_id, None)
        if group.nbytes > self.max_bytes:
            return False
        self._groups[group_id] = group
        while sum(g.nbytes for g in self._groups.values()) > self.max_bytes:
            self._groups.popitem(last=False)
        return True

    def appended(self, group_id: str, rows: VectorRows, before: int, after: int) -> None:
        """This process added rows, moving the group from revision `before` to `after`."""
        with self._lock:
            group = self._groups.get(group_id)
            if group is None:
                if before == 0 and len(rows.ids):  # the group's first vectors: they are its whole copy
                    self._keep(group_id, GroupVectors(after, rows))
                return
            if group.revision != before:
                return  # someone else wrote too: the copy stays behind, caught up (or reloaded) on next search
            group.append(rows)
            group.revision = after

    def held(self, group_id: str) -> GroupVectors | None:
        """The group's copy at whatever revision it is."""
        with self._lock:
            return self._groups.get(group_id)

    def caught_up(
        self, group_id: str, group: GroupVectors, changed: np.ndarray, rows: VectorRows, revision: int
    ) -> None:
        """`group` brought to `revision`: the rows of the `changed` ids replaced by `rows` (their state now;
        an id without a row was deleted). Only new rows: appended in place; else a new copy replaces it."""
        with self._lock:
            if self._groups.get(group_id) is not group or group.revision >= revision:
                return  # replaced or caught up meanwhile
            present = np.isin(changed, group._ids[: group.size])
            if present.any():
                group = group.without(changed[present])
                group.append(rows)
                group.revision = revision
                self._keep(group_id, group)
            else:
                group.append(rows)
                group.revision = revision

    def drop(self, group_id: str | None = None) -> None:
        with self._lock:
            if group_id is None:
                self._groups.clear()
            else:
                self._groups.pop(group_id, None)

    def close(self) -> None:
        self.drop()
        self.pool.shutdown(wait=False)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(g.nbytes for g in self._groups.values())
