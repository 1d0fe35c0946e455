"""What the in-memory keyword index (recall/keywords.py) reads from the database, one group at a time.

A group's rows and tokens in one read snapshot, a group's changes since a point (store/sqlite/fts.py's
`fts_changes`), the rows behind a set of changes, and tokenisation by the index's own tokenizer: rows and
query words are written to a temporary FTS5 table of this connection and read back as tokens, so a copy
holds exactly the tokens FTS5 holds (stemming, case and diacritic folding included). A group that is most
of the table is read from the index's `fts5vocab` view instead (every token of every row, one scan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.connection import Database

T = TypeVar("T")
_COLUMN_CODE = (
    "CASE col " + " ".join(f"WHEN '{name}' THEN {i}" for i, name in enumerate(fts.COLUMNS)) + " END"
)
_ATTRIBUTES = "e.id, e.group_id, e.session_id, e.producer_id, e.producer_role, e.memory_type, e.ts_epoch"


@dataclass
class KeywordRows:
    """Rows of the FTS table with the episode columns recall filters on; ids ascending."""

    ids: np.ndarray  # int64
    group_id: list[str]
    session_id: list[str]
    producer_id: list[str]
    role: list[str]
    memory_type: list[str]
    ts: np.ndarray  # float64 epoch seconds


TermCodes = Iterator[tuple[str, np.ndarray]]
"""(token, every occurrence of it as row id * 4 + column index, ascending), token by token."""

RowTokens = dict[int, dict[str, list[int]]]
"""Row id -> token -> its count in each of the four columns."""


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
        """Each word as the index's tokenizer splits and folds it ("Painting" -> ("paint",))."""
        conn = self._conn()
        found = _tokenize(conn, [(i, word, "", "", "") for i, word in enumerate(words)])
        return [
            tuple(term for term, counts in found.get(i, {}).items() for _ in range(sum(counts)))
            for i in range(len(words))
        ]


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
