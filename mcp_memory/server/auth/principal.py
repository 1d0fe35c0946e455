"""A principal: the person or program a bearer token speaks for, its scopes and the groups it may use.

Scopes nest: write implies read, admin implies both (and every group). A principal uses the groups its token
names ("*" for every one) and the groups it created (their owner). The SDK's bearer middleware carries a
`MemoryToken`, the SDK's AccessToken with the principal's name and groups added.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mcp.server.auth.provider import AccessToken

from mcp_memory.errors import ConfigurationError
from mcp_memory.store.records import Visible

SCOPES = ("read", "write", "admin")
IMPLIED = {"read": ("read",), "write": ("read", "write"), "admin": ("read", "write", "admin")}
EVERY_GROUP = "*"


def expand_scopes(scopes: Iterable[str]) -> list[str]:
    """The memory scopes these grant, implied ones included, in SCOPES order; other scopes are dropped."""
    granted = {implied for scope in scopes for implied in IMPLIED.get(scope, ())}
    return [scope for scope in SCOPES if scope in granted]


def check_scopes(scopes: Iterable[str], where: str) -> list[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ConfigurationError(f"{where}: unknown scope(s) {unknown}; use read, write and/or admin")
    return expand_scopes(scopes)


class MemoryToken(AccessToken):
    """A verified token: the SDK's fields, with the principal it names and the groups it may use."""

    principal: str
    groups: list[str] = []


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]
    groups: frozenset[str]

    @classmethod
    def of(cls, token: MemoryToken) -> Principal:
        return cls(token.principal, frozenset(expand_scopes(token.scopes)), frozenset(token.groups))

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def every_group(self) -> bool:
        return "admin" in self.scopes or EVERY_GROUP in self.groups

    def may_use(self, group_id: str, owner: str | None) -> bool:
        return self.every_group or group_id in self.groups or (owner is not None and owner == self.name)

    @property
    def visible(self) -> Visible | None:
        """What a listing shows this principal (None: everything)."""
        return None if self.every_group else Visible(self.name, tuple(sorted(self.groups)))

    def describe(self) -> str:
        """What the token allows, in a few words: principal 'bob' has read on the groups it creates."""
        scopes = " and ".join(sorted(self.scopes, key=SCOPES.index)) or "no scope"
        if self.every_group:
            groups = "every group"
        elif self.groups:
            groups = f"groups {', '.join(sorted(self.groups))} and the groups it creates"
        else:
            groups = "the groups it creates"
        return f"principal {self.name!r} has {scopes} on {groups}"
