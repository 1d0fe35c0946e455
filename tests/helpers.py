"""Helpers for calling tools through a real MCP client."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mcp import Client

from mcp_memory.models import GroupInfo, MemoryFilter, ReadOptions, RecallResult
from mcp_memory.recall.request import RecallRequest, RecallStrategy
from mcp_memory.store.records import SessionRecord
from mcp_memory.store.sqlite.store import Store

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

# Every tool the server offers; the in-process, stdio and Inspector tests all check this set.
TOOLS = frozenset(
    {
        "create_group",
        "open_session",
        "close_session",
        "add_memory",
        "recall",
        "delete_memory",
        "delete_session",
        "add_fact",
        "summarize_session",
        "get_task",
        "run_maintenance",
        "update_memory",
        "list_groups",
        "add_participants",
        "transfer_memory",
    }
)


# The tools keep their rarer arguments in one object each (the tool list is short); tests write them flat
# and `as_sent` nests them as a client sends them.
NESTED = {
    "add_memory": ("details", ("produced_for", "memory_type", "importance", "metadata", "step")),
    "recall": ("options", ("tiers", "min_similarity", "neighbours", "order", "cursor")),
    "add_fact": ("details", ("session_id", "source", "confidence", "valid_from")),
    "summarize_session": ("options", ("focus_topics", "generate_embedding")),
}


def as_sent(tool: str, arguments: dict[str, object]) -> dict[str, object]:
    """`arguments` with the tool's rarer ones moved into its object argument."""
    if tool not in NESTED:
        return arguments
    name, fields = NESTED[tool]
    nested = {field: arguments[field] for field in fields if field in arguments}
    flat = {key: value for key, value in arguments.items() if key not in nested}
    return {**flat, name: {**nested, **flat.pop(name, {})}} if nested else flat  # type: ignore[dict-item]


async def call(client: Client, tool: str, **arguments: object) -> dict:
    """Call a tool that must succeed and return its structured result."""
    result = await client.call_tool(tool, as_sent(tool, arguments))
    assert not result.is_error, result.content[0].text if result.content else result
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: object) -> str:
    """Call a tool that must fail and return the error text the model reads."""
    result = await client.call_tool(tool, as_sent(tool, arguments))
    assert result.is_error, result.structured_content
    return result.content[0].text


class FakeClock:
    """A monotonic clock the test moves by hand (the manager takes it as `clock`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


SEEDED_AT = datetime(2024, 1, 1, tzinfo=UTC)


def seed_store(store: Store, user: str = "u") -> None:
    """Group 'g' with one user and session 's', written straight through a Store."""
    store.insert_group(GroupInfo(group_id="g", user_ids=[user], agent_ids=[], created_at=SEEDED_AT))
    store.insert_session(
        SessionRecord(group_id="g", session_id="s", configuration={}, overrides={}, created_at=SEEDED_AT)
    )


async def recall(
    manager: MemoryManager,
    group_id: str,
    query: str | None = None,
    *,
    session_id: str | None = None,
    limit: int = 10,
    strategy: RecallStrategy | None = None,
    where: MemoryFilter | None = None,
    options: ReadOptions | None = None,
    **filters: Any,
) -> RecallResult:
    """`manager.memories.recall` with the request built from keywords: filters by name, or `where`."""
    if filters and where is not None:
        raise TypeError("pass filters by name or as `where`, not both")
    request = RecallRequest(
        group_id=group_id,
        query=query,
        session_id=session_id,
        limit=limit,
        filters=where if where is not None else MemoryFilter(**filters),
        options=options or ReadOptions(),
        strategy=strategy or RecallStrategy(),
    )
    return await manager.memories.recall(request)
