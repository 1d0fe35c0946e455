"""The rolling session summary: turns that leave the short-term window, condensed by a real loopback
OpenAI-compatible server (tests/fake_openai.py) into the session's summary, on a real SQLite file."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import sqlean
import sqlite_vec

from mcp_memory.config import Config
from mcp_memory.llm.client import OpenAIChatLLM
from mcp_memory.manager import MemoryManager
from mcp_memory.store.records import RollingSummary
from mcp_memory.store.sqlite.migrations import MIGRATIONS
from tests.fake_openai import Delay, FakeOpenAI
from tests.helpers import recall
from tests.test_store import episode, insert, open_store, seed

pytestmark = pytest.mark.anyio

GROUP, SESSION = "team", "planning"
SMALL = {"short_term": {"max_episodes": 3, "max_tokens": 200}}
DEADLINE_S = 20.0
CHAT = "/chat/completions"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chat_default="the summary") as server:
        yield server


def with_llm(config: Config, fake: FakeOpenAI, **options: Any) -> Config:
    return replace(
        config, llm_base_url=fake.base_url, llm_api_key="sk-test", maintenance_interval_s=0, **options
    )


@asynccontextmanager
async def started(
    config: Config, configuration: dict[str, Any] | None = SMALL
) -> AsyncIterator[MemoryManager]:
    async with MemoryManager(config) as manager:
        await manager.groups.create_group(GROUP, ["ana"], ["helper"])
        async with manager.sessions.created(GROUP, SESSION, configuration):
            pass
        yield manager


async def say(manager: MemoryManager, *contents: str) -> None:
    for content in contents:
        await manager.memories.add_memories(
            GROUP, SESSION, [{"producer": "ana", "role": "user", "content": content}]
        )


def prompts(fake: FakeOpenAI) -> list[str]:
    return [r.json["messages"][1]["content"] for r in fake.requests_to(CHAT)]


def no_retries(manager: MemoryManager, fake: FakeOpenAI, **options: Any) -> None:
    manager.models.chat = OpenAIChatLLM(fake.base_url, "sk-test", "test-model", max_retries=0, **options)


def long_turn(name: str, words: int) -> str:
    return f"{name}: " + " ".join(["alpha"] * words)


async def test_turns_that_leave_the_window_are_folded_into_the_summary(
    config: Config, fake: FakeOpenAI
) -> None:
    async with started(with_llm(config, fake)) as manager:
        await say(manager, "turn one", "turn two", "turn three", "turn four", "turn five")
        assert [e.sequence for e in await manager.memories.recent(GROUP, SESSION)] == [3, 4, 5]
        fake.queue_chat("ana talked about one and two")

        outcome = await manager.rolling.roll_summary(GROUP, SESSION)

        assert (outcome.status, outcome.summarised, outcome.covered_through_sequence) == ("updated", 2, 2)
        [prompt] = prompts(fake)
        assert "turn one" in prompt and "turn two" in prompt and "turn three" not in prompt
        info = await manager.sessions.session_info(GROUP, SESSION)
        assert (info.rolling_summary, info.rolling_summary_covered_through) == ("on", 2)
        recalled = await recall(manager, GROUP, "turn", session_id=SESSION)
        assert recalled.rolling_summary == "ana talked about one and two"
        assert [e.sequence for e in recalled.recent] == [3, 4, 5]
        detail = await manager.memories.session_detail(GROUP, SESSION)
        assert detail.rolling_summary == "ana talked about one and two"
        assert (
            await recall(manager, GROUP, "turn")
        ).rolling_summary is None  # group-wide: no session context

        await say(manager, "turn six", "turn seven")
        fake.queue_chat("one to four")
        outcome = await manager.rolling.roll_summary(GROUP, SESSION)
        assert (outcome.status, outcome.covered_through_sequence) == ("updated", 4)
        second = prompts(fake)[1]
        assert "ana talked about one and two" in second  # built from the previous summary
        assert "turn three" in second and "turn four" in second and "turn two" not in second

        assert (await manager.rolling.roll_summary(GROUP, SESSION)).status == "nothing to summarise"
        assert len(prompts(fake)) == 2

        await manager.sessions.delete_session(GROUP, SESSION)  # the summary goes with its session
        assert manager.store.read("SELECT count(*) FROM rolling_summaries")[0][0] == 0


async def test_a_failing_model_keeps_the_previous_summary_exactly(config: Config, fake: FakeOpenAI) -> None:
    async with started(with_llm(config, fake)) as manager:
        no_retries(manager, fake, timeout_s=0.5)
        await say(manager, "turn one", "turn two", "turn three", "turn four")
        fake.queue_chat("the first summary")
        assert (await manager.rolling.roll_summary(GROUP, SESSION)).status == "updated"
        before = manager.store.rolling_summary(GROUP, SESSION)
        await say(manager, "turn five", "turn six")

        for failure in (500, "", "   ", Delay(2.0)):
            fake.queue_chat(failure)
            outcome = await manager.rolling.roll_summary(GROUP, SESSION)
            assert (outcome.status, outcome.covered_through_sequence) == ("failed", 1), failure
            assert outcome.error
            assert manager.store.rolling_summary(GROUP, SESSION) == before
            assert (await manager.sessions.session_info(GROUP, SESSION)).rolling_summary_covered_through == 1

        fake.chat_default = (
            "the second summary"  # the delayed request above takes the default too, harmlessly
        )
        outcome = await manager.rolling.roll_summary(GROUP, SESSION)  # the next pass retries
        assert (outcome.status, outcome.covered_through_sequence) == ("updated", 3)
        assert "the first summary" in prompts(fake)[-1]
        assert (await manager.memories.rolling_summary(GROUP, SESSION)) == "the second summary"


async def test_an_over_long_batch_is_folded_in_halves_in_order(config: Config, fake: FakeOpenAI) -> None:
    settings = {"rolling_summary_input_tokens": 300, "rolling_summary_max_tokens": 50}
    async with started(with_llm(config, fake, **settings), {"short_term": {"max_episodes": 3}}) as manager:
        await say(manager, *(long_turn(f"turn {i}", 60) for i in range(1, 8)))
        fake.queue_chat("summary of the first half", "summary of both halves")

        outcome = await manager.rolling.roll_summary(GROUP, SESSION)

        assert (outcome.status, outcome.llm_calls, outcome.omitted) == ("updated", 2, [])
        assert (outcome.summarised, outcome.covered_through_sequence) == (4, 4)
        first, second = prompts(fake)
        assert "turn 1:" in first and "turn 2:" in first and "turn 3:" not in first
        assert "summary of the first half" in second and "turn 3:" in second and "turn 4:" in second
        assert await manager.memories.rolling_summary(GROUP, SESSION) == "summary of both halves"


async def test_a_single_turn_too_long_to_fit_is_left_out_and_noted(config: Config, fake: FakeOpenAI) -> None:
    settings = {"rolling_summary_input_tokens": 300, "rolling_summary_max_tokens": 50}
    async with started(with_llm(config, fake, **settings)) as manager:
        await say(manager, "turn one", long_turn("the huge turn", 400), "turn three")
        await say(manager, "turn four", "turn five", "turn six")
        fake.queue_chat("summary of one", "summary of one and three")

        outcome = await manager.rolling.roll_summary(GROUP, SESSION)

        assert (outcome.status, outcome.omitted, outcome.summarised) == ("updated", [2], 2)
        assert outcome.covered_through_sequence == 3
        assert all("the huge turn" not in p for p in prompts(fake))
        stored = manager.store.rolling_summary(GROUP, SESSION)
        assert stored is not None and stored.omitted_sequences == [2]
        shown = await manager.memories.rolling_summary(GROUP, SESSION)
        assert shown == (
            "summary of one and three\n\n"
            "(1 earlier turn was too long to summarise and is kept in long-term memory)"
        )
        assert manager.store.count_episodes(GROUP, SESSION) == 6  # long-term memory has every episode
        hits = (await recall(manager, GROUP, "huge turn alpha", session_id=SESSION)).hits
        assert any(h.sequence == 2 for h in hits)


async def test_one_summariser_per_session_in_order_in_the_background(
    config: Config, fake: FakeOpenAI
) -> None:
    lock, state, replies = threading.Lock(), {"in_flight": 0, "most": 0}, iter(range(1, 1000))

    def slow(body: dict[str, Any]) -> str:
        with lock:
            state["in_flight"] += 1
            state["most"] = max(state["most"], state["in_flight"])
        time.sleep(0.05)
        with lock:
            state["in_flight"] -= 1
        return f"summary {next(replies)}"

    fake.chat_default = slow
    async with started(with_llm(config, fake)) as manager, anyio.create_task_group() as jobs:
        await jobs.start(manager.run_background)
        for i in range(1, 13):  # adds arrive while passes run: each asks for another
            await say(manager, f"turn {i}")
            await anyio.sleep(0.06)
        async with anyio.create_task_group() as callers:  # direct passes wait their turn too
            for _ in range(3):
                callers.start_soon(manager.rolling.roll_summary, GROUP, SESSION)
        expected = (await manager.memories.recent(GROUP, SESSION))[0].sequence - 1
        with anyio.fail_after(DEADLINE_S):
            while (
                await manager.sessions.session_info(GROUP, SESSION)
            ).rolling_summary_covered_through != expected:
                await anyio.sleep(0.01)
        jobs.cancel_scope.cancel()

    assert state["most"] == 1
    sent = prompts(fake)
    assert len(sent) >= 2
    for k, prompt in enumerate(sent[1:], start=1):
        assert f"summary {k}" in prompt  # each pass starts from the one before
    covered = "".join(sent)
    assert all(f"(user): turn {i}\n" in covered for i in range(1, expected + 1))


async def test_without_an_llm_the_window_works_and_the_summary_is_off(config: Config) -> None:
    async with started(config) as manager, anyio.create_task_group() as jobs:
        await jobs.start(manager.run_background)
        await say(manager, "turn one", "turn two", "turn three", "turn four", "turn five")
        assert [e.content for e in await manager.memories.recent(GROUP, SESSION)] == [
            "turn three",
            "turn four",
            "turn five",
        ]
        info = await manager.sessions.session_info(GROUP, SESSION)
        assert (info.rolling_summary, info.rolling_summary_covered_through) == (
            "off (no LLM configured)",
            None,
        )
        assert (await manager.rolling.roll_summary(GROUP, SESSION)).status == "off"
        assert (await recall(manager, GROUP, "turn", session_id=SESSION)).rolling_summary is None
        assert manager.store.read("SELECT count(*) FROM rolling_summaries")[0][0] == 0
        assert manager.store.count_episodes(GROUP, SESSION) == 5
        jobs.cancel_scope.cancel()


async def test_with_short_term_memory_disabled_the_summary_is_off(config: Config, fake: FakeOpenAI) -> None:
    async with started(with_llm(config, fake), {"short_term": {"enabled": False}}) as manager:
        await say(manager, "turn one", "turn two", "turn three", "turn four", "turn five")
        info = await manager.sessions.session_info(GROUP, SESSION)
        assert info.rolling_summary == "off (short-term memory disabled)"
        assert (await manager.rolling.roll_summary(GROUP, SESSION)).status == "off"
        assert prompts(fake) == []


def test_the_rolling_summaries_table_exists_from_an_empty_database(tmp_path: Path) -> None:
    store = open_store(tmp_path / "m.db")
    assert store.schema_version == len(MIGRATIONS) >= 8
    tables = {row[0] for row in store.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "rolling_summaries" in tables
    store.close()


def test_a_version_seven_database_with_data_upgrades_to_rolling_summaries(tmp_path: Path) -> None:
    path = tmp_path / "v7.db"
    store = open_store(path)
    seed(store)
    insert(store, [episode("kept across the upgrade")], np.eye(4, dtype=np.float32)[:1])
    store.close()
    conn = sqlean.connect(
        str(path), isolation_level=None
    )  # back to version 7, as the previous release left it
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.execute("DROP TABLE rolling_summaries")
    conn.execute("DROP TRIGGER episodes_fts_changes_delete")  # and what version 9 added after it
    conn.execute("DROP TABLE fts_changes")
    conn.execute("ALTER TABLE episodes DROP COLUMN updated_at")  # and m011's
    conn.execute("DROP INDEX episodes_group_step")  # m012's
    conn.execute("ALTER TABLE episodes DROP COLUMN step")
    conn.execute("ALTER TABLE episodes DROP COLUMN message")
    conn.execute("DROP TABLE session_leases")  # m014
    conn.execute("ALTER TABLE groups DROP COLUMN owner")  # m015
    conn.execute("PRAGMA user_version = 7")
    conn.close()

    store = open_store(path)
    assert store.schema_version == len(MIGRATIONS) >= 9
    assert [e.content for e in store.recent_episodes("g", "s", 10)] == ["kept across the upgrade"]
    assert store.get_session("g", "s").rolling_covered_through is None
    summary = RollingSummary("so far", 1, "2024-01-01T00:00:00+00:00")
    store.save_rolling_summary("g", "s", summary)
    assert store.rolling_summary("g", "s") == summary
    assert store.get_session("g", "s").rolling_covered_through == 1
    store.delete_session("g", "s")  # the summary goes with its session
    assert store.read("SELECT count(*) FROM rolling_summaries")[0][0] == 0
    store.close()
