"""Groups: registering a group and its permanent participants, reading and listing them.

A group is created once, with at least one user or agent, and its configuration is checked
against the base configuration before anything is written; creating it again with the same
participants returns it, with others is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from anyio.to_thread import run_sync

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import check_id, check_unicode
from mcp_memory.errors import GroupExists, GroupNotFound, ValidationFailed
from mcp_memory.models import GroupInfo
from mcp_memory.store.protocol import GroupStore
from mcp_memory.store.records import Visible

LIST_LIMIT = 200  # the most rows a listing (groups, a group's sessions, facts) returns
MAX_DESCRIPTION_CHARS = 2_000
MAX_PARTICIPANTS = 1_000


class Groups:
    """The groups of one database."""

    def __init__(
        self, store: GroupStore, *, base_configuration: Mapping[str, Any], now: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._base = base_configuration
        self._now = now

    async def create_group(
        self,
        group_id: str,
        user_ids: Sequence[str] = (),
        agent_ids: Sequence[str] = (),
        description: str | None = None,
        configuration: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> GroupInfo:
        """Register a group and its permanent participants (owned by `owner`, the principal creating it, if
        any); the same group again returns it, an existing id with other participants (or another
        configuration) is an error."""
        check_id(group_id, "group_id", "family")
        users, agents = _participants(user_ids, "user_ids"), _participants(agent_ids, "agent_ids")
        if not users and not agents:
            raise ValidationFailed("a group needs at least one participant; pass user_ids and/or agent_ids")
        _check_roles(users, agents)
        if description is not None and len(check_unicode(description, "description")) > MAX_DESCRIPTION_CHARS:
            raise ValidationFailed(
                f"description has {len(description)} characters; keep it under {MAX_DESCRIPTION_CHARS} "
                "(store longer notes with add_memory)"
            )
        effective_session_config(self._base, configuration)
        group = GroupInfo(
            group_id=group_id, user_ids=users, agent_ids=agents, description=description,
            configuration=dict(configuration or {}), created_at=self._now(), owner=owner,
        )  # fmt: skip
        if await run_sync(self._store.insert_group, group):
            return (await self.get_group(group_id)).model_copy(update={"created": True})
        return await self.counted(
            self._same_group(await self.get_group(group_id), users, agents, configuration)
        )

    async def counted(self, group: GroupInfo) -> GroupInfo:
        """The group with its session and episode counts (a plain read leaves them 0: counting costs a scan)."""
        sessions, episodes = await run_sync(self._store.group_counts, group.group_id)
        return group.model_copy(update={"session_count": sessions, "episode_count": episodes})

    @staticmethod
    def _same_group(
        group: GroupInfo, users: list[str], agents: list[str], configuration: Mapping[str, Any] | None
    ) -> GroupInfo:
        """Creating a group that exists with these participants returns it (a model may create its group in
        every conversation); other participants or another configuration is an error that says what to do."""
        if (set(users), set(agents)) != (set(group.user_ids), set(group.agent_ids)):
            raise GroupExists(
                f"group {group.group_id!r} already exists with user_ids {group.user_ids} and agent_ids "
                f"{group.agent_ids}; use it as it is (open_session), add people with add_participants, or pick another "
                "group_id"
            )
        if configuration is not None and dict(configuration) != group.configuration:
            raise GroupExists(
                f"group {group.group_id!r} already exists with configuration {group.configuration}; leave "
                "configuration out to use it, or give a session its own configuration in open_session"
            )
        return group

    async def ensure_group(
        self, group_id: str, user_ids: Sequence[str], agent_ids: Sequence[str], *, owner: str | None = None
    ) -> bool:
        """MemMachine's legacy get-or-create: the group, created with these participants when it is missing;
        an existing group must already have them. Returns whether it was created."""
        try:
            group = await self.get_group(group_id)
        except GroupNotFound:
            return (await self.create_group(group_id, user_ids, agent_ids, owner=owner)).created
        missing = sorted((set(user_ids) - set(group.user_ids)) | (set(agent_ids) - set(group.agent_ids)))
        if missing:
            raise GroupExists(
                f"group {group_id!r} exists without {missing}; add them with add_participants, or leave "
                "user_ids and agent_ids out to open the session"
            )
        return False

    async def add_participants(
        self, group_id: str, user_ids: Sequence[str] = (), agent_ids: Sequence[str] = ()
    ) -> GroupInfo:
        """Add users and agents to a group (the ones it has already are kept once); returns the group."""
        users, agents = _participants(user_ids, "user_ids"), _participants(agent_ids, "agent_ids")
        if not users and not agents:
            raise ValidationFailed("pass user_ids and/or agent_ids: who joins the group")
        group = await self.get_group(group_id)
        _check_roles(group.user_ids + users, group.agent_ids + agents)
        await run_sync(self._store.add_participants, group_id, users, agents)
        return await self.counted(await self.get_group(group_id))

    async def get_group(self, group_id: str) -> GroupInfo:
        group = await run_sync(self._store.get_group, check_unicode(group_id, "group_id"))
        if group is None:
            raise GroupNotFound(f"group {group_id!r} does not exist; call create_group first")
        return group

    async def list_groups(self, visible: Visible | None = None) -> list[GroupInfo]:
        """Every group (up to LIST_LIMIT), or every `visible` one, with its session and memory counts."""
        return await run_sync(self._store.list_groups, LIST_LIMIT, 0, visible)


def _participants(ids: Sequence[str], field: str) -> list[str]:
    if len(ids) > MAX_PARTICIPANTS:
        raise ValidationFailed(
            f"{field} names {len(ids)} participants; a group holds at most {MAX_PARTICIPANTS}"
        )
    return list(dict.fromkeys(check_id(i, f"{field}[{n}]") for n, i in enumerate(ids)))


def _check_roles(users: Sequence[str], agents: Sequence[str]) -> None:
    both = sorted(set(users) & set(agents))
    if both:
        raise ValidationFailed(
            f"{both} would be both a user and an agent; each participant is one or the other"
        )
