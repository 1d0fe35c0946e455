"""Conversation messages as MARSYS keeps them: name, tool calls and their results paired by id, images,
structured content, step numbers; stored, returned, searchable, and a reset that keeps the system prompt."""

from __future__ import annotations

import pytest
from mcp import Client

from tests.helpers import call, call_error

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

WEATHER_CALL = {"id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}


async def ready(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"], agent_ids=["bot", "weather"])
    await call(client, "open_session", group_id="g", session_id="s")


async def add(client: Client, **fields: object) -> int:
    """One turn; a message with extras (tool calls, images) goes as a batch of one, as clients send them."""
    extras = {"name", "tool_calls", "tool_call_id", "images"}
    if extras & set(fields):
        result = await call(client, "add_memory", group_id="g", session_id="s", memories=[fields])
    else:
        result = await call(client, "add_memory", group_id="g", session_id="s", **fields)
    return int(result["memories"][0]["id"])


async def latest(client: Client) -> list[dict]:
    return (await call(client, "recall", group_id="g", query="anything", session_id="s"))["recent"]


async def test_a_tool_call_and_its_result_are_stored_returned_and_found_by_their_words(
    client: Client,
) -> None:
    await ready(client)
    asked = await add(client, content="What is the weather in Lisbon?", producer="ana")
    calling = await add(client, producer="bot", role="assistant", tool_calls=[WEATHER_CALL])
    answered = await add(
        client,
        content="sunny, 24C",
        producer="weather",
        role="tool",
        tool_call_id="call_1",
        name="get_weather",
    )
    recent = {e["id"]: e for e in await latest(client)}
    assert recent[calling]["tool_calls"] == [WEATHER_CALL]
    assert recent[calling]["content"] == 'called get_weather({"city": "Lisbon"})'
    assert (recent[answered]["tool_call_id"], recent[answered]["name"]) == ("call_1", "get_weather")
    found = await call(client, "recall", group_id="g", query="get_weather", limit=3)
    assert calling in [h["id"] for h in found["hits"]]
    assert recent[asked]["tool_calls"] is None


async def test_the_window_keeps_a_tool_result_with_the_call_it_answers_by_id(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"], agent_ids=["bot", "weather"])
    await call(
        client,
        "open_session",
        group_id="g",
        session_id="s",
        configuration={"short_term": {"max_episodes": 4}},
    )
    await add(client, content="Weather in Lisbon and Porto?", producer="ana")
    two_calls = [WEATHER_CALL, {"id": "call_2", "name": "get_weather", "arguments": {"city": "Porto"}}]
    calling = await add(client, producer="bot", role="assistant", tool_calls=two_calls)
    await add(client, content="Thanks, take your time", producer="ana")
    lisbon = await add(client, content="sunny", producer="weather", role="tool", tool_call_id="call_1")
    porto = await add(client, content="rain", producer="weather", role="tool", tool_call_id="call_2")
    window = [e["id"] for e in await latest(client)]
    # the results arrived after a user turn; they stay with their call, and the window never splits them
    assert window[:3] == [calling, lisbon, porto]
    orphan = await add(client, content="late result", producer="weather", role="tool", tool_call_id="call_9")
    assert orphan not in [e["id"] for e in await latest(client)]


async def test_structured_content_images_and_steps_are_kept_and_searchable(client: Client) -> None:
    await ready(client)
    state = {"inventory": {"wood": 12, "stone": 3}, "position": [4, 7]}
    stepped = await add(
        client, content=state, producer="bot", role="assistant", step=1042, memory_type="state"
    )
    pictured = await add(
        client, content="my garden", producer="ana", images=["https://example.org/garden.jpg"]
    )
    recent = {e["id"]: e for e in await latest(client)}
    assert recent[stepped]["data"] == state and recent[stepped]["step"] == 1042
    assert recent[pictured]["images"] == ["https://example.org/garden.jpg"]
    assert recent[pictured]["content"] == "my garden\n[image https://example.org/garden.jpg]"
    found = await call(client, "recall", group_id="g", query="inventory wood stone", limit=1)
    assert found["hits"][0]["id"] == stepped


async def test_a_batch_carries_message_fields_too_and_bad_ones_are_named(client: Client) -> None:
    await ready(client)
    batch = [
        {"content": "", "producer": "bot", "role": "assistant", "tool_calls": [WEATHER_CALL]},
        {"content": "cloudy", "producer": "weather", "role": "tool", "tool_call_id": "call_1"},
    ]
    stored = await call(client, "add_memory", group_id="g", session_id="s", memories=batch)
    assert stored["stored"] == 2
    bad = [{"producer": "bot", "tool_calls": [{"id": "x"}]}]
    text = await call_error(client, "add_memory", group_id="g", session_id="s", memories=bad)
    assert text.startswith("invalid: ") and "memories[0].tool_calls[0].name is required" in text
    text = await call_error(
        client, "add_memory", group_id="g", session_id="s", content="x", producer="ana", step=-1
    )
    assert text.startswith("invalid: ") and "step" in text
    text = await call_error(client, "add_memory", group_id="g", session_id="s", producer="ana")
    assert "pass content and producer" in text


async def test_a_reset_can_keep_the_sessions_system_messages(client: Client) -> None:
    await ready(client)
    prompt = await add(client, content="You are a helpful gardener.", producer="bot", role="system")
    await add(client, content="When do I plant tomatoes?", producer="ana")
    await add(client, content="In spring.", producer="bot", role="assistant")
    reset = await call(client, "delete_memory", group_id="g", session_id="s", keep_system=True)
    assert reset["deleted"] == 2
    assert [e["id"] for e in await latest(client)] == [prompt]
