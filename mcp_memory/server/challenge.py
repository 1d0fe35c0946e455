"""The MCP specification's scope challenge: a tool call whose JWT lacks the tool's scope is answered HTTP 403
with `WWW-Authenticate: Bearer error="insufficient_scope", scope="write"`, before it reaches the MCP layer,
so the client can ask the identity provider for a token with more scope (step-up authorization).

Static tokens have no provider to ask: their calls go on to the guard, whose `denied:` tool result tells the
model (and the person) what the token lacks, where the SDK's client shows a 403 only as "Server returned an
error response".

The ASGI middleware, installed when JWTs are accepted, reads the body of a POST to /mcp that bears a JWT (up
to the SDK's body limit; a larger one passes on to be refused there), finds `tools/call` requests (one, or in
a legacy batch), verifies the token with the server's verifier and compares scopes; anything else, or a token
that does not verify (the SDK answers 401), passes through untouched with its body replayed. The guard checks
the same scopes again inside.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend
from mcp.server.auth.provider import TokenVerifier
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_PEEK_BYTES = 4 * 1024 * 1024


class ScopeChallenge:
    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        tool_scopes: Mapping[str, str],
        path: str,
        metadata_url: str,
    ) -> None:
        self.app = app
        self._backend = BearerAuthBackend(verifier)
        self._scopes = tool_scopes
        self._path = path
        self._metadata_url = metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].rstrip("/") != self._path
            or not _bears_a_jwt(scope)
        ):
            await self.app(scope, receive, send)
            return
        messages, body = await _read(receive)
        needed = set() if body is None else self._needed(body)
        if needed:
            missing = await self._missing(scope, needed)
            if missing:
                await self._refuse(send, missing)
                return
        await self.app(scope, _replay(messages, receive), send)

    def _needed(self, body: bytes) -> set[str]:
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return set()
        calls = message if isinstance(message, list) else [message]
        needed = set()
        for call in calls:
            if (
                isinstance(call, dict)
                and call.get("method") == "tools/call"
                and isinstance(call.get("params"), dict)
            ):
                name = call["params"].get("name")
                if isinstance(name, str) and name in self._scopes:
                    needed.add(self._scopes[name])
        return needed - {"read"}  # every token that gets this far has read (the SDK requires it)

    async def _missing(self, scope: Scope, needed: set[str]) -> list[str]:
        found = await self._backend.authenticate(HTTPConnection(scope))
        if found is None:
            return []  # no valid token: the SDK answers 401
        _, user = found
        assert isinstance(user, AuthenticatedUser)
        if user.access_token.token != "jwt":  # a static token: the guard answers in words
            return []
        return sorted(needed - set(user.scopes))

    async def _refuse(self, send: Send, missing: list[str]) -> None:
        wanted = " ".join(missing)
        description = f"this token lacks the {wanted} scope this tool needs; ask for a token with {wanted}"
        body = json.dumps({"error": "insufficient_scope", "error_description": description}).encode()
        challenge = (
            f'Bearer error="insufficient_scope", scope="{wanted}", resource_metadata="{self._metadata_url}", '
            f'error_description="{description}"'
        )
        await send({
            "type": "http.response.start", "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", challenge.encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def _bears_a_jwt(scope: Scope) -> bool:
    """Whether the Authorization header holds something shaped like a JWT (header.payload.signature)."""
    value = HTTPConnection(scope).headers.get("authorization", "")
    return value[:7].lower() == "bearer " and value.count(".") == 2


async def _read(receive: Receive) -> tuple[list[Message], bytes | None]:
    """The messages read, and the body when it came whole within MAX_PEEK_BYTES."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)
        if size > MAX_PEEK_BYTES:
            return messages, None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands the inner app the messages already read, then goes on reading."""
    pending = list(messages)

    async def replayed() -> Any:
        return pending.pop(0) if pending else await receive()

    return replayed
