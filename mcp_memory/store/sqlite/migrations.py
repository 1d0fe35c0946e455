"""The database schema: numbered, append-only migrations and the vector table.

`PRAGMA user_version` holds how many migrations a database has had; `Store` applies
the rest in order, each in its own transaction. Never edit a released migration:
add the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.connection import APPLICATION_ID

M001_INITIAL = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE groups (
    group_id TEXT PRIMARY KEY,
    user_ids TEXT NOT NULL CHECK (json_valid(user_ids)),
    agent_ids TEXT NOT NULL CHECK (json_valid(agent_ids)),
    description TEXT,
    configuration TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(configuration)),
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    configuration TEXT NOT NULL CHECK (json_valid(configuration)),
    overrides TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(overrides)),
    created_at TEXT NOT NULL,
    PRIMARY KEY (group_id, session_id)
) STRICT;

CREATE TABLE episodes (
    id INTEGER PRIMARY KEY,
    group_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    producer_id TEXT NOT NULL,
    producer_role TEXT NOT NULL CHECK (producer_role IN ('user', 'assistant', 'system', 'tool')),
    produced_for_id TEXT,
    content TEXT NOT NULL CHECK (length(content) > 0),
    memory_type TEXT NOT NULL,
    importance REAL NOT NULL CHECK (importance BETWEEN 0 AND 1),
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    timestamp TEXT NOT NULL,
    ts_epoch REAL NOT NULL,
    created_at TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    dedup_key TEXT,
    retrieval_count INTEGER NOT NULL DEFAULT 0,
    last_accessed_at TEXT,
    indexed INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE,
    UNIQUE (group_id, session_id, sequence)
) STRICT;

CREATE UNIQUE INDEX episodes_dedup ON episodes(group_id, session_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX episodes_group_time ON episodes(group_id, ts_epoch);
CREATE INDEX episodes_pending ON episodes(indexed) WHERE indexed = 0;

CREATE VIRTUAL TABLE episodes_fts USING fts5(
    producer_id, content,
    content='episodes', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);

CREATE TRIGGER episodes_fts_insert AFTER INSERT ON episodes BEGIN
    INSERT INTO episodes_fts(rowid, producer_id, content) VALUES (new.id, new.producer_id, new.content);
END;
CREATE TRIGGER episodes_fts_delete AFTER DELETE ON episodes BEGIN
    INSERT INTO episodes_fts(episodes_fts, rowid, producer_id, content)
    VALUES ('delete', old.id, old.producer_id, old.content);
END;
CREATE TRIGGER episodes_fts_update AFTER UPDATE OF producer_id, content ON episodes BEGIN
    INSERT INTO episodes_fts(episodes_fts, rowid, producer_id, content)
    VALUES ('delete', old.id, old.producer_id, old.content);
    INSERT INTO episodes_fts(rowid, producer_id, content) VALUES (new.id, new.producer_id, new.content);
END;
"""


M002_VECTOR_REVISION = """
ALTER TABLE groups ADD COLUMN vector_revision INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER episodes_vector_revision_insert AFTER INSERT ON episodes WHEN new.indexed = 1 BEGIN
    UPDATE groups SET vector_revision = vector_revision + 1 WHERE group_id = new.group_id;
END;
CREATE TRIGGER episodes_vector_revision_update AFTER UPDATE OF indexed ON episodes
WHEN new.indexed IS NOT old.indexed BEGIN
    UPDATE groups SET vector_revision = vector_revision + 1 WHERE group_id = new.group_id;
END;
CREATE TRIGGER episodes_vector_revision_delete AFTER DELETE ON episodes WHEN old.indexed = 1 BEGIN
    UPDATE groups SET vector_revision = vector_revision + 1 WHERE group_id = old.group_id;
END;
"""
"""Every change to a group's vectors bumps its revision, so a process holding the group's vectors
in memory knows, with one cheap read, whether it is still current (other processes write too)."""


def _script(sql: str) -> Callable[[Any], None]:
    def apply(conn: Any) -> None:
        for statement in _statements(sql):
            conn.execute(statement)

    return apply


def _statements(sql: str) -> list[str]:
    """Split a script on `;` at line ends, keeping trigger bodies whole."""
    statements, current = [], []
    for line in sql.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        ends_trigger = text.upper().startswith("CREATE TRIGGER") and line.strip().upper() == "END;"
        if text.endswith(";") and (ends_trigger or not text.upper().startswith("CREATE TRIGGER")):
            statements.append(text)
            current = []
    return [s for s in statements if s.strip(" ;\n")]


m001_initial = _script(M001_INITIAL)
m002_vector_revision = _script(M002_VECTOR_REVISION)


def m003_context_fts(conn: Any) -> None:
    """Replace the turn-only keyword index with one that also holds each turn's neighbours (see store/sqlite/fts.py)."""
    for trigger in ("episodes_fts_insert", "episodes_fts_delete", "episodes_fts_update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    conn.execute("DROP TABLE IF EXISTS episodes_fts")
    conn.execute(fts.CREATE_TABLE)
    conn.execute(fts.CREATE_DELETE_TRIGGER)
    fts.rebuild_all(conn)


M004_FACTS = """
CREATE TABLE facts (
    id INTEGER PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES groups(group_id) ON DELETE CASCADE,
    session_id TEXT,
    subject TEXT NOT NULL CHECK (length(subject) > 0),
    predicate TEXT NOT NULL CHECK (length(predicate) > 0),
    object TEXT NOT NULL CHECK (length(object) > 0),
    subject_key TEXT NOT NULL,
    predicate_key TEXT NOT NULL,
    object_key TEXT NOT NULL,
    source TEXT,
    confidence REAL CHECK (confidence IS NULL OR confidence BETWEEN 0 AND 1),
    valid_from TEXT NOT NULL,
    valid_to TEXT CHECK (valid_to IS NULL OR valid_to >= valid_from),
    created_at TEXT NOT NULL,
    memory_id INTEGER REFERENCES episodes(id) ON DELETE CASCADE
) STRICT;

CREATE INDEX facts_subject_predicate ON facts(group_id, subject_key, predicate_key);
CREATE UNIQUE INDEX facts_current_triple ON facts(group_id, subject_key, predicate_key, object_key)
WHERE valid_to IS NULL;
CREATE INDEX facts_memory ON facts(memory_id);
"""
"""Facts: triples with a validity period (valid_to NULL: current), found by their normalised *_key
columns. Each is also stored as an episode (memory_id) so recall finds it; deleting that episode
(delete_memory, delete_session) deletes the fact with it."""

m004_facts = _script(M004_FACTS)


M005_TASKS = """
CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    group_id TEXT NOT NULL,
    session_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    result TEXT CHECK (result IS NULL OR json_valid(result)),
    error TEXT,
    owner TEXT NOT NULL,
    lease_until TEXT,
    expires_at TEXT
) STRICT;
CREATE INDEX tasks_processing ON tasks(lease_until) WHERE status = 'processing';
CREATE INDEX tasks_expires ON tasks(expires_at) WHERE expires_at IS NOT NULL;
"""
"""Background tasks (store/sqlite/tasks.py). Times are fixed-width UTC ISO 8601 text, so they compare as text.
`lease_until` is set while processing, `expires_at` once finished."""

m005_tasks = _script(M005_TASKS)


M006_SUMMARY_COUNTS = """
CREATE TABLE summary_counts (
    group_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    lightweight INTEGER NOT NULL DEFAULT 0 CHECK (lightweight >= 0),
    auto_multiple INTEGER NOT NULL DEFAULT 0 CHECK (auto_multiple >= 0),
    PRIMARY KEY (group_id, session_id),
    FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE
) STRICT;
"""
"""Per session: lightweight summaries counted against the limit, and the last multiple of the
automatic threshold already handled (store/sqlite/summaries.py). Deleting the session deletes its row."""

m006_summary_counts = _script(M006_SUMMARY_COUNTS)


M007_EFFECTIVE_IMPORTANCE = """
ALTER TABLE episodes ADD COLUMN effective_importance REAL NOT NULL DEFAULT 0.5
    CHECK (effective_importance BETWEEN 0 AND 1);

UPDATE episodes SET effective_importance = importance;
"""
"""`importance` stays what the caller gave; `effective_importance` is what the maintenance pass derives from
it (decay with age, a small boost per retrieval; see store/sqlite/decay.py). Recall ranks and filters by it."""

m007_effective_importance = _script(M007_EFFECTIVE_IMPORTANCE)


M008_ROLLING_SUMMARIES = """
CREATE TABLE rolling_summaries (
    group_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    text TEXT NOT NULL,
    covered_through_sequence INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    omitted_sequences TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(omitted_sequences)),
    PRIMARY KEY (group_id, session_id),
    FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE
) STRICT;
"""
"""A session's rolling summary of the turns that left its short-term window (llm/rolling.py)."""

m008_rolling_summaries = _script(M008_ROLLING_SUMMARIES)


def m010_application_id(conn: Any) -> None:
    """Mark the file as ours (PRAGMA application_id), so another application's database is never taken for one."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def m011_updated_at(conn: Any) -> None:
    """When a memory was last corrected in place (update_memory); NULL while it is as first stored."""
    conn.execute("ALTER TABLE episodes ADD COLUMN updated_at TEXT")


M012_MESSAGES = """
ALTER TABLE episodes ADD COLUMN step INTEGER CHECK (step IS NULL OR step >= 0);
ALTER TABLE episodes ADD COLUMN message TEXT CHECK (message IS NULL OR json_valid(message));
CREATE INDEX episodes_group_step ON episodes(group_id, step) WHERE step IS NOT NULL;
"""
"""An agent's step number, first-class and indexed for ranges ("between step 1000 and 2000"); and a conversation
message's extras as MARSYS keeps them (name, tool calls, tool_call_id, images, structured content), as JSON."""

m012_messages = _script(M012_MESSAGES)


def m009_change_log(conn: Any) -> None:
    """The log of re-indexed and deleted rows that in-memory copies of the keyword index catch up from."""
    conn.execute("CREATE TABLE fts_changes (seq INTEGER PRIMARY KEY, episode_id INTEGER NOT NULL) STRICT")
    conn.execute(
        "CREATE TRIGGER episodes_fts_changes_delete AFTER DELETE ON episodes BEGIN "
        "INSERT INTO fts_changes(episode_id) VALUES (old.id); END"
    )


M013_GROUP_CHANGE_LOG = """
ALTER TABLE fts_changes ADD COLUMN group_id TEXT;
UPDATE fts_changes SET group_id = (SELECT e.group_id FROM episodes e WHERE e.id = fts_changes.episode_id);
CREATE INDEX fts_changes_group ON fts_changes(group_id, seq);
DROP TRIGGER episodes_fts_changes_delete;
CREATE TRIGGER episodes_fts_changes_delete AFTER DELETE ON episodes BEGIN
    INSERT INTO fts_changes(episode_id, group_id) VALUES (old.id, old.group_id);
END;
"""
"""Each change names its group, so a group's copy of the keyword index catches up on its own changes alone
(entries logged before this, of episodes deleted since, keep no group: they are older than any copy)."""

m013_group_change_log = _script(M013_GROUP_CHANGE_LOG)


M014_SESSION_LEASES = """
CREATE TABLE session_leases (
    group_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (group_id, session_id, holder),
    FOREIGN KEY (group_id, session_id) REFERENCES sessions(group_id, session_id) ON DELETE CASCADE
) STRICT;
"""
"""Which server processes hold a session open, until when: a session another process has open is not deleted
(each renews its leases while it runs; a crashed one's lapse)."""

m014_session_leases = _script(M014_SESSION_LEASES)


def m015_group_owner(conn: Any) -> None:
    """The principal that created the group over authenticated HTTP (NULL: made without authentication)."""
    conn.execute("ALTER TABLE groups ADD COLUMN owner TEXT")


MIGRATIONS: list[Callable[[Any], None]] = [
    m001_initial,
    m002_vector_revision,
    m003_context_fts,
    m004_facts,
    m005_tasks,
    m006_summary_counts,
    m007_effective_importance,
    m008_rolling_summaries,
    m009_change_log,
    m010_application_id,
    m011_updated_at,
    m012_messages,
    m013_group_change_log,
    m014_session_leases,
    m015_group_owner,
]


# vec0 stores vectors in chunks of this many rows, and each partition (group) has chunks of its own: at
# its default of 1,024 a group of 250 took a 1.5 MB chunk, so 100 groups of 250 took 154 MB; at 256, 39 MB,
# and a KNN inside one group 0.5 ms instead of 3.9 (/tmp probe, 384 dimensions). Tables made before keep
# their chunks until `mcp-memory reindex` builds the table again.
VECTOR_CHUNK_SIZE = 256


def vector_table_sql(dimension: int) -> list[str]:
    """The vec0 table (partitioned by group, filterable inside the KNN) and the trigger that keeps it in step."""
    return [
        f"""CREATE VIRTUAL TABLE episode_vectors USING vec0(
            group_id TEXT PARTITION KEY,
            embedding FLOAT[{int(dimension)}] DISTANCE_METRIC=cosine,
            session_id TEXT,
            producer_id TEXT,
            role TEXT,
            memory_type TEXT,
            ts FLOAT,
            chunk_size={VECTOR_CHUNK_SIZE}
        )""",
        """CREATE TRIGGER episodes_vectors_delete AFTER DELETE ON episodes BEGIN
            DELETE FROM episode_vectors WHERE rowid = old.id;
        END""",
    ]
