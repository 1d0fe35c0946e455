"""Per-session summary bookkeeping: the lightweight-summary counters and the rolling summary.

`summary_counts` holds, per session, the lightweight summaries counted against the limit and the last
multiple of the automatic threshold already handled; `rolling_summaries` the session's rolling summary.
Deleting a session deletes both rows (foreign keys). Counting happens inside one write transaction, so
concurrent requests from any process never pass a limit or claim a multiple twice.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_memory.store.records import RollingSummary
from mcp_memory.store.sqlite.connection import Database


class SummaryRows(Database):
    """The lightweight-summary counters and rolling summaries of sessions."""

    def reserve_lightweight(self, group_id: str, session_id: str, limit: int) -> bool:
        """Count one more lightweight summary if the session is under `limit`; False when it is not."""
        if limit <= 0:
            return False
        sql = (
            "INSERT INTO summary_counts(group_id, session_id, lightweight) VALUES (?, ?, 1) ON CONFLICT"
            "(group_id, session_id) DO UPDATE SET lightweight = lightweight + 1 WHERE lightweight < ?"
        )
        return bool(self.write(lambda conn: conn.execute(sql, (group_id, session_id, limit)).rowcount))

    def release_lightweight(self, group_id: str, session_id: str) -> None:
        """Give back a slot taken by a generation that failed."""
        sql = (
            "UPDATE summary_counts SET lightweight = lightweight - 1 "
            "WHERE group_id = ? AND session_id = ? AND lightweight > 0"
        )
        self.write(lambda conn: conn.execute(sql, (group_id, session_id)))

    def lightweight_used(self, group_id: str, session_id: str) -> int:
        return self._count("lightweight", group_id, session_id)

    def auto_multiple(self, group_id: str, session_id: str) -> int:
        """How many multiples of the automatic threshold the session has had handled."""
        return self._count("auto_multiple", group_id, session_id)

    def _count(self, column: str, group_id: str, session_id: str) -> int:
        rows = self.read(
            f"SELECT {column} FROM summary_counts WHERE group_id = ? AND session_id = ?",
            (group_id, session_id),
        )
        return int(rows[0][0]) if rows else 0

    def claim_auto(self, group_id: str, session_id: str, multiple: int) -> bool:
        """Mark `multiple` handled; False when it (or a later one) already was, by this process or another."""
        sql = (
            "INSERT INTO summary_counts(group_id, session_id, auto_multiple) VALUES (?, ?, ?) "
            "ON CONFLICT(group_id, session_id) DO UPDATE SET auto_multiple = excluded.auto_multiple "
            "WHERE auto_multiple < excluded.auto_multiple"
        )
        return bool(self.write(lambda conn: conn.execute(sql, (group_id, session_id, multiple)).rowcount))

    def rolling_summary(self, group_id: str, session_id: str) -> RollingSummary | None:
        rows = self.read(
            "SELECT text, covered_through_sequence, updated_at, omitted_sequences FROM rolling_summaries "
            "WHERE group_id = ? AND session_id = ?",
            (group_id, session_id),
        )
        if not rows:
            return None
        text, covered, updated_at, omitted = rows[0]
        return RollingSummary(text, int(covered), updated_at, list(json.loads(omitted)))

    def save_rolling_summary(self, group_id: str, session_id: str, summary: RollingSummary) -> None:
        """Store the new summary in one short transaction (nothing, if the session was deleted meanwhile)."""

        def upsert(conn: Any) -> None:
            exists = conn.execute(
                "SELECT 1 FROM sessions WHERE group_id = ? AND session_id = ?", (group_id, session_id)
            ).fetchone()
            if exists is None:
                return
            conn.execute(
                "INSERT INTO rolling_summaries (group_id, session_id, text, covered_through_sequence, "
                "updated_at, omitted_sequences) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_id, session_id) "
                "DO UPDATE SET text = excluded.text, covered_through_sequence = excluded.covered_through_sequence, "
                "updated_at = excluded.updated_at, omitted_sequences = excluded.omitted_sequences",
                (group_id, session_id, summary.text, summary.covered_through_sequence, summary.updated_at,
                 json.dumps(summary.omitted_sequences)),
            )  # fmt: skip

        self.write(upsert)
