"""Importance decay, the maintenance pass (scheduled and on demand) and the statistics it feeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlean
import sqlite_vec
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.episodes import DEFAULT_IMPORTANCE
from mcp_memory.errors import ConfigurationError
from mcp_memory.manager import MemoryManager
from mcp_memory.recall.engine import RRF_K, RecallStrategy, importance_factor
from mcp_memory.services import tasks
from mcp_memory.services.tasks import ORPHAN_REASON
from mcp_memory.store.records import Filters, NewEpisode
from mcp_memory.store.sqlite.decay import RETRIEVAL_BOOST, RETRIEVAL_BOOST_CAP, effective_importance
from mcp_memory.store.sqlite.migrations import MIGRATIONS
from mcp_memory.store.sqlite.store import Store
from mcp_memory.times import iso
from tests.helpers import FakeClock, call, recall, seed_store

pytestmark = pytest.mark.anyio

START = datetime(2025, 1, 1, tzinfo=UTC)


class FakeNow:
    """The manager's wall clock (what created_at and last access are stamped with), moved by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def now() -> FakeNow:
    return FakeNow()


def clocked_config(db_path: Path, **overrides: Any) -> Config:
    return Config(db_path=db_path, embedder="hashing", maintenance_interval_s=3600, **overrides)


@pytest.fixture
async def clocked(db_path: Path, clock: FakeClock, now: FakeNow) -> AsyncIterator[MemoryManager]:
    async with MemoryManager(clocked_config(db_path), clock=clock, now=now) as manager:
        await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
        await manager.sessions.open_session("g", "s")
        yield manager


async def remember(
    manager: MemoryManager, content: str, importance: float | None = None, session: str = "s"
) -> int:
    await manager.sessions.open_session("g", session)
    result = await manager.memories.add_memories(
        "g", session, [{"content": content, "producer": "ana", "importance": importance}]
    )
    return result.memories[0].id


def effective(manager: MemoryManager) -> dict[int, float]:
    rows = manager.engine.store.read("SELECT id, effective_importance FROM episodes")
    return {row[0]: row[1] for row in rows}


# -- the decay math ---------------------------------------------------------------------------


def test_effective_importance_decays_by_the_factor_per_day_and_retrievals_add_a_capped_boost() -> None:
    assert effective_importance(0.8, 0, 0.0, 0.99) == 0.8
    assert effective_importance(0.8, 0, 10.0, 0.99) == round(0.8 * 0.99**10, 3)
    assert effective_importance(0.8, 0, 365.0, 0.99) == round(0.8 * 0.99**365, 3) < 0.03
    assert effective_importance(0.5, 3, 0.0, 0.99) == 0.5 + 3 * RETRIEVAL_BOOST
    assert effective_importance(0.5, 1000, 0.0, 0.99) == 0.5 + RETRIEVAL_BOOST_CAP
    assert effective_importance(0.95, 1000, 0.0, 0.99) == 1.0  # never above 1
    assert effective_importance(0.8, 0, 10_000.0, 1.0) == 0.8  # a factor of 1 turns decay off


async def test_decay_counts_from_storage_and_a_recalled_memory_decays_less(
    clocked: MemoryManager, now: FakeNow
) -> None:
    old = await remember(clocked, "the red kite flew over the hill", 0.8, session="a")
    now.advance(days=30)
    recalled = await remember(clocked, "the green lantern hung by the door", 0.8, session="b")
    forgotten = await remember(clocked, "a grey pebble sat on the path", 0.8, session="c")
    now.advance(days=20)
    hits = (await recall(clocked, "g", "green lantern", strategy=RecallStrategy.keyword_only())).hits
    assert [h.id for h in hits] == [recalled]  # counted once, its last access refreshed
    now.advance(days=10)

    report = await clocked.upkeep.maintain()
    values = effective(clocked)
    assert values[old] == round(0.8 * 0.99**60, 3)
    assert values[forgotten] == round(0.8 * 0.99**30, 3)
    assert values[recalled] == round(0.8 * 0.99**10 + RETRIEVAL_BOOST, 3)
    assert values[recalled] > values[forgotten] > values[old]
    assert report.importance_updated == 3
    given = clocked.engine.store.read("SELECT importance FROM episodes")
    assert [row[0] for row in given] == [0.8, 0.8, 0.8]  # the given importance is kept as it was


async def test_decay_deletes_nothing_and_a_second_pass_changes_nothing(
    clocked: MemoryManager, now: FakeNow
) -> None:
    ids = [await remember(clocked, f"note number {i} about the garden", 0.01 * i) for i in range(1, 8)]
    now.advance(days=3650)  # ten years: every effective importance rounds down to 0
    first = await clocked.upkeep.maintain()
    assert set(effective(clocked).values()) == {0.0}
    assert sorted(effective(clocked)) == ids
    assert (await clocked.upkeep.stats()).episodes_total == 7
    second = await clocked.upkeep.maintain()
    assert (first.importance_updated, second.importance_updated) == (7, 0)
    hits = (await recall(clocked, "g", "garden note", limit=20)).hits
    assert sorted(h.id for h in hits) == ids  # faded, still found


def test_decay_runs_in_batches_of_short_transactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", embedder_name="test", dimension=4)
    seed_store(store, "ana")
    insert(store, [new_episode(f"turn {i}", importance=0.9) for i in range(11)])
    later = datetime(2024, 1, 11, tzinfo=UTC)  # ten days after they were stored
    assert store.decay_importance(later, 0.9, batch=3) == 11
    values = {row[0] for row in store.read("SELECT effective_importance FROM episodes")}
    assert values == {round(0.9 * 0.9**10, 3)}
    assert store.decay_importance(later, 0.9, batch=3) == 0
    store.close()


# -- min_importance and ranking ---------------------------------------------------------------


@pytest.mark.parametrize("cache_mb", [1024, 0], ids=["vector-cache", "sqlite-vec"])
@pytest.mark.parametrize("strategy", ["keyword", "vector"])
async def test_min_importance_filters_by_the_decayed_importance_inside_the_search(
    db_path: Path, clock: FakeClock, now: FakeNow, cache_mb: int, strategy: str
) -> None:
    config = clocked_config(db_path, vector_cache_mb=cache_mb)
    async with MemoryManager(config, clock=clock, now=now) as manager:
        await manager.groups.create_group("g", user_ids=["ana"])
        chosen = RecallStrategy.keyword_only() if strategy == "keyword" else RecallStrategy.vector_only()

        async def found() -> list[int]:
            result = await recall(manager, "g", "apple pie recipe", min_importance=0.5, strategy=chosen)
            assert all(strategy in h.matched_by for h in result.hits)
            return sorted(h.id for h in result.hits)

        faded = await remember(manager, "apple pie recipe with cinnamon", 0.9)
        assert await found() == [faded]  # as given, 0.9; recalled once, on day 0
        now.advance(days=100)
        fresh = await remember(manager, "apple pie recipe with honey", 0.6)
        await manager.upkeep.maintain()
        assert effective(manager)[faded] == round(0.9 * 0.99**100 + RETRIEVAL_BOOST, 3) < 0.5
        assert await found() == [fresh]


def test_the_ranking_factor_is_neutral_at_the_default_importance_and_smaller_than_a_rank_step() -> None:
    assert importance_factor(DEFAULT_IMPORTANCE) == 1.0
    assert importance_factor(0.0) == pytest.approx(0.99)
    assert importance_factor(1.0) == pytest.approx(1.01)
    # the most importance can do (least to most important) is less than one rank of a list, down to rank 10
    step_at_10 = (1 / (RRF_K + 10)) / (1 / (RRF_K + 11))
    assert importance_factor(1.0) / importance_factor(0.0) < step_at_10


async def test_importance_never_lifts_a_memory_without_the_querys_word_over_the_one_that_has_it(
    clocked: MemoryManager,
) -> None:
    for i in range(6):
        await remember(clocked, f"note {i} about the garden and the weather")
    guitar = await remember(clocked, "I finally bought a guitar")
    cost = await remember(clocked, "It cost me a lot of money", 1.0)  # found through its neighbour's word
    for _ in range(20):  # recalled again and again: its retrieval count feeds its effective importance
        await recall(clocked, "g", "a lot of money")
    await clocked.upkeep.maintain()
    assert effective(clocked)[cost] == 1.0
    hits = (await recall(clocked, "g", "guitar")).hits
    assert [h.id for h in hits][:2] == [guitar, cost]


async def test_a_memory_with_the_default_importance_keeps_its_fused_score(clocked: MemoryManager) -> None:
    await remember(clocked, "the violin lesson moved to Thursday")
    await clocked.upkeep.maintain()
    [hit] = (await recall(clocked, "g", "violin lesson", strategy=RecallStrategy.keyword_only())).hits
    assert hit.score == round(1.0 / (RRF_K + 1), 6)


@pytest.mark.parametrize("importances", [(0.2, 0.9), (0.9, 0.2)])
async def test_of_two_otherwise_equal_memories_the_more_important_ranks_first(
    clocked: MemoryManager, importances: tuple[float, float]
) -> None:
    ids = [
        await remember(clocked, "the spare key is under the blue flowerpot", importance, session=f"s{i}")
        for i, importance in enumerate(importances)
    ]
    hits = (await recall(clocked, "g", "where is the spare key")).hits
    important = ids[importances.index(0.9)]
    assert hits[0].id == important
    assert hits[0].score > hits[1].score


# -- the pass: on a schedule and on demand ------------------------------------------------------


async def test_maintenance_runs_at_the_first_tick_and_then_every_interval(
    clocked: MemoryManager, clock: FakeClock, now: FakeNow
) -> None:
    first = await clocked.upkeep.step()
    assert first is not None and first.trigger == "schedule"
    assert await clocked.upkeep.step() is None
    clock.advance(3599)
    now.advance(seconds=3599)
    assert await clocked.upkeep.step() is None
    clock.advance(2)
    now.advance(seconds=2)
    again = await clocked.upkeep.step()
    assert again is not None and again.trigger == "schedule"
    assert (await clocked.upkeep.last_maintenance()) == again


async def test_a_new_process_waits_for_the_interval_since_the_last_pass_on_the_database(
    db_path: Path, clock: FakeClock, now: FakeNow
) -> None:
    async with MemoryManager(clocked_config(db_path), clock=clock, now=now) as earlier:
        await earlier.upkeep.maintain()
    now.advance(seconds=1000)
    async with MemoryManager(clocked_config(db_path), clock=clock, now=now) as later:
        assert await later.upkeep.step() is None  # another process ran one 1,000 s ago
        clock.advance(2599)
        assert await later.upkeep.step() is None
        clock.advance(2)
        assert await later.upkeep.step() is not None


async def test_an_interval_of_zero_turns_scheduled_maintenance_off(db_path: Path, clock: FakeClock) -> None:
    config = Config(db_path=db_path, embedder="hashing", maintenance_interval_s=0)
    async with MemoryManager(config, clock=clock) as manager:
        assert await manager.upkeep.step() is None
        clock.advance(10**9)
        assert await manager.upkeep.step() is None
        assert await manager.upkeep.last_maintenance() is None
        assert (await manager.upkeep.maintain()).trigger == "on_demand"  # on demand still works


async def test_the_report_counts_tasks_vectors_and_sessions(
    clocked: MemoryManager, clock: FakeClock, now: FakeNow
) -> None:
    store = clocked.store
    long_ago = now() - timedelta(days=30)
    lease = long_ago + timedelta(seconds=tasks.LEASE_S)
    orphan = store.create_task(
        kind="summary", group_id="g", session_id="s", owner="dead", now=long_ago, lease_until=lease
    )
    finished = store.create_task(
        kind="summary", group_id="g", session_id="s", owner="me", now=long_ago, lease_until=lease
    )
    store.finish_task(
        finished.task_id, "me", status="completed", result={"ok": True}, now=long_ago,
        expires_at=long_ago + timedelta(seconds=60),
    )  # fmt: skip
    seed_session_pending(store)
    await clocked.sessions.close_session("g", "s")
    clock.advance(601)

    report = await clocked.upkeep.maintain()
    assert (report.orphaned_tasks_failed, report.tasks_expired) == (1, 1)
    assert report.vectors_backfilled == 1
    assert report.sessions_evicted == 1
    assert report.errors == [] and report.duration_ms >= 0
    assert (await clocked.tasks.get(orphan.task_id)).error == ORPHAN_REASON
    assert (await clocked.upkeep.stats()).pending_vectors == 0


async def test_a_failing_step_is_reported_and_the_others_still_run(
    clocked: MemoryManager, now: FakeNow
) -> None:
    await remember(clocked, "a memory to decay", 0.9)
    now.advance(days=5)
    clocked.engine.store.write(lambda c: c.execute("DROP TABLE tasks"))
    report = await clocked.upkeep.maintain()
    assert [e.split(":")[0] for e in report.errors] == ["orphaned tasks", "expired tasks"]
    assert report.importance_updated == 1


async def test_run_maintenance_tool_and_the_stats_resource(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"])
    await call(client, "open_session", group_id="g", session_id="s")
    await call(
        client, "add_memory", group_id="g", session_id="s", content="lunch with Rui on Friday", producer="ana"
    )
    await call(client, "open_session", group_id="g", session_id="t")
    await call(
        client, "add_memory", group_id="g", session_id="t", content="the dentist is at nine", producer="ana",
        importance=0.05,
    )  # fmt: skip
    await call(client, "recall", group_id="g", query="lunch Rui", limit=1)

    report = await call(client, "run_maintenance")
    assert report["trigger"] == "on_demand"
    assert report["errors"] == []
    assert report["importance_decay_per_day"] == 0.99
    for field in ("importance_updated", "tasks_expired", "orphaned_tasks_failed", "vectors_backfilled"):
        assert report[field] >= 0

    result = await client.read_resource("memory://stats", cache_mode="bypass")
    stats = json.loads(result.contents[0].text)
    assert stats["schema_version"] == len(MIGRATIONS)
    assert stats["episodes_total"] == 2
    assert stats["episodes_by_tier"] == {
        "recent": 2,
        "long_term": 0,
        "pending_vectors": 0,
        "not_vector_indexed": 0,
    }
    assert stats["importance"]["mean"] == pytest.approx(0.275)
    assert stats["importance"]["effective_below_0_1"] == 1
    assert stats["retrievals"] == {"total": 1, "episodes_retrieved": 1}
    assert stats["last_maintenance"]["started_at"] >= report["started_at"]


async def test_run_maintenance_is_marked_idempotent_and_not_read_only(client: Client) -> None:
    [tool] = [t for t in (await client.list_tools()).tools if t.name == "run_maintenance"]
    assert tool.annotations is not None
    assert tool.annotations.read_only_hint is False
    assert tool.annotations.idempotent_hint is True
    assert tool.annotations.destructive_hint is False


async def test_stats_sort_older_episodes_into_tiers_by_their_vector_state(
    clocked: MemoryManager, now: FakeNow
) -> None:
    await remember(clocked, "indexed long ago")
    await clocked.sessions.open_session("g", "keywords", configuration={"long_term": {"enabled": False}})
    await remember(clocked, "never vector-indexed", session="keywords")
    seed_session_pending(clocked.engine.store)
    now.advance(days=2)
    await remember(clocked, "stored just now")
    stats = await clocked.upkeep.stats()
    assert stats.episodes_by_tier == {
        "recent": 1,
        "long_term": 1,
        "pending_vectors": 1,
        "not_vector_indexed": 1,
    }
    assert stats.last_maintenance is None


def test_the_maintain_command_runs_a_pass_and_stats_shows_it(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    store = Store(db, embedder_name="hashing-384", dimension=384)
    seed_store(store, "ana")
    insert(store, [new_episode("an old note", importance=0.7)])
    store.close()
    env = {**os.environ, "MCP_MEMORY_IMPORTANCE_DECAY_PER_DAY": "0.5"}

    def cli(command: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "mcp_memory", "--db", str(db), "--embedder", "hashing", command],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    report = cli("maintain")
    assert report["trigger"] == "on_demand"
    assert report["importance_decay_per_day"] == 0.5
    assert report["importance_updated"] == 1  # stored in 2024: decayed to nearly nothing
    stats = cli("stats")
    assert stats["last_maintenance"] == report
    assert stats["importance"]["effective_below_0_1"] == 1


def test_the_decay_and_interval_settings_are_checked(db_path: Path) -> None:
    config = Config.from_env(
        {"MCP_MEMORY_IMPORTANCE_DECAY_PER_DAY": "0.95", "MCP_MEMORY_MAINTENANCE_INTERVAL_S": "60"},
        db_path=db_path,
    )
    assert (config.importance_decay_per_day, config.maintenance_interval_s) == (0.95, 60.0)
    for bad in (
        {"importance_decay_per_day": 0.0},
        {"importance_decay_per_day": 1.5},
        {"maintenance_interval_s": -1},
    ):
        with pytest.raises(ConfigurationError, match="MCP_MEMORY_"):
            Config(db_path=db_path, **bad)


# -- migration m007 -----------------------------------------------------------------------------


def test_m007_gives_an_empty_database_the_effective_importance_column(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", embedder_name="test", dimension=4)
    assert store.schema_version == len(MIGRATIONS) >= 7
    columns = {row[1] for row in store.read("PRAGMA table_info(episodes)")}
    assert {"importance", "effective_importance", "retrieval_count", "last_accessed_at"} <= columns
    store.close()


def test_a_version_six_database_with_data_upgrades_with_effective_importance_as_given(tmp_path: Path) -> None:
    path = tmp_path / "v6.db"
    conn = sqlean.connect(str(path), isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    for migration in MIGRATIONS[:6]:
        migration(conn)
    conn.execute("PRAGMA user_version = 6")
    conn.execute(
        "INSERT INTO groups VALUES ('g', '[\"u\"]', '[]', NULL, '{}', '2024-01-01T00:00:00+00:00', 0)"
    )
    conn.execute("INSERT INTO sessions VALUES ('g', 's', '{}', '{}', '2024-01-01T00:00:00+00:00')")
    for i, importance in enumerate((0.9, 0.2), start=1):
        conn.execute(
            "INSERT INTO episodes(group_id, session_id, sequence, producer_id, producer_role, content, "
            "memory_type, importance, timestamp, ts_epoch, created_at, content_hash) VALUES ('g', 's', ?, 'u', "
            "'user', ?, 'message', ?, '2024-01-01T00:00:00+00:00', 1704067200, '2024-01-01T00:00:00+00:00', 'h')",
            (i, f"an old turn about tea {i}", importance),
        )
    conn.close()

    store = Store(path, embedder_name="test", dimension=4)
    assert store.schema_version == len(MIGRATIONS)
    rows = store.read("SELECT importance, effective_importance FROM episodes ORDER BY id")
    assert [tuple(r) for r in rows] == [(0.9, 0.9), (0.2, 0.2)]
    [kept] = store.candidate_ids("g", Filters(min_importance=0.5))
    assert store.fetch_episodes([int(kept)])[kept].importance == 0.9
    store.close()


# -- helpers on a bare store ------------------------------------------------------------------


def new_episode(content: str, *, importance: float = 0.5) -> NewEpisode:
    return NewEpisode(
        producer_id="ana", producer_role="user", produced_for_id=None, content=content, memory_type="message",
        importance=importance, metadata_json="{}", timestamp=iso(START), ts_epoch=START.timestamp(),
        content_hash=content, dedup_key=None,
    )  # fmt: skip


def insert(store: Store, episodes: list[NewEpisode], vectors: np.ndarray | None = None) -> list[int]:
    batch = store.insert_episodes(
        "g", "s", episodes, vectors, index_vectors=True,
        created_at="2024-01-01T00:00:00.000000+00:00", retry_window_start="2023-12-31T23:55:00.000000+00:00",
    )  # fmt: skip
    return [item.id for item in batch.items]


def seed_session_pending(store: Store) -> int:
    """One episode in session s stored while the embedder was failing: waiting for its vector."""
    [episode_id] = insert(store, [new_episode("waiting for its vector")])
    return episode_id


async def test_the_pass_also_runs_every_n_inserts_when_configured(config: Config) -> None:
    async with MemoryManager(
        replace(config, maintenance_every_inserts=5, maintenance_interval_s=0)
    ) as manager:
        await manager.groups.create_group("g", user_ids=["ana"])
        await manager.sessions.open_session("g", "s")
        await manager.memories.add_memories(
            "g", "s", [{"content": f"note {i}", "producer": "ana"} for i in range(4)]
        )
        assert await manager.upkeep.last_maintenance() is None
        await manager.memories.add_memories("g", "s", [{"content": "the fifth note", "producer": "ana"}])
        report = await manager.upkeep.last_maintenance()
        assert report is not None and report.trigger == "inserts"
