"""Reads without a query (Agent Memory API, MARSYS): recall without a query lists a session's or group's
memories in order, page by page, by time, step, producer, role, type, metadata (dotted paths, equality,
numeric ranges) and importance."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from tests.helpers import call, call_error

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


async def ready(client: Client) -> None:
    await call(client, "create_group", group_id="g", user_ids=["ana"], agent_ids=["trader", "scout"])
    for session in ("game", "chat"):
        await call(client, "open_session", group_id="g", session_id=session)
    steps = [
        {"content": f"step {step}: {action}", "producer": agent, "role": "assistant", "step": step,
         "memory_type": "action", "importance": importance, "timestamp": f"2025-01-0{1 + step % 9}T00:00:00Z",
         "metadata": {"action_type": action, "items_given": {"wood": wood}}}
        for step, (agent, action, wood, importance) in enumerate(
            [("trader", "trade", 5, 0.9), ("scout", "move", 0, 0.2), ("trader", "trade", 12, 0.6),
             ("scout", "look", 0, 0.4), ("trader", "trade", 30, 0.8)]
        )
    ]  # fmt: skip
    await call(client, "add_memory", group_id="g", session_id="game", memories=steps)
    chat = [
        {"content": f"chat line {i}", "producer": "ana", "timestamp": f"2025-02-0{i + 1}T00:00:00Z"}
        for i in range(3)
    ]
    await call(client, "add_memory", group_id="g", session_id="chat", memories=chat)


async def listed(client: Client, **arguments: Any) -> dict:
    """recall without a query: a page of memories in order."""
    return await call(client, "recall", group_id="g", **arguments)


def contents(page: dict) -> list[str]:
    return [m["content"] for m in page["hits"]]


async def test_a_session_is_listed_in_order_and_the_newest_n_come_first_when_asked(client: Client) -> None:
    await ready(client)
    page = await listed(client, session_id="chat")
    assert contents(page) == ["chat line 0", "chat line 1", "chat line 2"] and page["next_cursor"] is None
    newest = await listed(client, session_id="game", order="newest", limit=2)
    assert [m["step"] for m in newest["hits"]] == [4, 3]


async def test_pages_follow_each_other_with_the_cursor_until_none_is_left(client: Client) -> None:
    await ready(client)
    seen: list[str] = []
    page = await listed(client, limit=3)
    while True:
        seen += contents(page)
        if page["next_cursor"] is None:
            break
        page = await listed(client, limit=3, cursor=page["next_cursor"])
    assert len(seen) == len(set(seen)) == 8
    assert seen[-3:] == ["chat line 0", "chat line 1", "chat line 2"]  # the group's memories by time


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"step_from": 1, "step_to": 3}, ["step 1: move", "step 2: trade", "step 3: look"]),
        ({"metadata": {"action_type": "trade"}}, ["step 0: trade", "step 2: trade", "step 4: trade"]),
        ({"metadata": {"items_given.wood": {"gte": 10}}}, ["step 2: trade", "step 4: trade"]),
        ({"metadata": {"items_given.wood": {"gt": 0, "lt": 20}}}, ["step 0: trade", "step 2: trade"]),
        ({"min_importance": 0.55, "max_importance": 0.85}, ["step 2: trade", "step 4: trade"]),
        ({"producer": "scout", "memory_types": ["action"]}, ["step 1: move", "step 3: look"]),
        ({"role": "user"}, ["chat line 0", "chat line 1", "chat line 2"]),
        ({"since": "2025-02-02T00:00:00Z"}, ["chat line 1", "chat line 2"]),
    ],
)
async def test_every_filter_applies_without_a_query(
    client: Client, filters: dict, expected: list[str]
) -> None:
    await ready(client)
    assert contents(await listed(client, filters=filters)) == expected


async def test_recall_takes_the_step_and_range_filters_too(client: Client) -> None:
    await ready(client)
    found = await call(
        client,
        "recall",
        group_id="g",
        query="trade",
        filters={"step_from": 2, "metadata": {"items_given.wood": {"lte": 12}}},
    )
    assert [h["content"] for h in found["hits"]] == [
        "step 2: trade",
        "step 3: look",
    ]  # the keyword match first


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor is not one this listing gave out"),
        ({"filters": {"step_from": 5, "step_to": 1}}, "step_from is after step_to"),
        (
            {"filters": {"metadata": {"x": {"above": 3}}}},
            "an object is a range of numbers under gt, gte, lt, lte",
        ),
        ({"order": "random"}, "order must be 'oldest' or 'newest'"),
        ({"limit": 101}, "limit must be less than or equal to 100"),
        ({"neighbours": 2}, "neighbours applies to a search; pass a query"),
        ({"query": "trade", "cursor": "abc"}, "cursor applies to a listing"),
        ({"session_id": "nope"}, "not_found: session 'nope' does not exist in group 'g'"),
    ],
)
async def test_a_bad_listing_request_says_what_to_send(client: Client, arguments: dict, problem: str) -> None:
    await ready(client)
    text = await call_error(client, "recall", group_id="g", **arguments)
    assert problem in text, text


async def test_a_cursor_of_a_session_listing_is_refused_for_the_group(client: Client) -> None:
    await ready(client)
    page = await listed(client, session_id="game", limit=1)
    text = await call_error(client, "recall", group_id="g", cursor=page["next_cursor"])
    assert "cursor is not one this listing gave out" in text
