"""The real path: the installed `mcp-memory` console script, launched over stdio by the official client.

Every test here starts real server processes, as Claude Desktop or an IDE assistant does, and talks
to them only through the protocol (or, for the command line itself, through argv, stdout and stderr).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_memory import __version__
from tests.helpers import TOOLS, call

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HANDSHAKE_DEADLINE_S = 10.0  # clients give up after 10 to 60 s; the handshake must never need a model
CALL_DEADLINE_S = 120.0


def console_script() -> Path:
    """The `mcp-memory` script installed in the same environment as the Python running the tests."""
    bin_dir = Path(sys.executable).parent
    script = bin_dir / ("mcp-memory.exe" if sys.platform == "win32" else "mcp-memory")
    assert script.exists(), f"the console script is not installed at {script}; run `uv sync`"
    return script


def base_env(home: Path) -> dict[str, str]:
    """What every launch gets: HOME and PATH (a client like Claude Desktop passes little else)."""
    return {"HOME": os.environ.get("HOME") or str(home), "PATH": os.environ.get("PATH", os.defpath)}


def server(db: Path, *, embedder: str | None = "hashing", mode: str = "auto") -> Client:
    """A client that launches the console script on `db`; embedder None means the default (local MiniLM)."""
    env = base_env(db.parent)
    if embedder is not None:
        env["MCP_MEMORY_EMBEDDER"] = embedder
    params = StdioServerParameters(command=str(console_script()), args=["--db", str(db)], env=env)
    return Client(params, mode=mode)  # type: ignore[arg-type]


async def setup_group(client: Client, group_id: str = "family", session_id: str = "monday") -> None:
    await call(client, "create_group", group_id=group_id, user_ids=["ana"], agent_ids=["helper"])
    opened = await call(client, "open_session", group_id=group_id, session_id=session_id)
    assert opened["created"] is True
    assert opened["episode_count"] == 0


def hit_ids(recalled: dict[str, Any]) -> list[int]:
    return [hit["id"] for hit in recalled["hits"]]


async def test_memories_added_through_the_console_script_are_recalled_by_a_new_server_process(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    with anyio.fail_after(CALL_DEADLINE_S):
        async with server(db) as client:
            await setup_group(client)
            single = await call(
                client, "add_memory", group_id="family", session_id="monday",
                content="Ana's cat is called Biscuit and loves tuna", producer="ana",
            )  # fmt: skip
            batch = await call(
                client, "add_memory", group_id="family", session_id="monday",
                memories=[
                    {"content": "Ana is flying to Lisbon on Friday", "producer": "ana"},
                    {"content": "I booked the Lisbon hotel near the river", "producer": "helper", "role": "assistant"},
                    {"content": "Ana's sister Marta lives in Porto", "producer": "ana", "metadata": {"topic": "family"}},
                ],
            )  # fmt: skip
            assert (single["stored"], batch["stored"], batch["duplicates"]) == (1, 3, 0)
            biscuit_id = single["memories"][0]["id"]
            lisbon_ids = [m["id"] for m in batch["memories"][:2]]
            all_ids = [biscuit_id] + [m["id"] for m in batch["memories"]]
            assert len(set(all_ids)) == 4

            first_biscuit = await call(client, "recall", group_id="family", query="Biscuit")
            first_lisbon = await call(client, "recall", group_id="family", query="Lisbon", limit=2)
            assert hit_ids(first_biscuit)[0] == biscuit_id
            assert "keyword" in first_biscuit["hits"][0]["matched_by"]
            assert set(hit_ids(first_lisbon)) == set(lisbon_ids)

        # The client has disconnected and the first server process is gone; a new one opens the file.
        async with server(db) as client:
            again_biscuit = await call(client, "recall", group_id="family", query="Biscuit")
            again_lisbon = await call(client, "recall", group_id="family", query="Lisbon", limit=2)
            assert hit_ids(again_biscuit)[0] == biscuit_id
            assert again_biscuit["hits"][0]["content"] == "Ana's cat is called Biscuit and loves tuna"
            assert set(hit_ids(again_lisbon)) == set(lisbon_ids)
            porto = await call(
                client, "recall", group_id="family", query="Porto", filters={"metadata": {"topic": "family"}}
            )
            assert hit_ids(porto) == [all_ids[3]]

            reopened = await call(client, "open_session", group_id="family", session_id="monday", mode="open")
            assert reopened["created"] is False
            assert reopened["episode_count"] == 4
            assert reopened["reference_count"] == 1

            more = await call(
                client, "add_memory", group_id="family", session_id="monday",
                content="Biscuit has a vet appointment on Tuesday", producer="ana",
            )  # fmt: skip
            assert more["memories"][0]["sequence"] == 5
            assert more["memories"][0]["id"] not in all_ids


async def test_an_identical_retry_through_the_console_script_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    turn = {
        "group_id": "family", "session_id": "monday", "content": "Ana prefers window seats",
        "producer": "ana", "timestamp": "2025-03-01T14:30:00Z",
    }  # fmt: skip
    with anyio.fail_after(CALL_DEADLINE_S):
        async with server(db) as client:
            await setup_group(client)
            first = await call(client, "add_memory", **turn)
        async with server(db) as client:
            retried = await call(client, "add_memory", **turn)
            reopened = await call(client, "open_session", group_id="family", session_id="monday", mode="open")
    assert first["memories"][0]["duplicate"] is False
    assert retried["memories"][0] == {**first["memories"][0], "duplicate": True}
    assert (retried["stored"], retried["duplicates"]) == (0, 1)
    assert reopened["episode_count"] == 1


async def test_every_resource_is_readable_over_stdio(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    with anyio.fail_after(CALL_DEADLINE_S):
        async with server(db) as client:
            await setup_group(client)
            await call(
                client, "add_memory", group_id="family", session_id="monday",
                memories=[{"content": f"note number {i}", "producer": "ana"} for i in range(3)],
            )  # fmt: skip
            listed = {str(r.uri) for r in (await client.list_resources()).resources}
            assert {"memory://groups", "memory://stats"} <= listed
            contents, failures = {}, {}
            for uri in (
                "memory://groups",
                "memory://groups/family",
                "memory://groups/family/sessions/monday",
                "memory://stats",
            ):
                try:
                    result = await client.read_resource(uri)
                except MCPError as exc:
                    failures[uri] = str(exc)
                    continue
                contents[uri] = json.loads(result.contents[0].text)  # type: ignore[union-attr]
    assert not failures, f"resource reads failed over stdio: {failures}"
    groups = contents["memory://groups"]
    assert [g["group_id"] for g in groups] == ["family"]
    assert groups[0]["episode_count"] == 3
    assert contents["memory://groups/family"]["sessions"][0]["session_id"] == "monday"
    session = contents["memory://groups/family/sessions/monday"]
    assert session["session"]["episode_count"] == 3
    assert [e["content"] for e in session["recent"]] == ["note number 0", "note number 1", "note number 2"]
    stats = contents["memory://stats"]
    assert stats["embedder"].startswith("hashing")
    assert stats["database_path"] == str(db)


async def test_the_handshake_and_tools_list_are_answered_at_once_with_the_default_local_embedder(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    with anyio.fail_after(CALL_DEADLINE_S):
        started = anyio.current_time()
        # embedder=None: MCP_MEMORY_EMBEDDER is not set, so the server uses all-MiniLM-L6-v2.
        async with server(db, embedder=None, mode="legacy") as client:
            tools = await client.list_tools()
            answered_after = anyio.current_time() - started
            assert {t.name for t in tools.tools} == TOOLS
            await setup_group(client)
            await call(
                client, "add_memory", group_id="family", session_id="monday",
                memories=[
                    {"content": "My cat Biscuit loves tuna", "producer": "ana"},
                    {"content": "The quarterly tax report is due in April", "producer": "ana"},
                    {"content": "We repainted the kitchen walls blue last weekend", "producer": "ana"},
                    {"content": "The flight to Lisbon leaves at seven in the morning", "producer": "ana"},
                ],
            )  # fmt: skip
            # No word in common with the memory: only a real sentence embedder finds it.
            recalled = await call(client, "recall", group_id="family", query="which animal does she own")
    assert answered_after < HANDSHAKE_DEADLINE_S, f"initialize + tools/list took {answered_after:.1f} s"
    assert recalled["vector_search"] is True
    assert recalled["hits"][0]["content"] == "My cat Biscuit loves tuna"
    assert recalled["hits"][0]["matched_by"] == ["vector"]


@pytest.mark.parametrize(
    ("mode", "era"),
    [("legacy", "2025 initialize handshake"), ("auto", "2026 per-request protocol")],
    ids=["legacy", "auto"],
)
async def test_both_protocol_eras_serve_every_tool(tmp_path: Path, mode: str, era: str) -> None:
    db = tmp_path / "memory.db"
    with anyio.fail_after(CALL_DEADLINE_S):
        async with server(db, mode=mode) as client:
            if mode == "legacy":
                assert client.protocol_version == "2025-11-25", era
                assert client.server_info is not None and client.server_info.name == "mcp-memory"
            else:
                assert client.protocol_version in MODERN_PROTOCOL_VERSIONS, era
            assert client.instructions and "recall" in client.instructions
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            assert tools["recall"].annotations is not None and tools["recall"].annotations.read_only_hint

            await setup_group(client)
            added = await call(
                client, "add_memory", group_id="family", session_id="monday",
                content="The wifi password is on the fridge", producer="ana",
            )  # fmt: skip
            recalled = await call(
                client, "recall", group_id="family", query="wifi password", session_id="monday"
            )
            added_id = added["memories"][0]["id"]
            # With session_id the newest turns come back as `recent`, and are not repeated among the hits.
            assert [e["id"] for e in recalled["recent"]] == [added_id]
            assert added_id not in hit_ids(recalled)
            across = await call(client, "recall", group_id="family", query="wifi password")
            assert hit_ids(across) == [added_id]

            error = await client.call_tool("create_group", {"group_id": "family", "user_ids": ["ana"]})
            assert error.is_error
            assert "already exists" in error.content[0].text  # type: ignore[union-attr]

            closed = await call(client, "close_session", group_id="family", session_id="monday")
            assert closed["released"] is True
            deleted = await call(client, "delete_session", group_id="family", session_id="monday")
            assert deleted["deleted_episodes"] == 1


class LineReader:
    """Complete lines from a text stream; None at end of stream."""

    def __init__(self, stream: TextReceiveStream) -> None:
        self.stream = stream
        self.rest = ""

    async def line(self) -> str | None:
        while "\n" not in self.rest:
            try:
                self.rest += await self.stream.receive()
            except anyio.EndOfStream:
                tail, self.rest = self.rest, ""
                return tail or None
        line, self.rest = self.rest.split("\n", 1)
        return line


async def test_stdout_carries_only_json_rpc_messages_and_logs_go_to_stderr(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    requests = [
        {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1.0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "create_group", "arguments": {"group_id": "g", "user_ids": ["ana"]}},
        },
    ]  # fmt: skip
    env = {**base_env(tmp_path), "MCP_MEMORY_EMBEDDER": "hashing", "MCP_MEMORY_LOG_LEVEL": "DEBUG"}
    stderr_path = tmp_path / "stderr.log"
    lines: list[str] = []
    with stderr_path.open("wb") as stderr, anyio.fail_after(CALL_DEADLINE_S):
        process = await anyio.open_process(
            [str(console_script()), "--db", str(db)], env=env, stderr=stderr, cwd=tmp_path
        )
        async with process:
            assert process.stdin is not None and process.stdout is not None
            reader = LineReader(TextReceiveStream(process.stdout))
            await process.stdin.send("".join(json.dumps(r) + "\n" for r in requests).encode())
            waiting = {1, 2, 3}
            while waiting:
                line = await reader.line()
                assert line is not None, f"stdout ended before the answers to {waiting}; got {lines!r}"
                lines.append(line)
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    waiting.discard(json.loads(line).get("id"))
            await process.stdin.aclose()  # end of input: the server must exit on its own
            while (line := await reader.line()) is not None:
                lines.append(line)
            returncode = await process.wait()

    log = stderr_path.read_text(encoding="utf-8", errors="replace")
    assert returncode == 0, log
    assert lines, "the server wrote nothing to stdout"
    messages = []
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            raise AssertionError(f"stdout carried a line that is not JSON: {line!r}") from None
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line
        assert ("id" in message and ("result" in message or "error" in message)) or "method" in message, line
        messages.append(message)
    by_id = {m["id"]: m for m in messages if "id" in m}
    assert by_id[1]["result"]["protocolVersion"] == "2025-11-25"
    assert by_id[1]["result"]["serverInfo"]["name"] == "mcp-memory"
    assert {t["name"] for t in by_id[2]["result"]["tools"]} == TOOLS
    assert by_id[3]["result"]["isError"] is False
    assert "serving" in log and str(db) in log, "the start-up log line belongs on stderr"


def test_python_dash_m_help_and_the_console_script_version_work(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "MCP_MEMORY_DB": str(tmp_path / "unused.db")}
    helped = subprocess.run(
        [sys.executable, "-m", "mcp_memory", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: mcp-memory")
    for word in ("--db", "--embedder", "serve", "stats", "reindex", "maintain"):
        assert word in helped.stdout
    versioned = subprocess.run(
        [str(console_script()), "--version"], capture_output=True, text=True, env=env, timeout=60
    )
    assert versioned.returncode == 0, versioned.stderr
    assert versioned.stdout.strip() == f"mcp-memory {__version__}"
    assert not (tmp_path / "unused.db").exists(), "--help and --version must not create a database"


def _under_a_regular_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("a regular file, not a folder\n")
    return tmp_path / "notes.txt" / "memory.db"


def _a_directory(tmp_path: Path) -> Path:
    (tmp_path / "a-folder").mkdir()
    return tmp_path / "a-folder"


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not an SQLite database, it is a text file that got in the way\n" * 20)
    return path


@pytest.mark.parametrize("command", ["serve", "stats"])
@pytest.mark.parametrize(
    "bad_path",
    [_under_a_regular_file, _a_directory, _not_a_database],
    ids=["under-a-regular-file", "a-directory", "not-a-database"],
)
def test_an_unusable_database_path_exits_non_zero_with_a_clear_message_and_no_traceback(
    tmp_path: Path, command: str, bad_path: Any
) -> None:
    db = bad_path(tmp_path)
    before = sorted(
        (p.relative_to(tmp_path), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")
    )
    env = {**base_env(tmp_path), "MCP_MEMORY_EMBEDDER": "hashing"}
    completed = subprocess.run(
        [str(console_script()), "--db", str(db), command],
        input="",  # serve reads stdin: an empty one ends the session at once
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert completed.returncode != 0, completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    assert "mcp-memory:" in completed.stderr, completed.stderr
    assert str(db) in completed.stderr or str(db.parent) in completed.stderr, completed.stderr
    assert completed.stdout == "", "nothing may reach stdout (the protocol channel) on failure"
    after = sorted(
        (p.relative_to(tmp_path), p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")
    )
    assert after == before, "a failed start must leave the user's files exactly as they were"
