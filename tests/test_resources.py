"""The resources: groups, one group, one session and stats, read through a real in-process MCP client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.helpers import call

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP = "household"
SESSION = "monday"
DEFAULT_CONFIGURATION = {
    "short_term": {"enabled": True, "max_episodes": 20, "max_tokens": 4000},
    "long_term": {"enabled": True, "min_similarity": 0.2},
}


async def read_json(client: Client, uri: str) -> Any:
    """Read a resource (never from the client's cache) and parse its one JSON text."""
    result = await client.read_resource(uri, cache_mode="bypass")
    [content] = result.contents
    assert content.uri == uri
    assert content.mime_type == "application/json"
    return json.loads(content.text)


async def read_error(client: Client, uri: str) -> str:
    """Read a resource that must fail; returns the message the client gets."""
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri, cache_mode="bypass")
    return caught.value.message


async def ready(client: Client, group_id: str = GROUP, session_id: str = SESSION, **session: Any) -> None:
    await call(client, "create_group", group_id=group_id, user_ids=["alice", "bob"], agent_ids=["helper"])
    await call(client, "open_session", group_id=group_id, session_id=session_id, **session)


async def add(
    client: Client, content: str, group_id: str = GROUP, session_id: str = SESSION, **extra: Any
) -> int:
    extra.setdefault("producer", "alice")
    result = await call(
        client, "add_memory", group_id=group_id, session_id=session_id, content=content, **extra
    )
    return result["memories"][0]["id"]


def when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text!r} is not timezone-aware"
    return moment


# -- listing ----------------------------------------------------------------------------------


async def test_the_server_lists_the_static_resources_and_the_templates(client: Client) -> None:
    resources = {str(r.uri): r for r in (await client.list_resources()).resources}
    assert set(resources) == {"memory://groups", "memory://stats"}
    assert all(r.mime_type == "application/json" for r in resources.values())
    assert all(r.description for r in resources.values())
    templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
    assert set(templates) == {
        "memory://groups/{group_id}",
        "memory://groups/{group_id}/sessions/{session_id}",
        "memory://groups/{group_id}/facts{?subject,predicate}",
    }
    assert all(t.mime_type == "application/json" for t in templates.values())
    assert all(t.description for t in templates.values())


# -- memory://groups --------------------------------------------------------------------------


async def test_groups_is_an_empty_list_before_any_group_exists(client: Client) -> None:
    assert await read_json(client, "memory://groups") == []


async def test_groups_lists_every_group_with_participants_and_counts(client: Client) -> None:
    await ready(client, "smiths")
    await call(client, "open_session", group_id="smiths", session_id="tuesday")
    await add(client, "one", group_id="smiths")
    await add(client, "two", group_id="smiths", session_id="tuesday")
    await add(client, "three", group_id="smiths", session_id="tuesday")
    await call(
        client,
        "create_group",
        group_id="joneses",
        agent_ids=["bot"],
        description="The Joneses",
        configuration={"short_term": {"max_episodes": 5}},
    )
    groups = await read_json(client, "memory://groups")
    assert [g["group_id"] for g in groups] == ["joneses", "smiths"]
    joneses, smiths = groups
    assert smiths["user_ids"] == ["alice", "bob"]
    assert smiths["agent_ids"] == ["helper"]
    assert smiths["session_count"] == 2
    assert smiths["episode_count"] == 3
    assert joneses["user_ids"] == []
    assert joneses["agent_ids"] == ["bot"]
    assert joneses["description"] == "The Joneses"
    assert joneses["configuration"] == {"short_term": {"max_episodes": 5}}
    assert joneses["session_count"] == 0
    assert joneses["episode_count"] == 0
    assert when(joneses["created_at"]).utcoffset() == timedelta(0)


async def test_groups_reflects_changes_between_reads(client: Client) -> None:
    assert await client.read_resource("memory://groups") is not None
    await call(client, "create_group", group_id="late", user_ids=["u"])
    result = await client.read_resource("memory://groups")
    assert [g["group_id"] for g in json.loads(result.contents[0].text)] == ["late"]


# -- memory://groups/{group_id} ---------------------------------------------------------------


async def test_a_group_shows_the_group_and_its_sessions(client: Client) -> None:
    await ready(client)
    await call(
        client,
        "open_session",
        group_id=GROUP,
        session_id="tuesday",
        configuration={"short_term": {"max_episodes": 3}},
    )
    await call(client, "open_session", group_id=GROUP, session_id="tuesday")
    await add(client, "monday note")
    await add(client, "tuesday note", session_id="tuesday")
    await add(client, "another tuesday note", session_id="tuesday")
    detail = await read_json(client, f"memory://groups/{GROUP}")
    assert detail["group"]["group_id"] == GROUP
    assert detail["group"]["user_ids"] == ["alice", "bob"]
    assert detail["group"]["agent_ids"] == ["helper"]
    sessions = {s["session_id"]: s for s in detail["sessions"]}
    assert set(sessions) == {SESSION, "tuesday"}
    assert sessions[SESSION]["episode_count"] == 1
    assert sessions[SESSION]["reference_count"] == 1
    assert sessions[SESSION]["configuration"] == DEFAULT_CONFIGURATION
    assert sessions["tuesday"]["episode_count"] == 2
    assert sessions["tuesday"]["reference_count"] == 2
    assert sessions["tuesday"]["configuration"]["short_term"]["max_episodes"] == 3
    assert all(s["group_id"] == GROUP for s in detail["sessions"])


async def test_a_group_without_sessions_has_an_empty_session_list(client: Client) -> None:
    await call(client, "create_group", group_id=GROUP, user_ids=["alice"])
    detail = await read_json(client, f"memory://groups/{GROUP}")
    assert detail["group"]["group_id"] == GROUP
    assert detail["sessions"] == []


async def test_a_group_shows_closed_sessions_with_no_references(client: Client) -> None:
    await ready(client)
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    detail = await read_json(client, f"memory://groups/{GROUP}")
    [session] = detail["sessions"]
    assert session["reference_count"] == 0


async def test_a_group_whose_id_has_a_space_is_readable_percent_encoded(client: Client) -> None:
    await call(client, "create_group", group_id="team a", user_ids=["alice"])
    detail = await read_json(client, "memory://groups/team%20a")
    assert detail["group"]["group_id"] == "team a"


async def test_an_unknown_group_is_a_clear_error_saying_to_call_create_group(client: Client) -> None:
    message = await read_error(client, "memory://groups/ghosts")
    assert "ghosts" in message
    assert "does not exist" in message
    assert "create_group" in message


async def test_groups_never_show_another_groups_sessions(client: Client) -> None:
    await ready(client, "smiths", "shared-name")
    await ready(client, "joneses", "shared-name")
    await add(client, "smiths only", group_id="smiths", session_id="shared-name")
    detail = await read_json(client, "memory://groups/joneses")
    [session] = detail["sessions"]
    assert session["group_id"] == "joneses"
    assert session["episode_count"] == 0


# -- memory://groups/{group_id}/sessions/{session_id} -----------------------------------------


async def test_a_session_shows_its_info_and_recent_episodes_oldest_first(client: Client) -> None:
    await ready(client)
    ids = [await add(client, f"turn {i}") for i in range(3)]
    await add(client, "the answer", producer="helper", role="assistant", metadata={"topic": "x"})
    detail = await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    info = detail["session"]
    assert info["group_id"] == GROUP
    assert info["session_id"] == SESSION
    assert info["reference_count"] == 1
    assert info["episode_count"] == 4
    assert info["configuration"] == DEFAULT_CONFIGURATION
    assert info["created"] is False
    recent = detail["recent"]
    assert [e["content"] for e in recent] == ["turn 0", "turn 1", "turn 2", "the answer"]
    assert [e["id"] for e in recent[:3]] == ids
    assert [e["sequence"] for e in recent] == [1, 2, 3, 4]
    last = recent[-1]
    assert last["producer"] == "helper"
    assert last["role"] == "assistant"
    assert last["metadata"] == {"topic": "x"}
    assert last["session_id"] == SESSION
    assert last["group_id"] == GROUP


async def test_a_session_recent_window_is_bounded_by_its_configuration(client: Client) -> None:
    await ready(client, configuration={"short_term": {"max_episodes": 2}})
    await call(
        client,
        "add_memory",
        group_id=GROUP,
        session_id=SESSION,
        memories=[{"content": f"line {i}", "producer": "alice"} for i in range(5)],
    )
    detail = await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    assert detail["session"]["episode_count"] == 5
    assert [e["content"] for e in detail["recent"]] == ["line 3", "line 4"]


async def test_a_session_shows_stored_timestamps_in_utc(client: Client) -> None:
    await ready(client)
    await add(client, "offset time", timestamp="2025-03-01T16:30:00+02:00")
    await add(client, "epoch ms", timestamp=1_740_839_400_000)
    detail = await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    expected = datetime(2025, 3, 1, 14, 30, tzinfo=UTC)
    for episode in detail["recent"]:
        moment = when(episode["timestamp"])
        assert moment == expected
        assert moment.utcoffset() == timedelta(0)


async def test_a_session_stores_json_looking_content_verbatim(client: Client) -> None:
    await ready(client)
    await add(client, '{"a": 1}')
    await add(client, "[1,2]")
    detail = await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    assert [e["content"] for e in detail["recent"]] == ['{"a": 1}', "[1,2]"]


async def test_reading_a_session_does_not_change_its_reference_count(client: Client) -> None:
    await ready(client)
    for _ in range(3):
        await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    info = await call(client, "open_session", group_id=GROUP, session_id=SESSION)
    assert info["reference_count"] == 2


async def test_a_closed_session_is_still_readable(client: Client) -> None:
    await ready(client)
    await add(client, "kept after closing")
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    detail = await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    assert detail["session"]["reference_count"] == 0
    assert [e["content"] for e in detail["recent"]] == ["kept after closing"]


async def test_a_session_with_short_term_memory_off_has_no_recent_episodes(client: Client) -> None:
    await ready(client, configuration={"short_term": {"enabled": False}})
    await add(client, "hidden from the window")
    detail = await read_json(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    assert detail["session"]["episode_count"] == 1
    assert detail["recent"] == []


async def test_an_unknown_session_is_a_clear_error_saying_what_to_do(client: Client) -> None:
    await ready(client)
    message = await read_error(client, f"memory://groups/{GROUP}/sessions/nowhere")
    assert "nowhere" in message
    assert "does not exist" in message
    assert "open_session" in message or f"memory://groups/{GROUP}" in message, message


async def test_a_session_in_an_unknown_group_is_a_clear_error_saying_to_call_create_group(
    client: Client,
) -> None:
    message = await read_error(client, f"memory://groups/ghosts/sessions/{SESSION}")
    assert "ghosts" in message
    assert "create_group" in message


async def test_a_deleted_session_is_no_longer_readable(client: Client) -> None:
    await ready(client)
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    await call(client, "delete_session", group_id=GROUP, session_id=SESSION)
    message = await read_error(client, f"memory://groups/{GROUP}/sessions/{SESSION}")
    assert "does not exist" in message


# -- memory://stats ---------------------------------------------------------------------------


async def test_stats_on_an_empty_database(client: Client, db_path: Path) -> None:
    stats = await read_json(client, "memory://stats")
    assert stats["database_path"] == str(db_path)
    assert stats["database_bytes"] > 0
    assert stats["schema_version"] >= 1
    assert stats["embedder"] == "hashing-384"
    assert stats["embedding_dimension"] == 384
    assert stats["episodes_by_type"] == {}
    assert stats["groups"] == []
    assert stats["largest_sessions"] == []
    assert stats["pending_vectors"] == 0
    assert stats["live_sessions"] == 0
    assert stats["open_references"] == 0


async def test_stats_counts_by_group_session_and_type(client: Client, db_path: Path) -> None:
    await ready(client, "smiths")
    await call(client, "open_session", group_id="smiths", session_id="tuesday")
    await ready(client, "joneses")
    await add(client, "a", group_id="smiths")
    await add(client, "b", group_id="smiths", memory_type="note")
    await add(client, "c", group_id="smiths", session_id="tuesday", memory_type="fact")
    await call(
        client,
        "add_memory",
        group_id="joneses",
        session_id=SESSION,
        memories=[{"content": f"j{i}", "producer": "bob"} for i in range(3)],
    )
    stats = await read_json(client, "memory://stats")
    assert stats["episodes_by_type"] == {"message": 4, "note": 1, "fact": 1}
    groups = {g["group_id"]: g for g in stats["groups"]}
    assert groups == {
        "joneses": {"group_id": "joneses", "sessions": 1, "episodes": 3},
        "smiths": {"group_id": "smiths", "sessions": 2, "episodes": 3},
    }
    sessions = [(s["group_id"], s["session_id"], s["episodes"]) for s in stats["largest_sessions"]]
    assert sessions[0] == ("joneses", SESSION, 3)
    assert sorted(sessions[1:]) == [("smiths", SESSION, 2), ("smiths", "tuesday", 1)]
    assert stats["database_bytes"] > 0
    assert stats["database_path"] == str(db_path)
    assert stats["embedder"] == "hashing-384"
    assert stats["pending_vectors"] == 0
    assert stats["live_sessions"] == 3
    assert stats["open_references"] == 3


async def test_stats_follow_deletions(client: Client) -> None:
    await ready(client)
    doomed = await add(client, "to go")
    await add(client, "to stay", memory_type="note")
    await call(client, "close_session", group_id=GROUP, session_id=SESSION)
    before = await read_json(client, "memory://stats")
    assert before["open_references"] == 0
    await call(client, "delete_memory", group_id=GROUP, session_id=SESSION, memory_ids=[doomed])
    after = await read_json(client, "memory://stats")
    assert after["episodes_by_type"] == {"note": 1}
    assert after["groups"] == [{"group_id": GROUP, "sessions": 1, "episodes": 1}]
