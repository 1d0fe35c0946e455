"""What a request reaches memory through: the lifespan's manager (ready once started), who owns the
references a request takes, and how our errors are shown to the client (category word first).

The tools, resources and prompts import it; app.py builds the server around them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import anyio
import anyio.abc
from anyio.to_thread import run_sync
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_memory.config import Config
from mcp_memory.errors import ManagerClosed, MemoryServerError

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager
    from mcp_memory.server.guard import Guard

P = ParamSpec("P")
R = TypeVar("R")
OWNER_KEY = "mcp_memory.owner"


class MemoryAccess:
    """The lifespan's manager, ready once it has started (in the background); requests wait for it."""

    def __init__(self, manager: MemoryManager | None = None, *, stateless: bool = False) -> None:
        self.owner: Hashable = object()  # references taken where no connection owns them
        self.stateless = stateless  # served over HTTP without MCP sessions: requests take no references
        self._manager = manager
        self._failure: BaseException | None = None
        self._ready = anyio.Event()
        if manager is not None:
            self._ready.set()

    async def manager(self) -> MemoryManager:
        await self._ready.wait()
        if self._manager is None:
            raise ManagerClosed(
                f"the memory database could not be opened ({self._failure}); restart the server"
            )
        return self._manager

    async def run(
        self, config: Config, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start a manager, run its background work until cancelled, then shut it down."""
        task_status.started()
        try:
            # numpy, the store and the embedder load on a worker thread: the event loop answers the handshake
            manager = await run_sync(_new_manager, config)
            await manager.start()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            raise
        self._manager = manager
        self._ready.set()
        try:
            await manager.run_background()
        finally:
            # outside the cancelled scope: a shutdown inside it would be cancelled at its first await
            with anyio.CancelScope(shield=True):
                await manager.shutdown()

    async def settled(self) -> None:
        """Wait until the manager has started or failed to (so a start failure is never lost at exit)."""
        await self._ready.wait()


def _new_manager(config: Config) -> MemoryManager:
    from mcp_memory.manager import MemoryManager

    return MemoryManager(config)


def shown_as(
    error: Callable[[str], Exception],
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Re-raise our errors as the SDK's `error` (it hides the message of any other), category word first."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except MemoryServerError as exc:
                raise error(f"{exc.category}: {exc}") from exc

        return wrapper

    return decorate


def prompt_error(message: str) -> MCPError:
    """A prompt's error as the client reads it on every protocol (the 2026-07-28 one hides any other)."""
    return MCPError(INVALID_PARAMS, message)


tool_errors = shown_as(ToolError)
resource_errors = shown_as(ResourceError)
prompt_errors = shown_as(prompt_error)


def access(ctx: Context) -> MemoryAccess:
    state = ctx.request_context.lifespan_context
    assert isinstance(state, MemoryAccess)
    return state


def guard_of(ctx: Context) -> Guard:
    server = ctx.mcp_server
    assert hasattr(server, "guard")
    return server.guard  # type: ignore[no-any-return]


async def manager_of(ctx: Context) -> MemoryManager:
    return await access(ctx).manager()


def owner_of(ctx: Context) -> Hashable:
    """Who holds the references a request takes: its connection (over HTTP, its MCP session), released when
    the client disconnects, ends the session (DELETE) or the server ends it for idleness.

    Stateless HTTP requests (`--stateless`, or the 2026-07-28 protocol, which has no sessions) take none:
    nothing would ever release them. Elsewhere on the 2026-07-28 protocol every request has a connection of its
    own, so the references belong to the lifespan (one stdio process or in-process client).
    """
    from mcp_memory.sessions import NO_REFERENCE  # with the store's protocol: not before the handshake

    state = access(ctx)
    connection = getattr(ctx.request_context.session, "_connection", None)
    modern = connection is None or connection.protocol_version in MODERN_PROTOCOL_VERSIONS
    if ctx.request_context.request is not None and (state.stateless or modern):
        return NO_REFERENCE
    if modern or connection is None:
        return state.owner
    if OWNER_KEY not in connection.state:
        token = object()
        connection.state[OWNER_KEY] = token

        async def release() -> None:
            try:
                await (await state.manager()).sessions.release_owner(token)
            except MemoryServerError:  # the manager never started, or has shut down: nothing to release
                pass

        connection.exit_stack.push_async_callback(release)
    return connection.state[OWNER_KEY]
