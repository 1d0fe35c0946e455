"""The keyword index: each turn indexed with the turns around it.

A reply often carries the answer while the question it answers carries the words
("What did you paint?" / "A sunrise over the lake"). So the FTS5 row of every episode
holds its speaker, its own text, and, in two weaker columns, the text of the turns just
before and just after it in its session. On LoCoMo this document expansion is worth
about eight points of recall@10 over the turn alone (bench/locomo.py). The columns are
rebuilt whenever a neighbour is added or deleted, so deleted text never stays findable.
A fact (fact_table.py) or a session summary (summaries.py) is a statement complete in itself:
it is indexed alone, and it is no turn's neighbour, so its words never make the turns stored
beside it match.

Functions here take an open connection inside the caller's transaction; store.py owns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mcp_memory.fact_table import FACT_MEMORY_TYPE

SUMMARY_MEMORY_TYPE = "summary"  # summaries.SUMMARY_MEMORY_TYPE (not imported: summaries is heavier)
STANDALONE_TYPES = (FACT_MEMORY_TYPE, SUMMARY_MEMORY_TYPE)

TURNS_BEFORE = 3
TURNS_AFTER = 2
CONTEXT_CHARS_PER_TURN = 1000
# bm25() weights, in column order: speaker, content, before, after.
COLUMN_WEIGHTS = (0.5, 1.0, 0.5, 0.2)

CREATE_TABLE = (
    "CREATE VIRTUAL TABLE episodes_fts USING fts5("
    "producer_id, content, before, after, tokenize='porter unicode61 remove_diacritics 2')"
)
CREATE_DELETE_TRIGGER = (
    "CREATE TRIGGER episodes_fts_delete AFTER DELETE ON episodes BEGIN "
    "DELETE FROM episodes_fts WHERE rowid = old.id; END"
)
_SELECT = "SELECT id, sequence, producer_id, content, memory_type FROM episodes WHERE group_id = ? AND session_id = ? "
_TURNS = "AND memory_type NOT IN (" + ", ".join(f"'{t}'" for t in STANDALONE_TYPES) + ") "


def refresh_around(conn: Any, group_id: str, session_id: str, low: int, high: int) -> None:
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
    earlier, inside, later = before.fetchall()[::-1], middle.fetchall(), after.fetchall()
    for alone in (row for row in inside if row[4] in STANDALONE_TYPES):
        _write(conn, alone[0], alone[2], alone[3], "", "")
    inside = [row for row in inside if row[4] not in STANDALONE_TYPES]
    rows = earlier + inside + later
    first = max(0, len(earlier) - TURNS_AFTER)
    last = len(earlier) + len(inside) + min(len(later), TURNS_BEFORE)
    for index in range(first, last):
        _write_row(conn, rows, index)


def _write_row(conn: Any, rows: Sequence[Any], index: int) -> None:
    episode_id, _, producer_id, content, _ = rows[index]
    before = _joined(rows[max(0, index - TURNS_BEFORE) : index])
    after = _joined(rows[index + 1 : index + 1 + TURNS_AFTER])
    _write(conn, episode_id, producer_id, content, before, after)


def _write(conn: Any, episode_id: int, producer_id: str, content: str, before: str, after: str) -> None:
    conn.execute("DELETE FROM episodes_fts WHERE rowid = ?", (episode_id,))
    conn.execute(
        "INSERT INTO episodes_fts(rowid, producer_id, content, before, after) VALUES (?, ?, ?, ?, ?)",
        (episode_id, producer_id, content, before, after),
    )


def _joined(rows: Sequence[Any]) -> str:
    return "\n".join(row[3][:CONTEXT_CHARS_PER_TURN] for row in rows)


def rebuild_all(conn: Any) -> None:
    """Index every session from scratch (used by the migration that introduced the context columns)."""
    sessions = conn.execute(
        "SELECT group_id, session_id, min(sequence), max(sequence) FROM episodes GROUP BY group_id, session_id"
    ).fetchall()
    for group_id, session_id, low, high in sessions:
        refresh_around(conn, group_id, session_id, low, high)
