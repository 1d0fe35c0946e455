"""Every tool and every error path, through a real in-process MCP client.

Each test runs on a fresh SQLite file with the hashing embedder. Stored state is checked through
the tools themselves (recall, open_session) and, where the contract is about the database (both
indexes, retrieval counts), by opening the file read-only with sqlean.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlean
import sqlite_vec
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.server import build_server
from tests.helpers import TOOLS, call, call_error

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP = "household"
SESSION = "monday"
USERS = ["alice", "bob"]
AGENTS = ["helper"]
PARTICIPANTS = USERS + AGENTS
MOMENT = datetime(2025, 3, 1, 14, 30, tzinfo=UTC)
MOMENT_EPOCH = int(MOMENT.timestamp())


# -- helpers ------------------------------------------------------------------------------


async def make_group(client: Client, group_id: str = GROUP, **arguments: Any) -> dict:
    arguments.setdefault("user_ids", USERS)
    arguments.setdefault("agent_ids", AGENTS)
    return await call(client, "create_group", group_id=group_id, **arguments)


async def open_session(
    client: Client, group_id: str = GROUP, session_id: str = SESSION, **arguments: Any
) -> dict:
    return await call(client, "open_session", group_id=group_id, session_id=session_id, **arguments)


async def ready(client: Client, group_id: str = GROUP, session_id: str = SESSION) -> None:
    """A group with alice, bob and helper, and one open session."""
    await make_group(client, group_id)
    await open_session(client, group_id, session_id)


async def add(
    client: Client,
    content: str,
    producer: str = "alice",
    group_id: str = GROUP,
    session_id: str = SESSION,
    **arguments: Any,
) -> dict:
    """Store one memory; returns its entry (id, sequence, duplicate)."""
    result = await call(
        client,
        "add_memory",
        group_id=group_id,
        session_id=session_id,
        content=content,
        producer=producer,
        **arguments,
    )
    assert len(result["memories"]) == 1
    return result["memories"][0]


async def add_batch(
    client: Client, memories: list[dict], group_id: str = GROUP, session_id: str = SESSION
) -> dict:
    return await call(client, "add_memory", group_id=group_id, session_id=session_id, memories=memories)


async def episode_count(client: Client, group_id: str = GROUP, session_id: str = SESSION) -> int:
    """The session's episode count as open_session reports it (the reference is given back)."""
    info = await open_session(client, group_id, session_id, mode="open")
    await call(client, "close_session", group_id=group_id, session_id=session_id)
    return info["episode_count"]


async def recent(client: Client, group_id: str = GROUP, session_id: str = SESSION) -> list[dict]:
    """The session's recent window, as recall returns it."""
    result = await call(client, "recall", group_id=group_id, query="anything", session_id=session_id)
    return result["recent"]


async def recall(client: Client, query: str, group_id: str = GROUP, **arguments: Any) -> dict:
    return await call(client, "recall", group_id=group_id, query=query, **arguments)


def hit_with(result: dict, content: str) -> dict:
    matches = [h for h in result["hits"] if h["content"] == content]
    assert matches, f"{content!r} not in {[h['content'] for h in result['hits']]}"
    return matches[0]


def when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} is not timezone-aware"
    return moment


def query_db(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the server's SQLite file directly (read-only, sqlite-vec loaded for the vector table)."""
    conn = sqlean.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def points_to_existing_sessions(text: str) -> bool:
    """An unknown-session error should say how to get a session: open_session, or where to list them."""
    return "open_session" in text or "memory://groups" in text


# -- tool listing and instructions ------------------------------------------------------------


async def test_the_server_lists_exactly_its_tools(client: Client) -> None:
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS


async def test_every_tool_has_a_description_and_an_output_schema(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        assert tool.description and len(tool.description) > 20, tool.name
        assert tool.output_schema is not None, tool.name
        assert tool.output_schema.get("type") == "object", tool.name
        assert tool.input_schema.get("properties") or tool.name == "run_maintenance", (
            tool.name
        )  # no arguments


async def test_recall_is_marked_read_only_and_the_deletes_destructive(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["recall"].annotations is not None
    assert tools["recall"].annotations.read_only_hint is True
    for name in ("delete_memory", "delete_session"):
        assert tools[name].annotations is not None
        assert tools[name].annotations.destructive_hint is True
        assert tools[name].annotations.read_only_hint is False
    for name in ("create_group", "open_session", "close_session", "add_memory"):
        assert tools[name].annotations is not None
        assert tools[name].annotations.read_only_hint is False


async def test_the_server_sends_instructions_naming_the_main_tools(client: Client) -> None:
    instructions = client.instructions
    assert instructions
    for name in ("open_session", "add_memory", "recall"):
        assert name in instructions


# -- create_group ---------------------------------------------------------------------------


async def test_create_group_returns_the_group_with_its_participants(client: Client) -> None:
    group = await make_group(
        client,
        description="The Smiths' kitchen assistant",
        configuration={"short_term": {"max_episodes": 7}},
    )
    assert group["group_id"] == GROUP
    assert group["user_ids"] == USERS
    assert group["agent_ids"] == AGENTS
    assert group["description"] == "The Smiths' kitchen assistant"
    assert group["configuration"] == {"short_term": {"max_episodes": 7}}
    assert group["session_count"] == 0
    assert group["episode_count"] == 0
    assert when(group["created_at"]).utcoffset() == timedelta(0)


async def test_create_group_with_only_users_or_only_agents_works(client: Client) -> None:
    users_only = await call(client, "create_group", group_id="users", user_ids=["alice"])
    agents_only = await call(client, "create_group", group_id="agents", agent_ids=["bot"])
    assert users_only["user_ids"] == ["alice"] and users_only["agent_ids"] == []
    assert agents_only["agent_ids"] == ["bot"] and agents_only["user_ids"] == []


async def test_create_group_twice_is_an_error_that_says_to_open_a_session(client: Client) -> None:
    await make_group(client)
    text = await call_error(client, "create_group", group_id=GROUP, user_ids=["carol"])
    assert "already exists" in text
    assert "open_session" in text
    assert GROUP in text


async def test_create_group_without_participants_is_an_error_naming_the_arguments(client: Client) -> None:
    text = await call_error(client, "create_group", group_id=GROUP)
    assert "participant" in text
    assert "user_ids" in text and "agent_ids" in text
    text = await call_error(client, "create_group", group_id=GROUP, user_ids=[], agent_ids=[])
    assert "user_ids" in text and "agent_ids" in text


async def test_create_group_with_an_empty_participant_id_is_an_error(client: Client) -> None:
    text = await call_error(client, "create_group", group_id=GROUP, user_ids=["alice", "  "])
    assert "user_ids" in text
    assert "empty" in text


async def test_create_group_with_unknown_configuration_keys_names_the_valid_keys(client: Client) -> None:
    text = await call_error(
        client, "create_group", group_id=GROUP, user_ids=USERS, configuration={"short_trem": {}}
    )
    assert "short_trem" in text
    for key in (
        "short_term.enabled",
        "short_term.max_episodes",
        "short_term.max_tokens",
        "long_term.enabled",
    ):
        assert key in text


async def test_create_group_with_an_unknown_nested_configuration_key_names_the_valid_keys(
    client: Client,
) -> None:
    text = await call_error(
        client, "create_group", group_id=GROUP, user_ids=USERS, configuration={"short_term": {"size": 3}}
    )
    assert "size" in text
    assert "short_term.max_episodes" in text


async def test_create_group_with_an_out_of_range_configuration_value_is_an_error(client: Client) -> None:
    text = await call_error(
        client,
        "create_group",
        group_id=GROUP,
        user_ids=USERS,
        configuration={"short_term": {"max_episodes": 0}},
    )
    assert "max_episodes" in text


async def test_a_failed_create_group_leaves_the_id_free(client: Client) -> None:
    await call_error(client, "create_group", group_id=GROUP, user_ids=USERS, configuration={"bad": 1})
    group = await make_group(client)
    assert group["group_id"] == GROUP


# -- open_session ---------------------------------------------------------------------------


async def test_open_session_creates_a_session_and_reports_its_state(client: Client) -> None:
    await make_group(client)
    info = await open_session(client)
    assert info["group_id"] == GROUP
    assert info["session_id"] == SESSION
    assert info["created"] is True
    assert info["reference_count"] == 1
    assert info["episode_count"] == 0
    assert info["configuration"] == {
        "short_term": {"enabled": True, "max_episodes": 20, "max_tokens": 4000},
        "long_term": {"enabled": True, "min_similarity": 0.2},
    }


async def test_opening_a_session_twice_gives_reference_count_two(client: Client) -> None:
    await make_group(client)
    first = await open_session(client)
    second = await open_session(client)
    assert first["created"] is True and first["reference_count"] == 1
    assert second["created"] is False and second["reference_count"] == 2


async def test_open_session_reports_the_episode_count(client: Client) -> None:
    await ready(client)
    await add(client, "one")
    await add(client, "two")
    info = await open_session(client)
    assert info["episode_count"] == 2


async def test_open_session_in_create_mode_creates_a_new_session(client: Client) -> None:
    await make_group(client)
    info = await open_session(client, mode="create")
    assert info["created"] is True


async def test_open_session_in_create_mode_fails_if_the_session_exists(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "open_session", group_id=GROUP, session_id=SESSION, mode="create")
    assert "already exists" in text
    assert "mode='open'" in text


async def test_open_session_in_open_mode_fails_if_the_session_is_missing(client: Client) -> None:
    await make_group(client)
    text = await call_error(client, "open_session", group_id=GROUP, session_id="nowhere", mode="open")
    assert "nowhere" in text
    assert "does not exist" in text
    assert "open_or_create" in text


async def test_open_session_in_open_mode_opens_an_existing_session(client: Client) -> None:
    await ready(client)
    info = await open_session(client, mode="open")
    assert info["created"] is False
    assert info["reference_count"] == 2


async def test_open_session_with_an_invalid_mode_lists_the_modes(client: Client) -> None:
    await make_group(client)
    text = await call_error(client, "open_session", group_id=GROUP, session_id=SESSION, mode="reopen")
    assert "mode" in text
    for mode in ("create", "open", "open_or_create"):
        assert mode in text


async def test_open_session_in_an_unknown_group_says_to_call_create_group(client: Client) -> None:
    text = await call_error(client, "open_session", group_id="ghosts", session_id=SESSION)
    assert "ghosts" in text
    assert "create_group" in text


async def test_open_session_merges_defaults_group_base_and_session_overrides(client: Client) -> None:
    await make_group(
        client,
        configuration={
            "short_term": {"max_episodes": 30, "max_tokens": 1000},
            "long_term": {"enabled": False},
        },
    )
    info = await open_session(client, configuration={"short_term": {"max_episodes": 5}})
    assert info["configuration"] == {
        "short_term": {"enabled": True, "max_episodes": 5, "max_tokens": 1000},
        "long_term": {"enabled": False, "min_similarity": 0.2},
    }


async def test_open_session_without_overrides_takes_the_group_base_configuration(client: Client) -> None:
    await make_group(client, configuration={"short_term": {"enabled": False}})
    info = await open_session(client)
    assert info["configuration"]["short_term"] == {"enabled": False, "max_episodes": 20, "max_tokens": 4000}
    assert info["configuration"]["long_term"] == {"enabled": True, "min_similarity": 0.2}


async def test_reopening_with_a_different_configuration_is_an_error_because_it_is_frozen(
    client: Client,
) -> None:
    await make_group(client)
    await open_session(client, configuration={"short_term": {"max_episodes": 5}})
    text = await call_error(
        client,
        "open_session",
        group_id=GROUP,
        session_id=SESSION,
        configuration={"short_term": {"max_episodes": 6}},
    )
    assert "frozen" in text
    assert "without configuration" in text or "new session" in text


async def test_reopening_with_the_same_configuration_or_none_works(client: Client) -> None:
    await make_group(client)
    overrides = {"short_term": {"max_episodes": 5}}
    await open_session(client, configuration=overrides)
    again = await open_session(client, configuration=overrides)
    plain = await open_session(client)
    assert again["reference_count"] == 2
    assert plain["reference_count"] == 3
    assert plain["configuration"]["short_term"]["max_episodes"] == 5


async def test_open_session_with_invalid_configuration_keys_names_the_valid_keys(client: Client) -> None:
    await make_group(client)
    text = await call_error(
        client, "open_session", group_id=GROUP, session_id=SESSION, configuration={"memory": {"size": 3}}
    )
    assert "short_term.max_episodes" in text
    assert "long_term.enabled" in text


async def test_a_failed_open_session_creates_nothing(client: Client) -> None:
    await make_group(client)
    await call_error(
        client, "open_session", group_id=GROUP, session_id=SESSION, configuration={"memory": {"size": 3}}
    )
    text = await call_error(client, "open_session", group_id=GROUP, session_id=SESSION, mode="open")
    assert "does not exist" in text


# -- close_session --------------------------------------------------------------------------


async def test_close_session_releases_a_reference_and_reports_the_count_left(client: Client) -> None:
    await make_group(client)
    await open_session(client)
    await open_session(client)
    first = await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    assert first["released"] is True
    assert first["reference_count"] == 1
    second = await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    assert second["released"] is True
    assert second["reference_count"] == 0


async def test_closing_a_session_that_is_not_open_reports_released_false(client: Client) -> None:
    await ready(client)
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    again = await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    assert again["released"] is False
    assert again["reference_count"] == 0
    assert again["message"]


async def test_closing_a_session_that_never_existed_reports_released_false(client: Client) -> None:
    await make_group(client)
    result = await call(client, "close_session", group_id=GROUP, session_id="never")
    assert result["released"] is False
    assert result["reference_count"] == 0


async def test_closing_keeps_the_memories(client: Client) -> None:
    await ready(client)
    await add(client, "the boiler is serviced in May")
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    assert await episode_count(client) == 1


# -- add_memory -----------------------------------------------------------------------------


async def test_add_memory_returns_the_id_and_sequence(client: Client) -> None:
    await ready(client)
    result = await call(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content="hello there", producer="alice"
    )
    assert result["group_id"] == GROUP
    assert result["session_id"] == SESSION
    assert result["stored"] == 1
    assert result["duplicates"] == 0
    [entry] = result["memories"]
    assert isinstance(entry["id"], int)
    assert entry["sequence"] == 1
    assert entry["duplicate"] is False


async def test_sequences_increase_one_two_three_within_a_session(client: Client) -> None:
    await ready(client)
    sequences = [(await add(client, f"turn {i}"))["sequence"] for i in range(3)]
    assert sequences == [1, 2, 3]


async def test_sequences_start_at_one_in_each_session(client: Client) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    await add(client, "monday one")
    await add(client, "monday two")
    assert (await add(client, "tuesday one", session_id="tuesday"))["sequence"] == 1
    assert (await add(client, "monday three"))["sequence"] == 3


async def test_add_memory_stores_every_field(client: Client) -> None:
    await ready(client)
    await add(
        client,
        "I moved the meeting to Friday",
        producer="helper",
        role="assistant",
        produced_for="bob",
        timestamp="2025-03-01T14:30:00Z",
        memory_type="action",
        importance=0.8,
        metadata={"project": "kitchen", "tags": ["a", "b"], "nested": {"deep": True}},
    )
    [episode] = await recent(client)
    assert episode["content"] == "I moved the meeting to Friday"
    assert episode["producer"] == "helper"
    assert episode["role"] == "assistant"
    assert episode["produced_for"] == "bob"
    assert when(episode["timestamp"]) == MOMENT
    assert episode["memory_type"] == "action"
    assert episode["importance"] == 0.8
    assert episode["metadata"] == {"project": "kitchen", "tags": ["a", "b"], "nested": {"deep": True}}


async def test_add_memory_defaults_role_type_importance_and_time(client: Client) -> None:
    await ready(client)
    before = datetime.now(UTC)
    await add(client, "defaults please")
    after = datetime.now(UTC)
    [episode] = await recent(client)
    assert episode["role"] == "user"
    assert episode["memory_type"] == "message"
    assert episode["importance"] == 0.5
    assert episode["metadata"] == {}
    assert before - timedelta(seconds=1) <= when(episode["timestamp"]) <= after + timedelta(seconds=1)


@pytest.mark.parametrize("role", ["user", "assistant", "system", "tool"])
async def test_add_memory_accepts_each_role(client: Client, role: str) -> None:
    await ready(client)
    await add(client, f"said as {role}", role=role)
    [episode] = await recent(client)
    assert episode["role"] == role


async def test_add_memory_with_an_unknown_role_lists_the_roles(client: Client) -> None:
    await ready(client)
    text = await call_error(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content="x", producer="alice", role="boss"
    )
    assert "role" in text
    for role in ("user", "assistant", "system", "tool"):
        assert role in text
    assert await episode_count(client) == 0


async def test_add_memory_with_unknown_producer_lists_the_participants(client: Client) -> None:
    await ready(client)
    text = await call_error(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content="hi", producer="mallory"
    )
    assert "mallory" in text
    assert "participant" in text
    for name in PARTICIPANTS:
        assert name in text
    assert await episode_count(client) == 0


async def test_add_memory_accepts_agents_as_producers(client: Client) -> None:
    await ready(client)
    entry = await add(client, "noted", producer="helper", role="assistant")
    assert entry["duplicate"] is False


@pytest.mark.parametrize("content", ["", "   ", "\n\t"])
async def test_add_memory_with_empty_content_is_an_error(client: Client, content: str) -> None:
    await ready(client)
    text = await call_error(
        client, "add_memory", group_id=GROUP, session_id=SESSION, content=content, producer="alice"
    )
    assert "content" in text
    assert "memories" in text
    assert await episode_count(client) == 0


async def test_add_memory_without_a_producer_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_memory", group_id=GROUP, session_id=SESSION, content="hi")
    assert "producer" in text


async def test_add_memory_with_both_content_and_memories_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        content="hi",
        producer="alice",
        memories=[{"content": "hello", "producer": "alice"}],
    )
    assert "either content or memories" in text
    assert await episode_count(client) == 0


async def test_add_memory_with_an_empty_memories_list_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=[])
    assert "memories is empty" in text
    assert "content and producer" in text


async def test_add_memory_in_a_missing_session_says_to_call_open_session(client: Client) -> None:
    await make_group(client)
    text = await call_error(
        client, "add_memory", group_id=GROUP, session_id="nowhere", content="hi", producer="alice"
    )
    assert "nowhere" in text
    assert "open_session" in text


async def test_add_memory_in_an_unknown_group_says_to_call_create_group(client: Client) -> None:
    text = await call_error(
        client, "add_memory", group_id="ghosts", session_id=SESSION, content="hi", producer="alice"
    )
    assert "ghosts" in text
    assert "create_group" in text


async def test_add_memory_in_a_closed_session_still_stores(client: Client) -> None:
    await ready(client)
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    entry = await add(client, "after closing")
    assert entry["sequence"] == 1


JSON_LOOKING = [
    '{"a": 1}',
    "[1,2]",
    "123",
    "null",
    "true",
    '"quoted"',
    '{"role": "assistant", "content": "x"}',
]


@pytest.mark.parametrize("content", JSON_LOOKING)
async def test_content_that_looks_like_json_is_stored_verbatim_as_text(client: Client, content: str) -> None:
    await ready(client)
    await add(client, content)
    [episode] = await recent(client)
    assert episode["content"] == content
    assert isinstance(episode["content"], str)


async def test_content_that_looks_like_json_is_stored_verbatim_in_a_batch(client: Client) -> None:
    await ready(client)
    await add_batch(client, [{"content": c, "producer": "alice"} for c in JSON_LOOKING])
    assert [e["content"] for e in await recent(client)] == JSON_LOOKING


async def test_metadata_must_be_a_json_object(client: Client) -> None:
    await ready(client)
    for bad in ("not json", [1, 2], 7):
        text = await call_error(
            client,
            "add_memory",
            group_id=GROUP,
            session_id=SESSION,
            content="x",
            producer="alice",
            metadata=bad,
        )
        assert "metadata" in text
    assert await episode_count(client) == 0


@pytest.mark.parametrize("importance", [-0.1, 1.5])
async def test_importance_outside_zero_to_one_is_an_error(client: Client, importance: float) -> None:
    await ready(client)
    text = await call_error(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        content="x",
        producer="alice",
        importance=importance,
    )
    assert "importance" in text
    assert await episode_count(client) == 0


@pytest.mark.parametrize("importance", [0.0, 1.0])
async def test_importance_at_the_bounds_is_accepted(client: Client, importance: float) -> None:
    await ready(client)
    await add(client, "bounded", importance=importance)
    [episode] = await recent(client)
    assert episode["importance"] == importance


async def test_empty_memory_type_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        content="x",
        producer="alice",
        memory_type=" ",
    )
    assert "memory_type" in text
    assert "message" in text


async def test_content_within_the_configured_maximum_is_stored_and_longer_is_an_error(
    tmp_path: Path,
) -> None:
    config = Config(db_path=tmp_path / "small.db", embedder="hashing", max_content_chars=50)
    async with Client(build_server(config)) as small:
        await ready(small)
        await add(small, "x" * 50)
        text = await call_error(
            small, "add_memory", group_id=GROUP, session_id=SESSION, content="y" * 51, producer="alice"
        )
        assert "51" in text and "50" in text
        assert "split" in text
        assert await episode_count(small) == 1


async def test_content_over_the_configured_maximum_in_a_batch_names_the_item(tmp_path: Path) -> None:
    config = Config(db_path=tmp_path / "small.db", embedder="hashing", max_content_chars=50)
    async with Client(build_server(config)) as small:
        await ready(small)
        text = await call_error(
            small,
            "add_memory",
            group_id=GROUP,
            session_id=SESSION,
            memories=[{"content": "short", "producer": "alice"}, {"content": "z" * 51, "producer": "alice"}],
        )
        assert "memories[1]" in text
        assert "split" in text
        assert await episode_count(small) == 0


# -- timestamps -----------------------------------------------------------------------------

VALID_TIMESTAMPS: list[tuple[str, Any, datetime]] = [
    ("iso_with_z", "2025-03-01T14:30:00Z", MOMENT),
    ("iso_with_plus_offset", "2025-03-01T16:30:00+02:00", MOMENT),
    ("iso_with_minus_offset", "2025-03-01T09:30:00-05:00", MOMENT),
    ("iso_with_utc_offset", "2025-03-01T14:30:00+00:00", MOMENT),
    ("naive_iso_is_utc", "2025-03-01T14:30:00", MOMENT),
    ("naive_iso_with_space_is_utc", "2025-03-01 14:30:00", MOMENT),
    ("iso_with_fraction", "2025-03-01T14:30:00.250Z", MOMENT + timedelta(milliseconds=250)),
    ("epoch_seconds", MOMENT_EPOCH, MOMENT),
    ("epoch_seconds_float", MOMENT_EPOCH + 0.5, MOMENT + timedelta(milliseconds=500)),
    ("epoch_milliseconds", MOMENT_EPOCH * 1000, MOMENT),
    ("epoch_milliseconds_with_fraction", MOMENT_EPOCH * 1000 + 250, MOMENT + timedelta(milliseconds=250)),
    ("numeric_string_seconds", str(MOMENT_EPOCH), MOMENT),
    ("numeric_string_milliseconds", str(MOMENT_EPOCH * 1000), MOMENT),
    ("numeric_string_float", f"{MOMENT_EPOCH}.5", MOMENT + timedelta(milliseconds=500)),
]


@pytest.mark.parametrize(
    ("value", "expected"), [(v, e) for _, v, e in VALID_TIMESTAMPS], ids=[n for n, _, _ in VALID_TIMESTAMPS]
)
async def test_timestamps_are_normalised_to_aware_utc(client: Client, value: Any, expected: datetime) -> None:
    await ready(client)
    await add(client, "the parcel arrived", timestamp=value)
    result = await recall(client, "parcel")
    stored = when(hit_with(result, "the parcel arrived")["timestamp"])
    assert stored == expected
    assert stored.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"), [(v, e) for _, v, e in VALID_TIMESTAMPS], ids=[n for n, _, _ in VALID_TIMESTAMPS]
)
async def test_timestamps_in_a_batch_are_normalised_to_aware_utc(
    client: Client, value: Any, expected: datetime
) -> None:
    await ready(client)
    await add_batch(client, [{"content": "batched parcel", "producer": "alice", "timestamp": value}])
    [episode] = await recent(client)
    assert when(episode["timestamp"]) == expected


INVALID_TIMESTAMPS: list[tuple[str, Any]] = [
    ("words", "next tuesday"),
    ("empty_string", ""),
    ("blank_string", "   "),
    ("impossible_month", "2025-13-01T00:00:00Z"),
    ("half_a_date", "2025-03-01T"),
    ("infinite_string", "inf"),
    ("not_a_number_string", "nan"),
    ("overflowing_epoch", 10**20),
    ("list", [2025, 3, 1]),
    ("object", {"year": 2025}),
]


@pytest.mark.parametrize("value", [v for _, v in INVALID_TIMESTAMPS], ids=[n for n, _ in INVALID_TIMESTAMPS])
async def test_a_timestamp_that_is_not_a_time_is_an_error(client: Client, value: Any) -> None:
    await ready(client)
    text = await call_error(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        content="when?",
        producer="alice",
        timestamp=value,
    )
    assert "timestamp" in text
    assert await episode_count(client) == 0


@pytest.mark.parametrize("value", ["next tuesday", "2025-13-01T00:00:00Z", "inf"])
async def test_a_bad_timestamp_error_shows_the_accepted_formats(client: Client, value: str) -> None:
    await ready(client)
    text = await call_error(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        content="x",
        producer="alice",
        timestamp=value,
    )
    assert "ISO 8601" in text
    assert "epoch" in text


@pytest.mark.parametrize("value", [True, False])
async def test_a_boolean_timestamp_is_an_error(client: Client, value: bool) -> None:
    await ready(client)
    text = await call_error(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        content="when?",
        producer="alice",
        timestamp=value,
    )
    assert "timestamp" in text
    assert await episode_count(client) == 0


# -- duplicates -----------------------------------------------------------------------------


async def test_a_retried_identical_add_returns_the_existing_id_marked_duplicate(client: Client) -> None:
    await ready(client)
    arguments = {
        "group_id": GROUP,
        "session_id": SESSION,
        "content": "we adopted a cat",
        "producer": "alice",
        "timestamp": "2025-03-01T14:30:00Z",
    }
    first = await call(client, "add_memory", **arguments)
    retry = await call(client, "add_memory", **arguments)
    assert first["memories"][0]["duplicate"] is False
    assert retry["memories"][0] == {**first["memories"][0], "duplicate": True}
    assert retry["stored"] == 0
    assert retry["duplicates"] == 1
    assert await episode_count(client) == 1


async def test_the_same_time_written_differently_is_still_a_duplicate(client: Client) -> None:
    await ready(client)
    first = await add(client, "we adopted a cat", timestamp="2025-03-01T14:30:00Z")
    for same in ("2025-03-01T16:30:00+02:00", MOMENT_EPOCH, MOMENT_EPOCH * 1000, "2025-03-01T14:30:00"):
        retry = await add(client, "we adopted a cat", timestamp=same)
        assert retry["id"] == first["id"]
        assert retry["duplicate"] is True
    assert await episode_count(client) == 1


async def test_a_different_time_content_producer_or_session_is_not_a_duplicate(client: Client) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    first = await add(client, "we adopted a cat", timestamp="2025-03-01T14:30:00Z")
    others = [
        await add(client, "we adopted a cat", timestamp="2025-03-01T14:31:00Z"),
        await add(client, "we adopted a dog", timestamp="2025-03-01T14:30:00Z"),
        await add(client, "we adopted a cat", producer="bob", timestamp="2025-03-01T14:30:00Z"),
        await add(client, "we adopted a cat", session_id="tuesday", timestamp="2025-03-01T14:30:00Z"),
    ]
    assert all(o["duplicate"] is False for o in others)
    assert len({first["id"], *(o["id"] for o in others)}) == 5


async def test_an_immediate_identical_retry_without_timestamp_is_a_duplicate(client: Client) -> None:
    await ready(client)
    first = await add(client, "remind me to call mum")
    retry = await add(client, "remind me to call mum")
    assert retry == {**first, "duplicate": True}
    assert await episode_count(client) == 1


async def test_a_retried_batch_with_timestamps_is_all_duplicates(client: Client) -> None:
    await ready(client)
    batch = [
        {"content": "hi", "producer": "alice", "timestamp": "2025-03-01T14:30:00Z"},
        {
            "content": "hello alice",
            "producer": "helper",
            "role": "assistant",
            "timestamp": "2025-03-01T14:30:01Z",
        },
        {"content": "what's for dinner", "producer": "alice", "timestamp": "2025-03-01T14:30:02Z"},
    ]
    first = await add_batch(client, batch)
    retry = await add_batch(client, batch)
    assert first["stored"] == 3
    assert retry["stored"] == 0 and retry["duplicates"] == 3
    assert [m["id"] for m in retry["memories"]] == [m["id"] for m in first["memories"]]
    assert all(m["duplicate"] for m in retry["memories"])
    assert await episode_count(client) == 3


async def test_a_retried_batch_without_timestamps_is_all_duplicates(client: Client) -> None:
    await ready(client)
    batch = [
        {"content": "hi", "producer": "alice"},
        {"content": "hello alice", "producer": "helper", "role": "assistant"},
    ]
    first = await add_batch(client, batch)
    retry = await add_batch(client, batch)
    assert [m["id"] for m in retry["memories"]] == [m["id"] for m in first["memories"]]
    assert all(m["duplicate"] for m in retry["memories"])
    assert await episode_count(client) == 2


async def test_a_batch_mixing_new_and_retried_memories_counts_both(client: Client) -> None:
    await ready(client)
    old = await add(client, "first words", timestamp="2025-03-01T14:30:00Z")
    result = await add_batch(
        client,
        [
            {"content": "first words", "producer": "alice", "timestamp": "2025-03-01T14:30:00Z"},
            {"content": "second words", "producer": "alice", "timestamp": "2025-03-01T14:31:00Z"},
        ],
    )
    assert result["stored"] == 1 and result["duplicates"] == 1
    assert result["memories"][0] == {**old, "duplicate": True}
    assert result["memories"][1]["duplicate"] is False
    assert result["memories"][1]["sequence"] == 2


# -- batches --------------------------------------------------------------------------------


async def test_a_batch_returns_ids_in_order_with_increasing_sequences(client: Client) -> None:
    await ready(client)
    result = await add_batch(client, [{"content": f"line {i}", "producer": "alice"} for i in range(5)])
    assert result["stored"] == 5
    assert [m["sequence"] for m in result["memories"]] == [1, 2, 3, 4, 5]
    ids = [m["id"] for m in result["memories"]]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [e["content"] for e in await recent(client)] == [f"line {i}" for i in range(5)]


async def test_a_batch_of_one_thousand_works(client: Client, db_path: Path) -> None:
    await ready(client)
    memories = [{"content": f"entry number {i}", "producer": "alice"} for i in range(1000)]
    result = await add_batch(client, memories)
    assert result["stored"] == 1000
    assert result["duplicates"] == 0
    assert [m["sequence"] for m in result["memories"]] == list(range(1, 1001))
    assert await episode_count(client) == 1000
    assert query_db(db_path, "SELECT count(*) FROM episodes")[0][0] == 1000


async def test_a_batch_of_one_thousand_and_one_is_an_error(client: Client) -> None:
    await ready(client)
    memories = [{"content": f"entry number {i}", "producer": "alice"} for i in range(1001)]
    text = await call_error(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)
    assert "1000" in text and "1001" in text
    assert "split" in text
    assert await episode_count(client) == 0


def _good(i: int) -> dict:
    return {"content": f"good memory {i}", "producer": "alice", "timestamp": MOMENT_EPOCH + i}


BAD_ITEMS: list[tuple[str, dict, str]] = [
    ("unknown_producer", {"content": "x", "producer": "mallory"}, "mallory"),
    ("importance_too_high", {"content": "x", "producer": "alice", "importance": 1.5}, "importance"),
    ("importance_negative", {"content": "x", "producer": "alice", "importance": -1}, "importance"),
    ("empty_content", {"content": "  ", "producer": "alice"}, "content"),
    ("bad_timestamp", {"content": "x", "producer": "alice", "timestamp": "soon"}, "timestamp"),
    ("empty_memory_type", {"content": "x", "producer": "alice", "memory_type": ""}, "memory_type"),
    ("content_too_long", {"content": "x" * 32_001, "producer": "alice"}, "content"),
    ("unknown_role", {"content": "x", "producer": "alice", "role": "boss"}, "role"),
    ("missing_producer", {"content": "x"}, "producer"),
    ("metadata_not_an_object", {"content": "x", "producer": "alice", "metadata": [1, 2]}, "metadata"),
    ("unknown_field", {"content": "x", "producer": "alice", "speaker": "alice"}, "speaker"),
]


@pytest.mark.parametrize(
    ("bad", "phrase"), [(b, p) for _, b, p in BAD_ITEMS], ids=[n for n, _, _ in BAD_ITEMS]
)
async def test_a_batch_with_one_bad_item_writes_nothing_and_names_the_item(
    client: Client, bad: dict, phrase: str
) -> None:
    await ready(client)
    memories = [_good(i) for i in range(5)]
    memories[2] = bad
    text = await call_error(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)
    assert "memories[2]" in text
    assert phrase in text
    assert await episode_count(client) == 0


@pytest.mark.parametrize("position", [0, 2, 4])
async def test_a_bad_item_at_any_position_writes_nothing_and_names_the_item(
    client: Client, position: int
) -> None:
    await ready(client)
    memories = [_good(i) for i in range(5)]
    memories[position] = {"content": "x", "producer": "mallory"}
    text = await call_error(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)
    assert f"memories[{position}]" in text
    assert "nothing was stored" in text
    assert await episode_count(client) == 0


async def test_a_bad_last_item_of_a_full_batch_writes_nothing(client: Client, db_path: Path) -> None:
    await ready(client)
    memories = [{"content": f"entry {i}", "producer": "alice"} for i in range(1000)]
    memories[999] = {"content": "last", "producer": "alice", "timestamp": "not a time"}
    text = await call_error(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)
    assert "memories[999]" in text
    assert await episode_count(client) == 0
    assert query_db(db_path, "SELECT count(*) FROM episodes")[0][0] == 0
    assert query_db(db_path, "SELECT count(*) FROM episodes_fts")[0][0] == 0


# -- recall: finding ------------------------------------------------------------------------


async def test_recall_finds_a_memory_by_a_word_in_it(client: Client) -> None:
    await ready(client)
    await add(client, "my sister lives in Lisbon")
    await add(client, "the car needs new tyres")
    result = await recall(client, "Lisbon")
    assert result["group_id"] == GROUP
    assert result["query"] == "Lisbon"
    top = result["hits"][0]
    assert top["content"] == "my sister lives in Lisbon"
    assert "keyword" in top["matched_by"]


async def test_recall_finds_stemmed_variants(client: Client) -> None:
    await ready(client)
    await add(client, "Bob runs every morning")
    await add(client, "the oven is broken")
    result = await recall(client, "running")
    top = result["hits"][0]
    assert top["content"] == "Bob runs every morning"
    assert "keyword" in top["matched_by"]
    plain = await recall(client, "run")
    assert plain["hits"][0]["content"] == "Bob runs every morning"


async def test_recall_hits_carry_every_field_and_are_sorted_by_score(client: Client) -> None:
    await ready(client)
    await add(
        client,
        "the garden party is on Saturday",
        producer="bob",
        timestamp="2025-03-01T14:30:00Z",
        metadata={"event": "party"},
    )
    await add(client, "garden hose is leaking")
    await add(client, "buy milk")
    result = await recall(client, "garden party Saturday")
    hits = result["hits"]
    assert hits
    for hit in hits:
        for key in (
            "id",
            "session_id",
            "sequence",
            "timestamp",
            "producer",
            "role",
            "content",
            "metadata",
            "score",
        ):
            assert key in hit, key
        assert hit["group_id"] == GROUP
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    top = hits[0]
    assert top["content"] == "the garden party is on Saturday"
    assert top["session_id"] == SESSION
    assert top["sequence"] == 1
    assert when(top["timestamp"]) == MOMENT
    assert top["producer"] == "bob"
    assert top["role"] == "user"
    assert top["metadata"] == {"event": "party"}
    assert top["score"] > 0


async def test_recall_respects_the_limit(client: Client) -> None:
    await ready(client)
    await add_batch(client, [{"content": f"tomato plant {i}", "producer": "alice"} for i in range(30)])
    assert len((await recall(client, "tomato", limit=3))["hits"]) == 3
    assert len((await recall(client, "tomato", limit=100))["hits"]) == 30
    assert len((await recall(client, "tomato"))["hits"]) == 10


async def test_recall_without_a_session_searches_every_session_of_the_group(client: Client) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    await add(client, "pizza on monday")
    await add(client, "pizza on tuesday", session_id="tuesday")
    result = await recall(client, "pizza")
    found = {h["content"]: h["session_id"] for h in result["hits"]}
    assert found == {"pizza on monday": SESSION, "pizza on tuesday": "tuesday"}
    assert result["recent"] == []


async def test_recall_results_never_cross_groups(client: Client) -> None:
    await ready(client, "smiths")
    await ready(client, "joneses")
    mine = {
        (await add(client, "the secret recipe uses saffron", group_id="smiths"))["id"],
        (await add(client, "saffron is expensive", producer="helper", role="assistant", group_id="smiths"))[
            "id"
        ],
    }
    theirs = {
        (await add(client, "the secret recipe uses saffron", group_id="joneses"))["id"],
        (await add(client, "saffron again", group_id="joneses"))["id"],
    }
    for arguments in ({}, {"session_id": SESSION}, {"filters": {"producer": "alice"}}, {"limit": 100}):
        result = await recall(client, "secret recipe saffron", group_id="smiths", **arguments)
        ids = {h["id"] for h in result["hits"]} | {e["id"] for e in result["recent"]}
        assert ids and ids <= mine, arguments
        assert not ids & theirs
        assert all(h["group_id"] == "smiths" for h in result["hits"] + result["recent"])


async def test_recall_with_a_query_of_only_stopwords_still_answers(client: Client) -> None:
    await ready(client)
    await add(client, "what is the plan")
    result = await recall(client, "what is the")
    assert [h["content"] for h in result["hits"]] == ["what is the plan"]


@pytest.mark.parametrize("query", ["???", "!", "--"])
async def test_recall_with_a_query_of_only_symbols_answers_or_says_what_to_look_for(
    client: Client, query: str
) -> None:
    """No words means nothing to embed: either an empty answer or a clear error, never a crash."""
    await ready(client)
    await add(client, "something to find")
    result = await client.call_tool("recall", {"group_id": GROUP, "query": query})
    if result.is_error:
        text = result.content[0].text
        assert "query" in text, text
    else:
        assert result.structured_content is not None
        assert isinstance(result.structured_content["hits"], list)


# -- recall: filters inside the search -------------------------------------------------------

HAYSTACK_START = datetime(2024, 1, 1, tzinfo=UTC)
NEEDLE = "apple tart recipe from the helper"
OLD_NEEDLE = "apple cider from long ago"


async def seed_haystack(client: Client) -> None:
    """200 'apple' memories from alice in session monday, one needle from helper in session tuesday.

    Every filter below matches the needle (or the old needle) and none of the 200, so a filter
    applied after a top-k search would find nothing.
    """
    await make_group(client)
    await open_session(client)
    await open_session(client, session_id="tuesday", configuration={"short_term": {"max_episodes": 1}})
    haystack = [
        {
            "content": f"apple pie number {i} from the orchard",
            "producer": "alice",
            "role": "user",
            "timestamp": (HAYSTACK_START + timedelta(minutes=i)).isoformat(),
            "memory_type": "message",
            "importance": 0.3,
            "metadata": {"project": "alpha", "flag": False, "priority": 1, "nested": {"k": "plain"}},
        }
        for i in range(200)
    ]
    haystack.append(
        {
            "content": OLD_NEEDLE,
            "producer": "alice",
            "timestamp": "2020-01-01T00:00:00Z",
            "importance": 0.3,
            "metadata": {"project": "alpha", "flag": False, "priority": 1, "nested": {"k": "plain"}},
        }
    )
    await add_batch(client, haystack)
    await add_batch(
        client,
        [
            {
                "content": NEEDLE,
                "producer": "helper",
                "role": "assistant",
                "timestamp": "2025-06-01T12:00:00Z",
                "memory_type": "note",
                "importance": 0.9,
                "metadata": {"project": "beta", "flag": True, "priority": 3, "nested": {"k": "special"}},
            },
            # After the needle, so the needle is outside tuesday's one-episode recent window.
            {"content": "banana bread", "producer": "bob", "timestamp": "2025-06-02T12:00:00Z"},
        ],
        session_id="tuesday",
    )


def _ts(hit: dict) -> float:
    return when(hit["timestamp"]).timestamp()


JUNE_2025 = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
FILTER_CASES: list[tuple[str, dict, str, Callable[[dict], bool]]] = [
    ("producer", {"producer": "helper"}, NEEDLE, lambda h: h["producer"] == "helper"),
    ("role", {"role": "assistant"}, NEEDLE, lambda h: h["role"] == "assistant"),
    ("session_id", {"session_id": "tuesday"}, NEEDLE, lambda h: h["session_id"] == "tuesday"),
    ("memory_types", {"memory_types": ["note"]}, NEEDLE, lambda h: h["memory_type"] == "note"),
    (
        "memory_types_any_of",
        {"memory_types": ["fact", "note"]},
        NEEDLE,
        lambda h: h["memory_type"] in ("fact", "note"),
    ),
    ("min_importance", {"min_importance": 0.8}, NEEDLE, lambda h: h["importance"] >= 0.8),
    (
        "metadata_equality",
        {"metadata": {"project": "beta"}},
        NEEDLE,
        lambda h: h["metadata"].get("project") == "beta",
    ),
    (
        "metadata_dotted_path",
        {"metadata": {"nested.k": "special"}},
        NEEDLE,
        lambda h: h["metadata"].get("nested", {}).get("k") == "special",
    ),
    (
        "metadata_list_is_any_of",
        {"metadata": {"project": ["gamma", "beta"]}},
        NEEDLE,
        lambda h: h["metadata"].get("project") in ("gamma", "beta"),
    ),
    ("metadata_boolean", {"metadata": {"flag": True}}, NEEDLE, lambda h: h["metadata"].get("flag") is True),
    ("metadata_number", {"metadata": {"priority": 3}}, NEEDLE, lambda h: h["metadata"].get("priority") == 3),
    ("since_iso", {"since": "2025-01-01T00:00:00Z"}, NEEDLE, lambda h: _ts(h) >= JUNE_2025),
    ("since_iso_with_offset", {"since": "2025-01-01T02:00:00+02:00"}, NEEDLE, lambda h: _ts(h) >= JUNE_2025),
    ("since_epoch_seconds", {"since": int(JUNE_2025)}, NEEDLE, lambda h: _ts(h) >= JUNE_2025),
    ("since_epoch_milliseconds", {"since": int(JUNE_2025) * 1000}, NEEDLE, lambda h: _ts(h) >= JUNE_2025),
    ("until_iso", {"until": "2021-01-01T00:00:00Z"}, OLD_NEEDLE, lambda h: h["content"] == OLD_NEEDLE),
    ("until_epoch", {"until": 1_609_459_200}, OLD_NEEDLE, lambda h: h["content"] == OLD_NEEDLE),
    (
        "since_and_until",
        {"since": "2025-05-01T00:00:00Z", "until": "2025-07-01T00:00:00Z"},
        NEEDLE,
        lambda h: (
            datetime(2025, 5, 1, tzinfo=UTC) <= when(h["timestamp"]) <= datetime(2025, 7, 1, tzinfo=UTC)
        ),
    ),
    (
        "narrow_since_and_until",
        {"since": "2025-06-01T11:00:00Z", "until": "2025-06-01T13:00:00Z"},
        NEEDLE,
        lambda h: h["content"] == NEEDLE,
    ),
    (
        "several_filters_together",
        {"producer": "helper", "role": "assistant", "memory_types": ["note"], "metadata": {"flag": True}},
        NEEDLE,
        lambda h: h["producer"] == "helper",
    ),
]


@pytest.mark.parametrize(
    ("filters", "expected", "predicate"),
    [(f, e, p) for _, f, e, p in FILTER_CASES],
    ids=[n for n, _, _, _ in FILTER_CASES],
)
async def test_recall_applies_each_filter_inside_the_search(
    client: Client, filters: dict, expected: str, predicate: Callable[[dict], bool]
) -> None:
    await seed_haystack(client)
    where = {name: value for name, value in filters.items() if name != "session_id"}  # session_id is its own
    scope = {"session_id": filters["session_id"]} if "session_id" in filters else {}
    result = await recall(client, "apple", limit=5, filters=where, **scope)
    contents = [h["content"] for h in result["hits"]]
    assert expected in contents, contents
    assert all(predicate(h) for h in result["hits"]), contents


async def test_recall_filters_find_the_needle_with_limit_one(client: Client) -> None:
    await seed_haystack(client)
    result = await recall(client, "apple", limit=1, filters={"producer": "helper"})
    assert [h["content"] for h in result["hits"]] == [NEEDLE]


async def test_recall_filter_matching_nothing_returns_no_hits(client: Client) -> None:
    await seed_haystack(client)
    for filters in ({"producer": "bob", "role": "system"}, {"metadata": {"project": "omega"}}):
        result = await recall(client, "apple", filters=filters)
        assert result["hits"] == [], filters


async def test_recall_with_since_after_until_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(
        client,
        "recall",
        group_id=GROUP,
        query="apple",
        filters={"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
    )
    assert "since is after until" in text
    assert "swap" in text


async def test_recall_with_a_bad_since_or_until_is_an_error(client: Client) -> None:
    await ready(client)
    for name in ("since", "until"):
        text = await call_error(client, "recall", group_id=GROUP, query="apple", filters={name: "last week"})
        assert name in text
        assert "ISO 8601" in text


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_recall_with_a_limit_outside_one_to_a_hundred_is_an_error(client: Client, limit: int) -> None:
    await ready(client)
    text = await call_error(client, "recall", group_id=GROUP, query="apple", limit=limit)
    assert "limit" in text


async def test_recall_with_an_unknown_role_lists_the_roles(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "recall", group_id=GROUP, query="apple", filters={"role": "boss"})
    assert "role" in text
    assert "assistant" in text


async def test_recall_with_min_importance_outside_zero_to_one_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "recall", group_id=GROUP, query="apple", filters={"min_importance": 2})
    assert "min_importance" in text


async def test_recall_with_a_malformed_metadata_filter_is_an_error(client: Client) -> None:
    await ready(client)
    text = await call_error(
        client, "recall", group_id=GROUP, query="apple", filters={"metadata": {"a..b": 1}}
    )
    assert "dotted path" in text
    text = await call_error(
        client, "recall", group_id=GROUP, query="apple", filters={"metadata": {"a": {"b": 1}}}
    )
    assert "an object is a range of numbers" in text and "dotted path" in text


@pytest.mark.parametrize("query", ["", "   "])
async def test_recall_with_an_empty_query_is_an_error(client: Client, query: str) -> None:
    await ready(client)
    text = await call_error(client, "recall", group_id=GROUP, query=query)
    assert "query is empty" in text
    assert "what to look for" in text


async def test_recall_in_an_unknown_group_says_to_call_create_group(client: Client) -> None:
    text = await call_error(client, "recall", group_id="ghosts", query="apple")
    assert "ghosts" in text
    assert "create_group" in text


async def test_recall_in_an_unknown_session_says_what_to_do(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "recall", group_id=GROUP, query="apple", session_id="nowhere")
    assert "nowhere" in text
    assert "does not exist" in text
    assert points_to_existing_sessions(text), text


# -- recall: recent window ------------------------------------------------------------------


async def test_recall_with_a_session_returns_its_recent_episodes_oldest_first(client: Client) -> None:
    await make_group(client)
    await open_session(client, configuration={"short_term": {"max_episodes": 3}})
    ids = [(await add(client, f"topic number {i}"))["id"] for i in range(6)]
    result = await recall(client, "topic", session_id=SESSION)
    assert [e["id"] for e in result["recent"]] == ids[3:]
    assert [e["sequence"] for e in result["recent"]] == [4, 5, 6]
    hit_ids = {h["id"] for h in result["hits"]}
    assert hit_ids == set(ids[:3])
    assert not hit_ids & {e["id"] for e in result["recent"]}


async def test_recall_recent_window_defaults_to_twenty_episodes(client: Client) -> None:
    await ready(client)
    await add_batch(client, [{"content": f"chat line {i}", "producer": "alice"} for i in range(25)])
    result = await recall(client, "chat", session_id=SESSION, limit=100)
    assert [e["sequence"] for e in result["recent"]] == list(range(6, 26))
    assert sorted(h["sequence"] for h in result["hits"]) == [1, 2, 3, 4, 5]


async def test_recall_hits_never_repeat_recent_episodes(client: Client) -> None:
    await ready(client)
    await add(client, "the wifi password is on the fridge")
    result = await recall(client, "wifi password", session_id=SESSION)
    assert [e["content"] for e in result["recent"]] == ["the wifi password is on the fridge"]
    assert result["hits"] == []


async def test_recall_recent_window_is_only_that_session(client: Client) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    await add(client, "monday chat")
    await add(client, "tuesday chat", session_id="tuesday")
    result = await recall(client, "chat", session_id="tuesday")
    assert [e["content"] for e in result["recent"]] == ["tuesday chat"]
    assert all(h["session_id"] == "tuesday" for h in result["hits"])


async def test_recall_recent_window_is_empty_when_short_term_memory_is_off(client: Client) -> None:
    await make_group(client)
    await open_session(client, configuration={"short_term": {"enabled": False}})
    await add(client, "quiet memory")
    result = await recall(client, "quiet", session_id=SESSION)
    assert result["recent"] == []
    assert [h["content"] for h in result["hits"]] == ["quiet memory"]


async def test_recall_finds_memories_of_a_session_without_long_term_indexing(client: Client) -> None:
    await make_group(client)
    await open_session(client, configuration={"long_term": {"enabled": False}})
    await add(client, "keyword only memory about zucchini")
    result = await recall(client, "zucchini")
    assert result["hits"][0]["content"] == "keyword only memory about zucchini"
    assert result["hits"][0]["matched_by"] == ["keyword"]


# -- recall: retrieval counts -----------------------------------------------------------------


async def test_each_retrieval_raises_the_retrieval_count_and_last_access_time(
    client: Client, db_path: Path
) -> None:
    await ready(client)
    target = (await add(client, "the spare key is under the blue pot"))["id"]
    other = (await add(client, "the dentist appointment is on Tuesday"))["id"]

    def state(episode_id: int) -> tuple[int, str | None]:
        [row] = query_db(
            db_path, "SELECT retrieval_count, last_accessed_at FROM episodes WHERE id = ?", (episode_id,)
        )
        return row[0], row[1]

    assert state(target) == (0, None)
    first = await recall(client, "spare key", limit=1)
    assert [h["id"] for h in first["hits"]] == [target]
    count, accessed = state(target)
    assert count == 1
    assert accessed is not None
    first_access = when(accessed)
    assert abs((datetime.now(UTC) - first_access).total_seconds()) < 60
    await recall(client, "spare key", limit=1)
    count, accessed = state(target)
    assert count == 2
    assert accessed is not None and when(accessed) >= first_access
    assert state(other) == (0, None)


async def test_recent_episodes_returned_with_a_session_are_not_counted_as_hits(
    client: Client, db_path: Path
) -> None:
    await ready(client)
    episode = (await add(client, "only in the recent window"))["id"]
    await recall(client, "recent window", session_id=SESSION)
    [row] = query_db(db_path, "SELECT retrieval_count FROM episodes WHERE id = ?", (episode,))
    assert row[0] == 0


# -- delete_memory --------------------------------------------------------------------------


def _index_state(db_path: Path, episode_id: int) -> tuple[int, list[int], int]:
    rows = query_db(db_path, "SELECT count(*) FROM episodes WHERE id = ?", (episode_id,))[0][0]
    fts = [
        r[0]
        for r in query_db(
            db_path, "SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH 'content : zebra'"
        )
    ]
    vectors = query_db(db_path, "SELECT count(*) FROM episode_vectors WHERE rowid = ?", (episode_id,))[0][0]
    return rows, fts, vectors


async def test_delete_memory_removes_the_episode_from_the_table_and_both_indexes(
    client: Client, db_path: Path
) -> None:
    await ready(client)
    doomed = (await add(client, "zebra crossing on Elm street"))["id"]
    kept = (await add(client, "zebra print sofa"))["id"]
    assert _index_state(db_path, doomed) == (1, sorted([doomed, kept]), 1)
    result = await call(client, "delete_memory", group_id=GROUP, memory_ids=[doomed])
    assert result == {"group_id": GROUP, "deleted": 1}
    assert _index_state(db_path, doomed) == (0, [kept], 0)
    assert _index_state(db_path, kept)[2] == 1
    hits = (await recall(client, "zebra", limit=100))["hits"]
    assert [h["id"] for h in hits] == [kept]


async def test_delete_memory_by_session_removes_only_that_sessions_episodes(
    client: Client, db_path: Path
) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    await add_batch(client, [{"content": f"monday {i}", "producer": "alice"} for i in range(3)])
    tuesday = await add_batch(
        client, [{"content": f"tuesday {i}", "producer": "alice"} for i in range(2)], session_id="tuesday"
    )
    result = await call(client, "delete_memory", group_id=GROUP, session_id=SESSION)
    assert result["deleted"] == 3
    assert await episode_count(client) == 0
    assert await episode_count(client, session_id="tuesday") == 2
    remaining = [r[0] for r in query_db(db_path, "SELECT id FROM episodes ORDER BY id")]
    assert remaining == [m["id"] for m in tuesday["memories"]]
    assert query_db(db_path, "SELECT count(*) FROM episode_vectors")[0][0] == 2
    assert (
        query_db(db_path, "SELECT count(*) FROM episodes_fts WHERE episodes_fts MATCH 'content : monday'")[0][
            0
        ]
        == 0
    )


async def test_delete_memory_with_ids_and_session_deletes_only_those_ids_in_that_session(
    client: Client,
) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    monday = (await add(client, "monday note"))["id"]
    tuesday = (await add(client, "tuesday note", session_id="tuesday"))["id"]
    result = await call(
        client, "delete_memory", group_id=GROUP, memory_ids=[monday, tuesday], session_id="tuesday"
    )
    assert result["deleted"] == 1
    assert await episode_count(client) == 1
    assert await episode_count(client, session_id="tuesday") == 0


async def test_delete_memory_returns_how_many_were_deleted(client: Client) -> None:
    await ready(client)
    result = await add_batch(client, [{"content": f"note {i}", "producer": "alice"} for i in range(4)])
    ids = [m["id"] for m in result["memories"]]
    deleted = await call(client, "delete_memory", group_id=GROUP, memory_ids=[*ids[:3], 999_999])
    assert deleted["deleted"] == 3
    again = await call(client, "delete_memory", group_id=GROUP, memory_ids=ids[:3])
    assert again["deleted"] == 0
    assert await episode_count(client) == 1


async def test_delete_memory_with_an_empty_id_list_deletes_nothing(client: Client) -> None:
    await ready(client)
    await add(client, "stays")
    result = await call(client, "delete_memory", group_id=GROUP, memory_ids=[])
    assert result["deleted"] == 0
    assert await episode_count(client) == 1


async def test_delete_memory_without_ids_or_session_is_an_error(client: Client) -> None:
    await ready(client)
    await add(client, "stays")
    text = await call_error(client, "delete_memory", group_id=GROUP)
    assert "memory_ids" in text and "session_id" in text
    assert await episode_count(client) == 1


async def test_delete_memory_does_not_delete_ids_of_another_group(client: Client, db_path: Path) -> None:
    await ready(client, "smiths")
    await ready(client, "joneses")
    theirs = (await add(client, "the joneses secret", group_id="joneses"))["id"]
    result = await call(client, "delete_memory", group_id="smiths", memory_ids=[theirs])
    assert result["deleted"] == 0
    assert query_db(db_path, "SELECT count(*) FROM episodes WHERE id = ?", (theirs,))[0][0] == 1
    assert query_db(db_path, "SELECT count(*) FROM episode_vectors WHERE rowid = ?", (theirs,))[0][0] == 1
    hits = (await recall(client, "secret", group_id="joneses"))["hits"]
    assert [h["id"] for h in hits] == [theirs]


async def test_delete_memory_in_an_unknown_group_says_to_call_create_group(client: Client) -> None:
    text = await call_error(client, "delete_memory", group_id="ghosts", memory_ids=[1])
    assert "ghosts" in text
    assert "create_group" in text


async def test_delete_memory_in_an_unknown_session_says_what_to_do(client: Client) -> None:
    await ready(client)
    text = await call_error(client, "delete_memory", group_id=GROUP, session_id="nowhere")
    assert "nowhere" in text
    assert "does not exist" in text
    assert points_to_existing_sessions(text), text


# -- delete_session -------------------------------------------------------------------------


async def test_delete_session_fails_while_the_session_is_open(client: Client) -> None:
    await ready(client)
    await add(client, "keep me while open")
    text = await call_error(client, "delete_session", group_id=GROUP, session_id=SESSION)
    assert "open" in text
    assert "close_session" in text
    assert await episode_count(client) == 1


async def test_delete_session_fails_until_every_reference_is_closed(client: Client) -> None:
    await ready(client)
    await open_session(client)
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    text = await call_error(client, "delete_session", group_id=GROUP, session_id=SESSION)
    assert "close_session" in text
    assert "1 reference" in text


async def test_delete_session_after_close_session_removes_it_and_its_episodes(
    client: Client, db_path: Path
) -> None:
    await ready(client)
    await open_session(client, session_id="tuesday")
    await add_batch(client, [{"content": f"zebra {i}", "producer": "alice"} for i in range(3)])
    await add(client, "zebra on tuesday", session_id="tuesday")
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    result = await call(client, "delete_session", group_id=GROUP, session_id=SESSION)
    assert result == {"group_id": GROUP, "session_id": SESSION, "deleted_episodes": 3}
    assert query_db(db_path, "SELECT count(*) FROM episodes WHERE session_id = ?", (SESSION,))[0][0] == 0
    assert (
        query_db(db_path, "SELECT count(*) FROM episodes_fts WHERE episodes_fts MATCH 'content : zebra'")[0][
            0
        ]
        == 1
    )
    assert query_db(db_path, "SELECT count(*) FROM episode_vectors")[0][0] == 1
    text = await call_error(client, "open_session", group_id=GROUP, session_id=SESSION, mode="open")
    assert "does not exist" in text
    hits = (await recall(client, "zebra"))["hits"]
    assert [h["content"] for h in hits] == ["zebra on tuesday"]


async def test_a_deleted_session_can_be_created_again_from_scratch(client: Client) -> None:
    await ready(client)
    await add(client, "old life")
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    await call(client, "delete_session", group_id=GROUP, session_id=SESSION)
    info = await open_session(client, mode="create")
    assert info["created"] is True
    assert info["episode_count"] == 0
    assert (await add(client, "new life"))["sequence"] == 1


async def test_delete_session_of_an_unknown_session_says_what_to_do(client: Client) -> None:
    await make_group(client)
    text = await call_error(client, "delete_session", group_id=GROUP, session_id="nowhere")
    assert "nowhere" in text
    assert "does not exist" in text
    assert points_to_existing_sessions(text), text


async def test_delete_session_in_an_unknown_group_says_the_group_does_not_exist(client: Client) -> None:
    text = await call_error(client, "delete_session", group_id="ghosts", session_id=SESSION)
    assert "group 'ghosts' does not exist" in text
    assert "create_group" in text


def test_fts_query_routes_participant_names_to_the_speaker_column_and_drops_noise() -> None:
    from mcp_memory.store.sqlite.fts import fts_query

    query = fts_query("What did Ana Lima's brother paint?", ["Ana Lima", "bot-7"])
    assert query == '({content before after} : ("brother" OR "paint")) OR (producer_id : ("ana" OR "lima"))'
    assert fts_query("the of and") == '({content before after} : ("the" OR "of" OR "and"))'
    assert fts_query("???") is None
