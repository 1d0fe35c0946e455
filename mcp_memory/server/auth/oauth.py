"""JWT access tokens from an identity provider a company already runs (OAuth 2.1 resource server).

A token is accepted when its signature verifies with a key from the provider's JWKS (the key its `kid`
names; an unknown kid fetches the set again, at most once per cooldown), it is signed with an asymmetric
algorithm, its `iss` is the configured issuer, its `aud` names this server, and it has not expired. The
principal is its `sub` (or another claim), its scopes come from `scope` / `scp` (read, write, admin; others
are ignored), and the groups it may use from a claim (default `groups`). The JWKS address comes from the
issuer's OpenID/OAuth metadata unless given.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt
from anyio.to_thread import run_sync

from mcp_memory.server.auth.principal import MemoryToken, expand_scopes

log = logging.getLogger(__name__)
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
METADATA_PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class JWTSettings:
    issuer: str
    audience: str
    jwks_url: str | None = None
    principal_claim: str = "sub"
    groups_claim: str = "groups"


class JWTVerifier:
    """The SDK's TokenVerifier for JWT access tokens signed by one issuer."""

    def __init__(self, settings: JWTSettings) -> None:
        self.settings = settings
        self._keys: jwt.PyJWKClient | None = None

    def _client(self) -> jwt.PyJWKClient:
        if self._keys is None:
            url = self.settings.jwks_url or _discover_jwks(self.settings.issuer)
            self._keys = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=FETCH_TIMEOUT_S)
        return self._keys

    async def verify_token(self, token: str) -> MemoryToken | None:
        try:
            return await run_sync(self._verify, token)
        except (jwt.PyJWTError, OSError, ValueError, KeyError) as exc:
            log.info("refused a JWT: %s", exc)
            return None

    def _verify(self, token: str) -> MemoryToken | None:
        key = self._client().get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=ALGORITHMS, audience=self.settings.audience, issuer=self.settings.issuer,
            options={"require": ["exp", "iss", "aud"]}, leeway=30,
        )  # fmt: skip
        principal = claims.get(self.settings.principal_claim)
        if not isinstance(principal, str) or not principal:
            log.info("refused a JWT without a %r claim", self.settings.principal_claim)
            return None
        groups = claims.get(self.settings.groups_claim, [])
        if isinstance(groups, str):
            groups = groups.split()
        return MemoryToken(
            token="jwt", client_id=str(claims.get("client_id") or claims.get("azp") or principal),
            scopes=expand_scopes(_scopes(claims)), expires_at=int(claims["exp"]), resource=self.settings.audience,
            subject=principal, claims={"iss": claims["iss"]}, principal=principal,
            groups=[g for g in groups if isinstance(g, str) and g],
        )  # fmt: skip


def _scopes(claims: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found += value.split()
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, str)]
    return found


def _discover_jwks(issuer: str) -> str:
    """The jwks_uri of the issuer's metadata (OpenID Connect discovery, then RFC 8414)."""
    failures = []
    for path in METADATA_PATHS:
        url = issuer.rstrip("/") + path
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as answer:  # noqa: S310 - the configured issuer
                jwks = json.load(answer).get("jwks_uri")
        except (OSError, ValueError) as exc:
            failures.append(f"{url}: {exc}")
            continue
        if isinstance(jwks, str) and jwks:
            return jwks
        failures.append(f"{url}: no jwks_uri")
    raise ValueError(f"cannot find the issuer's keys ({'; '.join(failures)}); set MCP_MEMORY_JWT_JWKS_URL")
