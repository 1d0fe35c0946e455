"""The surface a model pays for and finds its way with: tool tokens, short answers, listing groups,
correcting memories, prompts, instructions, and a handshake that needs none of the heavy parts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mcp import Client

from mcp_memory.server import INSTRUCTIONS
from mcp_memory.tokens import token_counter
from tests.helpers import TOOLS, call, call_error

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

TOOLS_TOKEN_BUDGET = 1500
TURNS = [
    ("ana", "user", "I finally booked the train to Porto for the first week of May"),
    ("bot", "assistant", "Great, do you want me to remind you to pack the camera before you leave?"),
    ("ana", "user", "Yes please, and remind me that my sister Rita lives near the Ribeira in Porto"),
    (
        "bot",
        "assistant",
        "Noted: Rita lives near the Ribeira. I will remind you about the camera on April 30",
    ),
]


def tokens(text: str) -> int:
    return token_counter().count(text)


def listed_tokens(tool: object) -> int:
    """What a model reads of one tool: its name, its description and its input schema (compact JSON)."""
    schema = json.dumps(tool.input_schema, separators=(",", ":"))  # type: ignore[attr-defined]
    return tokens(tool.name) + tokens(tool.description or "") + tokens(schema)  # type: ignore[attr-defined]


async def ready(client: Client) -> list[int]:
    await call(client, "create_group", group_id="ana", user_ids=["ana"], agent_ids=["bot"])
    await call(client, "open_session", group_id="ana", session_id="may")
    memories = [
        {"content": text, "producer": who, "role": role, "timestamp": f"2025-04-2{i}T10:00:00Z"}
        for i, (who, role, text) in enumerate(TURNS)
    ]
    added = await call(client, "add_memory", group_id="ana", session_id="may", memories=memories)
    return [m["id"] for m in added["memories"]]


async def test_the_tool_list_costs_at_most_the_budget_and_every_parameter_is_described(
    client: Client,
) -> None:
    tools = (await client.list_tools()).tools
    assert {t.name for t in tools} == TOOLS
    total = sum(listed_tokens(t) for t in tools)
    assert total <= TOOLS_TOKEN_BUDGET, f"tools/list costs {total} tokens"
    for tool in tools:
        assert tool.description and "\n    " not in tool.description, tool.name
        for name, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{tool.name}.{name} has no description"


async def test_recall_reads_as_short_lines_and_keeps_every_field_in_structured_content(
    client: Client,
) -> None:
    ids = await ready(client)
    result = await client.call_tool(
        "recall", {"group_id": "ana", "query": "where does Rita live", "limit": 3}
    )
    text = result.content[0].text  # type: ignore[union-attr]
    hits = result.structured_content["hits"]  # type: ignore[index]
    assert len(hits) == 3 and {hits[0]["id"], hits[1]["id"]} == {ids[2], ids[3]}
    assert f"#{ids[2]} 2025-04-22 ana: Yes please, and remind me" in text
    assert text.splitlines()[0] == "best first:"
    memory_tokens = sum(tokens(hit["content"]) for hit in hits)
    assert tokens(text) <= 2 * memory_tokens, (tokens(text), memory_tokens, text)
    assert {"score", "matched_by", "metadata", "importance", "session_id"} <= set(hits[0])


async def test_a_recall_that_finds_nothing_says_so(client: Client) -> None:
    await call(client, "create_group", group_id="new", user_ids=["ana"])
    result = await client.call_tool("recall", {"group_id": "new", "query": "what do you remember?"})
    assert result.content[0].text == "no memory matches 'what do you remember?' yet"  # type: ignore[union-attr]


async def test_other_answers_are_one_line_with_the_ids_to_use_next(client: Client) -> None:
    ids = await ready(client)
    again = await client.call_tool(
        "create_group", {"group_id": "ana", "user_ids": ["ana"], "agent_ids": ["bot"]}
    )
    assert again.content[0].text.startswith("group ana: users ana; agents bot; 1 sessions, 4 memories")  # type: ignore[union-attr]
    added = await client.call_tool(
        "add_memory", {"group_id": "ana", "session_id": "may", "content": "ok", "producer": "ana"}
    )
    assert added.content[0].text == f"stored 1 in ana/may: #{ids[-1] + 1}"  # type: ignore[union-attr]


async def test_list_groups_shows_every_group_and_a_groups_sessions_with_counts(client: Client) -> None:
    await ready(client)
    await call(client, "create_group", group_id="team", user_ids=["zoe"])
    listing = await call(client, "list_groups")
    assert [(g["group_id"], g["session_count"], g["episode_count"]) for g in listing["groups"]] == [
        ("ana", 1, 4),
        ("team", 0, 0),
    ]
    assert listing["sessions"] is None
    one = await call(client, "list_groups", group_id="ana")
    assert [g["group_id"] for g in one["groups"]] == ["ana"]
    assert [(s["session_id"], s["episode_count"]) for s in one["sessions"]] == [("may", 4)]
    text = await call_error(client, "list_groups", group_id="nobody")
    assert text.startswith("not_found: group 'nobody' does not exist")


async def test_create_group_again_returns_it_and_other_participants_are_a_clear_error(client: Client) -> None:
    first = await call(client, "create_group", group_id="ana", user_ids=["ana"], agent_ids=["bot"])
    again = await call(client, "create_group", group_id="ana", user_ids=["ana"], agent_ids=["bot"])
    assert first["created"] and not again["created"]
    text = await call_error(client, "create_group", group_id="ana", user_ids=["rita"])
    assert (
        text.startswith("conflict: group 'ana' already exists with user_ids ['ana']")
        and "add_participants" in text
    )
    joined = await call(client, "add_participants", group_id="ana", user_ids=["rita"])
    assert joined["user_ids"] == ["ana", "rita"]
    await call(client, "open_session", group_id="ana", session_id="s")
    assert (await call(client, "add_memory", group_id="ana", session_id="s", content="hi", producer="rita"))[
        "stored"
    ] == 1


async def test_update_memory_corrects_a_memory_through_the_tool(client: Client) -> None:
    ids = await ready(client)
    updated = await call(
        client, "update_memory", group_id="ana", memory_id=ids[2], content="Rita lives near Foz in Porto"
    )
    assert updated["memory"]["id"] == ids[2] and updated["memory"]["sequence"] == 3
    found = await call(client, "recall", group_id="ana", query="Foz", limit=1)
    assert found["hits"][0]["id"] == ids[2]
    text = await call_error(client, "update_memory", group_id="ana", memory_id=ids[2])
    assert text.startswith("invalid: pass content, metadata, importance or memory_type")
    text = await call_error(client, "update_memory", group_id="ana", memory_id=9999, content="x")
    assert text.startswith("not_found: memory 9999 does not exist in group 'ana'")


async def test_prompts_are_listed_and_hand_the_model_what_the_memory_holds(client: Client) -> None:
    ids = await ready(client)
    await call(client, "add_fact", group_id="ana", subject="Rita", predicate="lives in", object="Porto")
    names = {p.name for p in (await client.list_prompts()).prompts}
    assert names == {"recall_topic", "summarize_conversation", "review_facts"}
    topic = await client.get_prompt("recall_topic", {"group_id": "ana", "topic": "Rita"})
    assert f"#{ids[2]}" in topic.messages[0].content.text  # type: ignore[union-attr]
    summary = await client.get_prompt("summarize_conversation", {"group_id": "ana", "session_id": "may"})
    text = summary.messages[0].content.text  # type: ignore[union-attr]
    assert "summarize_session(group_id='ana', session_id='may'" in text and "Ribeira" in text
    facts = await client.get_prompt("review_facts", {"group_id": "ana", "subject": "Rita"})
    assert "Rita / lives in / Porto (current)" in facts.messages[0].content.text  # type: ignore[union-attr]


def test_the_instructions_show_the_way_back_and_the_corrections() -> None:
    for tool in (
        "list_groups",
        "create_group",
        "open_session",
        "add_memory",
        "update_memory",
        "recall",
        "add_fact",
    ):
        assert tool in INSTRUCTIONS, tool
    assert "safe to repeat" in INSTRUCTIONS


async def test_resource_descriptions_are_clean_text(client: Client) -> None:
    resources = (await client.list_resources()).resources
    templates = (await client.list_resource_templates()).resource_templates
    for item in [*resources, *templates]:
        assert item.description and "\n" not in item.description.strip(), (
            item.uri if hasattr(item, "uri") else item
        )


@pytest.mark.slow
def test_importing_the_server_loads_none_of_the_heavy_parts() -> None:
    probe = (
        "import sys, mcp_memory.server, mcp_memory.__main__; "
        "print([m for m in ('numpy', 'openai', 'tiktoken', 'onnxruntime', 'sqlite_vec') if m in sys.modules])"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert run.stdout.strip() == "[]", run.stdout
