"""The short-term window: newest first, within count and tokens, tool calls kept whole."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.models import Episode
from mcp_memory.window import trim

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]


def ep(sequence: int, content: str, role: str = "user") -> Episode:
    return Episode(
        id=sequence, group_id="g", session_id="s", sequence=sequence, timestamp=datetime(2025, 1, 1, tzinfo=UTC),
        producer="bot" if role != "user" else "ana", role=role, content=content, memory_type="message",
        importance=0.5,
    )  # fmt: skip


def words(text: str) -> int:
    return len(text.split())


def sequences(episodes: list[Episode]) -> list[int]:
    return [e.sequence for e in episodes]


def test_the_window_walks_back_from_the_newest_within_both_budgets() -> None:
    history = [ep(i, "one two three") for i in range(1, 11)]
    assert sequences(trim(history, max_episodes=4, max_tokens=100, count=words)) == [7, 8, 9, 10]
    assert sequences(trim(history, max_episodes=10, max_tokens=7, count=words)) == [9, 10]


def test_the_newest_episode_is_kept_even_alone_over_budget() -> None:
    history = [ep(1, "short"), ep(2, "a very long message " * 50)]
    assert sequences(trim(history, max_episodes=5, max_tokens=10, count=words)) == [2]


def test_a_tool_call_and_its_results_are_never_split() -> None:
    history = [
        ep(1, "what is the weather"),
        ep(2, "calling weather", role="assistant"),
        ep(3, "sunny 21C", role="tool"),
        ep(4, "humidity 40%", role="tool"),
        ep(5, "it is sunny"),
    ]
    # room for three episodes: the call with both results would make four, so it is left out whole
    assert sequences(trim(history, max_episodes=3, max_tokens=100, count=words)) == [5]
    assert sequences(trim(history, max_episodes=4, max_tokens=100, count=words)) == [2, 3, 4, 5]
    # the newest unit is the call with its results: kept whole even over the count
    assert sequences(trim(history[:4], max_episodes=1, max_tokens=1, count=words)) == [2, 3, 4]


async def test_recall_returns_the_token_bounded_window_and_keeps_the_full_history(config: Config) -> None:
    async with MemoryManager(config) as manager:
        await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
        async with manager.sessions.created(
            "g", "s", configuration={"short_term": {"max_episodes": 10, "max_tokens": 30}}
        ) as s:
            await manager.memories.add_memories(
                s.group_id,
                s.session_id,
                [{"content": f"turn {i} " + "word " * 8, "producer": "ana"} for i in range(12)],
            )
            window = await manager.memories.recent(s.group_id, s.session_id)
            assert 1 <= len(window) < 10
            assert window[-1].content.startswith("turn 11")
            assert sum(len(e.content.split()) for e in window) <= 30
        info = await manager.sessions.session_info("g", "s")
        assert info.episode_count == 12
