"""`mcp-memory copy` moves a whole memory between SQLite and PostgreSQL: every record comes over (exported
again, field by field the same but for the documented mapped ids), a second run adds nothing, and the
report's counts and checksums agree on both sides; PostgreSQL answers recall for what it received.

The commands run in this process through `main` (the console script's entry point), on a throwaway
PostgreSQL database (slow).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_memory.__main__ import main
from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.recall.request import RecallStrategy
from tests.helpers import recall
from tests.postgres import fresh_database
from tests.test_transfer import by_kind, expected_after_import
from tests.transfer_data import fill, read_export

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


async def copy(source: str, target: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    try:  # on a thread: the command runs its own event loop
        await anyio.to_thread.run_sync(
            main, ["--embedder", "hashing", "copy", "--from", source, "--to", target]
        )
    except SystemExit as exc:  # an unverified copy exits 1 after printing its report
        assert exc.code in (0, None), capsys.readouterr()
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


async def export(location: str, path: Path) -> list[dict[str, Any]]:
    config = Config.from_env({}, db_path=location, embedder="hashing")
    async with MemoryManager(config) as manager:
        await manager.transfer.export_memories(path)
    return read_export(path)


async def test_a_copy_to_postgres_and_back_holds_every_record_and_says_so(
    tmp_path: Path, pg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = tmp_path / "origin.db"
    async with MemoryManager(Config(db_path=origin, embedder="hashing")) as manager:
        await fill(manager)
    there = await copy(str(origin), pg, capsys)
    assert there["verified"] is True and there["missing_in_target"] == 0
    assert there["source"] == there["target"]
    assert there["source"]["memory"]["count"] > 10 and there["source"]["fact"]["count"] == 4
    assert there["imported"]["memories"]["added"] == there["source"]["memory"]["count"]

    again = await copy(
        str(origin), pg, capsys
    )  # idempotent: a copy cut short is finished by running it again
    assert again["verified"] is True
    assert again["imported"]["memories"]["added"] == 0
    assert again["imported"]["memories"]["existing"] == there["source"]["memory"]["count"]

    source = await export(str(origin), tmp_path / "origin.jsonl")
    on_postgres = await export(pg, tmp_path / "pg.jsonl")
    assert len(on_postgres) == len(source)
    for got, wanted in zip(on_postgres[1:], expected_after_import(source, on_postgres), strict=True):
        assert got == wanted

    back = tmp_path / "back.db"
    returned = await copy(pg, str(back), capsys)
    assert returned["verified"] is True and returned["target"] == there["source"]
    round_trip = await export(str(back), tmp_path / "back.jsonl")
    assert [line["content"] for line in by_kind(round_trip, "memory")] == [
        line["content"] for line in by_kind(source, "memory")
    ]


QUERIES = ("What is the weather in Lisbon today?", "where does Ana live", "the sky picture", "summary")


async def answers(config: Config, group: str) -> list[list[tuple[str, float | None]]]:
    async with MemoryManager(config) as manager:
        found = []
        for query in QUERIES:
            for strategy in (RecallStrategy.keyword_only(), RecallStrategy.vector_only(), None):
                hits = (await recall(manager, group, query, limit=5, strategy=strategy)).hits
                found.append([(hit.content, hit.score) for hit in hits])
        assert manager.store.pending_count() == 0  # the copy embedded what it brought
    return found


async def test_postgres_recalls_what_the_copy_brought_exactly_as_sqlite_does(
    tmp_path: Path, pg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = tmp_path / "origin.db"
    async with MemoryManager(Config(db_path=origin, embedder="hashing")) as manager:
        await fill(manager)
    assert (await copy(str(origin), pg, capsys))["verified"] is True
    on_sqlite = await answers(Config(db_path=origin, embedder="hashing"), "ana")
    on_postgres = await answers(Config(db_url=pg, embedder="hashing"), "ana")
    assert any(on_sqlite) and on_postgres == on_sqlite  # same keyword rows, same vectors, same ranking


def test_copy_names_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["copy", "--from", "a.db"])
    assert exit_.value.code == 2
    assert "copy needs both databases" in capsys.readouterr().err
