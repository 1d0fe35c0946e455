"""Static bearer tokens: kept as SHA-256 digests in a JSON file (or MCP_MEMORY_TOKENS), each naming its principal,
scopes, groups and, optionally, when it expires.

    {"tokens": [{"principal": "alice", "sha256": "9f86d0...", "scopes": ["read", "write"],
                 "groups": ["team-search"], "expires_at": "2027-06-30T00:00:00Z"}]}

`mcp-memory token --principal alice ...` makes a token, prints it once and adds its digest to the file; the
token itself is never stored. A token is random (256 bits), so one SHA-256 is the right digest: nothing to
guess from it. A presented token is hashed and compared with every digest in constant time. The file is read
again when it changes, so adding or removing a token needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_memory.errors import ConfigurationError
from mcp_memory.server.auth.principal import MemoryToken, check_scopes

log = logging.getLogger(__name__)
TOKEN_PREFIX = "mcpm_"


@dataclass(frozen=True)
class TokenEntry:
    principal: str
    digest: bytes
    scopes: tuple[str, ...]
    groups: tuple[str, ...]
    expires_at: int | None  # epoch seconds


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_tokens(text: str, where: str) -> list[TokenEntry]:
    """The entries of a tokens document; any mistake is a ConfigurationError that names the entry."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{where} is not JSON ({exc}); see `mcp-memory token --help`") from None
    listed = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        raise ConfigurationError(f'{where} must hold {{"tokens": [...]}}; see `mcp-memory token --help`')
    return [_entry(item, f"{where}, token {n}") for n, item in enumerate(listed)]


def _entry(item: Any, where: str) -> TokenEntry:
    if not isinstance(item, dict):
        raise ConfigurationError(f"{where} must be an object")
    unknown = sorted(set(item) - {"principal", "sha256", "scopes", "groups", "expires_at", "note"})
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {unknown}")
    principal, hexdigest = item.get("principal"), item.get("sha256")
    if not isinstance(principal, str) or not principal.strip():
        raise ConfigurationError(f"{where} needs a principal (who the token speaks for)")
    if not isinstance(hexdigest, str) or len(hexdigest) != 64:
        raise ConfigurationError(f"{where} needs sha256: the token's SHA-256 as 64 hex digits")
    scopes, groups = item.get("scopes", []), item.get("groups", [])
    if not _strings(scopes) or not scopes:
        raise ConfigurationError(f"{where} needs scopes: a list of read, write, admin")
    if not _strings(groups):
        raise ConfigurationError(f'{where}: groups must be a list of group ids ("*" for every group)')
    try:
        raw = bytes.fromhex(hexdigest)
    except ValueError:
        raise ConfigurationError(f"{where}: sha256 is not hex") from None
    return TokenEntry(
        principal.strip(), raw, tuple(check_scopes(scopes, where)), tuple(groups), _expiry(item, where)
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _expiry(item: dict[str, Any], where: str) -> int | None:
    raw = item.get("expires_at")
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{where}: expires_at {raw!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


class StaticTokens:
    """The SDK's TokenVerifier over the token file and/or MCP_MEMORY_TOKENS."""

    def __init__(self, path: Path | None = None, inline: str | None = None) -> None:
        self._path = path
        self._inline = parse_tokens(inline, "MCP_MEMORY_TOKENS") if inline else []
        self._stamp: tuple[int, int] | None = None
        self._from_file: list[TokenEntry] = []
        self._reload()

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            status = self._path.stat()
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp == self._stamp:
                return
            entries = parse_tokens(self._path.read_text(encoding="utf-8"), str(self._path))
        except OSError as exc:
            raise ConfigurationError(f"cannot read the tokens file {self._path}: {exc}") from None
        self._from_file, self._stamp = entries, stamp

    @property
    def entries(self) -> list[TokenEntry]:
        return [*self._inline, *self._from_file]

    async def verify_token(self, token: str) -> MemoryToken | None:
        try:
            self._reload()
        except ConfigurationError as exc:  # a half-written edit: keep the tokens read last
            log.error("%s; still using the tokens read before", exc)
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: TokenEntry | None = None
        for entry in self.entries:  # no early exit: every digest is compared
            if hmac.compare_digest(presented, entry.digest) and found is None:
                found = entry
        if found is None:
            return None
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC).timestamp():
            log.info("refused an expired token of principal %r", found.principal)
            return None
        return MemoryToken(
            token="static", client_id=found.principal, scopes=list(found.scopes), expires_at=found.expires_at,
            subject=found.principal, principal=found.principal, groups=list(found.groups),
        )  # fmt: skip


def add_token(
    path: Path, principal: str, scopes: list[str], groups: list[str], expires_at: datetime | None
) -> tuple[str, dict[str, Any]]:
    """Make a token, add its digest to the file (made, readable by its owner only, if missing); returns the
    token (shown once) and the entry written."""
    token = new_token()
    entry: dict[str, Any] = {
        "principal": principal, "sha256": digest(token), "scopes": check_scopes(scopes, "--scopes"),
        "groups": groups or [],
    }  # fmt: skip
    if expires_at is not None:
        entry["expires_at"] = expires_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    document: dict[str, Any] = {"tokens": []}
    if path.exists():
        text = path.read_text(encoding="utf-8")
        parse_tokens(text, str(path))
        document = json.loads(text)
    _entry(entry, "the new token")
    document["tokens"].append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
    os.replace(partial, path)
    return token, entry
