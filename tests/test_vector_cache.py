"""Exact in-memory vector search: same answers as sqlite-vec, current across processes and deletes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.recall.vectors import GroupVectors, VectorRows
from mcp_memory.store.sqlite.store import Filters
from tests.helpers import recall

pytestmark = pytest.mark.anyio

WORDS = "apple river stone cloud garden piano window bread letter forest candle mirror ticket violin".split()


def sentences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=6)) for _ in range(count)]


async def filled(config: Config, count: int = 300) -> MemoryManager:
    manager = await MemoryManager(config).start()
    await manager.groups.create_group("g", user_ids=["ana", "ben"])
    texts = sentences(count, seed=1)
    for session in ("s1", "s2"):
        async with manager.sessions.created("g", session) as live:
            await manager.memories.add_memories(
                live.group_id,
                live.session_id,
                [
                    {"content": t, "producer": "ana" if i % 3 else "ben", "timestamp": 1_700_000_000 + i * 60}
                    for i, t in enumerate(texts[: count // 2] if session == "s1" else texts[count // 2 :])
                ],
            )
    return manager


def assert_same_neighbours(ours: list[tuple[int, float]], reference: list[tuple[int, float]]) -> None:
    """Same distances in the same order; ids may differ only among rows tied at the same distance."""
    assert np.allclose([d for _, d in ours], [d for _, d in reference], atol=1e-5)
    theirs = dict(reference)
    last = reference[-1][1] if reference else 0.0
    for episode_id, distance in ours:
        assert abs(theirs.get(episode_id, last) - distance) < 1e-5


@pytest.mark.parametrize(
    "filters",
    [
        Filters(),
        Filters(session_id="s2"),
        Filters(producer="ben"),
        Filters(since=1_700_000_000 + 60 * 100, until=1_700_000_000 + 60 * 120),
        Filters(memory_types=("message",), role="user"),
        Filters(min_importance=0.5, session_id="s1"),
    ],
)
async def test_the_cache_finds_exactly_what_sqlite_vec_finds(config: Config, filters: Filters) -> None:
    manager = await filled(config)
    engine = manager.engine
    try:
        for text in sentences(5, seed=2):
            query = engine.embedder.embed([text])[0]
            ours = engine.vector_search("g", query, filters, 10)
            reference = engine.store.vector_search("g", query, filters, 10)
            assert_same_neighbours(ours, reference)
    finally:
        await manager.shutdown()


async def test_writes_from_another_process_are_seen_by_the_next_search(config: Config) -> None:
    reader = await filled(config, 40)
    writer = await MemoryManager(config).start()
    try:
        query = reader.engine.embedder.embed(["violin violin violin"])[0]
        reader.engine.vector_search("g", query, Filters(), 5)  # loads the group
        async with writer.sessions.opened("g", "s1") as live:
            added = await writer.memories.add_memories(
                live.group_id, live.session_id, [{"content": "violin violin violin", "producer": "ana"}]
            )
        new_id = added.memories[0].id
        assert reader.engine.vector_search("g", query, Filters(), 1)[0][0] == new_id
        await writer.memories.delete_memories("g", [new_id])
        assert new_id not in [i for i, _ in reader.engine.vector_search("g", query, Filters(), 50)]
    finally:
        await reader.shutdown()
        await writer.shutdown()


async def test_this_processs_own_writes_are_appended_without_a_reload(config: Config) -> None:
    manager = await filled(config, 40)
    engine = manager.engine
    try:
        query = engine.embedder.embed(["candle mirror"])[0]
        engine.vector_search("g", query, Filters(), 5)
        cached = engine.cache.get("g", engine.store.vector_revision("g"))
        async with manager.sessions.opened("g", "s1") as live:
            added = await manager.memories.add_memories(
                live.group_id, live.session_id, [{"content": "candle mirror candle", "producer": "ben"}]
            )
        again = engine.cache.get("g", engine.store.vector_revision("g"))
        assert again is cached and again.size == 41
        assert engine.vector_search("g", query, Filters(producer="ben"), 1)[0][0] == added.memories[0].id
    finally:
        await manager.shutdown()


async def test_a_group_larger_than_the_budget_is_searched_in_sqlite_vec(db_path: Path) -> None:
    config = Config(db_path=db_path, embedder="hashing", vector_cache_mb=0)
    manager = await filled(config, 40)
    try:
        assert manager.engine.cache is None
        result = await recall(manager, "g", "violin")
        assert result.vector_search and result.hits
    finally:
        await manager.shutdown()


def test_growing_arrays_keep_every_row_and_filters_by_code() -> None:
    rng = np.random.default_rng(0)

    def rows(start: int, count: int, session: str) -> VectorRows:
        return VectorRows(
            ids=np.arange(start, start + count),
            matrix=rng.standard_normal((count, 8)).astype(np.float32),
            session_id=[session] * count,
            producer_id=["p"] * count,
            role=["user"] * count,
            memory_type=["message"] * count,
            ts=np.arange(start, start + count, dtype=np.float64),
        )

    group = GroupVectors(1, rows(0, 1000, "a"))
    for start in range(1000, 5000, 1000):
        group.append(rows(start, 1000, "b"))
    assert group.size == 5000
    query = rng.standard_normal(8).astype(np.float32)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        only_a = group.search(query, 2000, {"session_id": "a"}, None, pool)
        assert len(only_a) == 1000 and all(i < 1000 for i, _ in only_a)
        assert group.search(query, 5, {"session_id": "missing"}, None, pool) == []
        allowed = group.search(query, 10, {}, np.array([4321, 7]), pool)
        assert sorted(i for i, _ in allowed) == [7, 4321]


async def test_a_large_group_loads_in_the_background_while_sqlite_vec_answers(config: Config) -> None:
    manager = await filled(config, 40)
    engine = manager.engine
    engine.sync_load_rows = 10  # 40 vectors count as "large" here
    assert engine.cache is not None
    engine.cache.drop("g")  # held since its first batch was written here: as a server that restarted
    gate, scans = threading.Event(), []
    real_scan = engine.store.scan_group_vectors

    def gated_scan(group_id: str):  # the real scan, held until the test lets it go
        scans.append(group_id)
        assert gate.wait(10)
        return real_scan(group_id)

    engine.store.scan_group_vectors = gated_scan  # type: ignore[method-assign]
    try:
        query = engine.embedder.embed(["violin candle"])[0]
        revision = engine.store.vector_revision("g")
        for _ in range(3):  # answered while the load waits; one load, not one per search
            ours = engine.vector_search("g", query, Filters(session_id="s2"), 10)
            assert_same_neighbours(ours, engine.store.vector_search("g", query, Filters(session_id="s2"), 10))
            assert engine.cache.get("g", revision) is None
        gate.set()
        deadline = time.monotonic() + 10
        while engine.cache.get("g", revision) is None:
            assert time.monotonic() < deadline, "the background load never finished"
            time.sleep(0.01)
        assert scans == ["g"]
        assert_same_neighbours(
            engine.vector_search("g", query, Filters(), 10),
            engine.store.vector_search("g", query, Filters(), 10),
        )
    finally:
        gate.set()
        await manager.shutdown()


async def test_a_new_groups_first_batch_is_its_copy_at_once_and_searches_as_sqlite_vec(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await filled(config, 20)
    engine = manager.engine
    try:
        await manager.groups.create_group("new", user_ids=["ana"])
        await manager.sessions.open_session("new", "s")
        await manager.memories.add_memories(
            "new", "s", [{"content": t, "producer": "ana"} for t in sentences(250, seed=3)]
        )
        assert engine.cache is not None
        assert engine.cache.get("new", engine.store.vector_revision("new")) is not None  # held, current

        def refused(group_id: str) -> None:
            raise AssertionError("the group's vectors should not be read back")

        monkeypatch.setattr(engine.store, "scan_group_vectors", refused)
        for text in sentences(5, seed=4):
            query = engine.embedder.embed([text])[0]
            assert_same_neighbours(
                engine.vector_search("new", query, Filters(), 10),
                engine.store.vector_search("new", query, Filters(), 10),
            )
    finally:
        monkeypatch.undo()
        await manager.shutdown()
