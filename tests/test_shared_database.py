"""Servers sharing one database (two managers here, as two server processes would be): on SQLite and on
PostgreSQL (slow).

A session one server holds open is not deleted by another (leases in the database); the scheduled
maintenance pass falls due on both and runs on one; a server's in-memory copies of a group follow what the
other wrote, and on PostgreSQL its vectors are caught up from the change log rather than loaded again. And
PostgreSQL's change feed is in commit order: a reader that has seen the feed up to n never later finds a
change numbered below n, with writers committing in any order.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mcp_memory.config import Config
from mcp_memory.errors import FactNotNewer, SessionInUse
from mcp_memory.manager import MemoryManager
from mcp_memory.recall.request import RecallStrategy
from mcp_memory.sessions import LEASE_S
from mcp_memory.store.postgres.store import PostgresStore
from mcp_memory.store.records import NewEpisode
from tests.helpers import FakeClock, recall
from tests.postgres import fresh_database
from tests.test_maintenance import FakeNow

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Where both servers keep their memory, as Config fields."""
    if request.param == "sqlite":
        yield {"db_path": tmp_path / "shared.db"}
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield {"db_url": url}


@asynccontextmanager
async def two_servers(
    shared: dict[str, Any], **settings: Any
) -> AsyncIterator[tuple[MemoryManager, MemoryManager]]:
    config = Config(embedder="hashing", **shared, **settings)
    async with MemoryManager(config) as first, MemoryManager(config) as second:
        yield first, second


async def test_a_session_open_on_another_server_is_not_deleted(shared: dict[str, Any]) -> None:
    async with two_servers(shared) as (here, there):
        await here.groups.create_group("g", ["ana"])
        await there.sessions.open_session("g", "s")
        await there.memories.add_memories("g", "s", [{"content": "keep me", "producer": "ana"}])
        with pytest.raises(SessionInUse, match="open on another server"):
            await here.sessions.delete_session("g", "s")
        await there.sessions.close_session("g", "s")
        deleted = await here.sessions.delete_session("g", "s")
        assert deleted.deleted_episodes == 1


async def test_a_server_that_stopped_without_closing_lets_go_when_its_lease_lapses(
    shared: dict[str, Any],
) -> None:
    now = FakeNow()
    config = Config(embedder="hashing", **shared)
    async with MemoryManager(config, now=now) as here:
        await here.groups.create_group("g", ["ana"])
        crashed = MemoryManager(config, now=now)
        await crashed.start()
        await crashed.sessions.open_session("g", "s")  # and never closes it, nor shuts down cleanly
        with pytest.raises(SessionInUse):
            await here.sessions.delete_session("g", "s")
        now.advance(seconds=LEASE_S + 1)
        assert (await here.sessions.delete_session("g", "s")).deleted_episodes == 0
        crashed.store.close()


async def test_the_scheduled_pass_falls_due_on_both_servers_and_runs_on_one(shared: dict[str, Any]) -> None:
    clock, now = FakeClock(), FakeNow()
    config = Config(embedder="hashing", maintenance_interval_s=3600, **shared)
    async with (
        MemoryManager(config, clock=clock, now=now) as one,
        MemoryManager(config, clock=clock, now=now) as two,
    ):
        reports = [await one.upkeep.step(), await two.upkeep.step()]
        assert sum(report is not None for report in reports) == 1
        clock.advance(3601)
        now.advance(seconds=3601)
        reports = [await two.upkeep.step(), await one.upkeep.step()]
        assert sum(report is not None for report in reports) == 1


async def test_each_server_recalls_what_the_other_wrote_since_its_copies_loaded(
    shared: dict[str, Any],
) -> None:
    async with two_servers(shared) as (reader, writer):
        await writer.groups.create_group("g", ["ana"])
        await writer.sessions.open_session("g", "s")
        first = await writer.memories.add_memories("g", "s", [{"content": f"note {i} about tea", "producer": "ana"}
                                                             for i in range(5)])  # fmt: skip
        assert len((await recall(reader, "g", "tea", limit=10)).hits) == 5  # the reader's copies load
        copy = reader.engine.cache.held("g") if reader.engine.cache else None
        await writer.memories.add_memories("g", "s", [{"content": "the kettle broke", "producer": "ana"}])
        found = await recall(reader, "g", "kettle broke", strategy=RecallStrategy.vector_only(), limit=1)
        assert found.hits[0].content == "the kettle broke"
        keyword = await recall(reader, "g", "kettle", strategy=RecallStrategy.keyword_only(), limit=3)
        assert keyword.hits[0].content == "the kettle broke"  # (its neighbours hold it as context)
        if shared.get("db_url"):  # caught up in place from the log: the same copy, one row longer
            assert reader.engine.cache is not None and reader.engine.cache.held("g") is copy
        gone = first.memories[0].id
        await writer.memories.delete_memories("g", [gone])
        await writer.memories.update_memory("g", first.memories[1].id, content="a note about coffee")
        hits = (await recall(reader, "g", "note", strategy=RecallStrategy.vector_only(), limit=10)).hits
        assert gone not in [hit.id for hit in hits]
        coffee = await recall(
            reader, "g", "a note about coffee", strategy=RecallStrategy.vector_only(), limit=1
        )
        assert coffee.hits[0].id == first.memories[1].id


# -- PostgreSQL's change feed -----------------------------------------------------------------------------


def turn(text: str) -> NewEpisode:
    return NewEpisode("ana", "user", None, text, "message", 0.5, "{}", "2025-01-01T00:00:00.000000+00:00",
                      1_735_689_600.0, text, None)  # fmt: skip


@pytest.mark.slow
def test_the_change_feed_is_in_commit_order_with_writers_racing(postgres_url: str) -> None:
    from mcp_memory.models import GroupInfo
    from mcp_memory.store.records import SessionRecord

    with fresh_database(postgres_url) as url:
        stores = [PostgresStore(url, embedder_name="feed-4", dimension=4) for _ in range(4)]
        try:
            start = datetime(2025, 1, 1, tzinfo=UTC)
            stores[0].insert_group(GroupInfo(group_id="g", user_ids=["ana"], agent_ids=[], created_at=start))
            for i in range(3):
                stores[0].insert_session(SessionRecord("g", f"s{i}", {}, {}, start))
            seen: list[tuple[int, list[tuple[int, int]]]] = []
            done = threading.Event()

            def write(index: int) -> None:
                for n in range(30):
                    stores[index].insert_episodes(
                        "g", f"s{index}", [turn(f"writer {index} turn {n}")], None, index_vectors=False,
                        created_at="2025-01-01T00:00:00.000000+00:00",
                        retry_window_start="2024-12-31T23:55:00.000000+00:00",
                    )  # fmt: skip

            def read() -> None:
                while not done.is_set():
                    head, _ = stores[3].keyword_log("g")
                    changes = stores[3].keyword_changes("g", 0, 100_000)
                    seen.append((head, [c for c in changes if c[0] <= head]))

            writers = [threading.Thread(target=write, args=(i,)) for i in range(3)]
            reader = threading.Thread(target=read)
            reader.start()
            for thread in writers:
                thread.start()
            for thread in writers:
                thread.join()
            done.set()
            reader.join()
            final = stores[3].keyword_changes("g", 0, 100_000)
            assert len(seen) > 10 and final
            for head, changes in seen:  # nothing numbered at or below a head ever turned up after it was read
                assert changes == [c for c in final if c[0] <= head]
            numbers = [number for number, _ in final]
            assert numbers == list(range(1, len(numbers) + 1))
        finally:
            for store in stores:
                store.close()


def test_lease_time_outlives_several_upkeep_ticks() -> None:
    from mcp_memory.manager import TICK_S

    assert timedelta(seconds=LEASE_S) >= timedelta(seconds=3 * TICK_S)


async def test_a_fact_stamped_now_is_stamped_again_when_another_server_stored_a_newer_value(
    shared: dict[str, Any],
) -> None:
    """ "now" is taken before the write waits for the group: another server may store a replacement in between
    that became valid a moment later; the fact is then stamped again rather than refused."""
    base = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    ticking = {"at": base}

    def now() -> datetime:  # every reading 0.75 s after the last
        at = ticking["at"]
        ticking["at"] = at + timedelta(seconds=0.75)
        return at

    config = Config(embedder="hashing", **shared)
    async with MemoryManager(config, now=now) as slow, MemoryManager(config) as quick:
        await quick.groups.create_group("g", ["ana"])
        await quick.facts.add_fact(
            "g", "the team", "meets on", "monday", valid_from=base + timedelta(seconds=1)
        )
        ticking["at"] = base  # the first stamp falls before monday's valid_from: refused, then stamped again
        stored = await slow.facts.add_fact("g", "the team", "meets on", "tuesday", replace=True)
        assert stored.facts[0].valid_from > base + timedelta(seconds=1)
        current = [fact.object for fact in (await quick.facts.list_facts("g")).facts if fact.current]
        assert current == ["tuesday"]
        with pytest.raises(FactNotNewer):  # a valid_from the caller gave is never moved
            await slow.facts.add_fact("g", "the team", "meets on", "friday", replace=True, valid_from=base)


async def test_text_with_a_nul_is_refused_on_every_backend_and_nothing_is_stored(
    shared: dict[str, Any],
) -> None:
    """SQLite could keep a NUL, PostgreSQL cannot: refused everywhere, so every memory can move between them."""
    from mcp_memory.errors import ValidationFailed

    async with two_servers(shared) as (server, _):
        await server.groups.create_group("g", ["ana"])
        await server.sessions.open_session("g", "s")
        with pytest.raises(ValidationFailed, match="NUL"):
            await server.memories.add_memories("g", "s", [{"content": "a\x00b", "producer": "ana"}])
        odd = [{"content": "fine", "producer": "ana", "metadata": {"note": "a\x00b"}}]
        if shared.get("db_url"):  # metadata the checks do not read: PostgreSQL refuses it whole
            with pytest.raises(ValidationFailed, match="NUL"):
                await server.memories.add_memories("g", "s", odd)
            assert (await server.sessions.session_info("g", "s")).episode_count == 0
        else:  # SQLite keeps it
            await server.memories.add_memories("g", "s", odd)
