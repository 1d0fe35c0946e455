"""The MCP surface: tools, resources and instructions. The only module that imports `mcp`."""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

import anyio
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp_types import CallToolResult, InputRequiredResult, SamplingMessage, TextContent, ToolAnnotations
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import AnyUrl, Field, JsonValue, TypeAdapter, ValidationError, WithJsonSchema

from mcp_memory import __version__
from mcp_memory.arguments import (
    MAX_ARGUMENT_DEPTH,
    accepted_names,
    check_arguments,
    check_batch,
    check_text,
    strict_model,
    unknown_tool_message,
    validation_message,
)
from mcp_memory.config import Config
from mcp_memory.errors import MemoryServerError, ValidationFailed
from mcp_memory.llm import SamplingLLM
from mcp_memory.manager import MAX_RECALL_LIMIT, MemoryManager
from mcp_memory.models import (
    AddMemoryResult,
    CloseResult,
    DeleteResult,
    DeleteSessionResult,
    FactList,
    FactResult,
    GroupDetail,
    GroupInfo,
    Identifier,
    MaintenanceReport,
    MemoryInput,
    MemoryType,
    OpenMode,
    RecallResult,
    Role,
    SessionDetail,
    SessionInfo,
    Stats,
    TimestampInput,
)
from mcp_memory.stdio import serve_stdio
from mcp_memory.summaries import SummarizeResponse
from mcp_memory.tasks import TaskInfo

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
OWNER_KEY = "mcp_memory.owner"

INSTRUCTIONS = """\
mcp-memory gives you a long memory that lasts across conversations.
- At the start of a conversation: create_group once per user or project (it fails harmlessly if the group
  exists), then open_session with a session id for this conversation (mode="open_or_create").
- Store every turn as it happens with add_memory: the user's words with role="user" and producer set to
  the user's id, your answers with role="assistant" and your agent id. Use the memories list to store
  several turns in one call. Retrying a call never stores a turn twice.
- Before you answer anything about the past (earlier conversations, preferences, names, dates, decisions),
  call recall with a short query. Leave session_id out to search every session of the group; pass it to
  search only the current session (and the group's summaries) and also get its most recent turns.
- When you learn a stable fact about the user or the project (where they live, a preference, a decision),
  store it with add_fact as subject, predicate and object; pass replace=true when it changes an older one.
- When a conversation ends (or reaches a milestone), call summarize_session: recall then finds the summary
  from every session of the group.
- close_session when the conversation ends. Memories stay stored; nothing is lost by closing.
"""


@dataclass
class AppState:
    """What the lifespan hands every request: the manager and this lifespan's reference owner."""

    manager: MemoryManager
    owner: Hashable


def _shown_as(
    error: type[Exception],
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Re-raise our errors as the SDK's `error`: it hides the message of any other exception."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except MemoryServerError as exc:
                raise error(str(exc)) from exc

        return wrapper

    return decorate


_tool_errors = _shown_as(ToolError)
_resource_errors = _shown_as(ResourceError)


def _state(ctx: Context) -> AppState:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, AppState)
    return state


def _owner(ctx: Context) -> Hashable:
    """Who holds the references a request takes: its connection, released when the client disconnects.

    On the stateless 2026-07-28 protocol every request has a connection of its own, so the
    references belong to the lifespan instead (one stdio process or in-process client).
    """
    state = _state(ctx)
    connection = getattr(ctx.request_context.session, "_connection", None)
    if connection is None or connection.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return state.owner
    if OWNER_KEY not in connection.state:
        token = object()
        connection.state[OWNER_KEY] = token
        connection.exit_stack.push_async_callback(state.manager.release_owner, token)
    return connection.state[OWNER_KEY]


def _sampling(ctx: Context) -> SamplingLLM | None:
    """The client's model through MCP sampling, when it declared the capability on a handshake connection.

    The 2026-07-28 protocol has no back-channel for server-initiated requests, so sampling is
    never offered there.
    """
    session = ctx.session
    capabilities = session.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        return None
    if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
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
        content = result.content
        parts = content if isinstance(content, list) else [content]
        return "".join(part.text for part in parts if isinstance(part, TextContent))

    return SamplingLLM(send)


class StrictFuncMetadata(FuncMetadata):
    """Arguments validated as sent. The SDK's pre-parse reads text that looks like JSON as JSON, so the
    session_id "null" became null (search every session) and "[1]" a list."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)


class MemoryServer(MCPServer[Any]):
    """MCPServer whose tools read their arguments strictly, and whose stdio answers every line."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            raise ToolError(unknown_tool_message(name, [t.name for t in self._tool_manager.list_tools()]))
        try:
            check_arguments(name, arguments, accepted_names(tool.fn_metadata.arg_model))
            return await super().call_tool(name, arguments, context)
        except ValidationFailed as exc:  # the tools' own are ToolErrors by now (_tool_errors)
            raise ToolError(f"Error executing tool {name}: {exc}") from None
        except ToolError as exc:
            raise (_argument_error(name, exc, arguments) or exc) from exc.__cause__

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        try:
            check_text("the uri", str(uri))
        except ValidationFailed as exc:
            raise ResourceError(str(exc)) from None
        return await super().read_resource(uri, context)

    async def run_stdio_async(self) -> None:
        await serve_stdio(self._lowlevel_server)


def _argument_error(name: str, exc: ToolError, arguments: dict[str, Any]) -> ToolError | None:
    """The SDK's error about the arguments, in the server's words; None for any other error."""
    cause = exc.__cause__
    if isinstance(exc, UnexpectedToolError):
        if not isinstance(cause, RecursionError):
            return None
        # JSON text inside a string (a summary) can nest past what json.loads reads
        log.warning("tool %r: an argument nested too deeply to read", name, exc_info=cause)
        return ToolError(
            f"Error executing tool {name}: an argument nests too deeply to read (JSON text inside a string "
            f"counts too); flatten it to at most {MAX_ARGUMENT_DEPTH} levels"
        )
    # Tool.run raises a plain ToolError caused by a ValidationError only for the arguments
    if isinstance(cause, ValidationError):
        return ToolError(f"Error executing tool {name}: {validation_message(cause, arguments)}")
    return None


def _strict_tools(server: MCPServer) -> None:
    """Every tool's arguments: no unknown names, no coercion, no NaN; its schema says additionalProperties false."""
    for tool in server._tool_manager.list_tools():  # noqa: SLF001 - no public way to swap an arg model
        metadata = tool.fn_metadata
        model = strict_model(metadata.arg_model)
        tool.fn_metadata = StrictFuncMetadata(
            arg_model=model,
            output_schema=metadata.output_schema,
            output_model=metadata.output_model,
            wrap_output=metadata.wrap_output,
        )
        tool.parameters = model.model_json_schema(by_alias=True)


def build_server(config: Config | None = None, *, manager: MemoryManager | None = None) -> MCPServer:
    """The MCP server; it owns a manager made in its lifespan unless one is passed in (and then shares it)."""
    config = config or Config.from_env()
    states: list[AppState] = []  # the running lifespans' states, newest last; static resources read it
    server = MemoryServer(
        "mcp-memory",
        title="mcp-memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=_lifespan(config, manager, states),
        log_level=config.log_level.upper(),  # type: ignore[arg-type]
    )
    _register_tools(server)
    _register_summary_tools(server)
    _register_resources(server, states)
    _register_fact_resources(server, states)
    _clean_descriptions(server)
    _strict_tools(server)
    return server


@contextmanager
def _running(states: list[AppState], state: AppState) -> Iterator[None]:
    states.append(state)
    try:
        yield
    finally:
        states.remove(state)


def _lifespan(
    config: Config, shared: MemoryManager | None, states: list[AppState]
) -> Callable[[MCPServer], Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[AppState]:
        if shared is not None:
            state = AppState(shared, object())
            with _running(states, state):
                try:
                    yield state
                finally:
                    await shared.release_owner(state.owner)
            return
        manager = MemoryManager(config)
        await manager.start()
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(manager.run_background)
                state = AppState(manager, object())
                with _running(states, state):
                    try:
                        yield state
                    finally:
                        # stops the background loop and its tasks (unfinished ones are recorded failed)
                        tasks.cancel_scope.cancel()
        finally:
            # outside the cancelled scope: a shutdown inside it would be cancelled at its first await
            with anyio.CancelScope(shield=True):
                await manager.shutdown()

    return lifespan


# Batch items are validated one by one (check_batch here, then the manager), so an error can name
# memories[i]; the schema clients see is still MemoryInput's.
MEMORY_ITEM_SCHEMA = TypeAdapter(MemoryInput).json_schema()
READ_ONLY = ToolAnnotations(readOnlyHint=True, destructiveHint=False, openWorldHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
IDEMPOTENT_WRITE = ToolAnnotations(
    readOnlyHint=False, destructiveHint=False, idempotentHint=True, openWorldHint=False
)
DESTRUCTIVE = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)

GroupId = Annotated[
    Identifier, Field(description="The group (a user, a team or a project) the memory belongs to.")
]
SessionId = Annotated[Identifier, Field(description="The session: one conversation within the group.")]


def _register_tools(server: MCPServer) -> None:  # noqa: C901 - one closure per tool keeps each small
    @server.tool(annotations=WRITES)
    @_tool_errors
    async def create_group(
        group_id: GroupId,
        ctx: Context,
        user_ids: list[Identifier] = [],  # noqa: B006 - the SDK copies defaults per call
        agent_ids: list[Identifier] = [],  # noqa: B006
        description: str | None = None,
        configuration: dict[str, JsonValue] | None = None,
    ) -> GroupInfo:
        """Create a group: the users and agents who share one memory. Call once per user or project;
        an existing group_id is an error (then just open_session in it). configuration is the base
        session configuration, e.g. {"short_term": {"max_episodes": 30}}."""
        manager = _state(ctx).manager
        return await manager.create_group(group_id, user_ids, agent_ids, description, configuration)

    @server.tool(annotations=IDEMPOTENT_WRITE)
    @_tool_errors
    async def open_session(
        group_id: GroupId,
        session_id: SessionId,
        ctx: Context,
        mode: OpenMode = "open_or_create",
        configuration: dict[str, JsonValue] | None = None,
    ) -> SessionInfo:
        """Open a session (one conversation) at its start; mode "create" fails if it exists, "open" fails if
        it is missing. Returns the reference count, the effective configuration and the episode count."""
        manager = _state(ctx).manager
        session, created = await manager.open_session(
            group_id, session_id, mode=mode, configuration=configuration, owner=_owner(ctx)
        )
        return await manager.session_info(group_id, session_id, created=created)

    @server.tool(annotations=IDEMPOTENT_WRITE)
    @_tool_errors
    async def close_session(group_id: GroupId, session_id: SessionId, ctx: Context) -> CloseResult:
        """Release this connection's reference to a session when the conversation ends; its memories stay."""
        manager = _state(ctx).manager
        released, left = await manager.close_session(group_id, session_id, owner=_owner(ctx))
        message = "released one reference" if released else "this connection had not opened the session"
        return CloseResult(
            group_id=group_id, session_id=session_id, released=released, reference_count=left, message=message
        )

    @server.tool(annotations=IDEMPOTENT_WRITE)
    @_tool_errors
    async def add_memory(
        group_id: GroupId,
        session_id: SessionId,
        ctx: Context,
        content: Annotated[
            str, Field(description="The text to remember; leave empty when using memories.")
        ] = "",
        producer: Annotated[
            Identifier | None, Field(description="Who said it: a user_id or agent_id of the group.")
        ] = None,
        role: Role = "user",
        produced_for: Identifier | None = None,
        timestamp: Annotated[
            TimestampInput | None, Field(description="When it was said (ISO 8601 or epoch); default now.")
        ] = None,
        memory_type: MemoryType = "message",
        importance: Annotated[float | None, Field(ge=0, le=1)] = None,
        metadata: dict[str, JsonValue] | None = None,
        memories: Annotated[
            list[dict[str, JsonValue]] | None,
            WithJsonSchema({"anyOf": [{"type": "array", "items": MEMORY_ITEM_SCHEMA}, {"type": "null"}]}),
            Field(description="Several memories at once (up to 1000, one transaction); replaces content."),
        ] = None,
        idempotency_key: Annotated[
            Identifier | None,
            Field(description="A unique key per call: a retry with the same key is never stored twice."),
        ] = None,
    ) -> AddMemoryResult:
        """Store one turn of the conversation (or a batch in memories) in a session of the group. The session
        must exist (open_session first). An identical retry returns the existing id, marked duplicate."""
        items: MemoryInput | list[Any]
        if memories is not None:
            if content.strip():
                raise ToolError("pass either content or memories, not both")
            # each item now, in the words of the other argument errors (the manager reads them again)
            check_batch("memories", memories, MemoryInput, "a memory")
            items = memories
        elif not content.strip() or producer is None:
            raise ToolError("pass content and producer, or a memories list")
        else:
            items = MemoryInput(
                content=content, producer=producer, role=role, produced_for=produced_for,
                timestamp=timestamp, memory_type=memory_type, importance=importance, metadata=metadata,
            )  # fmt: skip
        return await _state(ctx).manager.add_memories(
            group_id, session_id, items, idempotency_key=idempotency_key
        )

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def recall(
        group_id: GroupId,
        query: Annotated[str, Field(description="What to look for, in plain words.")],
        ctx: Context,
        session_id: Annotated[
            Identifier | None,
            Field(
                description="Search only this session (and the group's summaries), and also return its most "
                "recent turns."
            ),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MAX_RECALL_LIMIT)] = 10,
        since: Annotated[
            TimestampInput | None, Field(description="Only memories at or after this time.")
        ] = None,
        until: Annotated[
            TimestampInput | None, Field(description="Only memories at or before this time.")
        ] = None,
        producer: Identifier | None = None,
        role: Role | None = None,
        memory_types: list[MemoryType] | None = None,
        metadata: Annotated[
            dict[str, JsonValue] | None,
            Field(
                description='Match metadata values by dotted path, e.g. {"project": "x"}; a list means any of.'
            ),
        ] = None,
        min_importance: Annotated[float | None, Field(ge=0, le=1)] = None,
    ) -> RecallResult:
        """Find stored memories by meaning and by keyword, best first, across every session of the group (or
        one session). A date, month or year in the query ("in May 2023", "last week") ranks memories from
        then higher. Call it before answering questions about earlier conversations."""
        return await _state(ctx).manager.recall(
            group_id, query, session_id=session_id, limit=limit, since=since, until=until, producer=producer,
            role=role, memory_types=memory_types, metadata=metadata, min_importance=min_importance,
        )  # fmt: skip

    @server.tool(annotations=DESTRUCTIVE)
    @_tool_errors
    async def delete_memory(
        group_id: GroupId,
        ctx: Context,
        memory_ids: list[int] | None = None,
        session_id: Identifier | None = None,
    ) -> DeleteResult:
        """Delete memories for good: by id, every memory of a session, or those ids within a session."""
        return await _state(ctx).manager.delete_memories(group_id, memory_ids, session_id)

    @server.tool(annotations=DESTRUCTIVE)
    @_tool_errors
    async def delete_session(group_id: GroupId, session_id: SessionId, ctx: Context) -> DeleteSessionResult:
        """Delete a session and all its memories for good; fails while the session is open (close it first)."""
        return await _state(ctx).manager.delete_session(group_id, session_id)

    @server.tool(annotations=IDEMPOTENT_WRITE)
    @_tool_errors
    async def add_fact(
        group_id: GroupId,
        ctx: Context,
        subject: Annotated[
            str | None, Field(description="Who or what the fact is about, e.g. 'Ana'.")
        ] = None,
        predicate: Annotated[str | None, Field(description="The relation, e.g. 'lives in'.")] = None,
        object: Annotated[str | None, Field(description="Its value, e.g. 'Lisbon'.")] = None,
        text: Annotated[
            str | None,
            Field(description="Instead of a triple: text the server's LLM extracts up to 50 facts from."),
        ] = None,
        session_id: Annotated[
            Identifier | None, Field(description="The session the fact was learned in.")
        ] = None,
        source: Annotated[str | None, Field(description="Where the fact comes from.")] = None,
        confidence: Annotated[float | None, Field(ge=0, le=1)] = None,
        valid_from: Annotated[
            TimestampInput | None,
            Field(description="Since when the fact holds (ISO 8601 or epoch); default now."),
        ] = None,
        replace: Annotated[
            bool | None,
            Field(
                description="Close the current facts with this subject and predicate, kept as history "
                "(default: only for facts found in text)."
            ),
        ] = None,
    ) -> FactResult:
        """Remember a stable fact about a user or project (not a conversation turn), e.g. Ana / lives in /
        Lisbon; pass replace=true when it supersedes an older value. An identical current fact is returned,
        not stored twice; recall finds facts, current ones first."""
        return await _state(ctx).manager.add_fact(
            group_id, subject, predicate, object, text=text, session_id=session_id, source=source,
            confidence=confidence, valid_from=valid_from, replace=replace,
        )  # fmt: skip


def _register_summary_tools(server: MCPServer) -> None:
    @server.tool(annotations=WRITES)
    @_tool_errors
    async def summarize_session(
        group_id: GroupId,
        session_id: SessionId,
        ctx: Context,
        mode: Annotated[
            Literal["full", "lightweight"],
            Field(
                description="full: topic, action and outcome; lightweight: 3 to 5 short points (3 per session)."
            ),
        ] = "full",
        sync: Annotated[
            bool,
            Field(description="true: wait for the summary; false: return a task_id to poll with get_task."),
        ] = True,
        generate_embedding: Annotated[
            bool, Field(description="false: store without a vector (found by keywords only).")
        ] = True,
        focus_topics: Annotated[
            list[str] | None, Field(description="Topics the summary should pay most attention to.")
        ] = None,
        summary: Annotated[
            dict[str, Any] | list[str] | str | None,
            Field(
                description="A summary you wrote, used when the server has no LLM and sampling is unavailable. "
                'full: {"topic": ..., "action": ..., "outcome": ...}; lightweight: 3 to 5 points of about 10 words.'
            ),
        ] = None,
    ) -> SummarizeResponse:
        """Condense a session into a stored summary that recall finds from every session of the group; call it
        when a conversation ends or reaches a milestone. The server's LLM writes it, else your own model through
        MCP sampling (sync=true only), else the `summary` you pass is checked and stored."""
        state = _state(ctx)
        return await state.manager.summarize_session(
            group_id, session_id, mode=mode, sync=sync, generate_embedding=generate_embedding,
            focus_topics=focus_topics, summary=summary, sampling=_sampling(ctx),
        )  # fmt: skip

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def get_task(
        task_id: Annotated[
            Identifier, Field(description="The task_id summarize_session returned with sync=false.")
        ],
        ctx: Context,
    ) -> TaskInfo:
        """Check a summary started with sync=false: processing, completed (with its result) or failed (with the
        error). Poll it until it is no longer processing."""
        return await _state(ctx).manager.get_task(task_id)

    @server.tool(annotations=IDEMPOTENT_WRITE)
    @_tool_errors
    async def run_maintenance(ctx: Context) -> MaintenanceReport:
        """Run the maintenance pass now (it also runs every hour by itself): decay memories' importance with
        age, expire old background tasks, index memories waiting for a vector, drop idle cached sessions.
        Deletes no memory; returns what it did. Rarely needed in a conversation."""
        return await _state(ctx).manager.maintain(trigger="on_demand")


def _register_resources(server: MCPServer, states: list[AppState]) -> None:
    @server.resource("memory://groups", mime_type="application/json")
    @_resource_errors
    async def groups() -> list[GroupInfo]:
        """Every group with its participants and counts."""
        return await _manager(states).list_groups()

    @server.resource("memory://groups/{group_id}", mime_type="application/json")
    @_resource_errors
    async def group(group_id: str) -> GroupDetail:
        """One group and its sessions."""
        return await _manager(states).group_detail(group_id)

    @server.resource("memory://groups/{group_id}/sessions/{session_id}", mime_type="application/json")
    @_resource_errors
    async def session(group_id: str, session_id: str) -> SessionDetail:
        """One session: its configuration, counts and recent episodes."""
        return await _manager(states).session_detail(group_id, session_id)

    @server.resource("memory://stats", mime_type="application/json")
    @_resource_errors
    async def stats() -> Stats:
        """Counts by type, tier and session; importance and retrievals; the last maintenance pass; database
        size; the embedder in use."""
        return await _manager(states).stats()


FACT_FILTERS = ResourceSecurity(exempt_params=frozenset({"subject", "predicate"}))
"""Subject and predicate are text, never paths: a fact about "/etc/hosts" can be listed."""


def _register_fact_resources(server: MCPServer, states: list[AppState]) -> None:
    @server.resource(
        "memory://groups/{group_id}/facts{?subject,predicate}",
        mime_type="application/json",
        security=FACT_FILTERS,
    )
    @_resource_errors
    async def facts(group_id: str, subject: str | None = None, predicate: str | None = None) -> FactList:
        """The group's facts, current ones first, then those replaced; ?subject=&predicate= filter (any case)."""
        return await _manager(states).list_facts(group_id, subject=subject, predicate=predicate)


def _manager(states: list[AppState]) -> MemoryManager:
    """Static resources take no Context, so they read the newest running lifespan's manager."""
    if not states:
        raise ResourceError("the memory server is not running; restart it")
    return states[-1].manager


def _clean_descriptions(server: MCPServer) -> None:
    """Tool descriptions come from docstrings; drop their source indentation before clients see them."""
    for tool in server._tool_manager.list_tools():  # noqa: SLF001 - no public setter for descriptions
        tool.description = inspect.cleandoc(tool.description or "")
