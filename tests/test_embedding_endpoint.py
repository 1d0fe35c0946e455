"""The server with an OpenAI-compatible embedding endpoint (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mcp_memory.config import Config
from mcp_memory.errors import ConfigurationError
from mcp_memory.manager import MemoryManager
from tests.fake_openai import FakeOpenAI, serve
from tests.helpers import recall

pytestmark = pytest.mark.anyio


@pytest.fixture
def endpoint() -> Iterator[FakeOpenAI]:
    yield from serve(dimension=16)


def endpoint_config(db_path: Path, endpoint: FakeOpenAI, dimension: int | None = None) -> Config:
    return Config(
        db_path=db_path,
        embedder="openai",
        embedding_base_url=endpoint.base_url,
        embedding_api_key="sk-test",
        embedding_model="tiny-embed",
        embedding_dimension=dimension,
    )


async def test_memories_are_embedded_by_the_endpoint_and_recalled_by_meaning(
    db_path: Path, endpoint: FakeOpenAI
) -> None:
    async with MemoryManager(endpoint_config(db_path, endpoint, 16)) as manager:
        await manager.groups.create_group("g", user_ids=["u"])
        async with manager.sessions.created("g", "s") as session:
            await manager.memories.add_memories(
                session.group_id,
                session.session_id,
                [{"content": "the garden shed needs painting", "producer": "u"}],
            )
            result = await recall(manager, "g", "shed painting")
    assert result.vector_search and "vector" in result.hits[0].matched_by
    embed_calls = endpoint.requests_to("/embeddings")
    assert embed_calls[0].authorization == "Bearer sk-test"
    assert embed_calls[0].json["model"] == "tiny-embed"


async def test_when_the_endpoint_fails_memories_are_kept_and_indexed_later(
    db_path: Path, endpoint: FakeOpenAI
) -> None:
    async with MemoryManager(endpoint_config(db_path, endpoint, 16)) as manager:
        await manager.groups.create_group("g", user_ids=["u"])
        endpoint.queue_embeddings(500, 500, 500)  # the add's request and the client's two retries
        async with manager.sessions.created("g", "s") as session:
            added = await manager.memories.add_memories(
                session.group_id,
                session.session_id,
                [{"content": "the spare key is under the blue pot", "producer": "u"}],
            )
        assert added.embedding_pending and added.stored == 1
        stats = await manager.upkeep.stats()
        assert stats.pending_vectors == stats.episodes_by_tier["pending_vectors"] == 1
        assert await manager.upkeep.backfill() == 1
        assert (await manager.upkeep.stats()).pending_vectors == 0
        result = await recall(manager, "g", "where is the key")
        assert result.hits[0].id == added.memories[0].id


async def test_recall_falls_back_to_keywords_while_the_endpoint_is_down(
    db_path: Path, endpoint: FakeOpenAI
) -> None:
    async with MemoryManager(endpoint_config(db_path, endpoint, 16)) as manager:
        await manager.groups.create_group("g", user_ids=["u"])
        async with manager.sessions.created("g", "s") as session:
            await manager.memories.add_memories(
                session.group_id,
                session.session_id,
                [{"content": "dentist appointment on friday", "producer": "u"}],
            )
        endpoint.queue_embeddings(503, 503, 503)
        result = await recall(manager, "g", "dentist")
    assert not result.vector_search
    assert [h.content for h in result.hits] == ["dentist appointment on friday"]


async def test_an_unknown_dimension_is_probed_once_then_read_from_the_database(
    db_path: Path, endpoint: FakeOpenAI
) -> None:
    async with MemoryManager(endpoint_config(db_path, endpoint)) as manager:
        assert manager.embedder.dimension == 16
    probes = len(endpoint.requests_to("/embeddings"))
    assert probes == 1
    async with MemoryManager(endpoint_config(db_path, endpoint)) as manager:
        assert manager.embedder.dimension == 16
    assert len(endpoint.requests_to("/embeddings")) == probes


async def test_an_unreachable_endpoint_of_unknown_dimension_fails_at_start_with_the_fix(
    db_path: Path, endpoint: FakeOpenAI
) -> None:
    config = endpoint_config(db_path, endpoint)
    endpoint.stop()
    with pytest.raises(ConfigurationError, match="MCP_MEMORY_EMBEDDING_DIMENSION"):
        await MemoryManager(config).start()
