"""The MCP server: strict arguments, short answers, errors by category, a manager started beside the handshake.

`MemoryServer` checks every tool call before the SDK reads it (arguments.py), turns each result into the
short text a model reads (render.py; the structured content keeps every field), and starts every error
with its category word (errors.py). The lifespan refuses an unusable database file at once, then starts
the manager in the background: importing numpy and the store, opening the database and loading the model
happen while the client's handshake and tools/list are answered; a request that needs memory waits for it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.to_thread import run_sync
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from mcp_types import CallToolResult, GetPromptResult, InputRequiredResult, TextContent
from pydantic import AnyUrl, ValidationError

from mcp_memory import __version__
from mcp_memory.config import Config
from mcp_memory.errors import ManagerClosed, MemoryServerError, ValidationFailed
from mcp_memory.server.access import MemoryAccess, manager_of, prompt_error
from mcp_memory.server.arguments import (
    MAX_ARGUMENT_DEPTH,
    accepted_names,
    check_arguments,
    check_text,
    strict_model,
    unknown_tool_message,
    validation_message,
)
from mcp_memory.server.auth.principal import Principal
from mcp_memory.server.guard import ADMIN_RESOURCES, Guard, ServerAuth, category_of, serving
from mcp_memory.server.render import render
from mcp_memory.server.schema import lean_schema
from mcp_memory.server.stdio import serve_stdio
from mcp_memory.store.sqlite.connection import check_database_file

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

log = logging.getLogger(__name__)


INSTRUCTIONS = """\
mcp-memory is your long memory across conversations. A group is a person, team or project; a session \
is one conversation in it.
- Start: list_groups to find the user's group; create_group (safe to repeat with the same people), then \
open_session with an id for this conversation.
- Store every turn with add_memory (the user's words role=user, producer=their id; yours role=assistant, \
producer=your id); retries are never stored twice. Correct a wrong memory with update_memory.
- Before answering about the past (earlier talks, preferences, names, dates), call recall with a short \
query; pass session_id to search this conversation and get its latest turns.
- Keep stable facts with add_fact (replace=true when a value changes). At the end call summarize_session, \
then close_session.
"""


class StrictFuncMetadata(FuncMetadata):
    """Arguments validated as sent. The SDK's pre-parse reads text that looks like JSON as JSON, so the
    session_id "null" became null (search every session) and "[1]" a list."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)


class MemoryServer(MCPServer[Any]):
    """MCPServer whose tools read their arguments strictly and answer in short text, and whose stdio
    answers every line."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._tool_scopes: dict[str, str] | None = None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            tools = [t.name for t in self._tool_manager.list_tools()]
            raise ToolError(f"not_found: {unknown_tool_message(name, tools)}")
        principal = self._principal(context, ToolError)
        with serving("tool", name, principal, arguments.get("group_id")) as outcome:
            try:
                check_arguments(name, arguments, accepted_names(tool.fn_metadata.arg_model))
                await self._admit(
                    principal, context, self.tool_scopes()[name], name, arguments.get("group_id"),
                    creating=_creates(name, arguments),
                )  # fmt: skip
                result = await super().call_tool(name, arguments, context)
            except ValidationFailed as exc:
                raise ToolError(f"invalid: {exc}") from None
            except MemoryServerError as exc:  # a denial
                raise ToolError(f"{exc.category}: {exc}") from None
            except ToolError as exc:
                raise _in_our_words(name, exc, arguments) from exc.__cause__
            if isinstance(result, CallToolResult) and result.is_error:
                outcome["outcome"] = category_of(" ".join(getattr(c, "text", "") for c in result.content))
            if (
                isinstance(result, CallToolResult)
                and not result.is_error
                and result.structured_content is not None
            ):
                result.content = [TextContent(type="text", text=render(name, result.structured_content))]
            return result

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        principal = self._principal(context, ResourceError)
        group_id = self.guard.resource_group(str(uri))
        with serving("resource", str(uri).split("?", 1)[0][:200], principal, group_id):
            try:
                check_text("the uri", str(uri))
                scope = "admin" if str(uri) in ADMIN_RESOURCES else "read"
                await self._admit(principal, context, scope, f"reading {str(uri)!r}", group_id)
            except MemoryServerError as exc:
                raise ResourceError(f"{exc.category}: {exc}") from None
            return await super().read_resource(uri, context)

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[Any, Any] | None = None
    ) -> GetPromptResult | InputRequiredResult:
        principal = self._principal(context, prompt_error)
        group_id = (arguments or {}).get("group_id")
        with serving("prompt", name, principal, group_id):
            try:
                await self._admit(principal, context, "read", f"the prompt {name!r}", group_id)
            except MemoryServerError as exc:
                raise prompt_error(f"{exc.category}: {exc}") from None
            return await super().get_prompt(name, arguments, context)

    def tool_scopes(self) -> dict[str, str]:
        """The scope each tool needs: read for the read-only ones, admin for a few, write for the rest."""
        if self._tool_scopes is None:  # every tool is registered by the first call
            self._tool_scopes = {
                tool.name: self.guard.tool_scope(
                    tool.name, bool(tool.annotations and tool.annotations.read_only_hint)
                )
                for tool in self._tool_manager.list_tools()
            }
        return self._tool_scopes

    async def _admit(
        self,
        principal: Principal | None,
        context: Context[Any, Any] | None,
        scope: str,
        what: str,
        group_id: object,
        *,
        creating: bool = False,
    ) -> None:
        """The guard's checks, when there is a principal: the scope `what` needs, then the group it names."""
        if principal is None:
            return
        self.guard.check_scope(principal, scope, what)
        if isinstance(group_id, str):
            assert context is not None  # a principal comes from a request's context
            manager = await manager_of(context)
            await self.guard.check_group(principal, group_id, manager, creating=creating)

    def _principal(
        self, context: Context[Any, Any] | None, error: Callable[[str], Exception]
    ) -> Principal | None:
        try:
            return self.guard.principal(context)
        except MemoryServerError as exc:
            raise error(f"{exc.category}: {exc}") from None

    async def run_stdio_async(self) -> None:
        await serve_stdio(self._lowlevel_server)


def _creates(name: str, arguments: dict[str, Any]) -> bool:
    """Whether the call may create its group (create_group, or open_session given participants)."""
    return name == "create_group" or (
        name == "open_session" and bool(arguments.get("user_ids") or arguments.get("agent_ids"))
    )


def _in_our_words(name: str, exc: ToolError, arguments: dict[str, Any]) -> ToolError:
    """A tool's error as the model reads it: the category word first, never the SDK's prefix or a dump."""
    cause = exc.__cause__
    if isinstance(exc, UnexpectedToolError):
        if isinstance(
            cause, RecursionError
        ):  # JSON text inside a string (a summary) can nest past json.loads
            log.warning("tool %r: an argument nested too deeply to read", name, exc_info=cause)
            return ToolError(
                f"invalid: an argument nests too deeply to read (JSON text inside a string counts too); "
                f"flatten it to at most {MAX_ARGUMENT_DEPTH} levels"
            )
        log.error("tool %r failed unexpectedly", name, exc_info=cause)
        return ToolError(f"internal: {name} failed unexpectedly; the server's log (stderr) has the details")
    if isinstance(
        cause, ValidationError
    ):  # Tool.run raises a ToolError from a ValidationError for arguments only
        return ToolError(f"invalid: {validation_message(cause, arguments)}")
    return ToolError(str(exc).removeprefix(f"Error executing tool {name}: "))


def build_server(
    config: Config | None = None,
    *,
    manager: MemoryManager | None = None,
    stateless: bool = False,
    auth: ServerAuth | None = None,
) -> MemoryServer:
    """The MCP server; it owns a manager made in its lifespan unless one is passed in (and then shares it).

    Over HTTP: `stateless` requests take no session references; `auth` is the resource server's settings
    and token verifier (every request then needs a principal, and the guard checks what it may do)."""
    from mcp_memory.server.prompts import register_prompts
    from mcp_memory.server.resources import register_resources
    from mcp_memory.server.tools import register_tools

    config = config or Config.from_env()
    states: list[MemoryAccess] = []  # the running lifespans' states, newest last; static resources read it
    server = MemoryServer(
        "mcp-memory",
        title="mcp-memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=_lifespan(config, manager, states, stateless),
        log_level=config.log_level.upper(),  # type: ignore[arg-type]
        guard=Guard(required=auth is not None),
        auth=None if auth is None else auth.settings,
        token_verifier=None if auth is None else auth.verifier,
    )
    register_tools(server)
    register_resources(server, states)
    register_prompts(server)
    _strict_and_lean(server)
    return server


def _strict_and_lean(server: MCPServer) -> None:
    """Every tool reads its arguments strictly (no unknown names, no coercion, no NaN) and advertises a lean
    schema and a description without source indentation."""
    for tool in server._tool_manager.list_tools():  # noqa: SLF001 - no public way to swap an arg model
        metadata = tool.fn_metadata
        model = strict_model(metadata.arg_model)
        tool.fn_metadata = StrictFuncMetadata(
            arg_model=model,
            output_schema=metadata.output_schema,
            output_model=metadata.output_model,
            wrap_output=metadata.wrap_output,
        )
        tool.parameters = lean_schema(
            tool.parameters
        )  # the SDK's schema; the strict model's differs in titles only
        tool.description = inspect.cleandoc(tool.description or "")


def _lifespan(
    config: Config, shared: MemoryManager | None, states: list[MemoryAccess], stateless: bool
) -> Callable[[MCPServer], Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[MemoryAccess]:
        if shared is not None:
            state = MemoryAccess(shared, stateless=stateless)
            states.append(state)
            try:
                yield state
            finally:
                states.remove(state)
                with contextlib.suppress(ManagerClosed):  # shut down first: nothing left to release
                    await shared.sessions.release_owner(state.owner)
            return
        # a folder, a foreign or damaged file: refused before the handshake, in one line
        if config.db_url is None:
            await run_sync(check_database_file, config.db_path)
        state = MemoryAccess()
        async with anyio.create_task_group() as tasks:
            await tasks.start(state.run, config)
            states.append(state)
            try:
                yield state
            finally:
                states.remove(state)
                await state.settled()  # a start that fails after the client left still ends in its error
                tasks.cancel_scope.cancel()  # stops the background work; the manager shuts down

    return lifespan
