"""What the in-memory keyword index (recall/keywords.py) reads from the database, one group at a time,
and the same ranking computed from the database when there is no copy to ask.

A group's rows and tokens in one read snapshot, a group's changes since a point (store/sqlite/fts.py's
`fts_changes`), the rows behind a set of changes, and tokenisation by the index's own tokenizer: rows and
query words are written to a temporary FTS5 table of this connection and read back as tokens, so a copy
holds exactly the tokens FTS5 holds (stemming, case and diacritic folding included). A group that is most
of the table is read from the index's `fts5vocab` view instead (every token of every row, one scan).

`group_bm25` ranks without a copy. FTS5's own bm25() cannot be used for that: its statistics (rows, mean
length, rows holding a word) are the whole table's, so one group's writes would move another's ranking,
and a MATCH cannot be limited to one group's rows (the group is a column of `episodes`, not of the index).
So the index is read instead: each query word's occurrences in the group's rows (the `fts5vocab` instance
view, looked up by term), the group's row lengths (FTS5's own per-row token counts, `episodes_fts_docsize`),
and BM25 computed from them as the copy computes it (fts.py's constants and idf). The result is the copy's
ranking exactly; it costs a read of the group's row lengths and of each query word's occurrences.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial, reduce
from typing import Any, TypeVar

import numpy as np

from mcp_memory.store.records import KeywordRows, RowTokens, TermCodes
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.connection import Database, driver

T = TypeVar("T")
_COLUMN_CODE = (
    "CASE col " + " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(fts.COLUMNS)) + " END"
)
_ATTRIBUTES = "e.id, e.group_id, e.session_id, e.producer_id, e.producer_role, e.memory_type, e.ts_epoch"


Phrase = tuple[tuple[str, ...], tuple[int, ...]]
"""A query word as the index reads it: its tokens in order (several for "garden_gate"), the columns it may
match in."""

WEIGHTS = np.asarray(fts.COLUMN_WEIGHTS, np.float64)


class KeywordReads(Database):
    """The reads behind the in-memory keyword index, one group at a time."""

    def keyword_log(self, group_id: str) -> tuple[int, int]:
        """(the group's newest change, the oldest change the log still holds); 0 for none."""
        row = self.read(
            "SELECT (SELECT coalesce(max(seq), 0) FROM fts_changes WHERE group_id = ?), "
            "(SELECT coalesce(min(seq), 0) FROM fts_changes)",
            (group_id,),
        )[0]
        return int(row[0]), int(row[1])

    def keyword_changes(self, group_id: str, after: int, limit: int) -> list[tuple[int, int]]:
        """Up to `limit` (seq, episode id) changes of the group after `after`, oldest first."""
        rows = self.read(
            "SELECT seq, episode_id FROM fts_changes WHERE group_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (group_id, after, limit),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def keyword_index_size(self) -> tuple[int, int]:
        """(rows, tokens) of the FTS table, from the totals record FTS5 keeps (no scan)."""
        block = self.read("SELECT block FROM episodes_fts_data WHERE id = 1")
        if not block or block[0][0] is None:
            return 0, 0
        values = _varints(bytes(block[0][0]))  # the row count, then each column's token count
        if not values:  # a table that has never held a row: the record is empty
            return 0, 0
        return values[0], sum(values[1:])

    def keyword_group_rows(self, group_id: str) -> int:
        """How many rows of the FTS table are the group's."""
        return int(self.read("SELECT count(*) FROM episodes WHERE group_id = ?", (group_id,))[0][0])

    def scan_group_keywords(
        self, group_id: str, consume: Callable[[int, KeywordRows, TermCodes], T], *, whole_table: bool
    ) -> T:
        """Call `consume(log head, rows, term codes)` with the group's rows and tokens, read from one snapshot.

        The tokens come from the FTS index itself: tokenised again by FTS5's tokenizer (a small group), or
        read from the index's `fts5vocab` view (`whole_table`: cheaper when the group is most of the table).
        """
        with self.snapshot() as conn:
            head = int(conn.execute("SELECT coalesce(max(seq), 0) FROM fts_changes").fetchone()[0])
            if whole_table:
                _ensure_vocabulary(conn)
                rows = _keyword_rows(
                    conn.execute(
                        f"SELECT {_ATTRIBUTES} FROM episodes e WHERE e.group_id = ? ORDER BY e.id",
                        (group_id,),
                    )
                )
                cursor = conn.execute(
                    f"SELECT term, group_concat(doc * 4 + {_COLUMN_CODE}, ' ') FROM temp.keyword_vocabulary "
                    "GROUP BY term"
                )
                codes: TermCodes = (
                    (term, np.fromstring(text, dtype=np.int64, sep=" ")) for term, text in cursor
                )  # other groups' rows among them are dropped by the index (not among `rows`)
                return consume(head, rows, codes)
            found = conn.execute(
                f"SELECT {_ATTRIBUTES}, f.producer_id, f.content, f.before, f.after FROM episodes e "
                "JOIN episodes_fts f ON f.rowid = e.id WHERE e.group_id = ? ORDER BY e.id",
                (group_id,),
            ).fetchall()
            tokens = _scratch_codes(conn, [(row[0], *row[7:]) for row in found])
        return consume(head, _keyword_rows(iter([row[:7] for row in found])), iter(tokens))

    def keyword_rows(self, ids: Sequence[int]) -> tuple[KeywordRows, RowTokens]:
        """The rows with these ids that exist now, and their tokens."""
        with self.snapshot() as conn:
            found = conn.execute(
                f"SELECT {_ATTRIBUTES}, f.producer_id, f.content, f.before, f.after FROM json_each(?) j "
                "JOIN episodes e ON e.id = j.value JOIN episodes_fts f ON f.rowid = e.id ORDER BY e.id",
                (_json_ids(ids),),
            ).fetchall()
            tokens = _tokenize(conn, [(row[0], *row[7:]) for row in found])
        return _keyword_rows(iter([row[:7] for row in found])), tokens

    def tokenize_words(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """Each word as the index's tokenizer splits and folds it, in order ("Painting" -> ("paint",))."""
        return tokenize_words(self._conn(), words)


def tokenize_words(conn: Any, words: Sequence[str]) -> list[tuple[str, ...]]:
    """Each word as the index's tokenizer splits and folds it, its tokens in the order they stand."""
    if not words:
        return []
    found: list[list[str]] = [[] for _ in words]
    with _scratch(conn, [(i, word, "", "", "") for i, word in enumerate(words)]):
        for doc, term in conn.execute(
            "SELECT doc, term FROM temp.keyword_scratch_tokens ORDER BY doc, offset"
        ):
            found[doc].append(term)
    return [tuple(tokens) for tokens in found]


def group_bm25(conn: Any, group_id: str, phrases: Sequence[Phrase]) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of the group's rows matching any phrase, ids ascending: BM25 over the group's own
    statistics, higher is better, computed as recall/keywords.py's copy computes it."""
    ids, lengths = _group_lengths(conn, group_id)
    scores = np.zeros(len(ids))
    if not len(ids):
        return ids, scores
    norm = fts.K1 * (1 - fts.B + fts.B * lengths / (lengths.sum() / len(ids)))
    _ensure_vocabulary(conn)
    for tokens, columns in phrases:
        rows, table = _phrase_counts(conn, ids, tokens)
        weighted = table[:, columns] @ WEIGHTS[list(columns)]
        rows, weighted = rows[weighted > 0], weighted[weighted > 0]
        weight = fts.idf(len(ids), len(rows))
        scores[rows] += weight * (weighted * (fts.K1 + 1)) / (weighted + norm[rows])
    matched = np.flatnonzero(scores)
    return ids[matched], scores[matched]


def _group_lengths(conn: Any, group_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The group's row ids (ascending) and each row's length in tokens, every column counted, as FTS5
    records them: a row's docsize record holds one varint per column. Read as two strings, not row by row."""
    ids_text, records = conn.execute(
        "SELECT group_concat(e.id, ' '), group_concat(hex(d.sz), '') FROM episodes e "
        "JOIN episodes_fts_docsize d ON d.id = e.id WHERE e.group_id = ?",
        (group_id,),
    ).fetchone()
    if not ids_text:
        return np.empty(0, np.int64), np.empty(0)
    ids = np.fromstring(ids_text, np.int64, sep=" ")
    data = np.frombuffer(bytes.fromhex(records), np.uint8)
    ends = np.flatnonzero(data < 0x80)  # the last byte of each varint (none here is long enough to have 9)
    position = np.arange(len(data))
    following = ends[np.searchsorted(ends, position)] - position  # bytes after this one in its varint
    values = np.add.reduceat((data & 0x7F).astype(np.int64) << (7 * following), np.r_[0, ends[:-1] + 1])
    lengths = values.reshape(len(ids), len(fts.COLUMNS)).sum(axis=1)
    order = np.argsort(ids)
    return ids[order], lengths[order].astype(np.float64)


def _phrase_counts(conn: Any, ids: np.ndarray, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which of the rows `ids` (ascending) hold the phrase, as positions in `ids`, and how often per column:
    its tokens standing in this order one after the other, as FTS5 matches a phrase. Each token's
    occurrences come from the index (`fts5vocab`, looked up by term) as one string."""
    occurrences = [_occurrences(conn, ids, token, offsets=len(tokens) > 1) for token in tokens]
    if not occurrences:
        return np.empty(0, np.int64), np.zeros((0, len(WEIGHTS)))
    codes = occurrences[0][0]  # row position * 4 + column, one per occurrence
    if len(tokens) > 1:  # where each token's occurrence says the phrase would start, in every token's list
        span = max((int(offsets.max()) for _, offsets in occurrences if len(offsets)), default=0) + len(
            tokens
        )
        starts = [found * span + offsets - i for i, (found, offsets) in enumerate(occurrences)]
        codes = reduce(partial(np.intersect1d, assume_unique=True), starts) // span
    found, counts = np.unique(codes, return_counts=True)
    rows, slot = np.unique(found >> 2, return_inverse=True)
    table = np.zeros((len(rows), len(WEIGHTS)))
    table[slot, found & 3] = counts
    return rows, table


def _occurrences(conn: Any, ids: np.ndarray, token: str, *, offsets: bool) -> tuple[np.ndarray, np.ndarray]:
    """(position in `ids` * 4 + column, and with `offsets` the token's offset in the column) of each
    occurrence of the token in those rows."""
    offset_list = "group_concat(offset, ' ')" if offsets else "NULL"
    docs, at = conn.execute(
        f"SELECT group_concat(doc * 4 + {_COLUMN_CODE}, ' '), {offset_list} FROM temp.keyword_vocabulary "
        "WHERE term = ?",
        (token,),
    ).fetchone()
    if not docs:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    codes = np.fromstring(docs, np.int64, sep=" ")
    rows = np.searchsorted(ids, codes >> 2)
    mine = rows < len(ids)
    mine[mine] = ids[rows[mine]] == codes[mine] >> 2  # other groups' rows hold it too
    where = np.fromstring(at, np.int64, sep=" ")[mine] if offsets else np.empty(0, np.int64)
    return rows[mine] * 4 + (codes[mine] & 3), where


def _keyword_rows(cursor: Iterator[Any]) -> KeywordRows:
    ids: list[int] = []
    ts: list[float] = []
    text: tuple[list[str], ...] = ([], [], [], [], [])
    for row in cursor:
        ids.append(row[0])
        for column, value in zip(text, row[1:6], strict=True):
            column.append(value)
        ts.append(row[6])
    group_id, session_id, producer_id, role, memory_type = text
    return KeywordRows(
        np.asarray(ids, np.int64),
        group_id,
        session_id,
        producer_id,
        role,
        memory_type,
        np.asarray(ts, np.float64),
    )


def _ensure_vocabulary(conn: Any) -> None:
    conn.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS temp.keyword_vocabulary USING fts5vocab(main, 'episodes_fts', 'instance')"
    )


@contextmanager
def _scratch(conn: Any, rows: Sequence[tuple[int, str, str, str, str]]) -> Iterator[None]:
    """(id, producer_id, content, before, after) rows in a temporary FTS5 table of the index's tokenizer,
    its tokens readable as `temp.keyword_scratch_tokens` (fts5vocab instance) inside the block."""
    # A fresh table each time: inserting into one emptied by DELETE costs three times as much (FTS5 merges
    # the deleted segments), and dropping and creating one takes half a millisecond.
    conn.execute("DROP TABLE IF EXISTS temp.keyword_scratch_tokens")
    conn.execute("DROP TABLE IF EXISTS temp.keyword_scratch")
    conn.execute(
        f"CREATE VIRTUAL TABLE temp.keyword_scratch USING fts5({', '.join(fts.COLUMNS)}, tokenize='{fts.TOKENIZER}')"
    )
    conn.execute(
        "CREATE VIRTUAL TABLE temp.keyword_scratch_tokens USING fts5vocab(temp, 'keyword_scratch', 'instance')"
    )
    try:
        conn.executemany(
            f"INSERT INTO temp.keyword_scratch(rowid, {', '.join(fts.COLUMNS)}) VALUES (?, ?, ?, ?, ?)", rows
        )
        yield
    finally:
        conn.execute("DROP TABLE temp.keyword_scratch_tokens")
        conn.execute("DROP TABLE temp.keyword_scratch")


def _tokenize(conn: Any, rows: Sequence[tuple[int, str, str, str, str]]) -> RowTokens:
    """Tokens of (id, producer_id, content, before, after) rows, counted per column, by FTS5's tokenizer."""
    found: RowTokens = {}
    if not rows:
        return found
    with _scratch(conn, rows):
        counted = conn.execute(
            f"SELECT doc, term, {_COLUMN_CODE}, count(*) FROM temp.keyword_scratch_tokens GROUP BY doc, term, col"
        )
        for doc, term, column, count in counted:
            found.setdefault(doc, {}).setdefault(term, [0, 0, 0, 0])[column] = count
    return found


def _scratch_codes(conn: Any, rows: Sequence[tuple[int, str, str, str, str]]) -> list[tuple[str, np.ndarray]]:
    """Term codes (as `TermCodes`) of rows tokenised by FTS5's tokenizer, read whole before the table goes."""
    if not rows:
        return []
    with _scratch(conn, rows):
        cursor = conn.execute(
            f"SELECT term, group_concat(doc * 4 + {_COLUMN_CODE}, ' ') FROM temp.keyword_scratch_tokens GROUP BY term"
        )
        return [(term, np.fromstring(text, dtype=np.int64, sep=" ")) for term, text in cursor]


def _json_ids(ids: Sequence[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def _varints(data: bytes) -> list[int]:
    """SQLite's varints (as FTS5 writes its totals record): 7 bits a byte, big end first; the 9th byte whole."""
    values, position = [], 0
    while position < len(data):
        value = 0
        for index in range(9):
            byte = data[position]
            position += 1
            if index == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        values.append(value)
    return values


class Tokenizer:
    """FTS5's tokenizer on a private in-memory SQLite database: the keyword index's tokens for a backend that
    has no FTS5 (store/postgres/), so its copies and rankings hold exactly the tokens SQLite's would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None

    def _conn(self) -> Any:
        if self._connection is None:
            self._connection = driver().connect(":memory:", check_same_thread=False, isolation_level=None)
        return self._connection

    def documents(self, rows: Sequence[tuple[int, str, str, str, str]]) -> RowTokens:
        """Tokens of (id, speaker, text, before, after) rows, counted per column."""
        with self._lock:
            return _tokenize(self._conn(), rows)

    def words(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        """Each word as the index's tokenizer splits and folds it, its tokens in order."""
        with self._lock:
            return tokenize_words(self._conn(), words)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
