"""Tools read their arguments as sent: unknown names, coercions, NaN, unreadable ids, unpaired
surrogates, deep nesting and oversized objects are errors that say what to send instead, and a call
that fails writes nothing.

Most tests go through a real in-process MCP client. That client dumps its request to JSON-ready
Python first (NaN becomes null, a surrogate in a key raises on the client's side), so what it
cannot carry is sent to the server's call_tool directly: the gate runs before any tool does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError

from mcp_memory.config import Config
from mcp_memory.errors import ValidationFailed
from mcp_memory.server import build_server
from mcp_memory.server.arguments import MAX_ARGUMENT_DEPTH, MAX_OBJECT_ARGUMENT_CHARS, check_arguments
from tests.helpers import TOOLS, call, call_error

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP, SESSION = "household", "monday"
TURN = {
    "group_id": GROUP,
    "session_id": SESSION,
    "content": "The boiler is serviced in May",
    "producer": "ana",
}
PYDANTIC_NOISE = ("pydantic", "https://", "validation error for", "[type=", "input_value", "Input should")


async def ready(client: Client) -> None:
    await call(client, "create_group", group_id=GROUP, user_ids=["ana"], agent_ids=["helper"])
    await call(client, "open_session", group_id=GROUP, session_id=SESSION)


async def episode_count(client: Client) -> int:
    opened = await call(client, "open_session", group_id=GROUP, session_id=SESSION, mode="open")
    return int(opened["episode_count"])


async def rejected(client: Client, tool: str, **arguments: object) -> str:
    """The error text of a call that must fail, checked to read like the server's own messages."""
    text = await call_error(client, tool, **arguments)
    assert not any(noise in text for noise in PYDANTIC_NOISE), text
    assert text.startswith(("invalid: ", "not_found: ")), text
    return text


async def gate_error(config: Config, tool: str, arguments: dict[str, Any]) -> str:
    """What the server's call_tool says about arguments no JSON client could send as Python objects."""
    with pytest.raises(ToolError) as raised:
        await build_server(config).call_tool(tool, arguments)
    text = str(raised.value)
    assert not any(noise in text for noise in PYDANTIC_NOISE), text
    return text


# -- unknown names ---------------------------------------------------------------------------


async def test_a_misspelt_argument_is_an_error_that_suggests_the_right_one_and_lists_the_valid_ones(
    client: Client,
) -> None:
    await ready(client)
    await call(client, "add_memory", **TURN)
    text = await rejected(client, "recall", group_id=GROUP, query="boiler", sesion_id=SESSION)
    assert "unknown argument 'sesion_id' for recall; did you mean 'session_id'?" in text
    assert "recall takes: group_id, query, session_id, limit" in text


async def test_an_unknown_argument_on_add_memory_stores_nothing(client: Client) -> None:
    await ready(client)
    text = await rejected(client, "add_memory", id=2, **TURN)
    assert "unknown argument 'id' for add_memory" in text
    assert "add_memory takes: group_id, session_id, content" in text
    assert await episode_count(client) == 0


async def test_an_unknown_field_in_a_batch_item_names_the_item_and_stores_nothing(client: Client) -> None:
    await ready(client)
    memories = [{"content": "first", "producer": "ana"}, {"content": "second", "producer": "ana", "id": 3}]
    text = await rejected(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)
    assert "unknown field 'id' in memories[1]" in text
    assert "a memory takes: content, producer" in text and "nothing was stored" in text
    assert await episode_count(client) == 0


async def test_a_tool_without_arguments_says_so_and_an_unknown_tool_suggests_the_closest(
    client: Client,
) -> None:
    text = await rejected(client, "run_maintenance", force=True)
    assert "run_maintenance takes no arguments" in text
    text = await rejected(client, "recal", group_id=GROUP, query="x")
    assert "unknown tool 'recal'; did you mean 'recall'?" in text


async def test_lean_schemas_do_not_spell_out_what_the_server_refuses_anyway(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        text = json.dumps(tool.input_schema)
        assert '"title"' not in text and '{"type": "null"}' not in text and "maxLength" not in text, name
    text = await rejected(client, "recall", group_id=GROUP, query="x", sesion_id=SESSION)
    assert "unknown argument 'sesion_id' for recall; did you mean 'session_id'?" in text


# -- no coercion across kinds ----------------------------------------------------------------


async def test_a_boolean_is_not_a_memory_id_and_nothing_is_deleted(client: Client) -> None:
    await ready(client)
    stored = await call(client, "add_memory", **TURN)
    assert stored["memories"][0]["id"] == 1
    text = await rejected(client, "delete_memory", group_id=GROUP, memory_ids=[True])
    assert "memory_ids[0] must be an integer; got true (a boolean)" in text
    assert await episode_count(client) == 1


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("recall", {"query": "x", "limit": 1.5}, "limit must be an integer; got 1.5 (a number)"),
        ("recall", {"query": "x", "limit": 2.0}, "limit must be an integer; got 2.0 (a number)"),
        ("recall", {"query": "x", "limit": True}, "limit must be an integer; got true (a boolean)"),
        ("recall", {"query": "x", "limit": "5"}, 'limit must be an integer; got "5" (text)'),
        ("recall", {"query": 5}, "query must be text (a JSON string); got 5 (an integer)"),
        (
            "recall",
            {"query": "x", "filters": {"min_importance": "0.5"}},
            "filters.min_importance must be a number",
        ),
        (
            "recall",
            {"query": "x", "filters": {"role": "boss"}},
            "role must be 'user', 'assistant', 'system' or 'tool'",
        ),
        (
            "recall",
            {"query": "x", "filters": {"since": [2024]}},
            "filters.since must be a time: ISO 8601 text",
        ),
        ("recall", {"query": "x", "filters": '{"role": "user"}'}, "send the value itself, not JSON text"),
        (
            "recall",
            {"query": "x", "filters": {"sinse": "2024"}},
            "unknown field 'sinse' in filters; did you mean 'since'?",
        ),
        ("recall", {"query": "x", "limit": 500}, "limit must be less than or equal to 100; got 500"),
        ("add_memory", {**TURN, "importance": "0.5"}, 'importance must be a number; got "0.5" (text)'),
        ("add_memory", {**TURN, "importance": True}, "importance must be a number; got true (a boolean)"),
        ("add_memory", {**TURN, "timestamp": True}, "a boolean is not a time"),
        ("add_memory", {**TURN, "role": 1}, "role must be 'user', 'assistant', 'system' or 'tool'; got 1"),
        ("create_group", {"user_ids": '["ana"]'}, "user_ids must be a list; got"),
        ("summarize_session", {"session_id": SESSION, "sync": "true"}, "sync must be true or false"),
        ("open_session", {"session_id": SESSION, "mode": "crate"}, "mode must be 'create', 'open'"),
        ("delete_memory", {"memory_ids": 1}, "memory_ids must be a list; got 1 (an integer)"),
        ("delete_memory", {"memory_ids": [2**70]}, "memory_ids[0] is too large"),
    ],
)
async def test_values_of_the_wrong_kind_are_errors_that_say_what_to_send(
    client: Client, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    await ready(client)
    text = await rejected(client, tool, **{"group_id": GROUP, **arguments})
    assert expected in text


async def test_the_text_null_is_a_session_id_not_null(client: Client) -> None:
    """The SDK's pre-parse read "null" as null: recall(session_id="null") searched every session."""
    await ready(client)
    await call(client, "add_memory", **TURN)
    text = await rejected(client, "recall", group_id=GROUP, query="boiler", session_id="null")
    assert "session 'null' does not exist" in text


async def test_more_than_one_faulty_argument_names_the_others_too(client: Client) -> None:
    await ready(client)
    text = await rejected(client, "recall", group_id=GROUP, query=5, limit="x")
    assert "query must be text" in text and "(also check limit)" in text


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"importance": "0.5"}, 'memories[0].importance must be a number; got "0.5" (text)'),
        ({"producer": True}, "memories[0].producer must be text (a JSON string); got true"),
        ({"producer": " ana"}, "memories[0].producer has leading or trailing whitespace; send 'ana'"),
        ({"timestamp": True}, "memories[0].timestamp: a boolean is not a time"),
        ({"memory_type": ""}, "memories[0].memory_type is empty or only whitespace"),
    ],
)
async def test_batch_items_follow_the_same_rules_and_nothing_is_stored(
    client: Client, item: dict[str, Any], expected: str
) -> None:
    await ready(client)
    memories = [{"content": "kept out", "producer": "ana", **item}]
    text = await rejected(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)
    assert expected in text and "nothing was stored" in text
    assert await episode_count(client) == 0


async def test_nan_and_infinity_are_rejected_at_the_top_and_inside_batches(config: Config) -> None:
    for value in (float("nan"), float("inf"), float("-inf")):
        text = await gate_error(config, "add_memory", {**TURN, "details": {"importance": value}})
        assert f"details.importance is {value!r}; send a finite number" in text
        text = await gate_error(
            config, "add_memory", {**TURN, "details": {"metadata": {"scores": [1.0, value]}}}
        )
        assert "details.metadata.scores[1] is" in text
        item = {"content": "x", "producer": "ana", "importance": value}
        text = await gate_error(
            config, "add_memory", {"group_id": GROUP, "session_id": SESSION, "memories": [item]}
        )
        assert "memories[0].importance is" in text
        text = await gate_error(
            config, "add_fact", {"group_id": GROUP, "subject": "a", "details": {"confidence": value}}
        )
        assert "details.confidence is" in text


# -- readable ids ----------------------------------------------------------------------------

BAD_IDS = [
    ("", "is empty or only whitespace"),
    ("   ", "is empty or only whitespace"),
    ("\u3000", "is empty or only whitespace"),
    (" ana", "has leading or trailing whitespace; send 'ana'"),
    ("ana\u3000", "has leading or trailing whitespace; send 'ana'"),
    ("ana\n", r"holds a control character ('\n') at position 3"),
    ("an\x00a", r"holds a control character ('\x00') at position 2"),
    ("an\x7fa", r"holds a control character ('\x7f')"),
    ("an\x85a", r"holds a control character ('\x85')"),
    ("an\ud800a", "holds an unpaired surrogate (U+D800) at position 2"),
    ("x" * 201, "has 201 characters; send at most 200"),
]


@pytest.mark.parametrize(("bad", "expected"), BAD_IDS, ids=[repr(bad)[:12] for bad, _ in BAD_IDS])
async def test_an_unreadable_group_id_is_an_error_and_no_group_is_created(
    client: Client, bad: str, expected: str
) -> None:
    text = await rejected(client, "create_group", group_id=bad, user_ids=["ana"])
    assert f"group_id {expected}" in text
    groups = await client.read_resource("memory://groups")
    assert json.loads(groups.contents[0].text) == []  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("create_group", {"user_ids": ["ana", "bo\tb"]}, "user_ids[1] holds a control character"),
        ("create_group", {"user_ids": ["ana"], "agent_ids": [" helper"]}, "agent_ids[0] has leading"),
        ("open_session", {"session_id": "mon\u0000day"}, "session_id holds a control character"),
        ("add_memory", {**TURN, "producer": "ana "}, "producer has leading or trailing whitespace"),
        ("add_memory", {**TURN, "produced_for": "\u3000"}, "produced_for is empty or only whitespace"),
        ("add_memory", {**TURN, "memory_type": " note"}, "memory_type has leading or trailing whitespace"),
        ("add_memory", {**TURN, "memory_type": ""}, "send a readable id such as 'message'"),
        (
            "recall",
            {"query": "x", "filters": {"producer": "\x1bana"}},
            "filters.producer holds a control character",
        ),
        (
            "recall",
            {"query": "x", "filters": {"memory_types": ["note", ""]}},
            "filters.memory_types[1] is empty",
        ),
        ("recall", {"query": "x", "session_id": "\u3000"}, "session_id is empty"),
        ("delete_memory", {"session_id": " monday"}, "session_id has leading"),
        (
            "add_fact",
            {"subject": "a", "predicate": "b", "object": "c", "session_id": "x\n"},
            "session_id holds",
        ),
        ("get_task", {"task_id": ""}, "task_id is empty"),
    ],
)
async def test_every_id_argument_must_be_readable(
    client: Client, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    await ready(client)
    arguments = arguments if tool == "get_task" else {"group_id": GROUP, **arguments}
    text = await rejected(client, tool, **arguments)
    assert expected in text
    assert await episode_count(client) == 0


@pytest.mark.parametrize(
    "good", ["Ana María", "東京-チーム", "team 🙂", "a.b_c-d", "👩\u200d💻 dev", "x" * 200]
)
async def test_readable_ids_in_any_script_are_accepted(client: Client, good: str) -> None:
    await call(client, "create_group", group_id=good, user_ids=[good])
    await call(client, "open_session", group_id=good, session_id=good)
    stored = await call(client, "add_memory", group_id=good, session_id=good, content="hello", producer=good)
    assert stored["stored"] == 1


# -- surrogates, depth and size --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        (
            "add_memory",
            {**TURN, "content": "caf\ud800"},
            "content holds an unpaired surrogate (U+D800) at position 3",
        ),
        (
            "add_memory",
            {**TURN, "metadata": {"tags": ["ok", "b\udfffd"]}},
            "metadata.tags[1] holds an unpaired",
        ),
        ("recall", {"group_id": GROUP, "query": "\ud83d"}, "query holds an unpaired surrogate (U+D83D)"),
        (
            "add_fact",
            {"group_id": GROUP, "subject": "\udc00", "predicate": "b", "object": "c"},
            "subject holds",
        ),
        ("create_group", {"group_id": "g", "user_ids": ["a"], "description": "x\ud800"}, "description holds"),
    ],
)
async def test_an_unpaired_surrogate_anywhere_is_an_error_naming_the_argument(
    client: Client, tool: str, arguments: dict[str, Any], expected: str
) -> None:
    await ready(client)
    text = await rejected(client, tool, **arguments)
    assert expected in text
    assert await episode_count(client) == 0


async def test_a_surrogate_in_a_key_is_an_error_naming_where(config: Config) -> None:
    text = await gate_error(config, "add_memory", {**TURN, "details": {"metadata": {"ok": {"k\ud800": 1}}}})
    assert "a key of details.metadata.ok holds an unpaired surrogate" in text
    text = await gate_error(config, "add_memory", {**TURN, "sesion\ud800": 1})
    assert r"unknown argument 'sesion\ud800'" in text


def nested(levels: int) -> Any:
    """An object `levels` deep: {"a": {"a": ... {"a": 1}}}."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


async def test_metadata_nests_up_to_the_limit_and_one_level_more_is_an_error(client: Client) -> None:
    await ready(client)  # metadata travels in details: the argument's limit counts that level too
    await call(client, "add_memory", **TURN, metadata=nested(MAX_ARGUMENT_DEPTH - 1))
    text = await rejected(
        client, "add_memory", **{**TURN, "content": "x"}, metadata=nested(MAX_ARGUMENT_DEPTH)
    )
    assert f"details nests lists and objects more than {MAX_ARGUMENT_DEPTH} levels deep" in text
    assert await episode_count(client) == 1


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("create_group", {"group_id": "deep", "user_ids": ["a"], "configuration": nested(300)}),
        ("open_session", {"group_id": GROUP, "session_id": "s2", "configuration": nested(300)}),
        ("summarize_session", {"group_id": GROUP, "session_id": SESSION, "summary": nested(300)}),
        ("recall", {"group_id": GROUP, "query": "x", "filters": nested(300)}),
        ("add_memory", {"group_id": GROUP, "session_id": SESSION, "memories": [{"metadata": nested(300)}]}),
    ],
)
async def test_json_nested_hundreds_of_levels_deep_is_an_error_naming_the_argument(
    config: Config, tool: str, arguments: dict[str, Any]
) -> None:
    # the in-process client refuses to dump 300 levels; over stdio see test_stdio_hostile.py
    text = await gate_error(config, tool, arguments)
    name = next(
        key for key, value in arguments.items() if isinstance(value, dict | list) and key != "user_ids"
    )
    assert f"{name} nests lists and objects more than {MAX_ARGUMENT_DEPTH} levels deep" in text


async def test_python_objects_nested_100000_levels_deep_are_refused_without_recursion(config: Config) -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    text = await gate_error(config, "add_memory", {**TURN, "details": {"metadata": {"a": deep}}})
    assert "details nests lists and objects more than" in text


async def test_json_text_nested_too_deeply_in_a_summary_is_a_clear_error(client: Client) -> None:
    await ready(client)
    text = await rejected(client, "summarize_session", group_id=GROUP, session_id=SESSION, summary="[" * 5000)
    assert "nests JSON too deeply" in text and "nothing was stored" in text


async def test_an_object_argument_over_the_size_limit_says_the_limit(client: Client) -> None:
    await ready(client)
    big = {"notes": "x" * MAX_OBJECT_ARGUMENT_CHARS}
    text = await rejected(client, "create_group", group_id="big", user_ids=["a"], configuration=big)
    assert f"an object argument holds at most {MAX_OBJECT_ARGUMENT_CHARS:,}" in text
    text = await rejected(client, "add_memory", **TURN, metadata=big)
    assert "details is 64,027 characters as JSON" in text
    assert await episode_count(client) == 0


async def test_the_memory_server_still_stores_what_a_well_behaved_client_sends(tmp_path: Path) -> None:
    """Strictness refuses nothing valid: every kind each argument accepts still works."""
    config = Config(db_path=tmp_path / "ok.db", embedder="hashing")
    async with Client(build_server(config)) as client:
        await ready(client)
        stored = await call(
            client, "add_memory", **TURN, role="user", produced_for="helper", timestamp=1709303400,
            memory_type="note", importance=1, metadata={"room": "boiler", "floor": 2, "ok": True, "v": None},
        )  # fmt: skip
        batch = await call(
            client, "add_memory", group_id=GROUP, session_id=SESSION,
            memories=[
                {"content": "epoch ms", "producer": "ana", "timestamp": 1709303400000},
                {"content": "iso", "producer": "helper", "role": "assistant", "timestamp": "2024-03-01T14:30:00Z"},
                {"content": "float", "producer": "ana", "importance": 0.25, "timestamp": 1709303400.5},
            ],
        )  # fmt: skip
        recalled = await call(
            client, "recall", group_id=GROUP, query="boiler", limit=5, filters={
                "since": "2024-01-01", "until": 1900000000, "producer": "ana", "role": "user",
                "memory_types": ["note"], "metadata": {"room": ["boiler", "attic"]}, "min_importance": 0,
            },
        )  # fmt: skip
    assert stored["stored"] == 1 and batch["stored"] == 3
    assert [hit["id"] for hit in recalled["hits"]] == [stored["memories"][0]["id"]]


# -- the gate on its own ---------------------------------------------------------------------


def test_the_gate_walks_every_nested_value_and_names_its_path() -> None:
    accepted = ["memories"]
    cases = [
        ({"memories": [{"metadata": {"a b": [0, float("nan")]}}]}, "memories[0].metadata['a b'][1] is nan"),
        ({"memories": [{}, {"content": "\udfff"}]}, "memories[1].content holds an unpaired surrogate"),
        ({"memories": [{"n": -(2**63) - 1}]}, "memories[0].n is too large"),
    ]
    for arguments, expected in cases:
        with pytest.raises(ValidationFailed) as raised:
            check_arguments("add_memory", arguments, accepted)
        assert expected in str(raised.value)
    check_arguments("add_memory", {"memories": [{"n": 2**63 - 1, "x": -(2**63), "t": "ok 🙂"}]}, accepted)
