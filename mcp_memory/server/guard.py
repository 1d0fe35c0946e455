"""Who may do what, asked once per request, and one log line per request.

Over authenticated HTTP the SDK's bearer middleware has verified the token and put it on the request;
`MemoryServer` reads the principal from it (`principal_of`) and asks the guard before a tool, resource or
prompt runs: the scope the call needs (tools marked read-only need read, the others write; maintenance,
file transfer and the database's statistics need admin), and the group it names (one the token lists,
one the principal created, or any for admin). The same denial answers a group that exists and one that
does not, so nothing is learnt about other principals' groups. Listings show only the principal's groups.
Without authentication (stdio, or HTTP on loopback without tokens) there is no principal and no check.

Every request logs one JSON line on the `mcp_memory.requests` logger: principal, kind, name, group,
duration and outcome (ok or the error's category word), never what the memory says.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context

from mcp_memory.errors import CATEGORIES, AccessDenied, GroupNotFound
from mcp_memory.server.auth.principal import MemoryToken, Principal
from mcp_memory.store.records import Visible

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

requests_log = logging.getLogger("mcp_memory.requests")
ADMIN_TOOLS = frozenset({"run_maintenance", "transfer_memory"})
ADMIN_RESOURCES = frozenset({"memory://stats"})
GROUP_RESOURCE = "memory://groups/"
_acting: ContextVar[Principal | None] = ContextVar("mcp_memory.principal", default=None)
_MISSING = object()


def acting() -> Principal | None:
    """The principal of the request being served (None without authentication)."""
    return _acting.get()


def acting_name() -> str | None:
    """Whom a group created now belongs to."""
    principal = _acting.get()
    return None if principal is None else principal.name


def acting_visible() -> Visible | None:
    """The groups a listing may show now (None: every group)."""
    principal = _acting.get()
    return None if principal is None else principal.visible


def principal_of(context: Context[Any, Any] | None) -> Principal | None:
    """The principal the HTTP request's verified token names, if any."""
    if context is None:
        return None
    try:
        request = context.request_context.request
    except ValueError:
        return None
    scope = getattr(request, "scope", None)
    token = getattr(scope.get("user") if isinstance(scope, Mapping) else None, "access_token", None)
    return Principal.of(token) if isinstance(token, MemoryToken) else None


@dataclass(frozen=True)
class ServerAuth:
    """What MCPServer needs to act as an OAuth resource server: its settings and the token verifier."""

    settings: AuthSettings
    verifier: TokenVerifier


class Guard:
    """The checks; `required` (authentication configured) refuses any request without a principal."""

    def __init__(self, *, required: bool = False) -> None:
        self.required = required
        self._owners: dict[str, str | None] = {}  # a group's owner never changes once it exists

    def principal(self, context: Context[Any, Any] | None) -> Principal | None:
        principal = principal_of(context)
        if principal is None and self.required:
            raise AccessDenied("this server needs a bearer token; send Authorization: Bearer <token>")
        return principal

    @staticmethod
    def check_scope(principal: Principal, scope: str, what: str) -> None:
        if not principal.has(scope):
            raise AccessDenied(
                f"{what} needs the {scope} scope; {principal.describe()}; ask the server's admin for a token "
                f"with {scope}"
            )

    async def check_group(
        self, principal: Principal, group_id: str, manager: MemoryManager, *, creating: bool = False
    ) -> None:
        if principal.may_use(group_id, None):
            return
        owner = await self._owner(group_id, manager)
        if owner is _MISSING and creating:
            return
        if owner is not _MISSING and principal.may_use(group_id, owner):  # type: ignore[arg-type]
            return
        if creating:
            raise AccessDenied(f"group_id {group_id!r} is taken by another principal; pick another group_id")
        raise AccessDenied(
            f"group {group_id!r} is not open to this token; {principal.describe()}; list_groups shows its "
            "groups, or ask the server's admin for a token that names this one"
        )

    async def _owner(self, group_id: str, manager: MemoryManager) -> object:
        if group_id in self._owners:
            return self._owners[group_id]
        try:
            group = await manager.groups.get_group(group_id)
        except GroupNotFound:
            return _MISSING
        self._owners[group_id] = group.owner
        return group.owner

    def tool_scope(self, name: str, read_only: bool) -> str:
        return "admin" if name in ADMIN_TOOLS else "read" if read_only else "write"

    @staticmethod
    def resource_group(uri: str) -> str | None:
        """The group a memory://groups/{group_id}/... URI names."""
        if not uri.startswith(GROUP_RESOURCE):
            return None
        return unquote(uri[len(GROUP_RESOURCE) :].split("/", 1)[0].split("?", 1)[0]) or None


@contextmanager
def serving(kind: str, name: str, principal: Principal | None, group_id: object) -> Iterator[dict[str, str]]:
    """Run a request as `principal` and log it once it is answered; the caller sets outcome["outcome"]."""
    started = time.perf_counter()
    outcome = {"outcome": "ok"}
    token = _acting.set(principal)
    try:
        yield outcome
    except BaseException as exc:
        outcome["outcome"] = category_of(str(exc)) if isinstance(exc, Exception) else "cancelled"
        raise
    finally:
        _acting.reset(token)
        level = logging.WARNING if outcome["outcome"] == "denied" else logging.INFO
        if requests_log.isEnabledFor(level):
            record = {
                "kind": kind, "name": name, "principal": principal.name if principal else None,
                "group_id": group_id if isinstance(group_id, str) else None,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1), "outcome": outcome["outcome"],
            }  # fmt: skip
            requests_log.log(level, json.dumps(record))


def category_of(message: str) -> str:
    word = message.split(":", 1)[0].strip()
    return word if word in CATEGORIES else "error"
