"""A database with every kind of record an export carries, and ways to read files and databases back for
comparison (the save-and-load tests share them)."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path
from typing import Any

import sqlean  # type: ignore[import-untyped]

from mcp_memory.manager import MemoryManager
from mcp_memory.store.records import RollingSummary
from tests.helpers import recall

TABLES = ("groups", "sessions", "episodes", "facts", "rolling_summaries", "summary_counts")
WEATHER_CALL = {"id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}
FULL = {"topic": "Lisbon weather", "action": "asked and checked", "outcome": "sunny, 24C"}
POINTS = ["Ana asked about the weather", "The bot called the weather tool", "It was sunny in Lisbon"]


async def fill(manager: MemoryManager) -> dict[str, Any]:
    """Groups with configuration, sessions with overrides, messages with every extra, timed and untimed
    memories, a corrected one, facts with history, summaries, a rolling summary and summary counters."""
    await manager.groups.create_group(
        "ana", ["ana"], ["bot", "weather"], "Ana's memory", {"short_term": {"max_episodes": 6}}
    )
    await manager.groups.create_group("team", ["zoe", "max"], ["helper"])
    await manager.sessions.open_session("ana", "chat", configuration={"short_term": {"max_tokens": 2000}})
    await manager.sessions.open_session("ana", "private", configuration={"long_term": {"enabled": False}})
    await manager.sessions.open_session("team", "standup")
    ids = await _messages(manager)
    await manager.memories.add_memories(
        "ana", "private", [{"content": "my PIN hint is the cat", "producer": "ana", "importance": 0.9}]
    )
    await manager.memories.add_memories(
        "team",
        "standup",
        [
            {"content": "I shipped the export", "producer": "zoe", "timestamp": "2025-03-03T09:00:00Z"},
            {"content": "Reviewing it today", "producer": "max", "timestamp": "2025-03-03T09:01:00Z"},
        ],
        idempotency_key="standup-1",
    )
    await manager.memories.update_memory(
        "ana", ids[0], content="What is the weather in Lisbon today?", importance=0.8
    )
    await _facts(manager)
    await _summaries(manager)
    await recall(manager, "ana", "weather Lisbon")  # retrieval counts and last access times
    await manager.upkeep.maintain()  # effective importance
    return {"message_ids": ids}


async def _messages(manager: MemoryManager) -> list[int]:
    turns = [
        {"content": "What is the weather in Lisbon?", "producer": "ana", "timestamp": "2025-03-01T10:00:00Z"},
        {"producer": "bot", "role": "assistant", "tool_calls": [WEATHER_CALL], "step": 1, "produced_for": "weather"},
        {
            "content": "sunny, 24C", "producer": "weather", "role": "tool", "tool_call_id": "call_1",
            "name": "get_weather", "step": 2, "metadata": {"source": "api", "score": 0.75},
        },
        {"content": {"temperature": 24, "sky": "clear"}, "producer": "bot", "role": "assistant", "step": 3},
        {"content": "Here is the sky", "producer": "bot", "role": "assistant", "images": ["https://x.test/sky.png"]},
        {"content": "Thanks!", "producer": "ana", "memory_type": "note", "importance": 0.2},
    ]  # fmt: skip
    added = await manager.memories.add_memories("ana", "chat", turns)
    return [memory.id for memory in added.memories]


async def _facts(manager: MemoryManager) -> None:
    await manager.facts.add_fact("ana", "Ana", "lives in", "Lisbon", valid_from="2024-01-01T00:00:00Z")
    await manager.facts.add_fact(
        "ana", "Ana", "lives in", "Porto", valid_from="2025-01-01T00:00:00Z", replace=True
    )
    await manager.facts.add_fact(
        "ana", "Ana", "likes", "sunny days", session_id="chat", source="the chat", confidence=0.7
    )
    await manager.facts.add_fact("team", "Zoe", "owns", "the export")


async def _summaries(manager: MemoryManager) -> None:
    await manager.summaries.summarize_session("ana", "chat", summary=FULL)
    await manager.summaries.summarize_session(
        "ana", "chat", mode="lightweight", summary=POINTS, generate_embedding=False
    )
    store = manager.store
    summary = RollingSummary("Ana asked about Lisbon's weather.", 3, "2025-03-01T11:00:00.000000+00:00", [2])
    store.save_rolling_summary("ana", "chat", summary)
    store.claim_auto("ana", "chat", 2)


def read_export(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_export(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables an import writes, as stored (what 'changes nothing' compares; episodes.indexed
    and groups.vector_revision stand for the vector index)."""
    with closing(sqlean.connect(f"file:{db.as_posix()}?mode=ro", uri=True)) as conn:
        found = {table: conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in TABLES}
        found["fts_changes"] = conn.execute("SELECT count(*) FROM fts_changes").fetchall()
    return found
