"""Importing the official server-memory's knowledge graph: a file that server (0.6.3, npm 2026.8.31) wrote
itself (tests/data/server_memory.jsonl), its entities' observations as memories, entities and relations as
facts, idempotent like any import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcp_memory.config import Config
from mcp_memory.errors import ValidationFailed
from mcp_memory.manager import MemoryManager
from tests.helpers import recall
from tests.transfer_data import tables

pytestmark = pytest.mark.anyio

GRAPH = Path(__file__).parent / "data" / "server_memory.jsonl"


def manager_on(db: Path) -> MemoryManager:
    return MemoryManager(Config(db_path=db, embedder="hashing"))


async def test_observations_become_memories_and_entities_and_relations_become_facts(tmp_path: Path) -> None:
    async with manager_on(tmp_path / "m.db") as manager:
        result = await manager.transfer.import_memories(GRAPH)
        assert result.format == "server-memory"
        assert (result.groups.added, result.sessions.added) == (1, 1)
        assert (result.memories.added, result.facts.added, result.vectors_indexed) == (9, 5, 9)
        group = await manager.groups.get_group("memory")
        assert (group.user_ids, group.agent_ids) == ([], ["server-memory"])
        rows = manager.engine.store.session_episodes("memory", "server-memory")
        observations = [(r.content, r.metadata) for r in rows if r.memory_type == "observation"]
        assert observations == [
            ("Ana_Silva: Lives in Lisbon", {"entity": "Ana_Silva", "entity_type": "person"}),
            ("Ana_Silva: Speaks Portuguese and English", {"entity": "Ana_Silva", "entity_type": "person"}),
            ("Ana_Silva: Prefers morning meetings", {"entity": "Ana_Silva", "entity_type": "person"}),
            ("Acme Corp: Makes anvils", {"entity": "Acme Corp", "entity_type": "organization"}),
        ]
        facts = (await manager.facts.list_facts("memory")).facts
        assert sorted((f.subject, f.predicate, f.object, f.current) for f in facts) == [
            ("Acme Corp", "is a", "organization", True),
            ("Ana_Silva", "is a", "person", True),
            ("Ana_Silva", "was born in", "Porto", True),
            ("Ana_Silva", "works_at", "Acme Corp", True),
            ("Porto", "is a", "city", True),
        ]
        hits = (await recall(manager, "memory", "where does Ana work?", limit=3)).hits
        assert "Ana_Silva works_at Acme Corp" in [hit.content for hit in hits]


async def test_importing_the_graph_again_adds_only_what_is_new(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    async with manager_on(db) as manager:
        await manager.transfer.import_memories(GRAPH)
    before = tables(db)
    async with manager_on(db) as manager:
        again = await manager.transfer.import_memories(GRAPH)
    assert tables(db) == before
    assert (again.memories.added, again.memories.existing, again.facts.added) == (0, 9, 0)
    assert (again.groups.existing, again.sessions.existing) == (1, 1)
    grown = tmp_path / "grown.jsonl"
    entity = {"type": "entity", "name": "Ana_Silva", "entityType": "person", "observations": ["Has a cat"]}
    grown.write_text(GRAPH.read_text() + "\n" + json.dumps(entity), encoding="utf-8")
    async with manager_on(db) as manager:
        result = await manager.transfer.import_memories(grown)
        rows = manager.engine.store.session_episodes("memory", "server-memory")
    assert (result.memories.added, result.memories.existing, result.facts.added) == (1, 9, 0)
    assert rows[-1].content == "Ana_Silva: Has a cat" and rows[-1].sequence == 10


async def test_the_graph_goes_into_the_group_asked_for_which_gains_the_agent(tmp_path: Path) -> None:
    async with manager_on(tmp_path / "m.db") as manager:
        await manager.groups.create_group("ana", ["ana"], ["bot"])
        result = await manager.transfer.import_memories(GRAPH, "ana")
        assert result.participants_added == {"ana": ["server-memory"]}
        assert (result.groups.existing, result.memories.added) == (1, 9)
        assert (await manager.groups.get_group("ana")).agent_ids == ["bot", "server-memory"]
        facts = (await manager.facts.list_facts("ana", subject="ana_silva", predicate="is a")).facts
        assert [f.object for f in facts] == ["person"]


async def test_lines_of_other_types_are_skipped_and_a_bad_line_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        '{"type": "note", "text": "a fork\'s own line"}\n\n' + GRAPH.read_text(), encoding="utf-8"
    )
    async with manager_on(db) as manager:
        result = await manager.transfer.import_memories(extra)
    assert (result.lines_skipped, result.memories.added) == (1, 9)
    before = tables(db)
    bad = tmp_path / "bad.jsonl"
    lines = GRAPH.read_text().splitlines()
    lines.insert(3, json.dumps({"type": "relation", "from": "Ana_Silva", "to": " ", "relationType": "knows"}))
    bad.write_text("\n".join(lines), encoding="utf-8")
    async with manager_on(db) as manager:
        with pytest.raises(
            ValidationFailed, match=r"^line 4: relation\.to: is empty or only whitespace; nothing"
        ):
            await manager.transfer.import_memories(bad, "other")
        assert [g.group_id for g in await manager.groups.list_groups()] == ["memory"]
    assert tables(db) == before
