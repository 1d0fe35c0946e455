"""The manager from Python: reference counting, eviction with an injected clock, lifecycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcp_memory.config import Config
from mcp_memory.errors import (
    GroupExists,
    GroupNotFound,
    ManagerClosed,
    SessionExists,
    SessionInUse,
    SessionNotFound,
    ValidationFailed,
)
from mcp_memory.manager import MemoryManager
from tests.helpers import FakeClock, recall

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def clocked(db_path: Path, clock: FakeClock):
    config = Config(db_path=db_path, embedder="hashing", max_life_time_s=600, session_cache_size=3)
    async with MemoryManager(config, clock=clock) as manager:
        await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
        yield manager


async def test_open_twice_returns_the_same_instance_with_two_references(clocked: MemoryManager) -> None:
    first, created = await clocked.sessions.open_session("g", "s")
    second, created_again = await clocked.sessions.open_session("g", "s")
    assert first is second
    assert (created, created_again) == (True, False)
    assert first.reference_count == 2


async def test_open_twice_then_close_once_keeps_session_alive(
    clocked: MemoryManager, clock: FakeClock
) -> None:
    session, _ = await clocked.sessions.open_session("g", "s")
    await clocked.sessions.open_session("g", "s")
    assert await clocked.sessions.close_session("g", "s") == (True, 1)
    clock.advance(10_000)
    assert await clocked.sessions.sweep() == []
    again, _ = await clocked.sessions.open_session("g", "s")
    assert again is session


async def test_closing_a_session_that_is_not_open_reports_false(clocked: MemoryManager) -> None:
    assert await clocked.sessions.close_session("g", "never-opened") == (False, 0)
    await clocked.sessions.open_session("g", "s")
    assert await clocked.sessions.close_session("g", "s", owner="someone-else") == (False, 1)


async def test_unreferenced_session_stays_cached_until_idle_past_max_life_time(
    clocked: MemoryManager, clock: FakeClock
) -> None:
    session, _ = await clocked.sessions.open_session("g", "s")
    await clocked.sessions.close_session("g", "s")
    clock.advance(599)
    assert await clocked.sessions.sweep() == []
    reopened, _ = await clocked.sessions.open_session("g", "s")
    assert reopened is session
    await clocked.sessions.close_session("g", "s")
    clock.advance(601)
    assert await clocked.sessions.sweep() == [("g", "s")]
    fresh, created = await clocked.sessions.open_session("g", "s")
    assert fresh is not session and not created


async def test_bounded_cache_evicts_the_longest_idle_and_never_one_in_use(
    clocked: MemoryManager, clock: FakeClock
) -> None:
    await clocked.sessions.open_session("g", "busy")
    for name in ("a", "b", "c"):
        await clocked.sessions.open_session("g", name)
        clock.advance(1)
        await clocked.sessions.close_session("g", name)
    # four live instances, cache bound three: the longest idle one ("a") goes; "busy" is in use.
    live = set(clocked.sessions.live)  # the registry is what is under test
    assert ("g", "a") not in live
    assert {("g", "busy"), ("g", "b"), ("g", "c")} == live


async def test_cache_may_exceed_its_bound_while_every_instance_is_in_use(clocked: MemoryManager) -> None:
    for name in ("a", "b", "c", "d", "e"):
        await clocked.sessions.open_session("g", name)
    assert await clocked.sessions.sweep() == []
    assert len(clocked.sessions.live) == 5


async def test_deleting_a_session_in_use_is_an_error(clocked: MemoryManager) -> None:
    await clocked.sessions.open_session("g", "s")
    with pytest.raises(SessionInUse, match="close_session"):
        await clocked.sessions.delete_session("g", "s")
    await clocked.sessions.close_session("g", "s")
    result = await clocked.sessions.delete_session("g", "s")
    assert result.session_id == "s"
    with pytest.raises(SessionNotFound):
        await clocked.sessions.open_session("g", "s", mode="open")


async def test_release_owner_drops_only_that_owners_references(clocked: MemoryManager) -> None:
    session, _ = await clocked.sessions.open_session("g", "s", owner="conn-1")
    await clocked.sessions.open_session("g", "s", owner="conn-1")
    await clocked.sessions.open_session("g", "s", owner="conn-2")
    assert await clocked.sessions.release_owner("conn-1") == 2
    assert session.reference_count == 1
    assert await clocked.sessions.close_session("g", "s", owner="conn-1") == (False, 1)


async def test_mode_create_and_open_enforce_existence(clocked: MemoryManager) -> None:
    with pytest.raises(SessionNotFound, match="open_or_create"):
        await clocked.sessions.open_session("g", "s", mode="open")
    await clocked.sessions.open_session("g", "s", mode="create")
    with pytest.raises(SessionExists, match="mode='open'"):
        await clocked.sessions.open_session("g", "s", mode="create")
    with pytest.raises(ValidationFailed, match="mode"):
        await clocked.sessions.open_session("g", "s", mode="sometimes")


async def test_session_configuration_deep_merges_base_group_and_session_and_is_frozen(db_path: Path) -> None:
    base = {"short_term": {"max_episodes": 7, "max_tokens": 999}}
    config = Config(db_path=db_path, embedder="hashing", base_configuration=base)
    async with MemoryManager(config) as manager:
        await manager.groups.create_group(
            "g", user_ids=["u"], configuration={"short_term": {"max_tokens": 500}}
        )
        session, _ = await manager.sessions.open_session(
            "g", "s", configuration={"long_term": {"enabled": False}}
        )
        settings = session.configuration
        assert (settings.short_term.max_episodes, settings.short_term.max_tokens) == (7, 500)
        assert settings.long_term.enabled is False
        with pytest.raises(ValidationFailed, match="frozen"):
            await manager.sessions.open_session("g", "s", configuration={"long_term": {"enabled": True}})


async def test_groups_need_a_participant_and_a_new_id(manager: MemoryManager) -> None:
    with pytest.raises(ValidationFailed, match="participant"):
        await manager.groups.create_group("g")
    first = await manager.groups.create_group("g", agent_ids=["bot"])
    with pytest.raises(GroupExists, match="already exists"):
        await manager.groups.create_group("g", user_ids=["u"])
    again = await manager.groups.create_group("g", agent_ids=["bot"], description="said again")
    assert first.created and not again.created and again.description is None
    with pytest.raises(GroupNotFound, match="create_group"):
        await manager.sessions.open_session("missing", "s")


async def test_async_with_helpers_release_in_finally(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["u"])
    with pytest.raises(RuntimeError, match="boom"):
        async with manager.sessions.created("g", "s") as session:
            assert session.reference_count == 1
            raise RuntimeError("boom")
    assert session.reference_count == 0
    async with manager.sessions.opened("g", "s") as again:
        await manager.memories.add_memories(
            again.group_id, again.session_id, [{"content": "hello there", "producer": "u"}]
        )
        assert [e.content for e in await manager.memories.recent("g", "s")] == ["hello there"]
    assert again.reference_count == 0


async def test_every_call_fails_clearly_after_shutdown(config: Config) -> None:
    manager = await MemoryManager(config).start()
    await manager.groups.create_group("g", user_ids=["u"])
    await manager.sessions.open_session("g", "s")
    await manager.shutdown()
    for call in (
        lambda: manager.sessions.open_session("g", "s"),
        lambda: manager.groups.create_group("h", user_ids=["u"]),
        lambda: recall(manager, "g", "anything"),
        lambda: manager.memories.add_memories("g", "s", [{"content": "x", "producer": "u"}]),
        lambda: manager.upkeep.stats(),
    ):
        with pytest.raises(ManagerClosed, match="shut down"):
            await call()


async def test_memories_survive_a_restart_of_the_manager(config: Config) -> None:
    async with MemoryManager(config) as manager:
        await manager.groups.create_group("g", user_ids=["u"])
        async with manager.sessions.created("g", "s") as session:
            added = await manager.memories.add_memories(
                session.group_id,
                session.session_id,
                [{"content": "the blue notebook is in the drawer", "producer": "u"}],
            )
    async with MemoryManager(config) as manager:
        result = await recall(manager, "g", "where is the notebook")
        assert [h.id for h in result.hits] == [added.memories[0].id]


@pytest.mark.sqlite_only
async def test_long_term_memory_switched_off_stores_without_vectors_and_keywords_still_find_it(
    manager: MemoryManager,
) -> None:
    await manager.groups.create_group("g", user_ids=["u"])
    async with manager.sessions.created("g", "s", configuration={"long_term": {"enabled": False}}) as session:
        added = await manager.memories.add_memories(
            session.group_id,
            session.session_id,
            [{"content": "the lighthouse keeper's diary", "producer": "u"}],
        )
    episode_id = added.memories[0].id
    vectors = manager.engine.store.read("SELECT count(*) FROM episode_vectors WHERE rowid = ?", (episode_id,))
    assert vectors[0][0] == 0
    result = await recall(manager, "g", "lighthouse")
    assert [(h.id, h.matched_by) for h in result.hits] == [(episode_id, ["keyword"])]
    assert (await manager.upkeep.stats()).pending_vectors == 0  # not waiting to be indexed: it never will be


async def test_short_term_memory_switched_off_returns_no_window(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["u"])
    async with manager.sessions.created(
        "g", "s", configuration={"short_term": {"enabled": False}}
    ) as session:
        await manager.memories.add_memories(
            session.group_id,
            session.session_id,
            [{"content": "kept in long-term memory only", "producer": "u"}],
        )
        assert await manager.memories.recent(session.group_id, session.session_id) == []
    result = await recall(manager, "g", "long-term memory", session_id="s")
    assert result.recent == [] and [h.content for h in result.hits] == ["kept in long-term memory only"]


async def test_creating_an_existing_group_with_another_configuration_is_an_error(
    manager: MemoryManager,
) -> None:
    await manager.groups.create_group("g", user_ids=["u"], configuration={"short_term": {"max_episodes": 5}})
    same = await manager.groups.create_group(
        "g", user_ids=["u"], configuration={"short_term": {"max_episodes": 5}}
    )
    assert same.configuration == {"short_term": {"max_episodes": 5}}
    with pytest.raises(GroupExists, match="configuration"):
        await manager.groups.create_group(
            "g", user_ids=["u"], configuration={"short_term": {"max_episodes": 9}}
        )


async def test_participants_can_join_a_group_and_then_write_to_it(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["ana"])
    await manager.sessions.open_session("g", "s")
    with pytest.raises(ValidationFailed, match="not a participant"):
        await manager.memories.add_memories("g", "s", [{"content": "hi", "producer": "ben"}])
    group = await manager.groups.add_participants("g", user_ids=["ben", "ana"], agent_ids=["bot"])
    assert (group.user_ids, group.agent_ids) == (["ana", "ben"], ["bot"])
    assert (await manager.memories.add_memories("g", "s", [{"content": "hi", "producer": "ben"}])).stored == 1
    with pytest.raises(ValidationFailed, match="who joins"):
        await manager.groups.add_participants("g")
    with pytest.raises(GroupNotFound):
        await manager.groups.add_participants("nope", user_ids=["x"])
