"""Serving over streamable HTTP: one memory manager for every client; authenticated beyond loopback.

`mcp-memory serve --http` runs one manager (one database, one set of in-memory copies) that every MCP
session shares. Each session's references are its own and are released when the session ends: the client
sends DELETE, or the SDK ends it after `session_idle_timeout_s` without a request. Stateless requests
(`--stateless`, for replicas behind a load balancer, or the 2026-07-28 protocol) take none.

With tokens (a file or MCP_MEMORY_TOKENS, tokens.py) and/or a JWT issuer (oauth.py) configured, the SDK's
resource-server support checks every request's bearer token (401 without one, 403 without any memory scope),
serves the protected-resource metadata (RFC 9728); a tool call needing a scope a JWT lacks is answered 403
with the scope to ask its provider for (challenge.py), and the guard checks each call's scope and group. Only
then may the server bind beyond loopback. Host and Origin headers are checked against allow-lists (the SDK
answers 421 and 403): loopback's, the public URL's, and --allowed-hosts / --allowed-origins for a proxy.
GET /health answers without a token. On SIGTERM or Ctrl-C the server stops taking connections, lets the
requests in flight finish (up to `shutdown_timeout_s`), then closes the manager, which finishes its writes.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from mcp.server.auth.settings import AuthSettings
from mcp.server.transport_security import TransportSecuritySettings

from mcp_memory import __version__
from mcp_memory.config import Config, env_values
from mcp_memory.errors import ConfigurationError
from mcp_memory.server.auth.oauth import JWTSettings, JWTVerifier
from mcp_memory.server.auth.principal import SCOPES, MemoryToken
from mcp_memory.server.auth.tokens import StaticTokens
from mcp_memory.server.challenge import ScopeChallenge
from mcp_memory.server.guard import ServerAuth

LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")
MCP_PATH = "/mcp"


@dataclass(frozen=True)
class HttpOptions:
    """How to serve over HTTP: from the command line, else MCP_MEMORY_* variables (see `from_env`)."""

    host: str = "127.0.0.1"
    port: int = 8765
    stateless: bool = False
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    public_url: str | None = None  # where clients reach the server (a proxy's https://...), without /mcp
    session_idle_timeout_s: float = 30 * 60
    shutdown_timeout_s: float = 30.0
    tokens_file: Path | None = None
    tokens: str | None = field(default=None, repr=False)
    jwt: JWTSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> HttpOptions:
        """The options given (None: not given), the environment's for the rest, then the defaults."""
        env = os.environ if env is None else env
        values = env_values(env, _ENV)
        values.update({k: v for k, v in given.items() if v is not None and not k.startswith("jwt_")})
        jwt = {k[4:]: v for k, v in given.items() if k.startswith("jwt_") and v is not None}
        for name in ("issuer", "audience", "jwks_url", "principal_claim", "groups_claim"):
            raw = env.get(f"MCP_MEMORY_JWT_{name.upper()}")
            if raw and name not in jwt:
                jwt[name] = raw
        options = cls(**values)
        if jwt:
            if "issuer" not in jwt:
                raise ConfigurationError(
                    "JWT settings need the issuer: set --jwt-issuer or MCP_MEMORY_JWT_ISSUER"
                )
            options = replace(options, jwt=JWTSettings(**{"audience": options.resource_url, **jwt}))
        options.check()
        return options

    def check(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"port {self.port} is not a TCP port; pick one from 1 to 65535")
        if not self.session_idle_timeout_s > 0 or not self.shutdown_timeout_s >= 0:
            raise ConfigurationError(
                "the session idle timeout must be more than 0 s, the shutdown timeout 0 s or more"
            )
        if self.public_url is not None and urlsplit(self.public_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"public URL {self.public_url!r} must start with https:// (or http://)")
        if not self.authenticated and not _loopback(self.host):
            raise ConfigurationError(
                f"refusing to serve on {self.host} without authentication: anyone on its network would read and "
                "write the memory. Configure tokens (`mcp-memory token --help`, then --tokens-file) or a JWT "
                "issuer (--jwt-issuer), or bind 127.0.0.1 (the default)"
            )

    @property
    def authenticated(self) -> bool:
        return self.tokens_file is not None or bool(self.tokens) or self.jwt is not None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")

    @property
    def resource_url(self) -> str:
        return self.base_url + MCP_PATH


_ENV: dict[str, tuple[str, Any]] = {
    "host": ("MCP_MEMORY_HOST", str),
    "port": ("MCP_MEMORY_PORT", int),
    "stateless": ("MCP_MEMORY_STATELESS", "flag"),
    "allowed_hosts": ("MCP_MEMORY_ALLOWED_HOSTS", "list"),
    "allowed_origins": ("MCP_MEMORY_ALLOWED_ORIGINS", "list"),
    "public_url": ("MCP_MEMORY_PUBLIC_URL", str),
    "session_idle_timeout_s": ("MCP_MEMORY_SESSION_IDLE_TIMEOUT_S", float),
    "shutdown_timeout_s": ("MCP_MEMORY_SHUTDOWN_TIMEOUT_S", float),
    "tokens_file": ("MCP_MEMORY_TOKENS_FILE", Path),
    "tokens": ("MCP_MEMORY_TOKENS", str),
}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Verifiers:
    """Static tokens first (a dictionary look-up), then JWTs (a signature check)."""

    def __init__(self, static: StaticTokens | None, jwt: JWTVerifier | None) -> None:
        self._static, self._jwt = static, jwt

    async def verify_token(self, token: str) -> MemoryToken | None:
        if self._static is not None and (found := await self._static.verify_token(token)) is not None:
            return found
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.verify_token(token)
        return None


def server_auth(options: HttpOptions) -> ServerAuth | None:
    if not options.authenticated:
        return None
    static = None
    if options.tokens_file is not None or options.tokens:
        static = StaticTokens(options.tokens_file, options.tokens)
    jwt = None if options.jwt is None else JWTVerifier(options.jwt)
    settings = AuthSettings(
        issuer_url=options.jwt.issuer if options.jwt else options.base_url,  # type: ignore[arg-type]
        resource_server_url=options.resource_url,  # type: ignore[arg-type]
        required_scopes=["read"],  # every memory scope implies read: a token with none is refused (403)
        validate_token_resource=False,  # the JWT verifier checks the audience itself
    )
    return ServerAuth(settings, Verifiers(static, jwt))


def security(options: HttpOptions) -> TransportSecuritySettings:
    hosts, origins = [*LOOPBACK_HOSTS, *options.allowed_hosts], [*LOOPBACK_ORIGINS, *options.allowed_origins]
    if options.public_url is not None:
        public = urlsplit(options.public_url)
        hosts.append(public.netloc)
        origins.append(f"{public.scheme}://{public.netloc}")
    if not _loopback(options.host) and options.host not in ("0.0.0.0", "::"):  # noqa: S104 - a name to match
        hosts.append(f"{options.host}:*")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def http_app(config: Config, options: HttpOptions | None = None) -> Any:
    """The Starlette app: the MCP endpoint at /mcp and /health, with one manager started in its lifespan."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import BaseRoute, Mount

    from mcp_memory.manager import MemoryManager
    from mcp_memory.server.app import build_server

    options = options or HttpOptions()
    auth = server_auth(options)
    manager = MemoryManager(config)
    server = build_server(config, manager=manager, stateless=options.stateless, auth=auth)

    @server.custom_route("/health", methods=["GET"])
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__, "database": config.database})

    inner = server.streamable_http_app(
        streamable_http_path=MCP_PATH, stateless_http=options.stateless, transport_security=security(options),
        host=options.host, session_idle_timeout=None if options.stateless else options.session_idle_timeout_s,
    )  # fmt: skip
    app: Any = inner
    routes: list[BaseRoute] = []
    if auth is not None and options.jwt is not None:  # only a JWT's provider can grant more scope
        from mcp.server.auth.routes import build_resource_metadata_url

        metadata_url = str(build_resource_metadata_url(auth.settings.resource_server_url))  # type: ignore[arg-type]
        app = ScopeChallenge(inner, auth.verifier, server.tool_scopes(), MCP_PATH, metadata_url)
    if auth is not None:
        from mcp.server.auth.routes import create_protected_resource_routes

        # ahead of the SDK's own, which offers only the scope every request needs (read)
        routes += create_protected_resource_routes(
            auth.settings.resource_server_url,  # type: ignore[arg-type]
            [auth.settings.issuer_url],
            scopes_supported=list(SCOPES),
            resource_name="mcp-memory",
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
            with anyio.CancelScope(shield=True):
                await manager.shutdown()

    return Starlette(routes=[*routes, Mount("/", app=app)], lifespan=lifespan)


def serve_http(config: Config, options: HttpOptions) -> None:
    import uvicorn

    app = http_app(config, options)
    uvicorn.run(
        app, host=options.host, port=options.port, log_level=config.log_level.lower(), lifespan="on",
        timeout_graceful_shutdown=round(options.shutdown_timeout_s) or None, server_header=False,
    )  # fmt: skip
