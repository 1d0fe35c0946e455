"""The Store protocol's contract (store/protocol.py): what every backend must do, written only against the
protocol's methods and typed records (no SQL, no rows), so a second backend runs the same tests.

Each test takes a fresh, empty database with group "g" (users ana and bob, agent bot) and its session "s":
`store` of every backend that implements the whole protocol (SQLite), `store` also of those that
implement only some parts so far (PostgreSQL: groups, sessions, summaries, tasks, metadata; issue 13).
PostgreSQL runs on the throwaway server of tests/postgres.py, one database per test (slow).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcp_memory.episodes import prepare_episode
from mcp_memory.models import GroupInfo, MemoryInput
from mcp_memory.services.triples import prepare_fact
from mcp_memory.store.postgres.store import PostgresStore
from mcp_memory.store.protocol import Store
from mcp_memory.store.records import (
    EpisodeChange,
    Filters,
    ImportChunk,
    ImportedEpisode,
    ImportedGroup,
    ImportedSession,
    NewEpisode,
    RollingSummary,
    SessionRecord,
    Visible,
)
from mcp_memory.store.sqlite.store import Store as SQLiteStore
from mcp_memory.times import iso
from tests.postgres import fresh_database

DIMENSION = 4
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
PEOPLE = ["ana", "bob", "bot"]


def sqlite_store(tmp_path: Path) -> Store:
    return SQLiteStore(tmp_path / "contract.db", embedder_name="contract-4", dimension=DIMENSION)


def seeded(opened: Any) -> Any:
    opened.insert_group(GroupInfo(group_id="g", user_ids=["ana", "bob"], agent_ids=["bot"], created_at=T0))
    opened.insert_session(session("s"))
    return opened


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = seeded(sqlite_store(tmp_path))
        yield opened
        opened.close()
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        opened = seeded(PostgresStore(url, embedder_name="contract-4", dimension=DIMENSION))
        try:
            yield opened
        finally:
            opened.close()


def session(session_id: str, group_id: str = "g", **configuration: Any) -> SessionRecord:
    return SessionRecord(
        group_id=group_id, session_id=session_id, configuration=configuration, overrides={}, created_at=T0
    )


def new(content: str, producer: str = "ana", minutes: int | None = None, **fields: Any) -> NewEpisode:
    """A turn as the services prepare it; with `minutes`, timed that many minutes after T0."""
    timestamp = None if minutes is None else T0 + timedelta(minutes=minutes)
    item = MemoryInput(content=content, producer=producer, timestamp=timestamp, **fields)
    return prepare_episode(item, participants=PEOPLE, max_content_chars=10_000, now=T0)


def vectors(count: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def add(store: Store, *episodes: NewEpisode, session_id: str = "s", index: bool = True) -> list[int]:
    batch = store.insert_episodes(
        "g", session_id, episodes, vectors(len(episodes)) if index else None, index_vectors=index,
        created_at=iso(T0), retry_window_start=iso(T0 - timedelta(minutes=5)),
    )  # fmt: skip
    return [item.id for item in batch.items]


# -- groups and sessions -----------------------------------------------------------------------------


def test_a_group_is_inserted_once_and_read_back_as_it_was(store: Store) -> None:
    again = GroupInfo(group_id="g", user_ids=["zoe"], agent_ids=[], created_at=T0)
    assert store.insert_group(again) is False
    group = store.get_group("g")
    assert group is not None
    assert (group.user_ids, group.agent_ids, group.created_at) == (["ana", "bob"], ["bot"], T0)
    assert store.get_group("nope") is None


def test_participants_are_appended_in_order_without_repeats(store: Store) -> None:
    store.add_participants("g", ["bob", "cy"], ["bot", "helper"])
    group = store.get_group("g")
    assert group is not None and (group.user_ids, group.agent_ids) == (
        ["ana", "bob", "cy"],
        ["bot", "helper"],
    )


def test_groups_are_listed_in_id_order_with_their_counts(store: Store) -> None:
    store.insert_group(GroupInfo(group_id="a", user_ids=[], agent_ids=[], description="first", created_at=T0))
    add(store, new("hello"))
    listed = store.list_groups(10)
    assert [g.group_id for g in listed] == ["a", "g"]
    assert (listed[1].session_count, listed[1].episode_count) == (1, 1)
    assert listed[0].description == "first"
    assert [g.group_id for g in store.list_groups(10, offset=1)] == ["g"]
    assert store.group_counts("g") == (1, 1)


def test_a_group_keeps_its_owner_and_a_listing_shows_a_principal_its_groups(store: Store) -> None:
    for group_id, owner in (("alice-1", "alice"), ("alice-2", "alice"), ("bob-1", "bob"), ("shared", None)):
        store.insert_group(
            GroupInfo(group_id=group_id, user_ids=["u"], agent_ids=[], created_at=T0, owner=owner)
        )
    assert store.get_group("alice-1").owner == "alice" and store.get_group("g").owner is None  # type: ignore[union-attr]
    mine = store.list_groups(10, 0, Visible("alice"))
    assert [(g.group_id, g.owner) for g in mine] == [("alice-1", "alice"), ("alice-2", "alice")]
    named = store.list_groups(10, 0, Visible("bob", ("shared", "g", "nowhere")))
    assert [g.group_id for g in named] == ["bob-1", "g", "shared"]
    assert named[1].episode_count == 0 and [
        g.group_id for g in store.list_groups(1, 1, Visible("bob", ("g",)))
    ] == ["g"]
    assert store.list_groups(10, 0, Visible("nobody")) == []
    assert len(store.list_groups(10)) == 5


def test_a_session_keeps_its_configuration_and_counts_its_episodes(store: Store) -> None:
    assert store.insert_session(session("t", short_term={"max_episodes": 3})) is True
    assert store.insert_session(session("t")) is False
    add(store, new("one"), new("two"), session_id="t")
    found = store.get_session("g", "t")
    assert found is not None
    assert (found.configuration, found.episode_count, found.created_at) == (
        {"short_term": {"max_episodes": 3}},
        2,
        T0,
    )
    assert store.get_session("g", "nope") is None
    assert {s.session_id for s in store.list_sessions("g", 10)} == {"s", "t"}


def test_deleting_a_session_takes_its_episodes_and_summaries_with_it(store: Store) -> None:
    add(store, new("gone soon"), new("me too"))
    store.save_rolling_summary("g", "s", RollingSummary("so far", 1, iso(T0)))
    assert store.delete_session("g", "s") == 2
    assert store.get_session("g", "s") is None
    assert store.rolling_summary("g", "s") is None
    assert store.group_counts("g") == (0, 0)


# -- episodes ----------------------------------------------------------------------------------------


def test_a_batch_is_numbered_on_from_the_session_and_read_back_typed(store: Store) -> None:
    first = add(store, new("the blue notebook", minutes=1))
    later = add(store, new("is in the drawer", "bot", minutes=2, role="assistant"))
    recent = store.recent_episodes("g", "s", 10)
    assert [e.id for e in recent] == first + later
    assert [(e.sequence, e.producer, e.role) for e in recent] == [(1, "ana", "user"), (2, "bot", "assistant")]
    assert recent[0].timestamp == T0 + timedelta(minutes=1) and recent[0].content == "the blue notebook"
    assert [e.id for e in store.recent_episodes("g", "s", 1)] == later


def test_a_timed_memory_sent_again_is_found_not_stored_twice(store: Store) -> None:
    first = store.insert_episodes(
        "g", "s", [new("said once", minutes=3)], vectors(1), index_vectors=True,
        created_at=iso(T0), retry_window_start=iso(T0),
    )  # fmt: skip
    again = store.insert_episodes(
        "g", "s", [new("said once", minutes=3)], vectors(1), index_vectors=True,
        created_at=iso(T0 + timedelta(hours=5)), retry_window_start=iso(T0 + timedelta(hours=4)),
    )  # fmt: skip
    assert [i.duplicate for i in first.items] == [False] and [i.duplicate for i in again.items] == [True]
    assert again.items[0].id == first.items[0].id
    assert store.count_episodes("g", "s") == 1


def test_extras_of_a_message_come_back_with_it(store: Store) -> None:
    call = {"id": "c1", "name": "weather", "arguments": {"city": "Lisbon"}}
    [memory_id] = add(store, new("checking", "bot", role="assistant", tool_calls=[call], metadata={"k": 1}))
    episode = store.fetch_episodes([memory_id])[memory_id]
    assert episode.tool_calls is not None and episode.tool_calls[0].name == "weather"
    assert episode.metadata == {"k": 1}


def test_a_correction_changes_the_text_and_keeps_id_sequence_and_time(store: Store) -> None:
    [memory_id] = add(store, new("the key is under the mat", minutes=4))
    change = EpisodeChange(content="the key is under the pot", content_hash="h2", importance=0.9)
    updated = store.update_episode("g", memory_id, change, vectors(1, seed=7)[0], iso(T0 + timedelta(days=1)))
    assert updated is not None
    assert (updated.id, updated.sequence, updated.timestamp) == (memory_id, 1, T0 + timedelta(minutes=4))
    assert (updated.content, updated.importance) == ("the key is under the pot", 0.9)
    assert store.update_episode("other", memory_id, change, None, iso(T0)) is None


def test_retrievals_are_counted(store: Store) -> None:
    [memory_id] = add(store, new("remember me"))
    store.touch([memory_id], iso(T0 + timedelta(hours=1)))
    store.touch([memory_id], iso(T0 + timedelta(hours=2)))
    episode = store.fetch_episodes([memory_id])[memory_id]
    assert episode.retrieval_count == 2 and episode.last_accessed_at == T0 + timedelta(hours=2)


def test_deletion_by_id_or_session_keeps_the_roles_asked_for(store: Store) -> None:
    ids = add(store, new("rule one", "bot", role="system"), new("a"), new("b"))
    assert store.delete_episodes("g", [ids[1]], None) == 1
    assert store.delete_episodes("other", [ids[2]], None) == 0  # another group's ids are not ours
    assert store.delete_episodes("g", None, "s", keep_roles=["system"]) == 1
    assert [e.content for e in store.session_episodes("g", "s")] == ["rule one"]


def test_reads_by_range_type_and_span(store: Store) -> None:
    ids = add(store, *(new(f"turn {n}", minutes=n) for n in range(1, 7)))
    add(store, new("a summary", "bot", memory_type="summary"))
    assert [e.sequence for e in store.episodes_between("g", "s", 2, 5)] == [3, 4]
    assert len(store.session_episodes("g", "s", exclude_types=["summary"])) == 6
    assert store.count_episodes("g", "s", exclude_types=["summary"]) == 6
    assert [e.sequence for e in store.episodes_in_spans("g", [("s", 2, 3), ("s", 6, 9)])] == [2, 3, 6, 7]
    assert store.episodes_in_spans("g", []) == []
    assert set(store.fetch_episodes([ids[0], 10**9])) == {ids[0]}


def test_a_listing_pages_in_order_and_goes_on_from_where_it_stopped(store: Store) -> None:
    add(store, *(new(f"turn {n}", minutes=n) for n in range(1, 6)))
    by_session = Filters(session_id="s")
    first = store.list_episodes(by_session, "g", newest_first=False, after=None, limit=2)
    assert [e.sequence for e in first.episodes] == [1, 2] and first.next_after is not None
    second = store.list_episodes(by_session, "g", newest_first=False, after=first.next_after, limit=2)
    assert [e.sequence for e in second.episodes] == [3, 4]
    last = store.list_episodes(by_session, "g", newest_first=False, after=second.next_after, limit=2)
    assert [e.sequence for e in last.episodes] == [5] and last.next_after is None
    newest = store.list_episodes(Filters(), "g", newest_first=True, after=None, limit=3)
    assert [e.sequence for e in newest.episodes] == [5, 4, 3]
    rest = store.list_episodes(Filters(), "g", newest_first=True, after=newest.next_after, limit=3)
    assert [e.sequence for e in rest.episodes] == [2, 1] and rest.next_after is None


def test_listing_filters_apply_inside_the_page(store: Store) -> None:
    add(store, new("from ana", minutes=1), new("from bob", "bob", minutes=2), new("ana again", minutes=3))
    page = store.list_episodes(Filters(producer="ana"), "g", newest_first=False, after=None, limit=10)
    assert [e.content for e in page.episodes] == ["from ana", "ana again"]


def test_what_keeps_a_vector_and_what_does_not(store: Store) -> None:
    [kept] = add(store, new("with a vector"))
    [without] = add(store, new("never embedded"), index=False)
    assert store.keeps_vector(kept) is True
    assert store.keeps_vector(without) is False
    assert store.keeps_vector(10**9) is False


def test_time_and_importance_of_candidates(store: Store) -> None:
    early, late = add(store, new("early", minutes=1, importance=0.9), new("late", minutes=60))
    start = (T0 + timedelta(minutes=30)).timestamp()
    assert store.in_period([early, late], start, start + 3600) == {late}
    assert store.in_period([], 0, 1) == set()
    assert store.effective_importance([early, late], 0.5) == {early: 0.9}


def test_importance_decays_with_time_since_the_last_access(store: Store) -> None:
    [memory_id] = add(store, new("fading", importance=0.8))
    assert store.decay_importance(T0 + timedelta(days=30), 0.01) >= 1
    decayed = store.fetch_episodes([memory_id])[memory_id].effective_importance
    assert decayed is not None and decayed < 0.8
    assert store.decay_importance(T0 + timedelta(days=30), 0.01) == 0  # the same moment again changes nothing


# -- facts -------------------------------------------------------------------------------------------


def add_fact(store: Store, obj: str, *, supersede: bool = False, days: int = 0) -> Any:
    group = store.get_group("g")
    assert group is not None
    fact, episode = prepare_fact(
        ("Ana", "lives in", obj), group=group, session_id="s", source=None, confidence=None,
        valid_from=T0 + timedelta(days=days), max_content_chars=10_000,
    )  # fmt: skip
    return store.insert_facts(
        "g", "s", [fact], [episode], vectors(1), supersede=supersede, index_vectors=True, created_at=iso(T0)
    )


def test_a_fact_is_stored_with_its_episode_and_found_again_as_a_duplicate(store: Store) -> None:
    stored = add_fact(store, "Lisbon")
    [fact] = stored.facts
    assert (fact.subject, fact.predicate, fact.object, fact.current) == ("Ana", "lives in", "Lisbon", True)
    assert stored.duplicate == [False] and stored.new_episodes[0][1] == fact.memory_id
    again = add_fact(store, "Lisbon")
    assert again.duplicate == [True] and again.facts[0].id == fact.id and again.new_episodes == []


def test_a_superseding_fact_closes_the_old_value_and_keeps_it_as_history(store: Store) -> None:
    old = add_fact(store, "Lisbon").facts[0]
    new_fact = add_fact(store, "Porto", supersede=True, days=10)
    assert new_fact.closed == [old.id]
    facts, total = store.list_facts("g", "ANA", None, 10)
    assert total == 2 and [(f.object, f.current) for f in facts] == [("Porto", True), ("Lisbon", False)]
    assert store.closed_fact_episodes([old.memory_id, new_fact.facts[0].memory_id]) == {old.memory_id}
    assert store.list_facts("g", None, "works at", 10) == ([], 0)


# -- summaries, rolling summaries, tasks, metadata ---------------------------------------------------------


def test_lightweight_summaries_are_counted_up_to_the_limit_and_can_be_given_back(store: Store) -> None:
    assert [store.reserve_lightweight("g", "s", 2) for _ in range(3)] == [True, True, False]
    store.release_lightweight("g", "s")
    assert store.lightweight_used("g", "s") == 1
    assert store.reserve_lightweight("g", "s", 2) is True


def test_each_automatic_summary_is_claimed_once(store: Store) -> None:
    assert store.auto_multiple("g", "s") == 0
    assert store.claim_auto("g", "s", 1) is True
    assert store.claim_auto("g", "s", 1) is False
    assert store.claim_auto("g", "s", 3) is True and store.auto_multiple("g", "s") == 3


def test_a_rolling_summary_is_replaced_whole(store: Store) -> None:
    store.save_rolling_summary("g", "s", RollingSummary("first", 2, iso(T0)))
    later = RollingSummary("first and second", 5, iso(T0 + timedelta(hours=1)), [3])
    store.save_rolling_summary("g", "s", later)
    assert store.rolling_summary("g", "s") == later
    found = store.get_session("g", "s")
    assert found is not None and found.rolling_covered_through == 5


def test_a_task_is_finished_only_by_its_owner_and_expires_after(store: Store) -> None:
    lease = T0 + timedelta(seconds=30)
    task = store.create_task(
        kind="summary", group_id="g", session_id="s", owner="me", now=T0, lease_until=lease
    )
    done = {"now": T0, "expires_at": T0 + timedelta(hours=1)}
    assert store.finish_task(task.task_id, "you", status="completed", result={}, **done) is False
    assert store.finish_task(task.task_id, "me", status="completed", result={"memory_id": 3}, **done) is True
    found = store.get_task(task.task_id)
    assert found is not None and (found.status, found.result, found.group_id) == (
        "completed",
        {"memory_id": 3},
        "g",
    )
    assert store.expire_tasks(T0 + timedelta(minutes=59)) == 0
    assert store.expire_tasks(T0 + timedelta(hours=2)) == 1 and store.get_task(task.task_id) is None


def test_a_task_whose_lease_lapses_or_whose_owner_died_is_failed(store: Store) -> None:
    later = T0 + timedelta(days=1)
    lapsing = store.create_task(
        kind="summary",
        group_id="g",
        session_id=None,
        owner="a",
        now=T0,
        lease_until=T0 + timedelta(seconds=30),
    )
    dead = store.create_task(
        kind="summary", group_id="g", session_id="s", owner="b", now=T0, lease_until=later
    )
    assert store.renew_task_lease(lapsing.task_id, "a", T0 + timedelta(seconds=60)) is True
    assert store.fail_lapsed_tasks("lapsed", now=T0 + timedelta(seconds=59), expires_at=later) == 0
    assert store.fail_lapsed_tasks("lapsed", now=T0 + timedelta(seconds=61), expires_at=later) == 1
    assert sorted(store.processing_task_owners()) == ["b"]
    assert store.fail_owners_tasks(["b"], "owner died", now=T0, expires_at=later) == 1
    failed = [store.get_task(t.task_id) for t in (lapsing, dead)]
    assert [(t.status, t.error) for t in failed if t is not None] == [
        ("failed", "lapsed"),
        ("failed", "owner died"),
    ]


def test_metadata_is_kept_and_the_database_has_one_identity(store: Store) -> None:
    assert store.get_meta("contract") is None
    store.set_meta("contract", "one")
    store.set_meta("contract", "two")
    assert store.get_meta("contract") == "two"
    assert store.database_id() == store.database_id() != ""
    assert store.schema_version > 0 and store.location


def test_the_counts_cover_every_group(store: Store) -> None:
    add(store, new("counted"))
    counts = store.stats(iso(T0))
    assert counts["episodes_total"] == 1 and counts["groups"] == [
        {"group_id": "g", "sessions": 1, "episodes": 1}
    ]


# -- search ------------------------------------------------------------------------------------------


def test_keyword_search_ranks_the_groups_matches_and_applies_filters(store: Store) -> None:
    ids = add(
        store, new("the violin lesson is on friday"), new("bread and cheese", "bob"), new("violin strings")
    )
    found = store.search_keywords("g", "violin", ["ana", "bob", "bot"], Filters(), 10)
    assert {i for i, _ in found} >= {ids[0], ids[2]} and ids[1] not in {i for i, _ in found[:2]}
    assert all(a[1] <= b[1] for a, b in zip(found, found[1:], strict=False))  # best (lowest) first
    assert all(i != ids[0] for i, _ in store.search_keywords("g", "violin", [], Filters(producer="bob"), 10))
    assert store.search_keywords("g", "!!!", [], Filters(), 10) == []  # no word to look for
    assert store.search_keywords("other", "violin", [], Filters(), 10) == []


def test_vector_search_finds_the_nearest_and_keeps_to_the_group_and_filters(store: Store) -> None:
    ids = add(store, new("one"), new("two", "bob"), new("three"))
    matrix = vectors(3)
    [(nearest, distance), *_] = store.vector_search("g", matrix[1], Filters(), 3)
    assert nearest == ids[1] and distance < 1e-5
    assert ids[1] not in [i for i, _ in store.vector_search("g", matrix[1], Filters(producer="ana"), 3)]
    assert store.vector_search("other", matrix[1], Filters(), 3) == []


def test_a_session_scoped_vector_search_also_finds_the_groups_summaries_of_other_sessions(
    store: Store,
) -> None:
    store.insert_session(session("t"))
    mine = add(store, new("one"), new("two"))
    summary = add(store, new("a summary", "bot", memory_type="summary"), session_id="t")[0]
    elsewhere = add(store, new("three"), session_id="t")[
        0
    ]  # vectors(1) again: the same vector as "a summary"
    scope = Filters(session_id="s", group_wide_types=("summary",))
    found = [i for i, _ in store.vector_search("g", vectors(1)[0], scope, 10)]
    assert set(found) == {*mine, summary} and elsewhere not in found
    only = Filters(session_id="s", group_wide_types=("summary",), memory_types=("message",))
    assert set(i for i, _ in store.vector_search("g", vectors(1)[0], only, 10)) == set(mine)


def test_a_groups_vectors_are_read_whole_with_their_revision(store: Store) -> None:
    before = store.vector_revision("g")
    ids = add(store, new("one", minutes=1), new("two", "bob", minutes=2))
    revision, rows = store.scan_group_vectors("g")
    assert revision == store.vector_revision("g") > before
    assert sorted(rows.ids.tolist()) == ids and rows.matrix.shape == (2, DIMENSION)
    assert sorted(rows.producer_id) == ["ana", "bob"] and store.vector_count("g") == 2
    assert np.allclose(np.linalg.norm(rows.matrix, axis=1), 1, atol=1e-5)


def test_pending_vectors_are_listed_then_indexed_once(store: Store) -> None:
    batch = store.insert_episodes(
        "g", "s", [new("waits for its vector")], None, index_vectors=True,
        created_at=iso(T0), retry_window_start=iso(T0),
    )  # fmt: skip
    [pending] = store.pending_vectors(10)
    assert (pending.id, pending.content, pending.producer_id) == (
        batch.items[0].id,
        "waits for its vector",
        "ana",
    )
    assert store.pending_count() == 1 and store.keeps_vector(pending.id)
    assert store.set_vectors([pending], vectors(1)) == 1
    assert store.set_vectors([pending], vectors(1)) == 0  # indexed already
    assert store.pending_vectors(10) == [] and store.vector_count("g") == 1


def test_filters_an_in_memory_copy_cannot_check_come_back_as_candidate_ids(store: Store) -> None:
    ids = add(store, new("low", importance=0.1), new("high", importance=0.9))
    assert store.candidate_ids("g", Filters(min_importance=0.5)).tolist() == [ids[1]]


def test_resetting_the_vectors_leaves_every_indexable_episode_pending(store: Store) -> None:
    add(store, new("one"), new("two"))
    add(store, new("never"), index=False)
    assert store.reset_vectors("another-4", DIMENSION) == 2
    assert store.vector_count("g") == 0 and store.pending_count() == 2


# -- save and load -----------------------------------------------------------------------------------


def test_an_export_is_counts_then_every_record_in_file_order(store: Store) -> None:
    add(store, new("first", minutes=1), new("second", "bob", minutes=2))
    add_fact(store, "Lisbon")
    store.save_rolling_summary("g", "s", RollingSummary("so far", 1, iso(T0)))
    records = store.export_records(["g"])
    kind, counts = next(records)
    rest = list(records)
    assert kind == "counts" and (counts["groups"], counts["sessions"], counts["memories"], counts["facts"]) == (
        1, 1, 3, 1,
    )  # fmt: skip
    assert [k for k, _ in rest] == [
        "group",
        "session",
        "memory",
        "memory",
        "memory",
        "fact",
        "rolling_summary",
    ]
    group, memory = rest[0][1], rest[2][1]
    assert (group["group_id"], group["user_ids"], group["agent_ids"]) == ("g", ["ana", "bob"], ["bot"])
    assert (memory["content"], memory["sequence"], memory["producer"], memory["vector"]) == (
        "first",
        1,
        "ana",
        True,
    )
    assert rest[-1][1]["text"] == "so far" and store.export_group_ids() == ["g"]


def imported(old_id: int, content: str, minutes: int) -> ImportedEpisode:
    moment = T0 + timedelta(minutes=minutes)
    return ImportedEpisode(
        old_id=old_id, old_sequence=old_id, dedup_key=None, fallback_key=f"import-test-{old_id}",
        producer_id="zoe", producer_role="user", produced_for_id=None, content=content,
        content_hash=f"h{old_id}", memory_type="message", importance=0.5, effective_importance=0.5,
        metadata_json="{}", timestamp=iso(moment), ts_epoch=moment.timestamp(), created_at=iso(moment),
        updated_at=None, retrieval_count=0, last_accessed_at=None, step=None, message_json=None, vector=True,
    )  # fmt: skip


def test_an_import_writes_once_and_finds_its_records_the_second_time(store: Store) -> None:
    team = ImportedGroup("team", ["zoe"], [], "imported", {}, iso(T0), owner="zoe")
    assert store.import_group(team) == (True, [], [])
    assert store.get_group("team").owner == "zoe"  # type: ignore[union-attr]
    groups = [record for kind, record in store.export_records(["g", "team"]) if kind == "group"]
    assert [g.get("owner") for g in groups] == [None, "zoe"] and "owner" not in groups[0]
    assert store.import_group(ImportedGroup("team", ["zoe", "max"], ["bot"], None, {}, iso(T0))) == (
        False, ["max"], ["bot"],
    )  # fmt: skip
    chunk = ImportChunk(
        group_id="team", session_id="standup",
        session=ImportedSession("team", "standup", {"short_term": {"max_episodes": 4}}, {}, iso(T0)),
        episodes=[imported(7, "shipped the export", 1), imported(8, "and the import", 2)],
    )  # fmt: skip
    first = store.import_chunk(chunk, {}, {})
    assert (first.added, first.existing, first.session_created) == (2, 0, True)
    assert set(first.ids) == {7, 8} and first.sequences == {7: 7, 8: 8}  # sequences kept as exported
    again = store.import_chunk(chunk, {}, {})
    assert (again.added, again.existing, again.session_created) == (0, 2, False) and again.ids == first.ids
    assert store.session_configuration("team", "standup") == {"short_term": {"max_episodes": 4}}
    assert store.session_configuration("team", "nope") is None
    assert [e.content for e in store.session_episodes("team", "standup")] == [
        "shipped the export",
        "and the import",
    ]
    assert store.pending_count() == 2  # imported memories wait for their vectors
