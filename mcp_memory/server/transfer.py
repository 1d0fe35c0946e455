"""The save-and-load tools: export_memory writes a JSON Lines file on the server's machine, import_memory
reads one back (or server-memory's knowledge graph). Both report progress while they work.

They read and write files wherever the server's user may, so they take only absolute paths, and an export
only makes a new .jsonl file: it never replaces one. An import embeds its new memories for at most
INDEX_BUDGET_S within the call; the server's background upkeep indexes the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import Field

from mcp_memory.manager_transfer import Progress, ProgressCallback
from mcp_memory.models import Identifier
from mcp_memory.server.app import manager_of, tool_errors
from mcp_memory.transfer_export import ExportResult, check_target
from mcp_memory.transfer_write import ImportResult

INDEX_BUDGET_S = 20.0
WRITES_FILE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
IMPORTS = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False)


def register_transfer_tools(server: MCPServer) -> None:
    @server.tool(annotations=WRITES_FILE)
    @tool_errors
    async def export_memory(
        path: Annotated[str, Field(description="Absolute path, new .jsonl file.")],
        ctx: Context,
        group_id: Annotated[Identifier | None, Field(description="Only this group.")] = None,
    ) -> ExportResult:
        """Save memory to a JSON Lines file on the server."""
        manager = await manager_of(ctx)
        groups = None if group_id is None else [group_id]
        return await manager.export_memories(check_target(Path(path)), groups, progress=_reporter(ctx))

    @server.tool(annotations=IMPORTS)
    @tool_errors
    async def import_memory(
        path: Annotated[str, Field(description="Absolute path.")],
        ctx: Context,
        group_id: Annotated[
            Identifier | None, Field(description="Only this group; server-memory: into it.")
        ] = None,
    ) -> ImportResult:
        """Load an export_memory or server-memory file; repeating adds nothing."""
        manager = await manager_of(ctx)
        return await manager.import_memories(
            Path(path), group_id, progress=_reporter(ctx), index_budget_s=INDEX_BUDGET_S
        )


def _reporter(ctx: Context) -> ProgressCallback:
    """MCP progress notifications (sent only when the client asked for them with a progress token)."""

    async def report(progress: Progress) -> None:
        await ctx.report_progress(progress.step, progress.steps, progress.message)

    return report
