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

KEEP_CHANGES = 50_000
MIGRATION_LOCK = 0x4D43506D  # pg_advisory_xact_lock key while migrating ("MCPm", as SQLite's application_id)

M001_INITIAL = [
    "CREATE EXTENSION IF NOT EXISTS vector",
    """CREATE TABLE groups (
        group_id TEXT PRIMARY KEY,
        user_ids JSONB NOT NULL,
        agent_ids JSONB NOT NULL,
        description TEXT,
        configuration JSONB NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        vector_revision BIGINT NOT NULL DEFAULT 0,
        change_seq BIGINT NOT NULL DEFAULT 0,
        keyword_rows BIGINT NOT NULL DEFAULT 0,
        keyword_tokens BIGINT NOT NULL DEFAULT 0
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
        produced_for_id TEXT,
        content TEXT NOT NULL CHECK (length(content) > 0),
        memory_type TEXT NOT NULL,
        importance DOUBLE PRECISION NOT NULL CHECK (importance BETWEEN 0 AND 1),
        effective_importance DOUBLE PRECISION NOT NULL CHECK (effective_importance BETWEEN 0 AND 1),
        metadata JSONB NOT NULL DEFAULT '{}',
        timestamp TEXT NOT NULL,
        ts_epoch DOUBLE PRECISION NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT,
        content_hash TEXT NOT NULL,
        dedup_key TEXT,
        retrieval_count INTEGER NOT NULL DEFAULT 0,
        last_accessed_at TEXT,
        indexed SMALLINT NOT NULL DEFAULT 0,
        step INTEGER,
        message TEXT,
        FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE,
        UNIQUE (group_id, session_id, sequence)
    )""",
    "CREATE UNIQUE INDEX episodes_dedup ON episodes(group_id, session_id, dedup_key) WHERE dedup_key IS NOT NULL",
    "CREATE INDEX episodes_group_time ON episodes(group_id, ts_epoch, id)",
    "CREATE INDEX episodes_pending ON episodes(id) WHERE indexed = 0",
    """CREATE TABLE keyword_rows (
        episode_id BIGINT PRIMARY KEY REFERENCES episodes(id) ON DELETE CASCADE,
        group_id TEXT NOT NULL,
        terms TEXT[] NOT NULL,
        columns SMALLINT[] NOT NULL,
        counts SMALLINT[] NOT NULL,
        length INTEGER NOT NULL
    )""",
    "CREATE INDEX keyword_rows_group ON keyword_rows(group_id)",
    "CREATE INDEX keyword_rows_terms ON keyword_rows USING gin (terms)",
    """CREATE TABLE changes (
        group_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        episode_id BIGINT NOT NULL,
        PRIMARY KEY (group_id, seq)
    )""",
    f"""CREATE FUNCTION log_keyword_change() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed RECORD;
        rows_delta BIGINT;
        tokens_delta BIGINT;
        head BIGINT;
    BEGIN
        IF TG_OP = 'DELETE' THEN
            changed := OLD;
            rows_delta := -1;
            tokens_delta := -OLD.length;
        ELSIF TG_OP = 'INSERT' THEN
            changed := NEW;
            rows_delta := 1;
            tokens_delta := NEW.length;
        ELSE
            changed := NEW;
            rows_delta := 0;
            tokens_delta := NEW.length - OLD.length;
        END IF;
        UPDATE groups SET change_seq = change_seq + 1, keyword_rows = keyword_rows + rows_delta,
            keyword_tokens = keyword_tokens + tokens_delta
            WHERE group_id = changed.group_id RETURNING change_seq INTO head;
        IF head IS NOT NULL THEN
            INSERT INTO changes(group_id, seq, episode_id) VALUES (changed.group_id, head, changed.episode_id);
            IF head % 1000 = 0 THEN
                DELETE FROM changes WHERE group_id = changed.group_id AND seq <= head - {KEEP_CHANGES};
            END IF;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER keyword_rows_changes AFTER INSERT OR UPDATE OR DELETE ON keyword_rows
        FOR EACH ROW EXECUTE FUNCTION log_keyword_change()""",
    """CREATE TABLE vector_changes (
        group_id TEXT NOT NULL,
        revision BIGINT NOT NULL,
        episode_id BIGINT NOT NULL,
        PRIMARY KEY (group_id, revision)
    )""",
    """CREATE TABLE facts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
        session_id TEXT,
        subject TEXT NOT NULL CHECK (length(subject) > 0),
        predicate TEXT NOT NULL CHECK (length(predicate) > 0),
        object TEXT NOT NULL CHECK (length(object) > 0),
        subject_key TEXT NOT NULL,
        predicate_key TEXT NOT NULL,
        object_key TEXT NOT NULL,
        source TEXT,
        confidence DOUBLE PRECISION CHECK (confidence IS NULL OR confidence BETWEEN 0 AND 1),
        valid_from TEXT NOT NULL,
        valid_to TEXT CHECK (valid_to IS NULL OR valid_to >= valid_from),
        created_at TEXT NOT NULL,
        memory_id BIGINT REFERENCES episodes(id) ON DELETE CASCADE
    )""",
    "CREATE INDEX facts_subject_predicate ON facts(group_id, subject_key, predicate_key)",
    """CREATE UNIQUE INDEX facts_current_triple ON facts(group_id, subject_key, predicate_key, object_key)
        WHERE valid_to IS NULL""",
    "CREATE INDEX facts_memory ON facts(memory_id)",
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
    """CREATE TABLE session_leases (
        group_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (group_id, session_id, holder),
        FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE
    )""",
]
"""The schema as on SQLite, with what many servers on one database need besides:

- `keyword_rows`: each episode's row of the keyword index (speaker, text, the turns before and after, as
  store/sqlite/fts.py composes them), as FTS5's tokenizer splits it: each (term, column) with its count, and
  the row's length. A GIN index on the terms answers the cold-path search; `groups.keyword_rows` and
  `keyword_tokens` keep the group's totals for BM25.
- `changes`: the per-group change feed. Every write to a group's keyword rows bumps `groups.change_seq`
  under the group row's lock, held to commit, so within a group the feed's order is commit order: a server
  that has read up to seq n never later finds a change below n. The newest KEEP_CHANGES per group are kept.
- `session_leases`: which servers hold a session open, until when (a session held elsewhere is not deleted).
- `episode_vectors` (made with the embedder's dimension when a database first records one, vectors.py):
  a pgvector column with an HNSW index; every change bumps `groups.vector_revision` under the same lock and
  logs the episode in `vector_changes` at that revision, so a server's in-memory copy of a group's vectors
  catches up on what changed instead of loading the group again.
"""


def _statements(statements: list[str]) -> Callable[[Any], None]:
    def apply(conn: Any) -> None:
        for statement in statements:
            conn.execute(statement)

    return apply


M002_GROUP_OWNER = ["ALTER TABLE groups ADD COLUMN owner TEXT"]
"""The principal that created the group over authenticated HTTP (NULL: made without authentication)."""

MIGRATIONS: list[Callable[[Any], None]] = [_statements(M001_INITIAL), _statements(M002_GROUP_OWNER)]


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
