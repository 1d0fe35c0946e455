"""Save and load: an export imported into another database exports again the same, field by field; importing
is idempotent (twice, or back into the origin, changes nothing); ids, sequences and references follow the
rows they point at; a bad line anywhere writes nothing and names its line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcp_memory.config import Config
from mcp_memory.errors import ValidationFailed
from mcp_memory.llm.embeddings import HashingEmbedder
from mcp_memory.manager import MemoryManager
from mcp_memory.services.transfer import Progress
from tests.helpers import recall
from tests.transfer_data import fill, read_export, tables, write_export

pytestmark = pytest.mark.anyio


def manager_on(db: Path, embedder: HashingEmbedder | None = None) -> MemoryManager:
    return MemoryManager(Config(db_path=db, embedder="hashing"), embedder=embedder)


@pytest.fixture
async def origin(tmp_path: Path) -> Path:
    """A database with every kind of record, exported to origin.jsonl beside it."""
    db = tmp_path / "origin.db"
    async with manager_on(db) as manager:
        await fill(manager)
        await manager.transfer.export_memories(tmp_path / "origin.jsonl")
    return db


async def import_into(db: Path, path: Path, group_id: str | None = None, **options: Any) -> Any:
    async with manager_on(db) as manager:
        return await manager.transfer.import_memories(path, group_id, **options)


async def export_from(db: Path, path: Path, groups: Sequence[str] | None = None) -> list[dict[str, Any]]:
    async with manager_on(db) as manager:
        await manager.transfer.export_memories(path, groups)
    return read_export(path)


async def a_database_with_other_memories(db: Path) -> None:
    """Rows of its own first, so imported memories and facts get other ids than they had."""
    async with manager_on(db) as manager:
        await manager.groups.create_group("other", ["olga"])
        await manager.sessions.open_session("other", "s")
        await manager.memories.add_memories(
            "other", "s", [{"content": f"note {i}", "producer": "olga"} for i in range(5)]
        )
        await manager.facts.add_fact("other", "Olga", "plays", "chess")


def by_kind(lines: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["kind"] == kind]


def expected_after_import(source: list[dict[str, Any]], copy: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The source's lines as the copy should have them: memory and fact ids mapped (by position: sessions and
    sequences come back as they were), and the documented changes: a memory without a dedup key has the
    import's key, `import<US>source database<US>source id`; metadata naming facts or source episodes follows."""
    memories = {
        m["id"]: c["id"] for m, c in zip(by_kind(source, "memory"), by_kind(copy, "memory"), strict=True)
    }
    facts = {f["id"]: c["id"] for f, c in zip(by_kind(source, "fact"), by_kind(copy, "fact"), strict=True)}
    database_id = source[0]["database_id"]
    expected = []
    for line in source[1:]:
        line = json.loads(json.dumps(line))
        if line["kind"] == "memory":
            if line["dedup_key"] is None:
                line["dedup_key"] = f"import\x1f{database_id}\x1f{line['id']}"
            line["id"] = memories[line["id"]]
            metadata = line["metadata"]
            if "fact" in metadata:
                metadata["fact"]["id"] = facts[metadata["fact"]["id"]]
            if "source_episode_ids" in metadata:
                metadata["source_episode_ids"] = [memories[i] for i in metadata["source_episode_ids"]]
        elif line["kind"] == "fact":
            line["id"], line["memory_id"] = facts[line["id"]], memories[line["memory_id"]]
        expected.append(line)
    return expected


async def test_an_export_imported_elsewhere_exports_again_the_same_field_by_field(
    origin: Path, tmp_path: Path
) -> None:
    source = read_export(tmp_path / "origin.jsonl")
    assert {line["kind"] for line in source} == {
        "mcp-memory-export", "group", "session", "memory", "fact", "rolling_summary", "summary_count"
    }  # fmt: skip
    copy_db = tmp_path / "copy.db"
    await a_database_with_other_memories(copy_db)
    result = await import_into(copy_db, tmp_path / "origin.jsonl")
    assert (result.memories.added, result.memories.existing) == (source[0]["counts"]["memories"], 0)
    assert (result.facts.added, result.groups.added, result.sessions.added) == (4, 2, 5)
    assert (result.rolling_summaries.added, result.lines_skipped, result.vectors_pending) == (1, 0, 0)
    copy = await export_from(copy_db, tmp_path / "copy.jsonl", ["ana", "team"])
    assert {k: v for k, v in copy[0].items() if k not in ("exported_at", "database_id")} == {
        k: v for k, v in source[0].items() if k not in ("exported_at", "database_id")
    }
    assert copy[0]["database_id"] != source[0]["database_id"]
    assert by_kind(copy, "memory")[0]["id"] != by_kind(source, "memory")[0]["id"]  # ids were mapped
    expected = expected_after_import(source, copy)
    assert len(copy[1:]) == len(expected)
    for got, wanted in zip(copy[1:], expected, strict=True):
        assert got == wanted


async def test_a_groups_owner_travels_with_it_and_groups_without_one_export_as_before(tmp_path: Path) -> None:
    async with manager_on(tmp_path / "a.db") as manager:
        await manager.groups.create_group("team", ["ana"], owner="alice")
        await manager.groups.create_group("local", ["ana"])
    lines = await export_from(tmp_path / "a.db", tmp_path / "a.jsonl")
    groups = {line["group_id"]: line for line in lines if line["kind"] == "group"}
    assert groups["team"]["owner"] == "alice" and "owner" not in groups["local"]
    await import_into(tmp_path / "b.db", tmp_path / "a.jsonl")
    async with manager_on(tmp_path / "b.db") as manager:
        assert (await manager.groups.get_group("team")).owner == "alice"
        assert (await manager.groups.get_group("local")).owner is None


async def test_imported_memories_are_found_and_indexed_as_in_their_session(
    origin: Path, tmp_path: Path
) -> None:
    copy_db = tmp_path / "copy.db"
    result = await import_into(copy_db, tmp_path / "origin.jsonl")
    assert result.vectors_indexed == result.memories.added - 2  # the private session's, and a summary's
    async with manager_on(copy_db) as manager:
        hits = (await recall(manager, "ana", "sunny weather", limit=3)).hits
        assert "sunny, 24C" in [hit.content for hit in hits]
        assert any("vector" in hit.matched_by for hit in hits)
        facts = (await manager.facts.list_facts("ana", subject="ana", predicate="lives in")).facts
        assert [(f.object, f.current) for f in facts] == [("Porto", True), ("Lisbon", False)]
        assert await manager.memories.rolling_summary("ana", "chat") is not None
        private = await manager.sessions.session_info("ana", "private")
        assert private.configuration["long_term"]["enabled"] is False
        chat = manager.store.session_episodes("ana", "chat")
        call = next(e for e in chat if e.tool_calls)
        assert call.tool_calls[0].model_dump() == {  # type: ignore[index]
            "id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}
        }  # fmt: skip
        answer = next(e for e in chat if e.tool_call_id)
        assert (answer.name, answer.step, answer.metadata) == (
            "get_weather",
            2,
            {"score": 0.75, "source": "api"},
        )


async def test_importing_twice_adds_nothing_and_changes_nothing(origin: Path, tmp_path: Path) -> None:
    copy_db = tmp_path / "copy.db"
    first = await import_into(copy_db, tmp_path / "origin.jsonl")
    before = tables(copy_db)
    again = await import_into(copy_db, tmp_path / "origin.jsonl")
    assert tables(copy_db) == before
    assert (again.memories.added, again.memories.existing) == (0, first.memories.added)
    assert (again.facts.added, again.facts.existing) == (0, first.facts.added)
    assert (again.groups.added, again.sessions.added, again.rolling_summaries.added) == (0, 0, 0)


async def test_importing_an_export_back_into_its_origin_changes_nothing(origin: Path, tmp_path: Path) -> None:
    before = tables(origin)
    result = await import_into(origin, tmp_path / "origin.jsonl")
    assert tables(origin) == before
    assert result.memories.added == 0 and result.facts.added == 0
    # the copy's export (its dedup keys are the import's) is recognised in the origin too
    copy_db = tmp_path / "copy.db"
    await import_into(copy_db, tmp_path / "origin.jsonl")
    await export_from(copy_db, tmp_path / "copy.jsonl")
    result = await import_into(origin, tmp_path / "copy.jsonl")
    assert tables(origin) == before
    assert (result.memories.added, result.facts.added, result.sessions.added) == (0, 0, 0)


async def test_into_a_session_that_has_memories_they_follow_them_and_every_reference_follows(
    origin: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.db"
    async with manager_on(target) as manager:
        await manager.groups.create_group("ana", ["ana"], ["bot"])  # "weather" is missing
        await manager.sessions.open_session("ana", "chat", configuration={"short_term": {"max_episodes": 3}})
        await manager.memories.add_memories(
            "ana", "chat", [{"content": f"earlier {i}", "producer": "ana"} for i in (1, 2)]
        )
    result = await import_into(target, tmp_path / "origin.jsonl", "ana")
    assert result.participants_added == {"ana": ["weather"]}
    assert (result.groups.existing, result.sessions.existing, result.sessions.added) == (1, 1, 2)
    async with manager_on(target) as manager:
        info = await manager.sessions.session_info("ana", "chat")
        assert info.configuration["short_term"]["max_episodes"] == 3  # an existing session keeps its own
        store = manager.engine.store
        rows = store.session_episodes("ana", "chat")
        assert [r.content for r in rows[:3]] == [
            "earlier 1",
            "earlier 2",
            "What is the weather in Lisbon today?",
        ]
        by_sequence = {r.sequence: r for r in rows}
        assert sorted(by_sequence) == list(range(1, len(rows) + 1))
        summary = next(r for r in rows if r.memory_type == "summary")
        sources = summary.metadata["source_episode_ids"]
        assert [store.fetch_episodes([i])[i].content for i in sources[:2]] == [
            "What is the weather in Lisbon today?", 'called get_weather({"city": "Lisbon"})'
        ]  # fmt: skip
        rolled = store.read("SELECT covered_through_sequence, omitted_sequences FROM rolling_summaries")[0]
        assert (rolled[0], json.loads(rolled[1])) == (5, [4])  # were 3 and [2]: two memories came first
        fact_memory = next(r for r in store.session_episodes("ana", "facts") if "Porto" in r.content)
        fact = store.read("SELECT id FROM facts WHERE memory_id = ?", (fact_memory.id,))[0][0]
        assert fact_memory.metadata["fact"]["id"] == fact


async def test_only_the_group_asked_for_is_imported(origin: Path, tmp_path: Path) -> None:
    source = read_export(tmp_path / "origin.jsonl")
    copy_db = tmp_path / "copy.db"
    result = await import_into(copy_db, tmp_path / "origin.jsonl", "team")
    team_lines = [line for line in source[1:] if line["group_id"] == "team"]
    assert result.lines_skipped == len(source) - 1 - len(team_lines)
    assert (result.groups.added, result.memories.added) == (1, len(by_kind(team_lines, "memory")))
    async with manager_on(copy_db) as manager:
        assert [g.group_id for g in await manager.groups.list_groups()] == ["team"]
    with pytest.raises(ValidationFailed, match=r"the file has no group 'nobody'; it holds \['ana', 'team'\]"):
        await import_into(copy_db, tmp_path / "origin.jsonl", "nobody")


async def test_a_participant_in_the_other_role_here_is_refused_before_anything_is_written(
    origin: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.db"
    async with manager_on(target) as manager:
        await manager.groups.create_group("ana", ["ana", "weather"])
    before = tables(target)
    with pytest.raises(
        ValidationFailed, match=r"group 'ana' exists here with \['weather'\] in the other role"
    ):
        await import_into(target, tmp_path / "origin.jsonl")
    assert tables(target) == before


def corrupt(lines: list[dict[str, Any]], how: str) -> tuple[list[dict[str, Any]], int, str]:
    """The lines with one fault, the line number the error must name, and what it must say."""
    lines = json.loads(json.dumps(lines))
    memories = [i for i, line in enumerate(lines) if line["kind"] == "memory"]
    last = memories[-1]
    if how == "importance":
        lines[last]["importance"] = 1.5
        return lines, last + 1, "memory.importance: input should be less than or equal to 1"
    if how == "kind":
        lines[last]["kind"] = "memories"
        return lines, last + 1, "has no known kind"
    if how == "unknown field":
        lines[last]["mood"] = "happy"
        return lines, last + 1, "memory.mood: extra inputs are not permitted"
    if how == "fact without its memory":
        fact = next(i for i, line in enumerate(lines) if line["kind"] == "fact")
        lines[fact]["memory_id"] = 999_999
        return lines, fact + 1, "fact.memory_id 999999 is not a memory of the session listed before it"
    if how == "out of order":
        moved = lines.pop(memories[0])
        lines.insert(1, moved)
        return lines, 2, "must come after that group's line"
    if how == "producer":
        lines[last]["producer"] = "mallory"
        return lines, last + 1, "is not a participant of group"
    if how == "time":
        lines[last]["timestamp"] = "yesterday"
        return lines, last + 1, "memory.timestamp: timestamp 'yesterday' is not a time"
    assert how == "version"
    lines[0]["version"] = 2
    return lines, 1, "newer than this mcp-memory reads (1); upgrade mcp-memory"


@pytest.mark.parametrize(
    "how",
    [
        "importance",
        "kind",
        "unknown field",
        "fact without its memory",
        "out of order",
        "producer",
        "time",
        "version",
    ],
)
async def test_a_bad_line_anywhere_writes_nothing_and_names_its_line(
    origin: Path, tmp_path: Path, how: str
) -> None:
    lines, number, message = corrupt(read_export(tmp_path / "origin.jsonl"), how)
    bad = write_export(tmp_path / "bad.jsonl", lines)
    target = tmp_path / "target.db"
    await a_database_with_other_memories(target)
    before = tables(target)
    with pytest.raises(ValidationFailed) as caught:
        await import_into(target, bad)
    assert str(caught.value).startswith(f"line {number}"), str(caught.value)
    assert message in str(caught.value) and str(caught.value).endswith("nothing was imported")
    assert tables(target) == before


async def test_a_truncated_or_damaged_file_is_refused_whole(origin: Path, tmp_path: Path) -> None:
    text = (tmp_path / "origin.jsonl").read_text(encoding="utf-8")
    target = tmp_path / "target.db"
    await a_database_with_other_memories(target)
    before = tables(target)
    cases = {
        "cut.jsonl": ("".join(text.splitlines(keepends=True)[:-3]), "it is incomplete (a truncated copy?)"),
        "half.jsonl": (text[: len(text) // 2], "is not JSON"),
        "nan.jsonl": (
            text + '{"kind": "memory", "importance": NaN}\n',
            "is not JSON (NaN is not a JSON number)",
        ),
        "empty.jsonl": ("\n\n", "is empty; there is nothing to import"),
        "other.jsonl": ('{"name": "not ours"}\n', "is neither the header of an mcp-memory export"),
        "binary.jsonl": ("\udcff".encode("utf-8", "surrogateescape").decode("latin-1"), "is not UTF-8 text"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content.encode("latin-1") if name == "binary.jsonl" else content.encode("utf-8"))
        with pytest.raises(
            ValidationFailed, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")
        ):
            await import_into(target, path)
    for path, message in [
        (Path("relative.jsonl"), "is not absolute"),
        (tmp_path, "is not a file that exists"),
    ]:
        with pytest.raises(ValidationFailed, match=message):
            await import_into(target, path)
    assert tables(target) == before


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting how often it is called and with how many texts."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return super().embed(texts)


def big_export(tmp_path: Path, memories: int) -> Path:
    header = {
        "kind": "mcp-memory-export", "version": 1, "exported_at": "2025-01-01T00:00:00Z", "database_id": "elsewhere",
        "embedder": "hashing-384", "groups": ["big"],
    }  # fmt: skip
    group = {
        "kind": "group", "group_id": "big", "user_ids": ["ana"], "agent_ids": [], "description": None,
        "configuration": {}, "created_at": "2025-01-01T00:00:00Z",
    }  # fmt: skip
    session = {
        "kind": "session", "group_id": "big", "session_id": "s", "configuration": {}, "overrides": {},
        "created_at": "2025-01-01T00:00:00Z",
    }  # fmt: skip
    lines = [header, group, session]
    for i in range(1, memories + 1):
        lines.append(
            {
                "kind": "memory", "id": i, "group_id": "big", "session_id": "s", "sequence": 2 * i,
                "producer": "ana", "role": "user", "produced_for": None, "content": f"turn number {i}",
                "message": None, "memory_type": "message", "importance": 0.5, "effective_importance": 0.5,
                "metadata": {}, "timestamp": f"2025-01-01T00:00:{i % 60:02d}Z", "created_at": "2025-01-01T00:00:00Z",
                "updated_at": None, "retrieval_count": 0, "last_accessed_at": None, "dedup_key": None,
                "step": None, "vector": True,
            }
        )  # fmt: skip
    return write_export(tmp_path / "big.jsonl", lines)


async def test_a_large_import_writes_in_bounded_transactions_embeds_in_batches_and_reports_progress(
    tmp_path: Path,
) -> None:
    path = big_export(tmp_path, 2_000)
    embedder = CountingEmbedder()
    reports: list[Progress] = []

    async def progress(report: Progress) -> None:
        reports.append(report)

    async with manager_on(tmp_path / "big.db", embedder) as manager:
        result = await manager.transfer.import_memories(path, progress=progress)
        assert (result.memories.added, result.vectors_indexed, result.vectors_pending) == (2_000, 2_000, 0)
        rows = manager.engine.store.session_episodes("big", "s")
        imported = list(reports)
        reports.clear()
        await manager.transfer.export_memories(tmp_path / "again.jsonl", progress=progress)
    assert [r.sequence for r in rows] == [2 * i for i in range(1, 2_001)]  # sequences as exported
    assert max(embedder.calls) == 256 and len(embedder.calls) == 8
    steps = [r.step for r in imported]
    assert steps == sorted(set(steps))  # MCP progress must increase
    assert [r.message for r in imported if r.message.startswith("wrote")] == [
        "wrote 1000 of 2000 memories", "wrote 2000 of 2000 memories"
    ]  # fmt: skip
    assert imported[-1].message == "indexed 2000 of 2000 vectors" and imported[-1].step == imported[-1].steps
    assert [(r.step, r.steps) for r in reports] == [(1000, 2000), (2000, 2000)]  # the last is not sent twice


async def test_an_embedder_that_fails_leaves_imported_memories_pending_for_the_upkeep(tmp_path: Path) -> None:
    class Failing(HashingEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            raise RuntimeError("model unavailable")

    path = big_export(tmp_path, 10)
    async with manager_on(tmp_path / "big.db", Failing()) as manager:
        result = await manager.transfer.import_memories(path)
    assert (result.memories.added, result.vectors_indexed, result.vectors_pending) == (10, 0, 10)
    async with manager_on(tmp_path / "big.db") as manager:
        assert await manager.upkeep.backfill() == 10


async def test_a_memory_corrected_since_the_export_is_not_brought_back_beside_its_correction(
    origin: Path, tmp_path: Path
) -> None:
    async with manager_on(origin) as manager:
        rows = manager.engine.store.session_episodes("ana", "private")  # an untimed memory: no dedup key
        await manager.memories.update_memory("ana", rows[0].id, content="my PIN hint is the dog")
        timed = next(r for r in manager.engine.store.session_episodes("team", "standup"))
        await manager.memories.update_memory("team", timed.id, content="I shipped the export and the import")
    before = tables(origin)
    result = await import_into(origin, tmp_path / "origin.jsonl")
    assert result.memories.added == 0 and tables(origin) == before


async def test_an_idempotency_key_used_in_both_databases_does_not_hide_the_other_memory(
    origin: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.db"
    async with manager_on(target) as manager:
        await manager.groups.create_group("team", ["zoe", "max"], ["helper"])
        await manager.sessions.open_session("team", "standup")
        theirs = [
            {"content": "Something else entirely", "producer": "zoe", "timestamp": "2025-03-03T09:00:00Z"},
            {"content": "And another thing", "producer": "max", "timestamp": "2025-03-03T09:01:00Z"},
        ]
        await manager.memories.add_memories("team", "standup", theirs, idempotency_key="standup-1")
    result = await import_into(target, tmp_path / "origin.jsonl", "team")
    async with manager_on(target) as manager:
        contents = [r.content for r in manager.engine.store.session_episodes("team", "standup")]
        assert contents == [
            "Something else entirely",
            "And another thing",
            "I shipped the export",
            "Reviewing it today",
        ]
    assert (result.memories.added, result.facts.added) == (3, 1)  # and the fact "Zoe owns the export"
    again = await import_into(target, tmp_path / "origin.jsonl", "team")
    assert (again.memories.added, again.memories.existing) == (0, 3)


async def test_an_empty_database_exports_a_header_alone_which_imports_as_nothing(tmp_path: Path) -> None:
    async with manager_on(tmp_path / "empty.db") as manager:
        result = await manager.transfer.export_memories(tmp_path / "empty.jsonl")
        with pytest.raises(ValidationFailed, match="exists already"):
            await manager.transfer.export_memories(tmp_path / "empty.jsonl")
    assert (result.groups, result.memories) == (0, 0)
    lines = read_export(tmp_path / "empty.jsonl")
    assert len(lines) == 1 and lines[0]["groups"] == [] and set(lines[0]["counts"].values()) == {0}
    imported = await import_into(tmp_path / "other.db", tmp_path / "empty.jsonl")
    assert (imported.groups.added, imported.memories.added, imported.lines_skipped) == (0, 0, 0)
