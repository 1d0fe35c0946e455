"""The rolling summary end to end through a real in-process MCP client: turns added with add_memory
leave a small short-term window, the server's own background pass folds them through a real
loopback OpenAI-compatible server (tests/fake_openai.py), and recall and the session resource show
the summary; a failing endpoint writes none and recall still answers."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.server import build_server
from tests.fake_openai import FakeOpenAI, RecordedRequest, serve
from tests.helpers import call

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP, SESSION = "team", "offsite"
WINDOW = {"short_term": {"max_episodes": 3}}
DEADLINE_S = 30.0  # generous: the machine may be busy; the tests poll, they never wait a fixed time
TURNS = [
    ("ana", "user", "We should hold the offsite in Sintra"),
    ("helper", "assistant", "I found three venues near the station"),
    ("ana", "user", "Book the one with the big garden for May"),
    ("helper", "assistant", "Booked: the garden venue, 12 to 14 May"),
    ("ana", "user", "Tell the team to bring walking shoes"),
    ("helper", "assistant", "Sent the reminder to everyone"),
]


class Summariser:
    """The fake model's chat replies: a new numbered summary each time, kept in order."""

    def __init__(self) -> None:
        self.replies: list[str] = []

    def __call__(self, body: dict[str, Any]) -> str:
        self.replies.append(
            f"Ana and the helper are planning the Sintra offsite (summary {len(self.replies) + 1})"
        )
        return self.replies[-1]


@pytest.fixture
def summariser() -> Summariser:
    return Summariser()


@pytest.fixture
def llm(summariser: Summariser) -> Iterator[FakeOpenAI]:
    yield from serve(chat_default=summariser)


@pytest.fixture
async def llm_client(config: Config, llm: FakeOpenAI) -> AsyncIterator[Client]:
    """A client of a server whose LLM is the loopback fake; automatic episodic summaries are off, so every
    chat request the fake sees comes from a rolling-summary pass."""
    configured = replace(
        config,
        llm_base_url=llm.base_url,
        llm_api_key="sk-rolling",
        llm_model="tiny-chat",
        auto_trigger_threshold=0,
        maintenance_interval_s=0,
    )
    async with Client(build_server(configured)) as connected:
        yield connected


async def ready(client: Client) -> None:
    await call(client, "create_group", group_id=GROUP, user_ids=["ana"], agent_ids=["helper"])
    await call(client, "open_session", group_id=GROUP, session_id=SESSION, configuration=WINDOW)


def memory(turn: tuple[str, str, str]) -> dict[str, str]:
    producer, role, content = turn
    return {"producer": producer, "role": role, "content": content}


async def session_resource(client: Client) -> dict:
    result = await client.read_resource(f"memory://groups/{GROUP}/sessions/{SESSION}", cache_mode="bypass")
    [content] = result.contents
    return json.loads(content.text)


async def covered_through(client: Client) -> int | None:
    return (await session_resource(client))["session"]["rolling_summary_covered_through"]


async def recall(client: Client, **arguments: Any) -> dict:
    return await call(client, "recall", group_id=GROUP, query="venue garden", **arguments)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds; fail after DEADLINE_S."""
    with anyio.fail_after(DEADLINE_S):
        while not await check():
            await anyio.sleep(0.02)


def chats(llm: FakeOpenAI) -> list[RecordedRequest]:
    return llm.requests_to("/chat/completions")


def prompt(request: RecordedRequest) -> str:
    return request.json["messages"][-1]["content"]


async def test_turns_leaving_the_window_are_summarised_in_the_background_and_shown_by_recall_and_the_resource(
    llm_client: Client, llm: FakeOpenAI, summariser: Summariser
) -> None:
    await ready(llm_client)
    for turn in TURNS:  # one add per turn, as a conversation arrives; each may start a background pass
        await call(llm_client, "add_memory", group_id=GROUP, session_id=SESSION, **memory(turn))

    async def three_turns_covered() -> bool:
        return await covered_through(llm_client) == 3  # turns 1 to 3 left the window of 3

    await eventually(three_turns_covered)

    summary = summariser.replies[-1]  # passes run one at a time, so the last reply is the stored summary
    recalled = await recall(llm_client, session_id=SESSION)
    assert recalled["rolling_summary"] == summary
    assert [e["content"] for e in recalled["recent"]] == [content for _, _, content in TURNS[3:]]
    assert recalled["hits"]
    assert (await recall(llm_client))["rolling_summary"] is None  # group-wide recall has no session context
    detail = await session_resource(llm_client)
    assert detail["rolling_summary"] == summary
    assert (detail["session"]["rolling_summary"], detail["session"]["rolling_summary_covered_through"]) == (
        "on",
        3,
    )

    requests = chats(llm)
    assert requests and len(requests) == len(summariser.replies)
    for request in requests:
        assert request.authorization == "Bearer sk-rolling" and request.json["model"] == "tiny-chat"
        assert request.json["messages"][0]["content"].startswith("You maintain the rolling summary")
    sent = "\n".join(prompt(r) for r in requests)
    for producer, role, content in TURNS[:3]:
        assert f"{producer} ({role}): {content}" in sent
    for _, _, content in TURNS[3:]:
        assert content not in sent  # still in the window: not summarised


async def test_a_failing_endpoint_writes_no_summary_and_recall_still_answers(
    llm_client: Client, llm: FakeOpenAI, summariser: Summariser, caplog: pytest.LogCaptureFixture
) -> None:
    await ready(llm_client)
    llm.chat_default = 500
    caplog.set_level(logging.WARNING, logger="mcp_memory")
    # five turns in one add: one background pass, whose three attempts (the first and two retries) all fail
    await call(
        llm_client, "add_memory", group_id=GROUP, session_id=SESSION, memories=[memory(t) for t in TURNS[:5]]
    )

    async def all_attempts_made() -> bool:
        return len(chats(llm)) == 3

    await eventually(all_attempts_made)

    recalled = await recall(llm_client, session_id=SESSION)
    assert recalled["rolling_summary"] is None and recalled["hits"]
    assert [e["content"] for e in recalled["recent"]] == [content for _, _, content in TURNS[2:5]]
    detail = await session_resource(llm_client)
    assert detail["rolling_summary"] is None and detail["session"]["rolling_summary_covered_through"] is None

    # the endpoint recovers; the next add's pass runs after the failed one and still finds turns 1 and 2
    # unsummarised, so the failed pass recorded nothing (not even how far it got)
    llm.chat_default = summariser
    await call(llm_client, "add_memory", group_id=GROUP, session_id=SESSION, **memory(TURNS[5]))

    async def three_turns_covered() -> bool:
        return await covered_through(llm_client) == 3

    await eventually(three_turns_covered)
    first_success = prompt(chats(llm)[3])
    assert all(content in first_success for _, _, content in TURNS[:3])
    assert (await recall(llm_client, session_id=SESSION))["rolling_summary"] == summariser.replies[-1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("rolling summary" in w and "HTTP 500" in w and "previous one is kept" in w for w in warnings)
