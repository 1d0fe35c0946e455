"""PostgreSQL's keyword search (slow): the cold path (BM25 from the keyword rows in SQL) ranks exactly as the
in-memory copy fed from the same rows, and both as SQLite ranks the same memories."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mcp_memory.models import GroupInfo
from mcp_memory.recall.keywords import KeywordSearch
from mcp_memory.store.postgres.connection import vector_text
from mcp_memory.store.postgres.store import PostgresStore
from mcp_memory.store.postgres.vectors import hnsw_query
from mcp_memory.store.records import Filters, NewEpisode, SessionRecord
from mcp_memory.store.sqlite.store import Store as SQLiteStore
from tests.postgres import fresh_database

pytestmark = pytest.mark.slow

WORDS = (
    "garden tomato painting sunrise lake kettle coffee train porto lisbon invoice budget guitar camera "
    "passport recipe bicycle printer router meeting thursday friday birthday cake doctor dentist"
).split()
SPEAKERS = ("ana", "bob", "helper")
QUERIES = [
    "what did ana say about the garden", "train to porto", "coffee kettle", "bob birthday cake on friday",
    "the printer and the router", "passport", "guitar camera recipe", "meeting thursday", "nothing matches zzz",
]  # fmt: skip


def turns(count: int, seed: int = 5) -> list[NewEpisode]:
    rng = random.Random(seed)
    made = []
    for i in range(count):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        speaker = SPEAKERS[i % 3]
        made.append(NewEpisode(speaker, "assistant" if speaker == "helper" else "user", None, text, "message",
                               0.5, "{}", "2025-01-01T00:00:00.000000+00:00", 1_735_689_600.0 + i, f"h{i}", None))  # fmt: skip
    return made


def fill(store: Any) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    store.insert_group(
        GroupInfo(group_id="g", user_ids=["ana", "bob"], agent_ids=["helper"], created_at=start)
    )
    store.insert_group(GroupInfo(group_id="other", user_ids=["ana"], agent_ids=[], created_at=start))
    for group in ("g", "other"):
        for session in ("s1", "s2"):
            store.insert_session(SessionRecord(group, session, {}, {}, start))
    written = turns(400)
    for index in range(0, len(written), 50):
        group = "other" if index >= 300 else "g"  # another group's words must not move this group's ranking
        store.insert_episodes(
            group, f"s{1 + (index // 50) % 2}", written[index : index + 50], None, index_vectors=False,
            created_at="2025-01-01T00:00:00.000000+00:00", retry_window_start="2024-12-31T00:00:00.000000+00:00",
        )  # fmt: skip


@pytest.fixture
def stores(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    with fresh_database(postgres_url) as url:
        pg = PostgresStore(url, embedder_name="kw-4", dimension=4)
        lite = SQLiteStore(tmp_path / "kw.db", embedder_name="kw-4", dimension=4)
        try:
            fill(pg)
            fill(lite)
            yield pg, lite
        finally:
            pg.close()
            lite.close()


def ranked(found: list[tuple[int, float]] | None) -> list[tuple[int, float]]:
    assert found is not None
    return [(episode_id, round(score, 9)) for episode_id, score in found]


@pytest.mark.parametrize("filters", [Filters(), Filters(session_id="s2"), Filters(producer="ana")])
def test_the_cold_path_ranks_as_the_in_memory_copy_and_as_sqlite(
    stores: tuple[Any, Any], filters: Filters
) -> None:
    pg, lite = stores
    copy = KeywordSearch(pg, 64 * 2**20)
    try:
        for query in QUERIES:
            cold = ranked(pg.search_keywords("g", query, SPEAKERS, filters, 10))
            warm = ranked(copy.search_text(query, SPEAKERS, "g", filters, 10))
            on_sqlite = ranked(lite.search_keywords("g", query, SPEAKERS, filters, 10))
            assert cold == warm == on_sqlite, query  # the same ids: both databases numbered them alike
            assert cold or query == "nothing matches zzz"
    finally:
        copy.close()


def test_a_large_groups_cold_vector_search_goes_through_hnsw_and_still_finds_a_filtered_few(
    postgres_url: str,
) -> None:
    """Past exact_rows the store searches through the HNSW index with iterative scans: the nearest come back,
    and a filter that keeps 3 rows of 600 still returns those 3 (without iterative scans the index's first
    candidates, all filtered out, would leave nothing)."""
    import numpy as np

    with fresh_database(postgres_url) as url:
        store = PostgresStore(url, embedder_name="hnsw-16", dimension=16)
        try:
            start = datetime(2025, 1, 1, tzinfo=UTC)
            store.insert_group(
                GroupInfo(group_id="g", user_ids=["ana", "bob"], agent_ids=[], created_at=start)
            )
            store.insert_session(SessionRecord("g", "s", {}, {}, start))
            rng = np.random.default_rng(3)
            matrix = rng.normal(size=(600, 16)).astype(np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            written = [
                NewEpisode("bob" if i % 200 == 7 else "ana", "user", None, f"turn {i}", "message", 0.5, "{}",
                           "2025-01-01T00:00:00.000000+00:00", 1_735_689_600.0 + i, f"v{i}", None)
                for i in range(600)
            ]  # fmt: skip
            batch = store.insert_episodes(
                "g", "s", written, matrix, index_vectors=True, created_at="2025-01-01T00:00:00.000000+00:00",
                retry_window_start="2024-12-31T00:00:00.000000+00:00",
            )  # fmt: skip
            ids = [item.id for item in batch.items]
            store.exact_rows = 100  # 600 vectors: the HNSW path
            query = matrix[42] + 0.01 * rng.normal(size=16).astype(np.float32)
            query /= np.linalg.norm(query)
            nearest = store.vector_search("g", query, Filters(), 5)
            assert nearest[0][0] == ids[42]
            exact = np.argsort(-(matrix @ query))[:5]
            assert len({ids[i] for i in exact} & {i for i, _ in nearest}) >= 4
            bobs = store.vector_search("g", query, Filters(producer="bob"), 10)
            assert sorted(i for i, _ in bobs) == sorted(ids[i] for i in range(600) if i % 200 == 7)

            def explain(conn: Any) -> str:  # the index really is what answers
                sql, params = hnsw_query(conn, "g", vector_text(query), "", [], 5)
                return " ".join(row[0] for row in conn.execute("EXPLAIN " + sql, params).fetchall())

            assert "episode_vectors_hnsw" in store._run(explain)
        finally:
            store.close()
