"""The command line and the schema on PostgreSQL (slow): stats, maintain, export, import and reindex take a
postgresql:// --db; a database built by another embedder is refused
with the fix, as on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_memory.__main__ import main
from mcp_memory.config import Config
from mcp_memory.errors import EmbedderMismatch
from mcp_memory.manager import MemoryManager
from mcp_memory.store.postgres.store import PostgresStore
from tests.postgres import fresh_database
from tests.transfer_data import fill

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    await anyio.to_thread.run_sync(main, ["--embedder", "hashing", *argv])
    printed: dict[str, Any] = json.loads(capsys.readouterr().out)
    return printed


async def test_every_command_takes_a_postgresql_url(
    pg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with MemoryManager(Config(db_url=pg, embedder="hashing")) as manager:
        await fill(manager)
    stats = await run(capsys, "--db", pg, "stats")
    assert stats["episodes_total"] > 10 and stats["pending_vectors"] == 0
    assert stats["database_path"] == "postgresql://127.0.0.1:" + pg.rsplit(":", 1)[1]  # no user, no password
    report = await run(capsys, "--db", pg, "maintain")
    assert report["trigger"] == "on_demand" and report["errors"] == []
    exported = await run(capsys, "--db", pg, "export", "--out", str(tmp_path / "all.jsonl"))
    assert exported["memories"] == stats["episodes_total"]
    again = await run(capsys, "--db", pg, "import", str(tmp_path / "all.jsonl"))
    assert again["memories"]["added"] == 0 and again["memories"]["existing"] == stats["episodes_total"]
    reindexed = await run(capsys, "--db", pg, "reindex")
    assert reindexed["marked"] == reindexed["indexed"] > 0
    assert (await run(capsys, "--db", pg, "stats"))["pending_vectors"] == 0


def test_a_database_built_by_another_embedder_is_refused_with_the_fix(pg: str) -> None:
    PostgresStore(pg, embedder_name="first-4", dimension=4).close()
    with pytest.raises(
        EmbedderMismatch, match=r"built with embedder 'first-4' \(4 dims\).*mcp-memory reindex"
    ):
        PostgresStore(pg, embedder_name="second-8", dimension=8)
    reopened = PostgresStore(pg, embedder_name="second-8", dimension=8, check_embedder=False)
    try:
        assert reopened.reset_vectors("second-8", 8) == 0
        assert reopened.get_meta("embedder_dimension") == "8"
    finally:
        reopened.close()
    PostgresStore(pg, embedder_name="second-8", dimension=8).close()  # now it is the database's embedder
