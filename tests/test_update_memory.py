"""Correcting a memory in place: same id, session, sequence and time; keywords and vector follow at once."""

from __future__ import annotations

import numpy as np
import pytest

from mcp_memory.errors import MemoryNotFound, ValidationFailed
from mcp_memory.manager import MemoryManager
from mcp_memory.recall.request import RecallStrategy
from tests.helpers import recall

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

TURNS = [
    {"content": "What did you buy at the market?", "producer": "ana", "timestamp": "2024-05-01T10:00:00Z"},
    {"content": "A basket of ripe tomatoes", "producer": "bot", "role": "assistant", "timestamp": "2024-05-01T10:01:00Z"},
    {"content": "Lovely, thank you", "producer": "ana", "timestamp": "2024-05-01T10:02:00Z"},
]  # fmt: skip


@pytest.fixture
async def stored(manager: MemoryManager) -> list[int]:
    await manager.groups.create_group("g", user_ids=["ana"], agent_ids=["bot"])
    await manager.sessions.open_session("g", "s")
    result = await manager.memories.add_memories("g", "s", TURNS)
    return [m.id for m in result.memories]


async def ids_for(manager: MemoryManager, query: str, strategy: RecallStrategy | None = None) -> list[int]:
    return [hit.id for hit in (await recall(manager, "g", query, strategy=strategy)).hits]


@pytest.mark.sqlite_only
async def test_new_text_keeps_id_session_sequence_and_time_and_is_found_by_its_new_words(
    manager: MemoryManager, stored: list[int]
) -> None:
    answer = stored[1]
    assert answer in await ids_for(manager, "tomatoes")  # loads the in-memory keyword and vector copies
    updated = await manager.memories.update_memory("g", answer, content="A basket of fresh figs")
    memory = updated.memory
    assert (memory.id, memory.session_id, memory.sequence) == (answer, "s", 2)
    assert memory.timestamp.isoformat() == "2024-05-01T10:01:00+00:00"
    assert memory.content == "A basket of fresh figs" and not updated.embedding_pending
    assert answer in await ids_for(manager, "figs", RecallStrategy.keyword_only())
    assert (await ids_for(manager, "figs", RecallStrategy.vector_only()))[0] == answer
    assert answer not in await ids_for(manager, "tomatoes", RecallStrategy.keyword_only())
    [(stored_vector,)] = manager.engine.store.read(
        "SELECT embedding FROM episode_vectors WHERE rowid = ?", (answer,)
    )
    expected = manager.embedder.embed(["bot: A basket of fresh figs"])[0]
    assert np.allclose(np.frombuffer(stored_vector, dtype="<f4"), expected)


async def test_the_neighbours_keyword_context_follows_the_correction(
    manager: MemoryManager, stored: list[int]
) -> None:
    question = stored[0]
    assert question in await ids_for(manager, "tomatoes", RecallStrategy.keyword_only())  # via its reply
    await manager.memories.update_memory("g", stored[1], content="A basket of fresh figs")
    found = await ids_for(manager, "figs", RecallStrategy.keyword_only())
    assert question in found and stored[2] in found
    assert await ids_for(manager, "tomatoes", RecallStrategy.keyword_only()) == []


@pytest.mark.sqlite_only
async def test_metadata_importance_and_type_are_replaced_and_filter_both_searches(
    manager: MemoryManager, stored: list[int]
) -> None:
    target = stored[2]
    await recall(manager, "g", "thank you")
    updated = await manager.memories.update_memory(
        "g", target, metadata={"mood": "happy"}, importance=0.9, memory_type="note"
    )
    assert updated.memory.metadata == {"mood": "happy"} and updated.memory.importance == 0.9
    assert updated.memory.content == "Lovely, thank you"
    for strategy in (RecallStrategy.keyword_only(), RecallStrategy.vector_only()):
        notes = await recall(manager, "g", "thank you", memory_types=["note"], strategy=strategy)
        assert [h.id for h in notes.hits] == [target]
        messages = await recall(manager, "g", "thank you", memory_types=["message"], strategy=strategy)
        assert target not in [h.id for h in messages.hits]
    mood = await recall(manager, "g", "thank you", metadata={"mood": "happy"})
    assert [h.id for h in mood.hits] == [target]
    effective = manager.engine.store.read("SELECT effective_importance FROM episodes WHERE id = ?", (target,))
    assert effective[0][0] == 0.9


async def test_a_retry_of_the_original_add_after_a_correction_is_still_the_same_memory(
    manager: MemoryManager, stored: list[int]
) -> None:
    await manager.memories.update_memory("g", stored[1], content="A basket of fresh figs")
    again = await manager.memories.add_memories("g", "s", TURNS)
    assert [m.id for m in again.memories] == stored and again.duplicates == 3


async def test_what_cannot_be_corrected_is_refused_and_nothing_changes(
    manager: MemoryManager, stored: list[int]
) -> None:
    with pytest.raises(ValidationFailed, match="what to correct"):
        await manager.memories.update_memory("g", stored[0])
    with pytest.raises(ValidationFailed, match="importance"):
        await manager.memories.update_memory("g", stored[0], content="changed", importance=1.5)
    with pytest.raises(ValidationFailed, match="content is empty"):
        await manager.memories.update_memory("g", stored[0], content="   ")
    with pytest.raises(MemoryNotFound, match="memory 999 does not exist in group 'g'"):
        await manager.memories.update_memory("g", 999, content="x")
    await manager.groups.create_group("other", user_ids=["zoe"])
    with pytest.raises(MemoryNotFound):
        await manager.memories.update_memory("other", stored[0], content="x")
    fact = await manager.facts.add_fact("g", "Ana", "likes", "figs")
    with pytest.raises(ValidationFailed, match="add_fact"):
        await manager.memories.update_memory("g", fact.facts[0].memory_id or 0, content="Ana likes plums")
    with pytest.raises(ValidationFailed, match="add_fact"):
        await manager.memories.update_memory("g", stored[0], memory_type="fact")
    recent = await manager.memories.recent("g", "s")
    assert [e.content for e in recent] == [t["content"] for t in TURNS]
