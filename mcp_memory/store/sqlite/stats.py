"""Statistics and maintenance over the whole database: counts, sizes and importance decay.

These queries span every group, unlike the rest of the Store, which works one group or
session at a time. The decay arithmetic itself lives in store/sqlite/decay.py.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from mcp_memory.store.records import INDEXED, PENDING
from mcp_memory.store.sqlite import decay as maintenance
from mcp_memory.store.sqlite.connection import Database

TIERS = ("recent", "long_term", "pending_vectors", "not_vector_indexed")


class Statistics(Database):
    """The Store's database-wide operations: the stats report and the decay pass."""

    def stats(self, recent_since: str) -> dict[str, Any]:
        """Counts by group, session, memory type and tier (`pending_vectors`: waiting for an embedding, however
        new; else `recent`: stored at or after `recent_since`),
        importance and retrieval totals, pending vectors, and the file's size."""
        by_type = self.read("SELECT memory_type, count(*) FROM episodes GROUP BY memory_type")
        by_tier = self.read(
            f"SELECT CASE WHEN indexed = {PENDING} THEN 'pending_vectors' WHEN created_at >= ? THEN 'recent' "
            f"WHEN indexed = {INDEXED} THEN 'long_term' ELSE 'not_vector_indexed' END AS tier, count(*) "
            "FROM episodes GROUP BY tier",
            (recent_since,),
        )
        totals = self.read(
            "SELECT count(*), avg(importance), avg(effective_importance), "
            "coalesce(sum(effective_importance < 0.1), 0), coalesce(sum(retrieval_count), 0), "
            "coalesce(sum(retrieval_count > 0), 0) FROM episodes"
        )[0]
        by_group = self.read(
            "SELECT g.group_id, (SELECT count(*) FROM sessions s WHERE s.group_id = g.group_id), "
            "(SELECT count(*) FROM episodes e WHERE e.group_id = g.group_id) FROM groups g ORDER BY g.group_id"
        )
        by_session = self.read(
            "SELECT group_id, session_id, count(*) FROM episodes GROUP BY group_id, session_id "
            "ORDER BY count(*) DESC LIMIT 100"
        )
        by_producer = self.read(
            "SELECT group_id, producer_id, count(*), avg(effective_importance), sum(retrieval_count) FROM episodes "
            "GROUP BY group_id, producer_id ORDER BY count(*) DESC LIMIT 200"
        )
        pending = self.read(f"SELECT count(*) FROM episodes WHERE indexed = {PENDING}")[0][0]
        page = self.read("PRAGMA page_count")[0][0] * self.read("PRAGMA page_size")[0][0]
        return {
            "episodes_by_type": {row[0]: row[1] for row in by_type},
            "groups": [{"group_id": r[0], "sessions": r[1], "episodes": r[2]} for r in by_group],
            "largest_sessions": [
                {"group_id": r[0], "session_id": r[1], "episodes": r[2]} for r in by_session
            ],
            "producers": [
                {
                    "group_id": r[0],
                    "producer": r[1],
                    "episodes": r[2],
                    "mean_effective_importance": round(r[3], 4),
                    "retrievals": r[4],
                }
                for r in by_producer
            ],  # fmt: skip
            "pending_vectors": pending,
            "database_bytes": page + _wal_size(self.path),
            "episodes_total": totals[0],
            "episodes_by_tier": dict.fromkeys(TIERS, 0) | {row[0]: row[1] for row in by_tier},
            "importance": {
                "mean": round(totals[1] or 0.0, 4),
                "mean_effective": round(totals[2] or 0.0, 4),
                "effective_below_0_1": totals[3],
            },
            "retrievals": {"total": totals[4], "episodes_retrieved": totals[5]},
        }

    def decay_importance(
        self, now: datetime, decay_per_day: float, batch: int = maintenance.DECAY_BATCH
    ) -> int:
        """Recompute every episode's effective importance, `batch` rows per transaction; returns rows changed."""
        after, changed = 0, 0
        while True:
            last, done = self.write(
                partial(
                    maintenance.decay_batch, after_id=after, now=now, decay_per_day=decay_per_day, limit=batch
                )
            )
            changed += done
            if last is None:
                return changed
            after = last


def _wal_size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0
