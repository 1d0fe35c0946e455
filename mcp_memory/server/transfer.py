"""Save and load as one tool (the tool list is short): transfer_memory exports a JSON Lines file on the
server's machine, or imports one back (or server-memory's knowledge graph). Both report progress.

They read and write files wherever the server's user may, so they take only absolute paths, and an export
only makes a new .jsonl file: it never replaces one. An import embeds its new memories for at most
INDEX_BUDGET_S within the call; the server's background upkeep indexes the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_memory.models import Identifier
from mcp_memory.server.access import manager_of, tool_errors
from mcp_memory.services.transfer import Progress, ProgressCallback
from mcp_memory.transfer.export import ExportResult, check_target
from mcp_memory.transfer.write import ImportResult

INDEX_BUDGET_S = 20.0
# an import is idempotent; an export never replaces a file: neither destroys anything
TRANSFERS = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
)


def register_transfer_tools(server: MCPServer) -> None:
    @server.tool(annotations=TRANSFERS)
    @tool_errors
    async def transfer_memory(
        action: Annotated[Literal["export", "import"], Field(description="export writes a new file.")],
        path: Annotated[str, Field(description="Absolute path of a .jsonl file.")],
        ctx: Context,
        group_id: Annotated[
            Identifier | None, Field(description="Only this group (server-memory: into it).")
        ] = None,
    ) -> TransferResult:
        """Export memory to a JSON Lines file on the server, or import one (ours, or server-memory's)."""
        manager = await manager_of(ctx)
        if action == "export":
            groups = None if group_id is None else [group_id]
            exported = await manager.transfer.export_memories(
                check_target(Path(path)), groups, progress=_reporter(ctx)
            )
            return TransferResult(action=action, exported=exported)
        imported = await manager.transfer.import_memories(
            Path(path), group_id, progress=_reporter(ctx), index_budget_s=INDEX_BUDGET_S
        )
        return TransferResult(action=action, imported=imported)


class TransferResult(BaseModel):
    """What transfer_memory did: an export's counts, or an import's."""

    action: Literal["export", "import"]
    exported: ExportResult | None = None
    imported: ImportResult | None = None


def _reporter(ctx: Context) -> ProgressCallback:
    """MCP progress notifications (sent only when the client asked for them with a progress token)."""

    async def report(progress: Progress) -> None:
        await ctx.report_progress(progress.step, progress.steps, progress.message)

    return report
