"""Keyword search: BM25 over each group's own statistics, from the in-memory copy (kept current across
writes and processes) or, without one, from the store (Store.search_keywords). The reference for both is a
plain-Python BM25 over the tokens FTS5 holds (`oracle`), itself checked against FTS5's bm25() when given
FTS5's idf."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import sqlean  # type: ignore[import-untyped]

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.recall import keywords as keyword_index
from mcp_memory.recall.engine import MemoryEngine
from mcp_memory.recall.keywords import KeywordIndex, KeywordSearch
from mcp_memory.store.sqlite import fts
from mcp_memory.store.sqlite.fts import match_expression, query_words
from mcp_memory.store.sqlite.store import Filters
from tests.helpers import recall

pytestmark = pytest.mark.anyio

# Stems, case, diacritics and repeats, so tokenisation and term counts matter.
WORDS = (
    "painting painted paints sunrise Sunrise lake café cafe naïve Über uber garden gardens river "
    "violin violins bread letter forest candle mirror ticket the and of 2023 13th"
).split()
QUERIES = [
    "what did Ana paint at the lake?",
    "café sunrise",
    "CAFE naive uber",
    "violins and bread",
    "forest candle mirror ticket garden",
    "2023 13th letter",
    "the",
    "painting painted",
    "nothing matches zebra",
]
# Words FTS5 reads as phrases of several tokens: the copy leaves them to the store.
PHRASE_QUERIES = ["garden_river", "painted_lake sunrise", "ticket_café_uber", "sunrise_sunrise", "the_the"]


def sentences(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 14)))) for _ in range(count)]


async def filled(config: Config, count: int = 240, groups: tuple[str, ...] = ("g",)) -> MemoryManager:
    """Groups with two sessions each (the later groups with a quarter of the turns), and a fact in "g"."""
    manager = await MemoryManager(config).start()
    texts = sentences(count, seed=1)
    for group in groups:
        await manager.groups.create_group(group, user_ids=["Ana Lima", "ben"])
        for session in ("s1", "s2"):
            async with manager.sessions.created(group, session) as live:
                half = texts[: count // 2] if session == "s1" else texts[count // 2 :]
                await manager.memories.add_memories(live.group_id, live.session_id,
                    [
                        {"content": t, "producer": "Ana Lima" if i % 3 else "ben",
                         "timestamp": 1_700_000_000 + i * 60, "metadata": {"n": i % 2}}
                        for i, t in enumerate(half if group == "g" else half[: count // 4])
                    ]
                )  # fmt: skip
        if group == "g":
            await manager.facts.add_fact("g", "Ana", "paints", "the sunrise over the lake")
    return manager


def fts5(engine: MemoryEngine, query: str, filters: Filters, k: int) -> list[tuple[int, float]]:
    words = query_words(query, ["Ana Lima", "ben"])
    expression = match_expression(words)
    return engine.store.keyword_search("g", expression, filters, k) if expression else []


def ours(engine: MemoryEngine, query: str, filters: Filters, k: int) -> list[tuple[int, float]] | None:
    assert engine.keywords is not None
    return engine.keywords.search(query_words(query, ["Ana Lima", "ben"]), "g", filters, k)


def stored(engine: MemoryEngine, query: str, filters: Filters, k: int) -> list[tuple[int, float]]:
    """The store's ranking, computed without any copy."""
    return engine.store.search_keywords("g", query, ["Ana Lima", "ben"], filters, k)


def assert_same_ranking(mine: list[tuple[int, float]] | None, reference: list[tuple[int, float]]) -> None:
    """The same scores, rank by rank; ids may differ only among rows FTS5 scores alike to rounding."""
    assert mine is not None
    assert len(mine) == len(reference)
    assert np.allclose([s for _, s in mine], [s for _, s in reference], rtol=1e-12, atol=1e-12)
    theirs = dict(reference)
    for episode_id, score in mine:
        assert abs(theirs.get(episode_id, reference[-1][1]) - score) < 1e-9


NO_FILTERS = Filters()


def assert_matches(engine: MemoryEngine, filters: Filters = NO_FILTERS, k: int = 20) -> None:
    """The copy's ranking of group g, and the store's, equal the oracle's over g's own statistics."""
    for query in QUERIES:
        expected = oracle(engine, query, filters, k)
        assert_same_ranking(ours(engine, query, filters, k), expected)
        assert_same_ranking(stored(engine, query, filters, k), expected)
    for query in PHRASE_QUERIES:
        assert_same_ranking(stored(engine, query, filters, k), oracle(engine, query, filters, k))


def fts5_idf(rows: float, hits: float) -> float:
    return max(math.log((rows - hits + 0.5) / (hits + 0.5)), 1e-6)


def oracle(
    engine: MemoryEngine,
    query: str,
    filters: Filters,
    k: int,
    weight: Callable[[float, float], float] = fts.idf,
    group_id: str = "g",
) -> list[tuple[int, float]]:
    """BM25 computed plainly, row by row, from the tokens FTS5 holds for the group (its fts5vocab view):
    FTS5's k1, b and column weights, length normalisation by every token of a row, `weight` for the idf;
    a word of several tokens counts where they stand one after the other in a column, as FTS5's phrases."""
    with closing(sqlean.connect(str(engine.store.path))) as conn:
        conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, 'episodes_fts', 'instance')")
        group = {row[0] for row in conn.execute("SELECT id FROM episodes WHERE group_id = ?", (group_id,))}
        at: dict[int, dict[tuple[int, int], str]] = {}  # doc -> (column, offset) -> token
        for doc, term, column, offset in conn.execute("SELECT doc, term, col, offset FROM temp.v"):
            if doc in group:
                at.setdefault(doc, {})[fts.COLUMNS.index(column), offset] = term
    lengths = {doc: len(tokens) for doc, tokens in at.items()}
    mean = sum(lengths.values()) / len(lengths)
    page = engine.store.list_episodes(filters, group_id, newest_first=False, after=None, limit=10**6)
    allowed = {e.id for e in page.episodes}
    scores: dict[int, float] = {}
    for word, columns in query_words(query, ["Ana Lima", "ben"]):
        [tokens] = engine.store.tokenize_words([word])
        if not tokens:
            continue
        tf = {
            doc: sum(
                fts.COLUMN_WEIGHTS[c]
                for (c, o) in found
                if c in columns and all(found.get((c, o + i)) == t for i, t in enumerate(tokens))
            )
            for doc, found in at.items()
        }
        holding = {doc: value for doc, value in tf.items() if value > 0}
        idf = weight(len(at), len(holding))
        for doc, value in holding.items():
            norm = fts.K1 * (1 - fts.B + fts.B * lengths[doc] / mean)
            scores[doc] = scores.get(doc, 0.0) + idf * value * (fts.K1 + 1) / (value + norm)
    ranked = sorted((doc for doc in scores if doc in allowed), key=lambda doc: (-scores[doc], doc))
    return [(doc, -scores[doc]) for doc in ranked[:k]]


@pytest.mark.parametrize(
    "filters",
    [
        Filters(),
        Filters(session_id="s2"),
        Filters(session_id="s1", group_wide_types=("fact",)),
        Filters(producer="ben"),
        Filters(role="user", since=1_700_000_000 + 60 * 20, until=1_700_000_000 + 60 * 90),
        Filters(memory_types=("fact",)),
        Filters(metadata=(("n", 1),)),
        Filters(min_importance=0.5, session_id="s1"),
    ],
)
async def test_the_index_ranks_as_bm25_over_the_groups_own_statistics(
    config: Config, filters: Filters
) -> None:
    manager = await filled(config, groups=("g", "other"))
    try:
        assert_matches(manager.engine, filters)
        assert ours(manager.engine, "nothing matches zebra", filters, 5) == []
    finally:
        await manager.shutdown()


@pytest.mark.parametrize("filters", [Filters(), Filters(session_id="s2"), Filters(producer="ben")])
async def test_the_oracle_given_fts5s_idf_ranks_as_fts5_does_in_a_database_of_one_group(
    config: Config, filters: Filters
) -> None:
    manager = await filled(config)
    try:
        for query in QUERIES + PHRASE_QUERIES:
            assert_same_ranking(
                oracle(manager.engine, query, filters, 20, weight=fts5_idf),
                fts5(manager.engine, query, filters, 20),
            )
    finally:
        await manager.shutdown()


async def test_what_another_group_stores_never_changes_a_groups_ranking(config: Config) -> None:
    manager = await filled(config, 60, groups=("g", "other"))
    engine = manager.engine
    try:
        before = {query: ours(engine, query, NO_FILTERS, 10) for query in QUERIES}
        before_stored = {query: stored(engine, query, NO_FILTERS, 10) for query in QUERIES + PHRASE_QUERIES}
        table_wide = fts5(engine, "café sunrise", NO_FILTERS, 10)
        async with manager.sessions.opened("other", "s1") as live:
            await manager.memories.add_memories(
                live.group_id,
                live.session_id,
                [{"content": "café sunrise café garden river", "producer": "ben"}] * 30,
            )
        assert {query: ours(engine, query, NO_FILTERS, 10) for query in QUERIES} == before
        assert {query: stored(engine, query, NO_FILTERS, 10) for query in before_stored} == before_stored
        assert before_stored["café sunrise"] == before["café sunrise"]
        assert fts5(engine, "café sunrise", NO_FILTERS, 10) != table_wide  # FTS5's statistics are the table's
    finally:
        await manager.shutdown()


async def test_a_small_k_keeps_the_best_and_breaks_ties_by_id(config: Config) -> None:
    manager = await filled(config)
    try:
        for k in (1, 3, 7):
            assert_matches(manager.engine, k=k)
    finally:
        await manager.shutdown()


async def test_own_writes_and_deletes_are_caught_up_without_a_reload(config: Config) -> None:
    manager = await filled(config, 60)
    engine = manager.engine
    assert engine.keywords is not None
    try:
        index = engine.keywords.current("g")
        async with manager.sessions.opened("g", "s1") as live:
            added = await manager.memories.add_memories(
                live.group_id, live.session_id, [{"content": "zebra violin zebra", "producer": "ben"}]
            )
        new_id = added.memories[0].id
        assert_same_ranking(ours(engine, "zebra", Filters(), 5), oracle(engine, "zebra", Filters(), 5))
        assert [i for i, _ in ours(engine, "zebra", Filters(), 5) or []][0] == new_id  # then its neighbours
        assert (
            engine.keywords.current("g") is index and index.added_rows > 1
        )  # the new turn and its neighbours
        await manager.memories.delete_memories("g", [new_id])
        assert ours(engine, "zebra", Filters(), 5) == []
        assert_matches(engine)
        await manager.memories.delete_memories("g", session_id="s2")
        assert_matches(engine)
        assert engine.keywords.current("g") is index
    finally:
        await manager.shutdown()


async def test_writes_from_another_process_are_seen_by_the_next_search(config: Config) -> None:
    reader = await filled(config, 60)
    writer = await MemoryManager(config).start()
    try:
        assert_matches(reader.engine)
        async with writer.sessions.opened("g", "s2") as live:
            added = await writer.memories.add_memories(
                live.group_id, live.session_id, [{"content": "zebra zebra café", "producer": "Ana Lima"}]
            )
        assert [i for i, _ in ours(reader.engine, "zebra", Filters(), 3) or []][0] == added.memories[0].id
        assert_matches(reader.engine)
        await writer.memories.delete_memories("g", [added.memories[0].id])
        assert ours(reader.engine, "zebra", Filters(), 3) == []
    finally:
        await reader.shutdown()
        await writer.shutdown()


async def test_a_copy_behind_a_pruned_log_or_too_many_changes_is_reloaded(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await filled(config, 60)
    engine = manager.engine
    assert engine.keywords is not None
    try:
        index = engine.keywords.current("g")
        monkeypatch.setattr(fts, "KEEP_CHANGES", 2)  # the log forgets all but the newest entries
        async with manager.sessions.opened("g", "s1") as live:
            await manager.memories.add_memories(
                live.group_id,
                live.session_id,
                [{"content": f"zebra {i}", "producer": "ben"} for i in range(3)],
            )
        fresh = engine.keywords.current("g")
        assert fresh is not None and fresh is not index
        assert_matches(engine)
        monkeypatch.setattr(fts, "KEEP_CHANGES", 50_000)
        monkeypatch.setattr(keyword_index, "MAX_CATCH_UP", 2)
        async with manager.sessions.opened("g", "s1") as live:
            await manager.memories.add_memories(
                live.group_id,
                live.session_id,
                [{"content": f"zebra again {i}", "producer": "ben"} for i in range(3)],
            )
        again = engine.keywords.current("g")
        assert again is not None and again is not fresh
        assert_matches(engine)
    finally:
        await manager.shutdown()


async def test_a_copy_grown_by_many_replayed_rows_is_replaced_by_a_fresh_load(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await filled(config, 60)
    engine = manager.engine
    assert engine.keywords is not None
    try:
        index = engine.keywords.current("g")
        monkeypatch.setattr(keyword_index, "RELOAD_MIN", 0)
        monkeypatch.setattr(keyword_index, "RELOAD_SHARE", 0.0)
        gate = threading.Event()
        scan = engine.store.scan_group_keywords

        def held_scan(group_id, consume, *, whole_table):  # type: ignore[no-untyped-def]
            assert gate.wait(10)
            return scan(group_id, consume, whole_table=whole_table)

        monkeypatch.setattr(engine.store, "scan_group_keywords", held_scan)
        async with manager.sessions.opened("g", "s1") as live:
            await manager.memories.add_memories(
                live.group_id, live.session_id, [{"content": "zebra", "producer": "ben"}]
            )
        assert engine.keywords.current("g") is index  # caught up, and answering while a fresh copy loads
        assert_same_ranking(ours(engine, "zebra", Filters(), 5), oracle(engine, "zebra", Filters(), 5))
        gate.set()
        for _ in range(200):
            fresh = engine.keywords.current("g")
            if fresh is not index:
                break
            threading.Event().wait(0.05)
        assert fresh is not None and fresh is not index and fresh.added_rows == 0
        assert_matches(engine)
    finally:
        gate.set()
        await manager.shutdown()


async def test_a_large_group_loads_in_the_background_while_the_store_ranks_alike(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await filled(config, 60)
    engine = manager.engine
    assert engine.keywords is not None
    gate, entered = threading.Event(), threading.Event()
    scan = engine.store.scan_group_keywords

    def held_scan(group_id, consume, *, whole_table):  # type: ignore[no-untyped-def]
        entered.set()
        assert gate.wait(10)
        return scan(group_id, consume, whole_table=whole_table)

    monkeypatch.setattr(engine.store, "scan_group_keywords", held_scan)
    try:
        engine.keywords.close()
        engine.keywords = KeywordSearch(engine.store, 2**30)
        engine.keywords.sync_load_rows = 0
        assert ours(engine, "café", Filters(), 5) is None  # loading: the caller asks the store
        assert entered.wait(10)
        meanwhile = engine.keyword_search("g", "café sunrise", Filters(), 10, ["Ana Lima", "ben"])
        assert meanwhile == stored(engine, "café sunrise", Filters(), 10)
        assert_same_ranking(meanwhile, oracle(engine, "café sunrise", Filters(), 10))
        gate.set()
        for _ in range(200):
            if engine.keywords.current("g") is not None:
                break
            threading.Event().wait(0.05)
        assert_same_ranking(ours(engine, "café sunrise", Filters(), 10), meanwhile)
        assert_matches(engine)
    finally:
        gate.set()
        await manager.shutdown()


async def test_over_the_budget_the_store_ranks_as_the_copy_would_and_recall_still_works(
    db_path: Path,
) -> None:
    manager = await filled(Config(db_path=db_path, embedder="hashing", keyword_cache_mb=1), 40)
    try:
        assert manager.engine.keywords is not None
        held = {query: ours(manager.engine, query, NO_FILTERS, 10) for query in QUERIES}
        manager.engine.keywords.close()
        small = manager.engine.keywords = KeywordSearch(manager.engine.store, 1000)
        assert small.current("g") is None
        assert small.search(query_words("violin bread"), "g", Filters(), 5) is None
        for query, expected in held.items():
            found = manager.engine.keyword_search("g", query, NO_FILTERS, 10, ["Ana Lima", "ben"])
            assert_same_ranking(found, expected or [])
        result = await recall(manager, "g", "violin bread")
        assert result.hits and "keyword" in result.hits[0].matched_by
    finally:
        await manager.shutdown()
    off = await filled(
        Config(db_path=db_path.with_name("off.db"), embedder="hashing", keyword_cache_mb=0), 40
    )
    try:
        assert off.engine.keywords is None
        assert (await recall(off, "g", "violin bread")).hits
    finally:
        await off.shutdown()


async def test_long_rows_are_measured_as_fts5_records_them(db_path: Path) -> None:
    """A column of 128 tokens or more takes two bytes of FTS5's per-row record, of 16,384 or more three."""
    config = Config(db_path=db_path, embedder="hashing", max_content_chars=40_000)
    manager = await filled(config, 40)
    try:
        async with manager.sessions.opened("g", "s1") as live:
            await manager.memories.add_memories(
                live.group_id,
                live.session_id,
                [
                    {"content": " ".join(sentences(30, seed=3)), "producer": "ben"},
                    {"content": "violin " * 200 + "bread", "producer": "ben"},
                    {"content": "v " * 17_000 + "sunrise", "producer": "ben"},
                ],
            )
        assert_matches(manager.engine)
    finally:
        await manager.shutdown()


async def test_a_word_fts5_reads_as_a_phrase_is_left_to_the_store_and_ranked_in_the_group(
    config: Config,
) -> None:
    manager = await filled(config, 40)
    engine = manager.engine
    try:
        async with manager.sessions.opened("g", "s1") as live:
            await manager.memories.add_memories(
                live.group_id,
                live.session_id,
                [{"content": "open the garden_gate please", "producer": "ben"}],
            )
        assert ours(engine, "garden_gate", Filters(), 5) is None
        found = engine.keyword_search("g", "garden_gate", Filters(), 5)
        assert found == engine.store.search_keywords("g", "garden_gate", [], Filters(), 5)
        assert_same_ranking(found, oracle(engine, "garden_gate", Filters(), 5))
        assert len(found) == 3  # the turn, and its two neighbours through their context columns
        assert engine.keyword_search("g", "gate_garden", Filters(), 5) == []  # the tokens in that order
    finally:
        await manager.shutdown()


def test_tokens_are_what_fts5_stores(tmp_path: Path) -> None:
    from tests.test_store import open_store

    store = open_store(tmp_path / "t.db")
    try:
        assert store.tokenize_words(["Painting", "café", "Über", "garden_gate", "gate_garden", "!!"]) == [
            ("paint",), ("cafe",), ("uber",), ("garden", "gate"), ("gate", "garden"), (),
        ]  # fmt: skip
    finally:
        store.close()


def test_fts5s_own_bm25_search_scans_the_index_first_whatever_the_filters(tmp_path: Path) -> None:
    """Store.keyword_search (FTS5's bm25(), what benchmarks compare with): a time filter once made SQLite walk
    the episodes by time and run the MATCH per row (0.9 s at 10k)."""
    from tests.test_store import open_store

    store = open_store(tmp_path / "t.db")
    try:
        plan = store.read(
            "EXPLAIN QUERY PLAN SELECT e.id FROM episodes_fts CROSS JOIN episodes e ON e.id = episodes_fts.rowid "
            "WHERE episodes_fts MATCH 'x' AND e.group_id = 'g' AND e.ts_epoch >= 0 AND e.producer_role = 'user'"
        )
        assert "episodes_fts" in plan[0]["detail"] and "VIRTUAL TABLE" in plan[0]["detail"]
    finally:
        store.close()


def test_postings_count_each_column_and_the_row_lengths() -> None:
    from mcp_memory.store.sqlite.keywords import KeywordRows

    rows = KeywordRows(
        np.asarray([5, 9], np.int64), ["g", "g"], ["s", "s"], ["a", "b"], ["user", "user"], ["message"] * 2,
        np.asarray([1.0, 2.0]),
    )  # fmt: skip
    # "sun": twice in row 5's content, once in row 9's speaker column and once in its 'after' column.
    codes = [
        ("sun", np.asarray([5 * 4 + 1, 5 * 4 + 1, 9 * 4 + 0, 9 * 4 + 3])),
        ("sea", np.asarray([9 * 4 + 1])),
    ]
    index = KeywordIndex(7, rows, iter(codes))
    assert index.seq == 7 and index.rows == 2 and index.tokens == 5
    found_rows, weighted = index._matches("sun", fts.TEXT_COLUMNS)
    assert found_rows.tolist() == [0, 1] and weighted.tolist() == [2.0, fts.COLUMN_WEIGHTS[3]]
    assert index._matches("sun", fts.SPEAKER_COLUMNS)[0].tolist() == [1]
    assert [i for i, _ in index.search([("sun", fts.TEXT_COLUMNS)], "g", {}, None, 5)] == [5, 9]
    assert index.search([("sun", fts.TEXT_COLUMNS)], "elsewhere", {}, None, 5) == []


async def test_a_batch_written_here_is_searched_next_without_reading_or_tokenising_again(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = await filled(config, 40)
    engine = manager.engine
    assert engine.keywords is not None
    try:
        await manager.groups.create_group("new", user_ids=["ben"])
        await manager.sessions.open_session("new", "s")
        added = await manager.memories.add_memories(
            "new", "s", [{"content": f"zebra item{i}", "producer": "ben"} for i in range(250)]
        )

        def refused(*args: object, **kwargs: object) -> None:
            raise AssertionError("the copy should hold the batch already")

        for reader in ("keyword_rows", "scan_group_keywords", "keyword_search", "search_keywords"):
            monkeypatch.setattr(engine.store, reader, refused)
        found = engine.keywords.search(query_words("item7"), "new", Filters(), 3)
        assert found is not None and found[0][0] == added.memories[7].id
    finally:
        monkeypatch.undo()
        await manager.shutdown()


async def test_copies_share_the_budget_and_the_least_recently_used_group_goes_first(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyword_index, "BYTES_PER_TOKEN", 0)  # the estimate before a load is not under test
    manager = await filled(config, 60, groups=("g", "other", "third"))
    engine = manager.engine
    try:
        assert engine.keywords is not None
        engine.keywords.close()
        probe = KeywordSearch(engine.store, 2**30)
        sizes = {}
        for group in ("g", "other", "third"):
            held = probe.current(group)
            assert held is not None
            sizes[group] = held.nbytes
        budget = sum(sizes.values()) - 1  # room for any two of them, not for all three
        engine.keywords = keywords = KeywordSearch(engine.store, budget)
        for group in ("g", "other", "third"):
            assert keywords.current(group) is not None
        assert keywords.nbytes <= budget
        assert keywords._groups.keys() == {"other", "third"}  # noqa: SLF001 - which copies are held
        keywords.current("other")
        keywords.current("g")  # loaded again; "third" is now the least recently used
        assert keywords._groups.keys() == {"other", "g"}  # noqa: SLF001
        for query in QUERIES:  # g answers from its reloaded copy as from the first
            words = query_words(query, ["Ana Lima", "ben"])
            assert keywords.search(words, "g", NO_FILTERS, 10) == probe.search(words, "g", NO_FILTERS, 10)
        probe.close()
    finally:
        await manager.shutdown()
