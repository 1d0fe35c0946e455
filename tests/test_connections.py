"""References belong to the MCP connection that took them."""

from __future__ import annotations

import pytest
from mcp import Client

from mcp_memory.manager import MemoryManager
from mcp_memory.server import build_server
from tests.helpers import call

pytestmark = pytest.mark.anyio


async def test_a_disconnecting_client_releases_its_references_and_only_its_own(
    config, manager: MemoryManager
) -> None:
    server = build_server(config, manager=manager)
    await manager.groups.create_group("g", user_ids=["u"])
    async with Client(server, mode="legacy") as staying:
        async with Client(server, mode="legacy") as leaving:
            await call(leaving, "open_session", group_id="g", session_id="s")
            opened = await call(leaving, "open_session", group_id="g", session_id="s")
            assert opened["reference_count"] == 2
            mine = await call(staying, "open_session", group_id="g", session_id="s")
            assert mine["reference_count"] == 3
        # the leaving client's two references went with its connection
        info = await manager.sessions.session_info("g", "s")
        assert info.reference_count == 1
        closed = await call(staying, "close_session", group_id="g", session_id="s")
        assert closed == {**closed, "released": True, "reference_count": 0}


async def test_a_client_cannot_close_a_reference_another_connection_holds(
    config, manager: MemoryManager
) -> None:
    server = build_server(config, manager=manager)
    await manager.groups.create_group("g", user_ids=["u"])
    async with Client(server, mode="legacy") as first, Client(server, mode="legacy") as second:
        await call(first, "open_session", group_id="g", session_id="s")
        result = await call(second, "close_session", group_id="g", session_id="s")
        assert result["released"] is False and result["reference_count"] == 1


async def test_stateless_protocol_references_last_until_the_client_goes(
    config, manager: MemoryManager
) -> None:
    server = build_server(config, manager=manager)
    await manager.groups.create_group("g", user_ids=["u"])
    async with Client(server) as modern:
        assert modern.protocol_version == "2026-07-28"
        await call(modern, "open_session", group_id="g", session_id="s")
        assert (await manager.sessions.session_info("g", "s")).reference_count == 1
        closed = await call(modern, "close_session", group_id="g", session_id="s")
        assert closed["released"] is True
        await call(modern, "open_session", group_id="g", session_id="s")
    assert (await manager.sessions.session_info("g", "s")).reference_count == 0


async def test_a_server_that_owns_its_manager_shuts_it_down_with_its_lifespan(config) -> None:
    server = build_server(config)
    async with Client(server) as client:
        await call(client, "create_group", group_id="g", user_ids=["u"])
        await call(client, "open_session", group_id="g", session_id="s")
    async with Client(server) as again:
        info = await call(again, "open_session", group_id="g", session_id="s", mode="open")
        assert info["reference_count"] == 1 and info["created"] is False
