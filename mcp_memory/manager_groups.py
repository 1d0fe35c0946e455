"""Groups through the manager: registering a group and its permanent participants, reading and listing them.

A group is created once, with at least one user or agent, and its configuration is checked
against the base configuration before anything is written; an existing id is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import iso
from mcp_memory.errors import GroupExists, GroupNotFound, ValidationFailed
from mcp_memory.models import GroupInfo

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager

LIST_LIMIT = 200  # the most rows a listing (groups, a group's sessions, facts) returns


class Groups:
    """The groups of one manager's database."""

    def __init__(self, manager: MemoryManager, *, now: Callable[[], datetime]) -> None:
        self._manager = manager
        self._now = now

    async def create_group(
        self,
        group_id: str,
        user_ids: Sequence[str] = (),
        agent_ids: Sequence[str] = (),
        description: str | None = None,
        configuration: Mapping[str, Any] | None = None,
    ) -> GroupInfo:
        """Register a group and its permanent participants; an existing id is an error."""
        users, agents = _participants(user_ids, "user_ids"), _participants(agent_ids, "agent_ids")
        if not users and not agents:
            raise ValidationFailed("a group needs at least one participant; pass user_ids and/or agent_ids")
        effective_session_config(self._manager.config.base_configuration, configuration)
        row = {
            "group_id": group_id,
            "user_ids": json.dumps(users),
            "agent_ids": json.dumps(agents),
            "description": description,
            "configuration": json.dumps(dict(configuration or {})),
            "created_at": iso(self._now()),
        }
        if not await run_sync(self._manager.engine.store.insert_group, row):
            raise GroupExists(
                f"group {group_id!r} already exists; use it as it is (open_session), or pick another group_id"
            )
        return await self.get_group(group_id)

    async def get_group(self, group_id: str) -> GroupInfo:
        row = await run_sync(self._manager.engine.store.get_group, group_id)
        if row is None:
            raise GroupNotFound(f"group {group_id!r} does not exist; call create_group first")
        return _group_info(row)

    async def list_groups(self) -> list[GroupInfo]:
        rows = await run_sync(self._manager.engine.store.list_groups, LIST_LIMIT)
        return [_group_info(r) for r in rows]


def _participants(ids: Sequence[str], field: str) -> list[str]:
    cleaned = [i.strip() for i in ids]
    if any(not i for i in cleaned):
        raise ValidationFailed(f"{field} contains an empty id; every participant needs a name")
    return list(dict.fromkeys(cleaned))


def _group_info(row: Any) -> GroupInfo:
    keys = row.keys()
    return GroupInfo(
        group_id=row["group_id"],
        user_ids=json.loads(row["user_ids"]),
        agent_ids=json.loads(row["agent_ids"]),
        description=row["description"],
        configuration=json.loads(row["configuration"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        session_count=row["session_count"] if "session_count" in keys else 0,
        episode_count=row["episode_count"] if "episode_count" in keys else 0,
    )
