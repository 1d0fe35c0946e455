"""Bearer tokens, principals and the HTTP settings, without a server: what a token file may say and what each
mistake answers, how scopes nest, which groups a principal may use, and what binding needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mcp_memory.errors import AccessDenied, ConfigurationError
from mcp_memory.server.auth.principal import MemoryToken, Principal, expand_scopes
from mcp_memory.server.auth.tokens import StaticTokens, add_token, digest, parse_tokens
from mcp_memory.server.guard import Guard
from mcp_memory.server.http import HttpOptions, security
from mcp_memory.store.records import Visible

pytestmark = pytest.mark.anyio


def entry(token: str, **fields: object) -> dict[str, object]:
    return {"principal": "ana", "sha256": digest(token), "scopes": ["read"], **fields}


async def test_a_token_is_found_by_its_digest_and_names_its_principal(tmp_path: Path) -> None:
    token, written = add_token(tmp_path / "t.json", "ana", ["write"], ["team"], None)
    tokens = StaticTokens(tmp_path / "t.json")
    found = await tokens.verify_token(token)
    assert isinstance(found, MemoryToken) and found.token == "static"  # the token itself is not kept
    assert (found.principal, found.scopes, found.groups, found.expires_at) == (
        "ana",
        ["read", "write"],
        ["team"],
        None,
    )
    assert written["sha256"] == digest(token) and token not in (tmp_path / "t.json").read_text()
    assert await tokens.verify_token(token + "x") is None and await tokens.verify_token("") is None


async def test_an_inline_token_and_one_past_its_time() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    inline = json.dumps({"tokens": [entry("live"), entry("old", principal="old", expires_at=past)]})
    tokens = StaticTokens(None, inline)
    assert (await tokens.verify_token("live")).principal == "ana"  # type: ignore[union-attr]
    assert await tokens.verify_token("old") is None


async def test_a_broken_edit_of_the_file_keeps_the_tokens_read_before(tmp_path: Path) -> None:
    token, _ = add_token(tmp_path / "t.json", "ana", ["read"], [], None)
    tokens = StaticTokens(tmp_path / "t.json")
    (tmp_path / "t.json").write_text('{"tokens": [')
    assert (await tokens.verify_token(token)) is not None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[", "is not JSON"),
        ("[]", '{"tokens": [...]}'),
        ('{"tokens": [1]}', "token 0 must be an object"),
        (json.dumps({"tokens": [{"sha256": "0" * 64, "scopes": ["read"]}]}), "needs a principal"),
        (json.dumps({"tokens": [{"principal": "a", "sha256": "abc", "scopes": ["read"]}]}), "64 hex digits"),
        (json.dumps({"tokens": [{"principal": "a", "sha256": "z" * 64, "scopes": ["read"]}]}), "not hex"),
        (json.dumps({"tokens": [{"principal": "a", "sha256": "0" * 64, "scopes": []}]}), "needs scopes"),
        (
            json.dumps({"tokens": [{"principal": "a", "sha256": "0" * 64, "scopes": ["sudo"]}]}),
            "unknown scope(s) ['sudo']",
        ),
        (
            json.dumps(
                {"tokens": [{"principal": "a", "sha256": "0" * 64, "scopes": ["read"], "groups": "g"}]}
            ),
            "groups must be a list",
        ),
        (
            json.dumps(
                {"tokens": [{"principal": "a", "sha256": "0" * 64, "scopes": ["read"], "expires_at": "soon"}]}
            ),
            "not an ISO 8601",
        ),
        (
            json.dumps(
                {"tokens": [{"principal": "a", "sha256": "0" * 64, "scopes": ["read"], "token": "x"}]}
            ),
            "unknown field(s) ['token']",
        ),
    ],
)
def test_each_mistake_in_a_tokens_document_is_named(text: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_tokens(text, "tokens.json")
    assert says in str(refused.value) and "tokens.json" in str(refused.value)


def test_scopes_nest_and_others_are_dropped() -> None:
    assert expand_scopes(["admin"]) == ["read", "write", "admin"]
    assert expand_scopes(["write", "openid"]) == ["read", "write"]
    assert expand_scopes(["profile"]) == []


def test_a_principal_uses_the_groups_named_and_the_ones_it_owns() -> None:
    ana = Principal("ana", frozenset({"read"}), frozenset({"team"}))
    assert ana.may_use("team", None) and ana.may_use("mine", "ana")
    assert not ana.may_use("other", "bob") and not ana.may_use("other", None)
    assert ana.visible == Visible("ana", ("team",))
    every = Principal("ops", frozenset({"read"}), frozenset({"*"}))
    admin = Principal("root", frozenset(expand_scopes(["admin"])), frozenset())
    assert every.may_use("x", "bob") and admin.may_use("x", "bob") and admin.visible is None
    assert ana.describe() == "principal 'ana' has read on groups team and the groups it creates"


def test_binding_beyond_loopback_needs_authentication() -> None:
    with pytest.raises(ConfigurationError, match="refusing to serve on 0.0.0.0 without authentication"):
        HttpOptions.from_env({}, host="0.0.0.0")
    assert HttpOptions.from_env({"MCP_MEMORY_TOKENS": "{}"}, host="0.0.0.0").authenticated
    assert HttpOptions.from_env({}, host="::1").host == "::1"


def test_the_settings_come_from_the_environment_and_the_command_line_wins() -> None:
    env = {
        "MCP_MEMORY_HOST": "127.0.0.2", "MCP_MEMORY_PORT": "9000", "MCP_MEMORY_STATELESS": "true",
        "MCP_MEMORY_ALLOWED_HOSTS": "a:*, b:*", "MCP_MEMORY_SESSION_IDLE_TIMEOUT_S": "60",
        "MCP_MEMORY_JWT_ISSUER": "https://login.example.com", "MCP_MEMORY_PUBLIC_URL": "https://memory.example.com/",
    }  # fmt: skip
    options = HttpOptions.from_env(env, port=9100)
    assert (options.host, options.port, options.stateless, options.allowed_hosts) == (
        "127.0.0.2",
        9100,
        True,
        ("a:*", "b:*"),
    )
    assert options.session_idle_timeout_s == 60 and options.resource_url == "https://memory.example.com/mcp"
    assert options.jwt is not None and options.jwt.audience == "https://memory.example.com/mcp"  # by default
    with pytest.raises(ConfigurationError, match="MCP_MEMORY_PORT='x' is not a valid int"):
        HttpOptions.from_env({"MCP_MEMORY_PORT": "x"})
    with pytest.raises(ConfigurationError, match="MCP_MEMORY_STATELESS='maybe': use 1 or 0"):
        HttpOptions.from_env({"MCP_MEMORY_STATELESS": "maybe"})
    with pytest.raises(ConfigurationError, match="need the issuer"):
        HttpOptions.from_env({"MCP_MEMORY_JWT_AUDIENCE": "api"})
    with pytest.raises(ConfigurationError, match="must start with https://"):
        HttpOptions.from_env({"MCP_MEMORY_PUBLIC_URL": "memory.example.com"})


def test_behind_a_proxy_its_public_host_and_origin_are_accepted() -> None:
    options = HttpOptions.from_env(
        {}, public_url="https://memory.example.com", allowed_hosts=("10.0.0.5:8765",)
    )
    settings = security(options)
    assert {"memory.example.com", "10.0.0.5:8765", "127.0.0.1:*"} <= set(settings.allowed_hosts)
    assert "https://memory.example.com" in settings.allowed_origins
    assert "http://evil.example" not in settings.allowed_origins and settings.enable_dns_rebinding_protection


def test_with_authentication_on_a_request_without_a_principal_is_refused() -> None:
    assert Guard().principal(None) is None  # stdio, or HTTP on loopback without tokens
    with pytest.raises(AccessDenied, match="needs a bearer token"):
        Guard(required=True).principal(None)
