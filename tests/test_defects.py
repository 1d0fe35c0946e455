"""Defects found by driving the server from outside, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from mcp_memory.errors import ConfigurationError, IdempotencyConflict, MemoryServerError, ValidationFailed
from mcp_memory.manager import MemoryManager
from tests.helpers import call, recall

pytestmark = pytest.mark.anyio

SESSION_TIME = "2023-05-08T13:56:00Z"


async def test_the_first_recall_on_a_fresh_database_answers_with_no_hits(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"])
    result = await call(client, "recall", group_id="g", query="what do you remember about me?")
    assert result["hits"] == []


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
async def test_a_timestamp_that_overflows_once_in_utc_is_a_clear_error(
    manager: MemoryManager, moment: str
) -> None:
    await manager.groups.create_group("g", user_ids=["u"])
    await manager.sessions.open_session("g", "s")
    with pytest.raises(ValidationFailed, match="outside the years 1 to 9999 once converted to UTC"):
        await manager.memories.add_memories(
            "g", "s", [{"content": "x", "producer": "u", "timestamp": moment}]
        )
    with pytest.raises(ValidationFailed, match="since .* outside the years 1 to 9999"):
        await recall(manager, "g", "x", since=moment)
    assert (await manager.sessions.session_info("g", "s")).episode_count == 0


@pytest.mark.parametrize("key", ['say "hi"', "back\\slash", "naïve key", "日本"])
async def test_a_metadata_filter_key_with_quotes_or_backslashes_finds_its_memory(
    manager: MemoryManager, key: str
) -> None:
    await manager.groups.create_group("g", user_ids=["u"])
    await manager.sessions.open_session("g", "s")
    await manager.memories.add_memories(
        "g", "s", [{"content": "the red kite", "producer": "u", "metadata": {key: {"inner": 1}}}]
    )
    await manager.memories.add_memories("g", "s", [{"content": "the red kite too", "producer": "u"}])
    found = await recall(manager, "g", "red kite", metadata={f"{key}.inner": 1})
    assert [hit.content for hit in found.hits] == ["the red kite"]


async def test_the_same_short_turn_said_twice_in_one_batch_with_the_session_time_is_kept_twice(
    manager: MemoryManager,
) -> None:
    await manager.groups.create_group("g", user_ids=["ana", "ben"])
    await manager.sessions.open_session("g", "s")
    turns = [
        {"content": "Yeah", "producer": "ana", "timestamp": SESSION_TIME},
        {"content": "Did you see the game?", "producer": "ben", "timestamp": SESSION_TIME},
        {"content": "Yeah", "producer": "ana", "timestamp": SESSION_TIME},
    ]
    first = await manager.memories.add_memories("g", "s", turns)
    assert first.stored == 3 and first.duplicates == 0
    again = await manager.memories.add_memories("g", "s", turns)
    assert again.stored == 0
    assert [m.id for m in again.memories] == [m.id for m in first.memories]


async def test_turns_sent_again_inside_a_longer_batch_are_found_once_each(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["ana"])
    await manager.sessions.open_session("g", "s")
    early = [{"content": "Yeah", "producer": "ana", "timestamp": SESSION_TIME}]
    first = await manager.memories.add_memories("g", "s", early)
    overlapping = [
        *early,
        {"content": "Yeah", "producer": "ana", "timestamp": SESSION_TIME},
        {"content": "Later words", "producer": "ana", "timestamp": SESSION_TIME},
    ]
    result = await manager.memories.add_memories("g", "s", overlapping)
    assert [m.duplicate for m in result.memories] == [True, False, False]
    assert result.memories[0].id == first.memories[0].id
    assert (await manager.sessions.session_info("g", "s")).episode_count == 3


async def test_an_idempotency_key_makes_a_retry_of_single_turns_exact(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["ana"])
    await manager.sessions.open_session("g", "s")
    yeah = [{"content": "Yeah", "producer": "ana", "timestamp": SESSION_TIME}]
    one = await manager.memories.add_memories("g", "s", yeah, idempotency_key="call-1")
    two = await manager.memories.add_memories("g", "s", yeah, idempotency_key="call-2")
    retried = await manager.memories.add_memories("g", "s", yeah, idempotency_key="call-2")
    assert one.stored == two.stored == 1 and one.memories[0].id != two.memories[0].id
    assert retried.duplicates == 1 and retried.memories[0].id == two.memories[0].id
    untimed = [{"content": "ok", "producer": "ana"}]
    assert (await manager.memories.add_memories("g", "s", untimed, idempotency_key="call-3")).stored == 1
    assert (await manager.memories.add_memories("g", "s", untimed, idempotency_key="call-4")).stored == 1
    assert (await manager.sessions.session_info("g", "s")).episode_count == 4


async def test_an_idempotency_key_sent_again_with_other_words_is_refused_and_writes_nothing(
    manager: MemoryManager,
) -> None:
    await manager.groups.create_group("g", user_ids=["ana"])
    await manager.sessions.open_session("g", "s")
    await manager.memories.add_memories(
        "g", "s", [{"content": "first", "producer": "ana"}], idempotency_key="k"
    )
    with pytest.raises(IdempotencyConflict, match="already used"):
        await manager.memories.add_memories(
            "g",
            "s",
            [{"content": "first", "producer": "ana"}, {"content": "other", "producer": "ana"}],
            idempotency_key="k",
        )
    with pytest.raises(IdempotencyConflict):
        await manager.memories.add_memories(
            "g", "s", [{"content": "changed", "producer": "ana"}], idempotency_key="k"
        )
    assert (await manager.sessions.session_info("g", "s")).episode_count == 1


async def test_the_same_lightweight_summary_stored_again_takes_no_second_slot(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
    await manager.sessions.open_session("g", "s")
    await manager.memories.add_memories(
        "g", "s", [{"content": "We planned the trip to Porto", "producer": "ana"}]
    )
    points = ["Ana plans a trip to Porto", "She wants to go in May", "The bot will book trains"]
    first = await manager.summaries.summarize_session("g", "s", mode="lightweight", summary=points)
    again = await manager.summaries.summarize_session("g", "s", mode="lightweight", summary=points)
    assert again.memory_id == first.memory_id and again.duplicate and not first.duplicate
    counted = manager.engine.store.read("SELECT lightweight FROM summary_counts")
    assert [tuple(row) for row in counted] == [(1,)]


async def test_a_groups_own_resource_reports_the_same_counts_as_the_list(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"])
    await call(client, "open_session", group_id="g", session_id="s")
    await call(client, "add_memory", group_id="g", session_id="s", content="hello", producer="ana")
    listed = json.loads((await client.read_resource("memory://groups")).contents[0].text)
    detail = json.loads((await client.read_resource("memory://groups/g")).contents[0].text)
    assert (listed[0]["session_count"], listed[0]["episode_count"]) == (1, 1)
    assert (detail["group"]["session_count"], detail["group"]["episode_count"]) == (1, 1)


async def test_a_recall_scoped_to_a_session_also_finds_the_groups_facts(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
    await manager.sessions.open_session("g", "today")
    await manager.memories.add_memories("g", "today", [{"content": "Good morning", "producer": "ana"}])
    await manager.facts.add_fact("g", "Ana", "lives in", "Lisbon")  # stored in the group's facts session
    found = await recall(manager, "g", "where does Ana live", session_id="today")
    assert any(hit.memory_type == "fact" and "Lisbon" in hit.content for hit in found.hits)
    other = await recall(manager, "g", "where does Ana live", session_id="today", memory_types=["message"])
    assert all(hit.memory_type == "message" for hit in other.hits)


async def test_a_summary_nested_thousands_deep_is_a_clear_error(manager: MemoryManager) -> None:
    await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
    await manager.sessions.open_session("g", "s")
    await manager.memories.add_memories("g", "s", [{"content": "We planned the trip", "producer": "ana"}])
    with pytest.raises(MemoryServerError, match="nests JSON too deeply"):
        await manager.summaries.summarize_session(
            "g", "s", summary='{"topic": ' + "[" * 5000 + "]" * 5000 + "}"
        )


@pytest.mark.parametrize(
    "configuration",
    [{"short_term": {"max_episodes": "5"}}, {"short_term": {"enabled": 1}}, {"long_term": {"enabled": "no"}}],
)
async def test_a_session_configuration_is_read_as_sent_not_coerced(
    manager: MemoryManager, configuration: dict[str, object]
) -> None:
    await manager.groups.create_group("g", user_ids=["ana"])
    with pytest.raises(ConfigurationError, match="invalid session configuration"):
        await manager.sessions.open_session("g", "s", configuration=configuration)


async def test_python_callers_get_the_same_checks_as_the_tools(manager: MemoryManager) -> None:
    with pytest.raises(ValidationFailed, match="group_id is empty or only whitespace"):
        await manager.groups.create_group("\u3000", user_ids=["ana"])
    with pytest.raises(ValidationFailed, match=r"user_ids\[0\] holds an unpaired surrogate"):
        await manager.groups.create_group("g", user_ids=["\ud800"])
    with pytest.raises(ValidationFailed, match="both a user and an agent"):
        await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["ana"])
    with pytest.raises(ValidationFailed, match="description has 2001 characters"):
        await manager.groups.create_group("g", user_ids=["ana"], description="d" * 2001)
    await manager.groups.create_group("g", user_ids=["ana"])
    with pytest.raises(ValidationFailed, match="session_id has leading or trailing whitespace"):
        await manager.sessions.open_session("g", " s ")
    await manager.sessions.open_session("g", "s")
    with pytest.raises(ValidationFailed, match="content holds an unpaired surrogate"):
        await manager.memories.add_memories("g", "s", [{"content": "bad \udc80 text", "producer": "ana"}])
    with pytest.raises(ValidationFailed, match="group_id holds an unpaired surrogate"):
        await recall(manager, "\ud800", "anything")
    assert (await manager.sessions.session_info("g", "s")).episode_count == 0


async def test_a_single_memorys_error_names_its_field_not_a_batch_position(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"])
    await call(client, "open_session", group_id="g", session_id="s")
    result = await client.call_tool(
        "add_memory", {"group_id": "g", "session_id": "s", "content": "hi", "producer": "bob"}
    )
    assert result.is_error and "producer 'bob' is not a participant" in result.content[0].text
    assert "memories[0]" not in result.content[0].text


async def test_an_idempotency_key_through_the_tool_stores_a_retried_single_turn_once(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"])
    await call(client, "open_session", group_id="g", session_id="s")
    turn = {
        "group_id": "g",
        "session_id": "s",
        "content": "Yeah",
        "producer": "ana",
        "timestamp": SESSION_TIME,
    }
    first = await call(client, "add_memory", **turn, idempotency_key="turn-7")
    other = await call(client, "add_memory", **turn, idempotency_key="turn-9")
    retry = await call(client, "add_memory", **turn, idempotency_key="turn-9")
    assert first["stored"] == other["stored"] == 1 and retry["duplicates"] == 1
    assert retry["memories"][0]["id"] == other["memories"][0]["id"] != first["memories"][0]["id"]
    text = (
        (await client.call_tool("add_memory", {**turn, "content": "Nope", "idempotency_key": "turn-9"}))
        .content[0]
        .text
    )
    assert "already used" in text
