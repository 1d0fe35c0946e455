"""Save and load through MCP (transfer_memory, exporting and importing, with progress) and the command line (export,
import): the same file, the same checks, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.server import build_server
from tests.helpers import call, call_error
from tests.test_surface import listed_tokens
from tests.transfer_data import read_export, tables

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GRAPH = Path(__file__).parent / "data" / "server_memory.jsonl"
TOOL_TOKEN_BUDGET = 100  # what the tool may cost in every conversation


def transfer_server(db: Path) -> Client:
    return Client(build_server(Config(db_path=db, embedder="hashing")))


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[Client]:
    async with transfer_server(tmp_path / "source.db") as client:
        await call(client, "create_group", group_id="ana", user_ids=["ana"], agent_ids=["bot"])
        await call(client, "open_session", group_id="ana", session_id="may")
        memories = [{"content": f"turn {i} about Porto", "producer": "ana"} for i in range(3)]
        await call(client, "add_memory", group_id="ana", session_id="may", memories=memories)
        await call(client, "add_fact", group_id="ana", subject="Ana", predicate="visits", object="Porto")
        yield client


async def test_export_memory_writes_a_file_that_import_memory_reads_into_another_server(
    source: Client, tmp_path: Path
) -> None:
    path = tmp_path / "ana.jsonl"
    seen: list[tuple[float, float | None, str | None]] = []

    async def progress(value: float, total: float | None, message: str | None) -> None:
        seen.append((value, total, message))

    arguments = {"action": "export", "path": str(path)}
    exported = await source.call_tool("transfer_memory", arguments, progress_callback=progress)
    assert not exported.is_error and exported.structured_content is not None
    written = exported.structured_content["exported"]
    assert written["memories"] == 4 and written["facts"] == 1
    assert read_export(path)[0]["groups"] == ["ana"] and seen[-1] == (4, 4, "exported 4 of 4 memories")
    async with transfer_server(tmp_path / "copy.db") as copy:
        seen.clear()
        arguments = {"action": "import", "path": str(path)}
        imported = await copy.call_tool("transfer_memory", arguments, progress_callback=progress)
        assert not imported.is_error and imported.structured_content is not None
        counts = imported.structured_content["imported"]
        assert (counts["memories"], counts["facts"]) == (
            {"added": 4, "existing": 0},
            {"added": 1, "existing": 0},
        )
        assert counts["vectors_pending"] == 0
        assert [value for value, _, _ in seen] == sorted({value for value, _, _ in seen})
        assert "wrote 4 of 4 memories" in [message for _, _, message in seen]
        again = (await call(copy, "transfer_memory", action="import", path=str(path)))["imported"]
        assert (again["memories"], again["groups"]) == (
            {"added": 0, "existing": 4},
            {"added": 0, "existing": 1},
        )
        hits = await call(copy, "recall", group_id="ana", query="Porto")
        assert len(hits["hits"]) == 4


async def test_export_memory_writes_only_new_jsonl_files_at_absolute_paths(
    source: Client, tmp_path: Path
) -> None:
    taken = tmp_path / "taken.jsonl"
    taken.write_text("mine\n")
    for path, error in [
        ("ana.jsonl", "invalid: path 'ana.jsonl' is not absolute"),
        (str(taken), f"invalid: {taken} exists already; pass a new file name"),
        (str(tmp_path / "ana.json"), f"invalid: path '{tmp_path / 'ana.json'}' does not end in .jsonl"),
        (
            str(tmp_path / "missing" / "ana.jsonl"),
            f"invalid: the folder {tmp_path / 'missing'} does not exist",
        ),
        (str(tmp_path), f"invalid: path '{tmp_path}' does not end in .jsonl"),
    ]:
        assert (await call_error(source, "transfer_memory", action="export", path=path)).startswith(error)
    text = await call_error(
        source, "transfer_memory", action="export", path=str(tmp_path / "x.jsonl"), group_id="nobody"
    )
    assert text.startswith("not_found: group 'nobody' does not exist")
    assert taken.read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("source.db")] == ["taken.jsonl"]


async def test_import_memory_names_the_bad_line_and_writes_nothing(source: Client, tmp_path: Path) -> None:
    path = tmp_path / "ana.jsonl"
    await call(source, "transfer_memory", action="export", path=str(path), group_id="ana")
    lines = path.read_text().splitlines()
    memory = json.loads(lines[3])
    memory["role"] = "robot"
    lines[3] = json.dumps(memory)
    path.write_text("\n".join(lines) + "\n")
    db = tmp_path / "copy.db"
    async with transfer_server(db) as copy:
        await call(copy, "create_group", group_id="other", user_ids=["olga"])
        before = tables(db)
        text = await call_error(copy, "transfer_memory", action="import", path=str(path))
        assert text.startswith(
            "invalid: line 4: memory.role: input should be 'user', 'assistant', 'system' or"
        )
        assert text.endswith("; nothing was imported")
        assert (await call_error(copy, "transfer_memory", action="import", path="ana.jsonl")).startswith(
            "invalid: path 'ana.jsonl'"
        )
        assert tables(db) == before


async def test_import_memory_reads_server_memorys_graph_into_the_group_asked_for(tmp_path: Path) -> None:
    async with transfer_server(tmp_path / "m.db") as client:
        result = (await call(client, "transfer_memory", action="import", path=str(GRAPH), group_id="kg"))[
            "imported"
        ]
        assert (result["format"], result["memories"]["added"], result["facts"]["added"]) == (
            "server-memory",
            9,
            5,
        )
        facts = await call(client, "recall", group_id="kg", query="Ana_Silva works_at", limit=1)
        assert facts["hits"][0]["content"] == "Ana_Silva works_at Acme Corp"


async def test_the_tool_is_short_to_read(source: Client) -> None:
    tools = {tool.name: tool for tool in (await source.list_tools()).tools}
    assert listed_tokens(tools["transfer_memory"]) <= TOOL_TOKEN_BUDGET, listed_tokens(
        tools["transfer_memory"]
    )
    for parameter in tools["transfer_memory"].input_schema["properties"].values():
        assert parameter.get("description")


def run_cli(db: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "mcp-memory"
    return subprocess.run(
        [str(script), "--db", str(db), "--embedder", "hashing", *arguments],
        capture_output=True, text=True, timeout=120, env={"PATH": os.environ.get("PATH", "")},
    )  # fmt: skip


@pytest.mark.slow
async def test_the_command_line_exports_to_stdout_or_a_file_and_imports_back(
    source: Client, tmp_path: Path
) -> None:
    await call(source, "transfer_memory", action="export", path=str(tmp_path / "ana.jsonl"))
    copy = tmp_path / "copy.db"
    imported = run_cli(copy, "import", str(tmp_path / "ana.jsonl"))
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["memories"] == {"added": 4, "existing": 0}
    assert "mcp-memory: wrote 4 of 4 memories" in imported.stderr
    streamed = run_cli(copy, "export", "--group", "ana")
    assert streamed.returncode == 0, streamed.stderr
    lines = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert lines[0]["kind"] == "mcp-memory-export" and lines[0]["counts"]["memories"] == 4
    assert '"memories": 4' in streamed.stderr  # the result goes to stderr when stdout is the export
    (tmp_path / "old.jsonl").write_text("replaced\n")
    written = run_cli(copy, "export", "--out", str(tmp_path / "old.jsonl"))
    assert written.returncode == 0 and json.loads(written.stdout)["path"] == str(tmp_path / "old.jsonl")
    assert read_export(tmp_path / "old.jsonl")[1:] == lines[1:]


@pytest.mark.slow
def test_the_command_line_refuses_a_bad_file_in_one_line_with_exit_code_2_and_writes_nothing(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "mcp-memory-export", "version": 1}\n')
    db = tmp_path / "m.db"
    run = run_cli(db, "import", str(bad))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines()[-1].startswith("mcp-memory: line 1: header.exported_at: field required")
    assert not db.exists() or tables(db)["groups"] == []
    for arguments, error in [
        (("import",), "mcp-memory: import needs the file to read"),
        (("stats", str(bad)), "mcp-memory: stats takes no file"),
        (("import", str(bad), "--group", "a", "--group", "b"), "mcp-memory: import takes one --group"),
    ]:
        run = run_cli(db, *arguments)
        assert run.returncode == 2 and run.stderr.splitlines()[-1].startswith(error), run.stderr
