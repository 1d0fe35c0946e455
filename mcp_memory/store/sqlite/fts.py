"""The keyword index: each turn indexed with the turns around it.

A reply often carries the answer while the question it answers carries the words
("What did you paint?" / "A sunrise over the lake"). So the FTS5 row of every episode
holds its speaker, its own text, and, in two weaker columns, the text of the turns just
before and just after it in its session. On LoCoMo this document expansion is worth
about eight points of recall@10 over the turn alone (bench/locomo.py). The columns are
rebuilt whenever a neighbour is added or deleted, so deleted text never stays findable.
A fact (store/sqlite/facts.py) or a session summary (llm/summaries.py) is a statement complete in itself:
it is indexed alone, and it is no turn's neighbour, so its words never make the turns stored
beside it match.

Every row written (and every episode deleted) is also logged in `fts_changes` with its group, so a process
holding a group's index in memory (recall/keywords.py) can catch up on what it and other processes changed
in that group by re-reading just those rows; the log keeps its newest KEEP_CHANGES entries.

Functions here take an open connection inside the caller's transaction; store/sqlite/store.py owns it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from mcp_memory.store.records import FACT_MEMORY_TYPE, SUMMARY_MEMORY_TYPE

STANDALONE_TYPES = (FACT_MEMORY_TYPE, SUMMARY_MEMORY_TYPE)

TURNS_BEFORE = 3
TURNS_AFTER = 2
CONTEXT_CHARS_PER_TURN = 1000
COLUMNS = ("producer_id", "content", "before", "after")
# bm25() weights, in column order: speaker, content, before, after.
COLUMN_WEIGHTS = (0.5, 1.0, 0.5, 0.2)
SPEAKER_COLUMNS = (0,)
TEXT_COLUMNS = (1, 2, 3)
TOKENIZER = "porter unicode61 remove_diacritics 2"
K1, B = 1.2, 0.75  # FTS5's bm25() constants

CREATE_TABLE = f"CREATE VIRTUAL TABLE episodes_fts USING fts5({', '.join(COLUMNS)}, tokenize='{TOKENIZER}')"
CREATE_DELETE_TRIGGER = (
    "CREATE TRIGGER episodes_fts_delete AFTER DELETE ON episodes BEGIN "
    "DELETE FROM episodes_fts WHERE rowid = old.id; END"
)
KEEP_CHANGES = 50_000
_SELECT = "SELECT id, sequence, producer_id, content, memory_type FROM episodes WHERE group_id = ? AND session_id = ? "
_TURNS = "AND memory_type NOT IN (" + ", ".join(f"'{t}'" for t in STANDALONE_TYPES) + ") "


def refresh_around(
    conn: Any, group_id: str, session_id: str, low: int, high: int, *, log_changes: bool = True
) -> None:
    """Re-index the session's episodes with sequence in [low, high] and every neighbour whose context they are in."""
    span = TURNS_BEFORE + TURNS_AFTER
    before = conn.execute(
        _SELECT + _TURNS + "AND sequence < ? ORDER BY sequence DESC LIMIT ?",
        (group_id, session_id, low, span),
    )
    middle = conn.execute(
        _SELECT + "AND sequence BETWEEN ? AND ? ORDER BY sequence", (group_id, session_id, low, high)
    )
    after = conn.execute(
        _SELECT + _TURNS + "AND sequence > ? ORDER BY sequence LIMIT ?", (group_id, session_id, high, span)
    )
    documents = keyword_documents(before.fetchall()[::-1], middle.fetchall(), after.fetchall())
    for document in documents:
        _write(conn, *document)
    if log_changes and documents:
        _log(conn, group_id, [document[0] for document in documents])


Document = tuple[int, str, str, str, str]
"""An episode's row of the keyword index: (id, speaker, text, the turns before, the turns after)."""


def keyword_documents(earlier: Sequence[Any], inside: Sequence[Any], later: Sequence[Any]) -> list[Document]:
    """The index rows to write when the episodes `inside` (a span of a session) changed: theirs, and those of
    the neighbours whose context holds them. Rows are (id, sequence, producer_id, content, memory_type),
    `earlier` the span's TURNS_BEFORE + TURNS_AFTER turns before it and `later` as many after, in order
    (facts and summaries left out of both). Every backend composes its keyword rows here."""
    documents: list[Document] = [
        (row[0], row[2], row[3], "", "") for row in inside if row[4] in STANDALONE_TYPES
    ]
    turns = [row for row in inside if row[4] not in STANDALONE_TYPES]
    rows = [*earlier, *turns, *later]
    first = max(0, len(earlier) - TURNS_AFTER)
    last = len(earlier) + len(turns) + min(len(later), TURNS_BEFORE)
    for index in range(first, last):
        episode_id, _, producer_id, content, _ = rows[index]
        before = _joined(rows[max(0, index - TURNS_BEFORE) : index])
        after = _joined(rows[index + 1 : index + 1 + TURNS_AFTER])
        documents.append((episode_id, producer_id, content, before, after))
    return documents


def _log(conn: Any, group_id: str, episode_ids: Sequence[int]) -> None:
    conn.executemany(
        "INSERT INTO fts_changes(episode_id, group_id) VALUES (?, ?)", [(i, group_id) for i in episode_ids]
    )
    conn.execute(
        "DELETE FROM fts_changes WHERE seq <= (SELECT max(seq) FROM fts_changes) - ?", (KEEP_CHANGES,)
    )


def _write(conn: Any, episode_id: int, producer_id: str, content: str, before: str, after: str) -> None:
    conn.execute("DELETE FROM episodes_fts WHERE rowid = ?", (episode_id,))
    conn.execute(
        "INSERT INTO episodes_fts(rowid, producer_id, content, before, after) VALUES (?, ?, ?, ?, ?)",
        (episode_id, producer_id, content, before, after),
    )


def _joined(rows: Sequence[Any]) -> str:
    return "\n".join(row[3][:CONTEXT_CHARS_PER_TURN] for row in rows)


def rebuild_all(conn: Any) -> None:
    """Index every session from scratch (used by the migration that introduced the context columns,
    which ran before the change log existed)."""
    sessions = conn.execute(
        "SELECT group_id, session_id, min(sequence), max(sequence) FROM episodes GROUP BY group_id, session_id"
    ).fetchall()
    for group_id, session_id, low, high in sessions:
        refresh_around(conn, group_id, session_id, low, high, log_changes=False)


# -- ranking ------------------------------------------------------------------------------
# A group's BM25 is FTS5's (K1, B, COLUMN_WEIGHTS, length normalisation by every token of a row) over the
# group's own rows, with `idf` below: the in-memory copy (recall/keywords.py) and the store's search without
# a copy (store/sqlite/keywords.py) both compute it.


def idf(rows: float, hits: float) -> float:
    """A word's weight in a group of `rows` rows, `hits` of which hold it: Lucene's BM25 idf, never zero.

    FTS5's own, log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, gives nothing to a word in half the rows or
    more; each turn is indexed with its neighbours, so within one conversation its topic words are in most
    rows. Over the group's own statistics that cost 2.6 points of R@5 on LoCoMo's tuning conversations
    (0.744 -> 0.718); Lucene's 1 + ... keeps them 0.9 points from the table-wide figure.
    """
    return math.log(1 + (rows - hits + 0.5) / (hits + 0.5))


# -- queries ------------------------------------------------------------------------------

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
_NAME = re.compile(r"[^\W\d_]+(?: [^\W\d_]+)*")


def query_words(text: str, participants: Iterable[str] = ()) -> list[tuple[str, tuple[int, ...]]]:
    """The query's words to look for (stopwords out, each once), with the columns each may match in.

    A participant's name is matched against the speaker column only: "what did Caroline
    paint" is about Caroline's turns, not about every turn that greets her by name.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    # Single letters ("Ana's" gives "s") match nearly every row and only cost time.
    unique = list(dict.fromkeys([w for w in words if w not in STOPWORDS and len(w) > 1] or words))
    names = _name_words(participants)
    others = [(w, TEXT_COLUMNS) for w in unique if w not in names]
    return others + [(w, SPEAKER_COLUMNS) for w in unique if w in names]


def fts_query(text: str, participants: Iterable[str] = ()) -> str | None:
    """An FTS5 expression ORing the query's words (query_words), each quoted; None if there are none."""
    return match_expression(query_words(text, participants))


def match_expression(words: Sequence[tuple[str, tuple[int, ...]]]) -> str | None:
    """The FTS5 expression for query_words' output: each column set's words ORed, the sets ORed."""
    parts = []
    for columns in (TEXT_COLUMNS, SPEAKER_COLUMNS):
        chosen = [w for w, where in words if where == columns]
        if chosen:
            names = (
                COLUMNS[columns[0]]
                if len(columns) == 1
                else "{" + " ".join(COLUMNS[c] for c in columns) + "}"
            )
            parts.append(f"{names} : (" + " OR ".join(f'"{w}"' for w in chosen) + ")")
    return " OR ".join(f"({part})" for part in parts) if parts else None


def _name_words(participants: Iterable[str]) -> set[str]:
    """Lower-cased words of participant ids that read as names (letters and spaces, like 'Ana Lima')."""
    return {word.lower() for p in participants if _NAME.fullmatch(p) for word in p.split()}
