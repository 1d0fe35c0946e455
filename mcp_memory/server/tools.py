"""The tools. Each calls the manager and returns a model; MemoryServer checks the arguments first and
renders the result as short text. Descriptions are the model's manual and cost tokens in every
conversation: a sentence or two each, a few words per parameter.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import SamplingMessage, TextContent, ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field, JsonValue, WithJsonSchema

from mcp_memory.llm.client import SamplingLLM
from mcp_memory.models import (
    MAX_RECALL_LIMIT,
    AddMemoryResult,
    CloseResult,
    DeleteResult,
    DeleteSessionResult,
    FactDetails,
    FactResult,
    GroupInfo,
    GroupListing,
    Identifier,
    MaintenanceReport,
    MemoryFilter,
    MemoryInput,
    MemoryType,
    OpenMode,
    ReadOptions,
    RecallResult,
    Role,
    SessionInfo,
    SummarizeResponse,
    SummaryOptions,
    TaskInfo,
    TimestampInput,
    UpdatedMemory,
)
from mcp_memory.recall.request import RecallRequest
from mcp_memory.server.access import guard_of, manager_of, owner_of, tool_errors
from mcp_memory.server.arguments import check_batch, check_names, read_model
from mcp_memory.server.guard import acting, acting_name, acting_visible
from mcp_memory.server.transfer import register_transfer_tools
from mcp_memory.sessions import NO_REFERENCE

READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
IDEMPOTENT = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
)
DESTRUCTIVE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)


GroupId = Annotated[Identifier, Field(description="Group id.")]
SessionId = Annotated[Identifier, Field(description="Session id.")]
OptionalSession = Annotated[Identifier | None, Field(description="A session id.")]
Users = Annotated[list[Identifier], Field(description="User ids.")]
Agents = Annotated[list[Identifier], Field(description="Agent ids.")]
Importance = Annotated[float | None, Field(ge=0, le=1, description="0-1, default 0.5.")]
Metadata = Annotated[dict[str, JsonValue] | None, Field(description="Any JSON object.")]
When = Annotated[TimestampInput | None, Field(description="ISO 8601 or epoch.")]
MemoryTypeArg = Annotated[MemoryType, Field(description="Kind: message, note, ...")]
Configuration = Annotated[dict[str, JsonValue] | None, Field(description="Session settings.")]
CONTENT = WithJsonSchema({"type": ["string", "object"], "description": "Text or a JSON object."})
SUMMARY = WithJsonSchema(
    {"type": ["object", "array", "string"], "description": "Yours, if the server has no LLM."}
)
FILTER_FIELDS = (
    "since, until, producer, role, memory_types, metadata {dotted.path: value|list|{gte,lt,..}}, "
    "min/max_importance, step_from/to"
)
OPTIONS = WithJsonSchema(
    {
        "type": "object",
        "description": "Search: tiers [recent|long_term|summaries], min_similarity, neighbours (0-5). Listing: "
        "order (oldest|newest), cursor.",
    }
)
FACT_DETAILS = WithJsonSchema(
    {
        "type": "object",
        "description": "Any of session_id (learned in), source, confidence (0-1), valid_from (time).",
    }
)
DETAIL_FIELDS = ("produced_for", "memory_type", "importance", "metadata", "step")
MEMORY_DETAILS = WithJsonSchema(
    {
        "type": "object",
        "description": "Any of produced_for, memory_type (default message), importance (0-1), metadata, step.",
    }
)
SUMMARY_OPTIONS = WithJsonSchema(
    {"type": "object", "description": "Any of focus_topics (list), generate_embedding (false: no vector)."}
)
FILTERS = WithJsonSchema({"type": "object", "description": f"Any of {FILTER_FIELDS}."})
BATCH_SCHEMA = WithJsonSchema(
    {
        "type": "array",
        "items": {"type": "object"},
        "description": "Up to 1000 turns: fields above, details' flat, name, tool_calls [{id,name,arguments}], "
        "tool_call_id, images.",
    }
)


def register_tools(server: MCPServer) -> None:
    _groups(server)
    _sessions(server)
    _memories(server)
    _reading(server)
    _knowledge(server)
    register_transfer_tools(server)


def _groups(server: MCPServer) -> None:
    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def create_group(
        group_id: GroupId,
        ctx: Context,
        user_ids: Users = [],  # noqa: B006 - the SDK copies defaults per call
        agent_ids: Agents = [],  # noqa: B006
        description: Annotated[str | None, Field(description="Its purpose.")] = None,
        configuration: Configuration = None,
    ) -> GroupInfo:
        """Create a group of users and agents; repeating it is harmless."""
        manager = await manager_of(ctx)
        principal = acting()
        group = await manager.groups.create_group(
            group_id, user_ids, agent_ids, description, configuration, owner=acting_name()
        )
        if principal is not None and not group.created:  # made by another meanwhile: the guard asks again
            await guard_of(ctx).check_group(principal, group_id, manager)
        return group

    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def add_participants(
        group_id: GroupId,
        ctx: Context,
        user_ids: Users = [],  # noqa: B006 - the SDK copies defaults per call
        agent_ids: Agents = [],  # noqa: B006
    ) -> GroupInfo:
        """Add users or agents to a group."""
        return await (await manager_of(ctx)).groups.add_participants(group_id, user_ids, agent_ids)

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def list_groups(
        ctx: Context,
        group_id: Annotated[Identifier | None, Field(description="Its sessions instead.")] = None,
    ) -> GroupListing:
        """List groups, or one group's sessions."""
        manager = await manager_of(ctx)
        if group_id is None:
            return GroupListing(groups=await manager.groups.list_groups(acting_visible()))
        detail = await manager.sessions.group_detail(group_id)
        return GroupListing(groups=[detail.group], sessions=detail.sessions)


def _sessions(server: MCPServer) -> None:
    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def open_session(
        group_id: GroupId,
        session_id: SessionId,
        ctx: Context,
        mode: Annotated[OpenMode, Field(description="create or open only.")] = "open_or_create",
        configuration: Configuration = None,
        user_ids: Users = [],  # noqa: B006 - the SDK copies defaults per call
        agent_ids: Agents = [],  # noqa: B006
    ) -> SessionInfo:
        """Open or create a session."""
        manager = await manager_of(ctx)
        _, created = await manager.sessions.open_session(
            group_id, session_id, mode=mode, configuration=configuration, owner=owner_of(ctx),
            user_ids=user_ids, agent_ids=agent_ids, group_owner=acting_name(),
        )  # fmt: skip
        return await manager.sessions.session_info(group_id, session_id, created=created)

    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def close_session(group_id: GroupId, session_id: SessionId, ctx: Context) -> CloseResult:
        """Close a session when it ends."""
        manager, owner = await manager_of(ctx), owner_of(ctx)
        released, left = await manager.sessions.close_session(group_id, session_id, owner=owner)
        if released:
            message = "closed"
        elif owner == NO_REFERENCE:
            message = "nothing to close: stateless requests hold no session open"
        else:
            message = "this connection had not opened it"
        return CloseResult(
            group_id=group_id, session_id=session_id, released=released, reference_count=left, message=message
        )

    @server.tool(annotations=DESTRUCTIVE)
    @tool_errors
    async def delete_session(group_id: GroupId, session_id: SessionId, ctx: Context) -> DeleteSessionResult:
        """Delete a closed session and its memories."""
        return await (await manager_of(ctx)).sessions.delete_session(group_id, session_id)


def _memories(server: MCPServer) -> None:
    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def add_memory(
        group_id: GroupId,
        session_id: SessionId,
        ctx: Context,
        content: Annotated[str | dict[str, JsonValue], CONTENT] = "",
        producer: Annotated[Identifier | None, Field(description="Speaker id.")] = None,
        role: Annotated[Role, Field(description="Speaker's role.")] = "user",
        timestamp: When = None,
        details: Annotated[dict[str, JsonValue] | None, MEMORY_DETAILS] = None,
        memories: Annotated[list[dict[str, JsonValue]] | None, BATCH_SCHEMA] = None,
        idempotency_key: Annotated[Identifier | None, Field(description="Makes retries safe.")] = None,
    ) -> AddMemoryResult:
        """Store a turn, or a batch, in a session."""
        check_names("details", details or {}, DETAIL_FIELDS, what="field")
        one = {
            "content": content,
            "producer": producer,
            "role": role,
            "timestamp": timestamp,
            **(details or {}),
        }
        given = {field: value for field, value in one.items() if value is not None}
        if isinstance(content, str) and not content.strip():
            del given["content"]  # empty text is no content (a tool call or an image may be the message)
        items: MemoryInput | list[Any]
        if memories is not None:
            if set(given) - {"role"}:
                raise ToolError(
                    "invalid: pass either content or memories, not both (a batch item holds its own fields)"
                )
            check_batch("memories", memories, MemoryInput, "a memory")  # in the words of the other checks
            items = memories
        elif producer is None or "content" not in given:
            raise ToolError("invalid: pass content and producer, or a memories list")
        else:
            items = read_model("", given, MemoryInput, "a memory")
        manager = await manager_of(ctx)
        return await manager.memories.add_memories(
            group_id, session_id, items, idempotency_key=idempotency_key
        )

    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def update_memory(
        group_id: GroupId,
        memory_id: Annotated[int, Field(description="Memory id.")],
        ctx: Context,
        content: Annotated[str | None, Field(description="New text.")] = None,
        metadata: Metadata = None,
        importance: Importance = None,
        memory_type: Annotated[MemoryType | None, Field(description="New type.")] = None,
    ) -> UpdatedMemory:
        """Correct a memory; it keeps its id and time."""
        manager = await manager_of(ctx)
        return await manager.memories.update_memory(
            group_id,
            memory_id,
            content=content,
            metadata=metadata,
            importance=importance,
            memory_type=memory_type,
        )

    @server.tool(annotations=DESTRUCTIVE)
    @tool_errors
    async def delete_memory(
        group_id: GroupId,
        ctx: Context,
        memory_ids: Annotated[list[int] | None, Field(description="Memory ids.")] = None,
        session_id: OptionalSession = None,
        keep_system: Annotated[bool, Field(description="Keep system messages.")] = False,
    ) -> DeleteResult:
        """Delete memories by id or session."""
        manager = await manager_of(ctx)
        return await manager.memories.delete_memories(
            group_id, memory_ids, session_id, keep_system=keep_system
        )


def _reading(server: MCPServer) -> None:
    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def recall(
        group_id: GroupId,
        ctx: Context,
        query: Annotated[str | None, Field(description="Omit to list in order.")] = None,
        session_id: Annotated[Identifier | None, Field(description="Session; adds its latest turns.")] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_RECALL_LIMIT, description="1-100.")] = 10,
        filters: Annotated[dict[str, JsonValue] | None, FILTERS] = None,
        options: Annotated[dict[str, JsonValue] | None, OPTIONS] = None,
    ) -> RecallResult:
        """Search memories by meaning and keyword before answering about the past; without a query, list them."""
        where = MemoryFilter() if filters is None else read_model("filters", filters, MemoryFilter, "filters")
        how = ReadOptions() if options is None else read_model("options", options, ReadOptions, "options")
        request = RecallRequest(
            group_id=group_id, query=query, session_id=session_id, limit=limit, filters=where, options=how
        )
        return await (await manager_of(ctx)).memories.recall(request)


def _knowledge(server: MCPServer) -> None:
    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def add_fact(
        group_id: GroupId,
        ctx: Context,
        subject: Annotated[str | None, Field(description="e.g. Ana.")] = None,
        predicate: Annotated[str | None, Field(description="e.g. lives in.")] = None,
        object: Annotated[str | None, Field(description="e.g. Lisbon.")] = None,
        text: Annotated[str | None, Field(description="Or text to extract from.")] = None,
        details: Annotated[dict[str, JsonValue] | None, FACT_DETAILS] = None,
        replace: Annotated[bool | None, Field(description="Close the old value.")] = None,
    ) -> FactResult:
        """Keep a fact: subject, predicate, object."""
        more = FactDetails() if details is None else read_model("details", details, FactDetails, "details")
        manager = await manager_of(ctx)
        return await manager.facts.add_fact(
            group_id, subject, predicate, object, text=text, session_id=more.session_id, source=more.source,
            confidence=more.confidence, valid_from=more.valid_from, replace=replace,
        )  # fmt: skip

    @server.tool(annotations=WRITES)
    @tool_errors
    async def summarize_session(
        group_id: GroupId,
        session_id: SessionId,
        ctx: Context,
        mode: Annotated[
            Literal["full", "lightweight"],
            Field(description="lightweight: 3-5 points."),
        ] = "full",
        sync: Annotated[bool, Field(description="false: return a task_id.")] = True,
        options: Annotated[dict[str, JsonValue] | None, SUMMARY_OPTIONS] = None,
        summary: Annotated[dict[str, Any] | list[str] | str | None, SUMMARY] = None,
    ) -> SummarizeResponse:
        """Summarise a session; recall finds it from every session."""
        how = (
            SummaryOptions() if options is None else read_model("options", options, SummaryOptions, "options")
        )
        manager = await manager_of(ctx)
        return await manager.summaries.summarize_session(
            group_id, session_id, mode=mode, sync=sync, generate_embedding=how.generate_embedding,
            focus_topics=how.focus_topics, summary=summary, sampling=_sampling(ctx),
        )  # fmt: skip

    @server.tool(annotations=READ_ONLY)
    @tool_errors
    async def get_task(
        task_id: Annotated[Identifier, Field(description="summarize_session's task.")], ctx: Context
    ) -> TaskInfo:
        """A background summary's state."""
        manager = await manager_of(ctx)
        task = await manager.summaries.get_task(task_id)
        principal = acting()
        if principal is not None and task.group_id is not None:
            await guard_of(ctx).check_group(principal, task.group_id, manager)
        return task

    @server.tool(annotations=IDEMPOTENT)
    @tool_errors
    async def run_maintenance(ctx: Context) -> MaintenanceReport:
        """Run the hourly upkeep now."""
        return await (await manager_of(ctx)).upkeep.maintain(trigger="on_demand")


def _sampling(ctx: Context) -> SamplingLLM | None:
    """The client's model through MCP sampling, when it declared the capability on a handshake connection.

    The 2026-07-28 protocol has no back-channel for server-initiated requests, so sampling is
    never offered there.
    """
    session = ctx.session
    capabilities = session.client_capabilities
    if (
        capabilities is None
        or capabilities.sampling is None
        or session.protocol_version in MODERN_PROTOCOL_VERSIONS
    ):
        return None
    related = ctx.request_context.request_id

    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        sampling_messages = [
            SamplingMessage(role=m["role"], content=TextContent(type="text", text=m["content"]))  # type: ignore[arg-type]
            for m in messages
        ]
        with warnings.catch_warnings():  # the call warns synchronously; the request itself is awaited below
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            request = session.create_message(
                sampling_messages,
                max_tokens=max_tokens,
                system_prompt=system_prompt,
                related_request_id=related,
            )
        result = await request
        parts = result.content if isinstance(result.content, list) else [result.content]
        return "".join(part.text for part in parts if isinstance(part, TextContent))

    return SamplingLLM(send)
