"""Recall beyond its filters: a similarity threshold (per call and per session), each hit's neighbouring turns,
the tiers to read, and what every hit says of its retrievals."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from tests.helpers import call

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

TURNS = [
    "We planned the garden for spring",
    "Tomatoes need full sun and warm soil",
    "The basil goes next to the tomatoes",
    "Then we talked about the football match",
    "The final score was two to one",
    "Our team won the cup at last",
]


async def ready(client: Client, configuration: dict | None = None) -> list[int]:
    await call(client, "create_group", group_id="g", user_ids=["ana"], agent_ids=["bot"])
    await call(client, "open_session", group_id="g", session_id="s", configuration=configuration)
    memories = [
        {"content": text, "producer": "ana", "timestamp": f"2025-03-0{i + 1}T00:00:00Z"}
        for i, text in enumerate(TURNS)
    ]
    added = await call(client, "add_memory", group_id="g", session_id="s", memories=memories)
    return [m["id"] for m in added["memories"]]


async def recall(client: Client, query: str, **arguments: object) -> dict:
    return await call(client, "recall", group_id="g", query=query, **arguments)


async def test_a_nonsense_query_finds_nothing_unless_the_threshold_is_lowered(client: Client) -> None:
    await ready(client)
    assert (await recall(client, "qwzx plorf vunt", limit=5))["hits"] == []  # the default floor, 0.2
    noise = await recall(client, "qwzx plorf vunt", limit=5, min_similarity=-1)
    assert len(noise["hits"]) == 5 and all(h["matched_by"] == ["vector"] for h in noise["hits"])
    assert all(h["similarity"] is not None and h["similarity"] < 0.2 for h in noise["hits"])
    keyword = await recall(client, "basil", min_similarity=0.99)  # keyword matches always stay
    assert keyword["hits"][0]["content"] == TURNS[2]
    assert all("keyword" in h["matched_by"] for h in keyword["hits"])


async def test_a_sessions_threshold_applies_when_the_call_gives_none(client: Client) -> None:
    await ready(
        client, configuration={"long_term": {"min_similarity": 0.3}, "short_term": {"enabled": False}}
    )
    assert (await recall(client, "qwzx plorf vunt", session_id="s"))["hits"] == []
    assert (await recall(client, "qwzx plorf vunt", session_id="s", min_similarity=-1))["hits"] != []


async def test_neighbours_add_the_turns_around_each_hit_once(client: Client) -> None:
    ids = await ready(client)
    hits = (await recall(client, "basil tomatoes football", limit=3, neighbours=1))["hits"]
    for hit in hits:
        assert all(abs(c["sequence"] - hit["sequence"]) == 1 for c in hit["context"]), hit
    shown = [h["id"] for h in hits] + [c["id"] for h in hits for c in h["context"]]
    assert len(shown) == len(set(shown)) > len(hits)  # context added, nothing shown twice
    arguments = {"group_id": "g", "query": "basil", "limit": 1, "options": {"neighbours": 1}}
    text = (await client.call_tool("recall", arguments)).content[0].text  # type: ignore[union-attr]
    assert f"  #{ids[1]} 2025-03-02 ana: {TURNS[1]}" in text and f"  #{ids[3]} " in text


async def test_tiers_choose_the_recent_window_stored_memories_and_summaries(client: Client) -> None:
    await ready(client)
    points = ["The garden is planned for spring", "Tomatoes and basil go together", "Our team won the cup"]
    await call(client, "summarize_session", group_id="g", session_id="s", mode="lightweight", summary=points)
    only_summaries = await recall(client, "garden tomatoes", tiers=["summaries"])
    assert [h["memory_type"] for h in only_summaries["hits"]] == ["summary"]
    no_summaries = await recall(client, "garden tomatoes", tiers=["long_term"])
    assert no_summaries["hits"] and all(h["memory_type"] != "summary" for h in no_summaries["hits"])
    window_only = await recall(client, "garden", session_id="s", tiers=["recent"])
    assert window_only["hits"] == [] and window_only["recent"]
    no_window = await recall(client, "garden", session_id="s", tiers=["long_term", "summaries"])
    assert no_window["recent"] == [] and no_window["hits"]


async def test_hits_show_their_retrievals_last_access_and_effective_importance(client: Client) -> None:
    ids = await ready(client)
    await recall(client, "basil")
    again = (await recall(client, "basil"))["hits"][0]
    assert again["id"] == ids[2]
    assert again["retrieval_count"] == 1 and again["last_accessed_at"] is not None
    assert again["effective_importance"] == 0.5


async def test_open_session_creates_a_missing_group_with_its_participants(client: Client) -> None:
    opened = await call(
        client, "open_session", group_id="new", session_id="s", user_ids=["zoe"], agent_ids=["bot"]
    )
    assert opened["created"]
    group = (await call(client, "list_groups", group_id="new"))["groups"][0]
    assert (group["user_ids"], group["agent_ids"]) == (["zoe"], ["bot"])
    again = await call(client, "open_session", group_id="new", session_id="t", user_ids=["zoe"])
    assert again["created"]
    result = await client.call_tool(
        "open_session", {"group_id": "new", "session_id": "u", "user_ids": ["max"]}
    )
    assert result.is_error and result.content[0].text.startswith(
        "conflict: group 'new' exists without ['max']"
    )  # type: ignore[union-attr]


async def test_stats_break_the_memories_down_by_producer(client: Client) -> None:
    await ready(client)
    await call(
        client,
        "add_memory",
        group_id="g",
        session_id="s",
        content="I can help",
        producer="bot",
        role="assistant",
    )
    stats = json.loads((await client.read_resource("memory://stats")).contents[0].text)  # type: ignore[union-attr]
    by_producer = {(p["group_id"], p["producer"]): p["episodes"] for p in stats["producers"]}
    assert by_producer == {("g", "ana"): len(TURNS), ("g", "bot"): 1}
