"""The keyword index on PostgreSQL: each episode's row as FTS5 would hold it, tokenised by FTS5's tokenizer.

PostgreSQL's own text search is not BM25 (`ts_rank_cd`'s top 10 overlapped true BM25 by 3 to 6 of 10 here)
and does not tokenize as FTS5 does, so the rows are composed as on SQLite (store/sqlite/fts.py's
`keyword_documents`: speaker, text, the turns before and after) and split by FTS5's own tokenizer on a
private in-memory SQLite database (store/sqlite/keywords.py's `Tokenizer`). Each row is stored as its
(term, column, count) triples and its length; `groups.keyword_rows` and `keyword_tokens` keep the group's
totals (a trigger), and every row written or deleted is a change in the group's feed (migrations.py).

Recall ranks from an in-memory copy of the group's rows (recall/keywords.py), loaded from `scan_group_keywords`
and kept current from the feed; until it is loaded, `search_keywords` computes the same BM25 from the rows
holding a query term (the GIN index on terms finds them). One difference from SQLite: a query word that
splits into several tokens ("garden_gate") matches rows holding all of them, not only side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from mcp_memory.store.postgres.connection import PgDatabase
from mcp_memory.store.postgres.filters import filter_sql
from mcp_memory.store.records import Filters, KeywordRows, RowTokens, TermCodes
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.keywords import Tokenizer

T = TypeVar("T")
WEIGHTS = np.asarray(fts.COLUMN_WEIGHTS, np.float64)
_TURNS = "AND NOT (memory_type = ANY(%s)) "
_SELECT = "SELECT id, sequence, producer_id, content, memory_type FROM episodes WHERE group_id = %s AND session_id = %s "
_ATTRIBUTES = "e.id, e.group_id, e.session_id, e.producer_id, e.producer_role, e.memory_type, e.ts_epoch"


def refresh_keywords(
    conn: Any, tokenizer: Tokenizer, group_id: str, session_id: str, low: int, high: int
) -> None:
    """Re-compose and store the keyword rows of the session's episodes in [low, high] and of every neighbour
    whose context holds them (inside the caller's transaction, the group locked)."""
    span = fts.TURNS_BEFORE + fts.TURNS_AFTER
    standalone = list(fts.STANDALONE_TYPES)
    earlier = conn.execute(
        _SELECT + _TURNS + "AND sequence < %s ORDER BY sequence DESC LIMIT %s",
        (group_id, session_id, standalone, low, span),
    ).fetchall()[::-1]
    inside = conn.execute(
        _SELECT + "AND sequence BETWEEN %s AND %s ORDER BY sequence", (group_id, session_id, low, high)
    ).fetchall()
    later = conn.execute(
        _SELECT + _TURNS + "AND sequence > %s ORDER BY sequence LIMIT %s",
        (group_id, session_id, standalone, high, span),
    ).fetchall()
    documents = fts.keyword_documents(earlier, inside, later)
    write_keyword_rows(conn, tokenizer, group_id, documents)


def write_keyword_rows(
    conn: Any, tokenizer: Tokenizer, group_id: str, documents: Sequence[fts.Document]
) -> None:
    if not documents:
        return
    tokens = tokenizer.documents(documents)
    rows = []
    for document in documents:
        terms, columns, counts = [], [], []
        for term, per_column in tokens.get(document[0], {}).items():
            for column, count in enumerate(per_column):
                if count:
                    terms.append(term)
                    columns.append(column)
                    counts.append(count)
        rows.append((document[0], group_id, terms, columns, counts, sum(counts)))
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO keyword_rows(episode_id, group_id, terms, columns, counts, length) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (episode_id) DO UPDATE SET terms = excluded.terms, "
            "columns = excluded.columns, counts = excluded.counts, length = excluded.length",
            rows,
        )


class KeywordReads(PgDatabase):
    """What the in-memory keyword index reads, and the cold-path search."""

    tokenizer: Tokenizer

    def keyword_log(self, group_id: str) -> tuple[int, int]:
        """(the group's newest change, the oldest change of the group the feed still holds; 0 for none)."""
        row = self._rows(
            "SELECT (SELECT change_seq FROM groups WHERE group_id = %s), "
            "(SELECT coalesce(min(seq), 0) FROM changes WHERE group_id = %s)",
            (group_id, group_id),
        )[0]
        return int(row[0] or 0), int(row[1])

    def keyword_changes(self, group_id: str, after: int, limit: int) -> list[tuple[int, int]]:
        rows = self._rows(
            "SELECT seq, episode_id FROM changes WHERE group_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (group_id, after, limit),
        )
        return [(int(r[0]), int(r[1])) for r in rows]

    def keyword_index_size(self) -> tuple[int, int]:
        row = self._rows(
            "SELECT coalesce(sum(keyword_rows), 0), coalesce(sum(keyword_tokens), 0) FROM groups"
        )[0]
        return int(row[0]), int(row[1])

    def keyword_group_rows(self, group_id: str) -> int:
        rows = self._rows("SELECT keyword_rows FROM groups WHERE group_id = %s", (group_id,))
        return int(rows[0][0]) if rows else 0

    def scan_group_keywords(
        self, group_id: str, consume: Callable[[int, KeywordRows, TermCodes], T], *, whole_table: bool
    ) -> T:
        """`consume(feed head, rows, term codes)` with the group's rows and tokens, from one snapshot
        (`whole_table` means nothing here: every group is read from its own rows)."""

        def scan(conn: Any) -> tuple[int, KeywordRows, list[tuple[str, np.ndarray]]]:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = conn.execute("SELECT change_seq FROM groups WHERE group_id = %s", (group_id,)).fetchone()
            rows = _keyword_rows(
                conn.execute(
                    f"SELECT {_ATTRIBUTES} FROM keyword_rows k JOIN episodes e ON e.id = k.episode_id "
                    "WHERE k.group_id = %s ORDER BY e.id",
                    (group_id,),
                ).fetchall()
            )
            cursor = conn.execute(  # each term's occurrences as two strings of numbers: parsed in C, not as lists
                "SELECT u.term, string_agg((k.episode_id * 4 + u.col)::text, ' ' ORDER BY k.episode_id, u.col), "
                "string_agg(u.cnt::text, ' ' ORDER BY k.episode_id, u.col) FROM keyword_rows k, "
                "unnest(k.terms, k.columns, k.counts) AS u(term, col, cnt) WHERE k.group_id = %s GROUP BY u.term",
                (group_id,),
            )
            codes = [
                (
                    term,
                    np.repeat(
                        np.fromstring(found, np.int64, sep=" "), np.fromstring(counts, np.int64, sep=" ")
                    ),
                )
                for term, found, counts in cursor
            ]
            return (int(head[0]) if head else 0), rows, codes

        head, rows, codes = self._run(scan)
        return consume(head, rows, iter(codes))

    def keyword_rows(self, ids: Sequence[int]) -> tuple[KeywordRows, RowTokens]:
        """The rows with these ids that exist now, and their tokens."""
        found = self._rows(
            f"SELECT {_ATTRIBUTES}, k.terms, k.columns, k.counts FROM keyword_rows k "
            "JOIN episodes e ON e.id = k.episode_id WHERE k.episode_id = ANY(%s) ORDER BY e.id",
            (list(ids),),
        )
        tokens: RowTokens = {}
        for row in found:
            per_row = tokens.setdefault(row[0], {})
            for term, column, count in zip(row[7], row[8], row[9], strict=True):
                per_row.setdefault(term, [0, 0, 0, 0])[column] = count
        return _keyword_rows([row[:7] for row in found]), tokens

    def tokenize_words(self, words: Sequence[str]) -> list[tuple[str, ...]]:
        return self.tokenizer.words(words)

    def search_keywords(
        self, group_id: str, text: str, participants: Iterable[str], filters: Filters, k: int
    ) -> list[tuple[int, float]]:
        """The group's k best keyword matches, ranked by the group's BM25 as the in-memory copy ranks."""
        words = fts.query_words(text, participants)
        if not words or k <= 0:
            return []
        phrases = [
            (tokens, columns)
            for tokens, (_, columns) in zip(self.tokenizer.words([w for w, _ in words]), words, strict=True)
            if tokens
        ]
        terms = sorted({token for tokens, _ in phrases for token in tokens})
        if not terms:
            return []
        where, params = filter_sql(filters)

        def read(conn: Any) -> tuple[Any, list[Any], set[int] | None]:
            totals = conn.execute(
                "SELECT keyword_rows, keyword_tokens FROM groups WHERE group_id = %s", (group_id,)
            ).fetchone()
            found = conn.execute(  # per matching row, only the query terms' places in its arrays
                "SELECT k.episode_id, k.length, q.term, k.columns[i], k.counts[i] FROM keyword_rows k "
                "CROSS JOIN unnest(%s::text[]) AS q(term) CROSS JOIN LATERAL unnest(array_positions(k.terms, "
                "q.term)) AS i WHERE k.group_id = %s AND k.terms && %s::text[]",
                (terms, group_id, terms),
            ).fetchall()
            kept = None
            if where and found:
                ids = sorted({row[0] for row in found})
                kept = {
                    row[0]
                    for row in conn.execute(
                        f"SELECT e.id FROM episodes e WHERE e.id = ANY(%s) AND e.group_id = %s {where}",
                        (ids, group_id, *params),
                    )
                }
            return totals, found, kept

        totals, found, kept = self._run(read)
        if not totals or not totals[0] or not found:
            return []
        return _rank(int(totals[0]), float(totals[1]), found, phrases, kept, k)


def _rank(
    group_rows: int,
    group_tokens: float,
    found: Sequence[Any],
    phrases: Sequence[tuple[tuple[str, ...], tuple[int, ...]]],
    kept: set[int] | None,
    k: int,
) -> list[tuple[int, float]]:
    """BM25 over the group's statistics, as recall/keywords.py's copy computes it, from (episode id, row
    length, term, column, count) rows."""
    episode_ids = np.fromiter((row[0] for row in found), np.int64, len(found))
    ids, slot = np.unique(episode_ids, return_inverse=True)
    lengths = np.zeros(len(ids))
    lengths[slot] = np.fromiter((row[1] for row in found), np.float64, len(found))
    terms = np.asarray([row[2] for row in found], dtype=object)
    columns = np.fromiter((row[3] for row in found), np.int64, len(found))
    counts = np.fromiter((row[4] for row in found), np.float64, len(found))
    tables: dict[str, np.ndarray] = {}
    for term in set(terms.tolist()):
        mine = terms == term
        table = np.zeros((len(ids), len(WEIGHTS)))
        np.add.at(table, (slot[mine], columns[mine]), counts[mine])
        tables[term] = table
    norm = fts.K1 * (1 - fts.B + fts.B * lengths / (group_tokens / group_rows))
    scores = np.zeros(len(ids))
    for tokens, where in phrases:
        weighted = np.full(len(ids), np.inf)
        for token in tokens:  # a word of several tokens: rows holding all of them, the rarest count
            held = tables.get(token)
            weighted = np.minimum(weighted, 0.0 if held is None else held[:, where] @ WEIGHTS[list(where)])
        rows = np.flatnonzero(weighted > 0)
        weight = fts.idf(group_rows, len(rows))
        scores[rows] += weight * (weighted[rows] * (fts.K1 + 1)) / (weighted[rows] + norm[rows])
    matched = np.flatnonzero(scores)
    if kept is not None:
        matched = matched[np.isin(ids[matched], list(kept))]
    order = np.lexsort((ids[matched], -scores[matched]))[:k]
    return [(int(ids[matched][i]), -float(scores[matched][i])) for i in order]


def _keyword_rows(rows: Sequence[Any]) -> KeywordRows:
    return KeywordRows(
        np.asarray([row[0] for row in rows], np.int64),
        [row[1] for row in rows],
        [row[2] for row in rows],
        [row[3] for row in rows],
        [row[4] for row in rows],
        [row[5] for row in rows],
        np.asarray([row[6] for row in rows], np.float64),
    )
