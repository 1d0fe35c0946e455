"""Serving over streamable HTTP: one memory manager for every client, on loopback.

`mcp-memory serve --http` runs one manager (one database, one set of in-memory copies) that every MCP
session shares; each session's references are its own and are released when the session ends (the client
sends DELETE, or the SDK ends it when idle). Host and Origin headers are checked against allow-lists (the
SDK answers 421 and 403), loopback's by default, more with --allowed-hosts / --allowed-origins for a
reverse proxy. Authentication is not built yet, so binding anywhere but loopback is refused. GET /health
answers without a session.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.transport_security import TransportSecuritySettings

from mcp_memory import __version__
from mcp_memory.config import Config
from mcp_memory.errors import ConfigurationError

LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")


def check_bind(host: str) -> None:
    """Loopback only: without authentication, any other address would hand the memory to its network."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"refusing to serve on {host}: HTTP without authentication must stay on loopback, and this version "
            "has no authentication yet; bind 127.0.0.1 (the default) and reach it through a reverse proxy that "
            "authenticates (add its host name with --allowed-hosts)"
        )


def security(allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> TransportSecuritySettings:
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[*LOOPBACK_HOSTS, *allowed_hosts],
        allowed_origins=[*LOOPBACK_ORIGINS, *allowed_origins],
    )


def http_app(
    config: Config,
    *,
    host: str = "127.0.0.1",
    stateless: bool = False,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> Any:
    """The Starlette app: the MCP endpoint at /mcp and /health, with one manager started in its lifespan."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount

    from mcp_memory.manager import MemoryManager
    from mcp_memory.server.app import build_server

    manager = MemoryManager(config)
    server = build_server(config, manager=manager)

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__, "database": config.database})

    inner = server.streamable_http_app(
        stateless_http=stateless, transport_security=security(allowed_hosts, allowed_origins), host=host
    )

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await manager.start()
        try:
            async with anyio.create_task_group() as background:
                await background.start(manager.run_background)
                try:
                    async with inner.router.lifespan_context(inner):
                        yield
                finally:
                    background.cancel_scope.cancel()
        finally:
            await manager.shutdown()

    return Starlette(routes=[Mount("/", app=inner)], lifespan=lifespan)


def serve_http(
    config: Config,
    *,
    host: str,
    port: int,
    stateless: bool,
    allowed_hosts: Sequence[str],
    allowed_origins: Sequence[str],
) -> None:
    import uvicorn

    check_bind(host)
    app = http_app(
        config, host=host, stateless=stateless, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins
    )
    uvicorn.run(app, host=host, port=port, log_level=config.log_level.lower(), lifespan="on")
