"""The PostgreSQL schema: numbered migrations, applied in order under an advisory lock, so servers starting
together apply each exactly once. `meta.schema_version` holds how many a database has had (the meta table
itself is made before the first).

Times are the fixed-width UTC ISO 8601 text SQLite keeps (times.iso), so records, exports and orderings are
the same on both backends; JSON is jsonb. Not yet released: until PostgreSQL is served (issue 13), these
may still change; from then on, append only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MIGRATION_LOCK = 0x4D43506D  # pg_advisory_xact_lock key while migrating ("MCPm", as SQLite's application_id)

M001_INITIAL = [
    """CREATE TABLE groups (
        group_id TEXT PRIMARY KEY,
        user_ids JSONB NOT NULL,
        agent_ids JSONB NOT NULL,
        description TEXT,
        configuration JSONB NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        vector_revision BIGINT NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE sessions (
        group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
        session_id TEXT NOT NULL,
        configuration JSONB NOT NULL,
        overrides JSONB NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        PRIMARY KEY (group_id, session_id)
    )""",
    """CREATE TABLE episodes (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        group_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        producer_id TEXT NOT NULL,
        producer_role TEXT NOT NULL CHECK (producer_role IN ('user', 'assistant', 'system', 'tool')),
        content TEXT NOT NULL CHECK (length(content) > 0),
        memory_type TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        ts_epoch DOUBLE PRECISION NOT NULL,
        created_at TEXT NOT NULL,
        FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE,
        UNIQUE (group_id, session_id, sequence)
    )""",
    """CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        group_id TEXT NOT NULL,
        session_id TEXT,
        status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        result JSONB,
        error TEXT,
        owner TEXT NOT NULL,
        lease_until TEXT,
        expires_at TEXT
    )""",
    "CREATE INDEX tasks_processing ON tasks(lease_until) WHERE status = 'processing'",
    "CREATE INDEX tasks_expires ON tasks(expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE summary_counts (
        group_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        lightweight INTEGER NOT NULL DEFAULT 0 CHECK (lightweight >= 0),
        auto_multiple INTEGER NOT NULL DEFAULT 0 CHECK (auto_multiple >= 0),
        PRIMARY KEY (group_id, session_id),
        FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE
    )""",
    """CREATE TABLE rolling_summaries (
        group_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        text TEXT NOT NULL,
        covered_through_sequence INTEGER NOT NULL,
        updated_at TEXT NOT NULL,
        omitted_sequences JSONB NOT NULL DEFAULT '[]',
        PRIMARY KEY (group_id, session_id),
        FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE
    )""",
]
"""Groups, sessions, tasks, summary counters and rolling summaries as on SQLite; episodes with the columns
the parts served so far read (counts, deletion with their session)."""


def _statements(statements: list[str]) -> Callable[[Any], None]:
    def apply(conn: Any) -> None:
        for statement in statements:
            conn.execute(statement)

    return apply


MIGRATIONS: list[Callable[[Any], None]] = [_statements(M001_INITIAL)]


def migrate(conn: Any) -> int:
    """Apply the migrations this database lacks, each in its own transaction under the advisory lock;
    returns the schema version."""
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version >= len(MIGRATIONS):
                return version
            MIGRATIONS[version](conn)
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version + 1),),
            )
