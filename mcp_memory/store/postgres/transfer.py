"""Save and load on PostgreSQL (being written: see store/sqlite/transfer.py for the behaviour to match)."""

from __future__ import annotations

from mcp_memory.store.postgres.connection import PgDatabase


class Transfer(PgDatabase):
    """The Store's export reads and import writes on PostgreSQL."""
