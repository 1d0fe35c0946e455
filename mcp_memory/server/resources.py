"""The memory:// resources: what a person (or a client's UI) browses. Static resources take no request
context, so they read the newest running lifespan's manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp.server.mcpserver import MCPServer, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceError

from mcp_memory.models import FactList, GroupDetail, GroupInfo, SessionDetail, Stats
from mcp_memory.server.access import MemoryAccess, resource_errors
from mcp_memory.server.guard import acting_visible

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

FACT_FILTERS = ResourceSecurity(exempt_params=frozenset({"subject", "predicate"}))
"""Subject and predicate are text, never paths: a fact about "/etc/hosts" can be listed."""


def register_resources(server: MCPServer, states: list[MemoryAccess]) -> None:
    async def manager() -> MemoryManager:
        if not states:
            raise ResourceError("unavailable: the memory server is not running; restart it")
        return await states[-1].manager()

    @server.resource("memory://groups", mime_type="application/json")
    @resource_errors
    async def groups() -> list[GroupInfo]:
        """Every group with its participants and counts."""
        return await (await manager()).groups.list_groups(acting_visible())

    @server.resource("memory://groups/{group_id}", mime_type="application/json")
    @resource_errors
    async def group(group_id: str) -> GroupDetail:
        """One group with its counts and sessions."""
        return await (await manager()).sessions.group_detail(group_id)

    @server.resource("memory://groups/{group_id}/sessions/{session_id}", mime_type="application/json")
    @resource_errors
    async def session(group_id: str, session_id: str) -> SessionDetail:
        """One session: its configuration, counts and recent episodes."""
        return await (await manager()).memories.session_detail(group_id, session_id)

    @server.resource("memory://stats", mime_type="application/json")
    @resource_errors
    async def stats() -> Stats:
        """Counts by type, tier, session and producer; importance, retrievals, the last upkeep, the embedder."""
        return await (await manager()).upkeep.stats()

    @server.resource(
        "memory://groups/{group_id}/facts{?subject,predicate}",
        mime_type="application/json",
        security=FACT_FILTERS,
    )
    @resource_errors
    async def facts(group_id: str, subject: str | None = None, predicate: str | None = None) -> FactList:
        """The group's facts, current ones first, then those replaced; ?subject=&predicate= filter (any case)."""
        return await (await manager()).facts.list_facts(group_id, subject=subject, predicate=predicate)
