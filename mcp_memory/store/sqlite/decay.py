"""Importance decay: the maintenance pass's work on the episodes table.

`importance` stays what the caller gave (0.5 by default). The maintenance pass derives each
episode's `effective_importance`, which recall ranks and filters by:

    effective = importance * decay_per_day ** age_days + min(0.02 * retrievals, 0.2), within [0, 1]

`age_days` counts from the later of when the episode was stored and when recall last returned it,
so a memory that keeps being recalled does not fade, and each retrieval adds a small, capped boost.
The value is computed from the given importance every time (never from the previous effective
value), so a pass is idempotent and decay never compounds; it is rounded to 3 decimals so a pass
rewrites only the rows whose value moved. Decay never deletes anything.

Computed here, not at read time: the `min_importance` filter runs inside both searches (FTS5 and
the KNN constraint) as a plain column comparison, and recall stays deterministic between passes.
Like services/tasks.py, these functions take a connection inside the caller's transaction; `Store.write`
runs each batch in a transaction of its own, so other processes are never held up for long.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

DECAY_BATCH = 5_000
RETRIEVAL_BOOST = 0.02
RETRIEVAL_BOOST_CAP = 0.2
PRECISION = 3
SECONDS_PER_DAY = 86_400.0


def effective_importance(importance: float, retrievals: int, age_days: float, decay_per_day: float) -> float:
    """The importance recall uses: the given one decayed by age, plus a capped boost per retrieval."""
    decayed = importance * decay_per_day ** max(0.0, age_days)
    boost = min(RETRIEVAL_BOOST * max(0, retrievals), RETRIEVAL_BOOST_CAP)
    return round(min(1.0, max(0.0, decayed + boost)), PRECISION)


def age_days(created_at: str, last_accessed_at: str | None, now: datetime) -> float:
    """Days since the episode was stored or, if later, last recalled (stored times are fixed-width UTC ISO)."""
    since = max(created_at, last_accessed_at or created_at)
    return max(0.0, (now - datetime.fromisoformat(since)).total_seconds() / SECONDS_PER_DAY)


def decay_batch(
    conn: Any, after_id: int, now: datetime, decay_per_day: float, limit: int = DECAY_BATCH
) -> tuple[int | None, int]:
    """Recompute the effective importance of up to `limit` episodes with ids above `after_id`.

    Returns the last id read (None when there were none) and how many rows changed.
    """
    rows = conn.execute(
        "SELECT id, importance, retrieval_count, created_at, last_accessed_at, effective_importance "
        "FROM episodes WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    ).fetchall()
    changes = []
    for row in rows:
        value = effective_importance(row[1], row[2], age_days(row[3], row[4], now), decay_per_day)
        if value != row[5]:
            changes.append((value, row[0]))
    conn.executemany("UPDATE episodes SET effective_importance = ? WHERE id = ?", changes)
    return (rows[-1][0] if rows else None), len(changes)
