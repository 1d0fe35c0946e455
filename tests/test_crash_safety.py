"""`kill -9` at random moments during batch ingest: the file stays sound and every acknowledged write stays.

A server process on one database is killed (SIGKILL: no cleanup, no flush) at a random moment while a
client writes batches to it, again and again on the same file. After each crash the file is opened as
the next server would open it: SQLite's integrity check, FTS5's own check, one keyword row and one vector
row per memory, every id the server acknowledged present, nothing stored twice.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlean  # type: ignore[import-untyped]
import sqlite_vec

from tests.rawstdio import RawServer

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

ROUNDS = 6
BATCH = 25
SEED = 20261204


def open_checked(db: Path) -> Any:
    conn = sqlean.connect(str(db))
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    return conn


def batch(round_: int, number: int) -> list[dict[str, Any]]:
    return [
        {"content": f"round {round_} batch {number} item {i} token r{round_}b{number}i{i}", "producer": "ana"}
        for i in range(BATCH)
    ]


def ingest_until_killed(server: RawServer, round_: int, kill_after_s: float) -> dict[int, str]:
    """Add batches until the timer kills the server; returns the ids it acknowledged, with their text."""
    acknowledged: dict[int, str] = {}
    timer = threading.Timer(kill_after_s, server.kill)
    timer.start()
    try:
        for number in range(10_000):
            memories = batch(round_, number)
            arguments = {"group_id": "g", "session_id": "s", "memories": memories}
            try:
                result = server.call_tool("add_memory", arguments)
            except (EOFError, BrokenPipeError, OSError):
                break  # killed while this batch was in flight: it was never acknowledged
            assert not result.get("isError"), result
            stored = result["structuredContent"]["memories"]
            acknowledged |= {m["id"]: sent["content"] for m, sent in zip(stored, memories, strict=True)}
    finally:
        timer.cancel()
    return acknowledged


def check_file(db: Path, acknowledged: dict[int, str]) -> None:
    with closing(open_checked(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO episodes_fts(episodes_fts) VALUES ('integrity-check')")
        stored = dict(conn.execute("SELECT id, content FROM episodes").fetchall())
        contents = Counter(stored.values())
        keyword_rows = conn.execute("SELECT count(*) FROM episodes_fts").fetchone()[0]
        indexed = conn.execute("SELECT count(*) FROM episodes WHERE indexed = 1").fetchone()[0]
        vector_rows = conn.execute("SELECT count(*) FROM episode_vectors").fetchone()[0]
    missing = [i for i, content in acknowledged.items() if stored.get(i) != content]
    assert missing == [], f"acknowledged but missing: {missing[:10]}"
    assert [c for c, n in contents.items() if n > 1] == [], "a memory was stored twice"
    assert keyword_rows == len(stored)
    assert vector_rows == indexed


def test_a_server_killed_at_random_moments_during_batch_ingest_keeps_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    rng = random.Random(SEED)
    acknowledged: dict[int, str] = {}
    for round_ in range(ROUNDS):
        server = RawServer(db, stderr=tmp_path / "server.log")
        try:
            server.handshake()
            if round_ == 0:
                server.call_tool("create_group", {"group_id": "g", "user_ids": ["ana"]})
            server.call_tool("open_session", {"group_id": "g", "session_id": "s"})
            acknowledged |= ingest_until_killed(server, round_, rng.uniform(0.2, 2.5))
        finally:
            server.kill()
            server.close()
        check_file(db, acknowledged)
    assert len(acknowledged) >= BATCH * ROUNDS, "too few batches were acknowledged to test anything"
    last_id, last_content = max(acknowledged.items())
    with RawServer(db, stderr=tmp_path / "server.log") as server:
        server.handshake()
        token = last_content.split()[-1]
        recalled = server.call_tool("recall", {"group_id": "g", "query": token})
        assert not recalled.get("isError"), recalled
        assert recalled["structuredContent"]["hits"][0]["id"] == last_id
