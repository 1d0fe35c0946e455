"""Several `mcp-memory` server processes on one database file at once (a desktop app plus an IDE).

One workload runs once for the module: three stdio server processes, each driven by its own client,
write concurrently to a shared group, each to a session of its own and all to one shared session,
in single adds and batches of 10; then all of them send the same retried adds at the same moment.
The tests check, through a fresh server process and by opening the SQLite file directly, that
nothing failed, nothing was lost and nothing was stored twice.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlean  # type: ignore[import-untyped]
import sqlite_vec
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tests.helpers import as_sent

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.reliability]

GROUP = "team"
SHARED = "shared"
PROCESSES = ("alpha", "beta", "gamma")
MODES = {"alpha": "legacy", "beta": "auto", "gamma": "legacy"}  # both protocol eras at once
SINGLES_PER_TASK = 25
BATCHES_PER_TASK = 5
BATCH_SIZE = 10
PER_TASK = SINGLES_PER_TASK + BATCHES_PER_TASK * BATCH_SIZE  # 75; two tasks per process: 150
RETRY_ROUNDS = 5
RETRY_BATCH = 4
WORKLOAD_DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the workload below runs once for every test of this module."""
    return "asyncio"


def console_script() -> Path:
    script = Path(sys.executable).parent / ("mcp-memory.exe" if sys.platform == "win32" else "mcp-memory")
    assert script.exists(), f"the console script is not installed at {script}; run `uv sync`"
    return script


@asynccontextmanager
async def server(db: Path, log: Path, mode: str = "auto") -> AsyncIterator[Client]:
    """A client on a new server process over stdio; the process's stderr goes to `log`."""
    env = {
        "HOME": os.environ.get("HOME") or str(db.parent),
        "PATH": os.environ.get("PATH", os.defpath),
        "MCP_MEMORY_EMBEDDER": "hashing",
    }
    params = StdioServerParameters(command=str(console_script()), args=["--db", str(db)], env=env)
    with log.open("a", encoding="utf-8") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:  # type: ignore[arg-type]
            yield client


@dataclass
class Written:
    """One memory a worker sent and what the server answered."""

    process: str
    session_id: str
    content: str
    token: str
    id: int
    sequence: int
    duplicate: bool


@dataclass
class Workload:
    db: Path
    logs: list[Path]
    written: list[Written] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retried: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # content -> one answer per process

    def solo(self, process: str) -> str:
        return f"solo-{process}"

    @property
    def sessions(self) -> dict[str, int]:
        """Expected episodes per session."""
        counts = Counter(w.session_id for w in self.written)
        counts[SHARED] += len(self.retried)
        return dict(counts)


async def _call(workload: Workload, client: Client, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, as_sent(tool, arguments))
    if result.is_error:
        text = result.content[0].text if result.content else repr(result)  # type: ignore[union-attr]
        workload.failures.append(f"{who} {tool}: {text}")
        return {}
    assert result.structured_content is not None
    return result.structured_content


def _memory(process: str, task: int, index: int) -> tuple[dict[str, Any], str]:
    token = f"tok{process}{task}x{index}"
    producer, role = ("ana", "user") if index % 2 == 0 else ("helper", "assistant")
    memory: dict[str, Any] = {
        "content": f"{process} task {task} item {index} remembers {token}",
        "producer": producer,
        "role": role,
        "metadata": {"process": process, "task": task, "index": index},
    }
    if index % 3 == 0:  # some carry their own timestamp (and so a retry key), most are stamped now
        memory["timestamp"] = 1_700_000_000 + index
    return memory, token


async def _write(workload: Workload, client: Client, process: str, task: int, session_id: str) -> None:
    """75 memories into one session: 25 single adds and 5 batches of 10, interleaved."""
    who = f"{process}/{task}"
    index = 0
    plan = ["single"] * SINGLES_PER_TASK + ["batch"] * BATCHES_PER_TASK
    plan = [plan[i] for i in sorted(range(len(plan)), key=lambda i: (i * 7) % len(plan))]  # interleave
    for step in plan:
        size = 1 if step == "single" else BATCH_SIZE
        items = [_memory(process, task, index + k) for k in range(size)]
        index += size
        if step == "single":
            answer = await _call(
                workload, client, who, "add_memory", group_id=GROUP, session_id=session_id, **items[0][0]
            )
        else:
            answer = await _call(
                workload, client, who, "add_memory", group_id=GROUP, session_id=session_id,
                memories=[memory for memory, _ in items],
            )  # fmt: skip
        if not answer:
            continue
        assert len(answer["memories"]) == size
        for (memory, token), added in zip(items, answer["memories"], strict=True):
            workload.written.append(
                Written(
                    process, session_id, memory["content"], token, added["id"], added["sequence"],
                    added["duplicate"],
                )
            )  # fmt: skip


async def _write_share(workload: Workload, client: Client, process: str) -> None:
    """Open a session of its own and the shared one (open_or_create races), then fill both at once."""
    for session_id in (workload.solo(process), SHARED):
        opened = await _call(
            workload, client, process, "open_session", group_id=GROUP, session_id=session_id,
            mode="open_or_create",
        )  # fmt: skip
        assert not opened or opened["session_id"] == session_id
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_write, workload, client, process, 0, workload.solo(process))
        tasks.start_soon(_write, workload, client, process, 1, SHARED)


async def _send_retries(workload: Workload, client: Client, process: str) -> None:
    """The same timestamped adds (one single, one batch per round) that every other process sends too."""
    for round_ in range(RETRY_ROUNDS):
        single = {
            "content": f"retried turn {round_}: the meeting moved to Thursday",
            "producer": "ana",
            "timestamp": f"2025-03-0{round_ + 1}T09:00:00Z",
        }
        answer = await _call(
            workload, client, process, "add_memory", group_id=GROUP, session_id=SHARED, **single
        )
        if answer:
            workload.retried.setdefault(single["content"], []).append(answer["memories"][0])
        batch = [
            {
                "content": f"retried batch {round_} item {k}: bring the slides",
                "producer": "helper",
                "role": "assistant",
                "timestamp": f"2025-04-0{round_ + 1}T10:0{k}:00Z",
            }
            for k in range(RETRY_BATCH)
        ]
        answer = await _call(
            workload, client, process, "add_memory", group_id=GROUP, session_id=SHARED, memories=batch
        )
        if answer:
            for memory, added in zip(batch, answer["memories"], strict=True):
                workload.retried.setdefault(memory["content"], []).append(added)
    closed = await _call(workload, client, process, "close_session", group_id=GROUP, session_id=SHARED)
    assert not closed or closed["released"] is True


async def _run(workload: Workload) -> None:
    ready, connected, go = anyio.Event(), anyio.Event(), anyio.Event()
    starting, writing = set(PROCESSES), set(PROCESSES)

    async def worker(process: str, log: Path) -> None:
        async with server(workload.db, log, MODES[process]) as client:
            # Start writing together, once every process is up and the group exists: a slow start
            # must not let one process finish before the others begin.
            starting.discard(process)
            if not starting:
                connected.set()
            await connected.wait()
            await ready.wait()
            await _write_share(workload, client, process)
            # Once every process has written its share, all send the same retried adds at the same moment.
            writing.discard(process)
            if not writing:
                go.set()
            await go.wait()
            await _send_retries(workload, client, process)

    async with anyio.create_task_group() as tasks:
        for process, log in zip(PROCESSES, workload.logs, strict=True):
            tasks.start_soon(worker, process, log)
        # The group is created through one process; the others only open sessions in it.
        async with server(workload.db, workload.logs[0]) as creator:
            await _call(
                workload, creator, "creator", "create_group", group_id=GROUP, user_ids=["ana"],
                agent_ids=["helper"], description="shared by three server processes",
            )  # fmt: skip
        ready.set()


@pytest.fixture(scope="module")
async def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    root = tmp_path_factory.mktemp("multiprocess")
    run = Workload(db=root / "shared.db", logs=[root / f"{p}.stderr.log" for p in PROCESSES])
    with anyio.fail_after(WORKLOAD_DEADLINE_S):
        await _run(run)
    return run


def server_logs(workload: Workload) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in workload.logs)


@pytest.fixture
def sql(workload: Workload) -> Iterator[Any]:
    """The database file opened directly with sqlean (sqlite-vec loaded), after every server exited."""
    with closing(sqlean.connect(str(workload.db), isolation_level=None)) as conn:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        conn.enable_load_extension(False)
        yield conn


async def test_no_tool_call_failed_and_no_database_locked_error_reached_a_client(workload: Workload) -> None:
    assert workload.failures == [], "\n".join(workload.failures)
    assert len(workload.written) == len(PROCESSES) * 2 * PER_TASK
    logs = server_logs(workload)
    assert "locked" not in logs.lower(), logs
    assert "Traceback" not in logs, logs


async def test_the_processes_really_wrote_to_the_shared_session_at_the_same_time(sql: Any) -> None:
    rows = sql.execute(
        "SELECT json_extract(metadata, '$.process') FROM episodes WHERE group_id = ? AND session_id = ? "
        "AND json_extract(metadata, '$.process') IS NOT NULL ORDER BY sequence",
        (GROUP, SHARED),
    ).fetchall()
    writers = [row[0] for row in rows]
    assert set(writers) == set(PROCESSES)
    switches = sum(a != b for a, b in zip(writers, writers[1:], strict=False))
    assert switches >= 10, f"the writes barely interleaved ({switches} switches): the test proves little"


async def test_every_concurrent_write_got_its_own_id_and_a_unique_sequence_in_its_session(
    workload: Workload,
) -> None:
    assert not any(w.duplicate for w in workload.written), "a distinct memory was reported as a duplicate"
    ids = [w.id for w in workload.written]
    assert len(set(ids)) == len(ids), "two writes were given the same id"
    per_session = Counter((w.session_id, w.sequence) for w in workload.written)
    assert [key for key, n in per_session.items() if n > 1] == []


async def test_the_database_holds_every_write_exactly_once(workload: Workload, sql: Any) -> None:
    rows = sql.execute("SELECT id, session_id, sequence, content FROM episodes WHERE group_id = ?", (GROUP,))
    stored = {row[0]: (row[1], row[2], row[3]) for row in rows.fetchall()}
    expected_total = len(workload.written) + len(workload.retried)
    assert len(stored) == expected_total
    for w in workload.written:
        assert stored.get(w.id) == (w.session_id, w.sequence, w.content), w
    contents = Counter(content for _, _, content in stored.values())
    assert [c for c, n in contents.items() if n > 1] == [], "a memory was stored twice"


async def test_sequence_numbers_stay_unique_and_gapless_in_every_session(
    workload: Workload, sql: Any
) -> None:
    clashes = sql.execute(
        "SELECT session_id, sequence, count(*) FROM episodes GROUP BY group_id, session_id, sequence "
        "HAVING count(*) > 1"
    ).fetchall()
    assert clashes == []
    for session_id, expected in workload.sessions.items():
        sequences = [
            row[0]
            for row in sql.execute(
                "SELECT sequence FROM episodes WHERE group_id = ? AND session_id = ? ORDER BY sequence",
                (GROUP, session_id),
            ).fetchall()
        ]
        assert sequences == list(range(1, expected + 1)), session_id
    assert sql.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sql.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


async def test_the_keyword_and_vector_indexes_hold_a_row_for_every_episode(
    workload: Workload, sql: Any
) -> None:
    episodes = sql.execute("SELECT count(*) FROM episodes").fetchone()[0]
    assert sql.execute("SELECT count(*) FROM episodes_fts").fetchone()[0] == episodes
    sql.execute("INSERT INTO episodes_fts(episodes_fts, rank) VALUES ('integrity-check', 1)")
    for w in workload.written:
        matched = sql.execute(
            "SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?", (f"content : {w.token}",)
        ).fetchall()
        assert [row[0] for row in matched] == [w.id], w
    assert sql.execute("SELECT count(*) FROM episodes WHERE indexed = 1").fetchone()[0] == episodes
    assert sql.execute("SELECT count(*) FROM episode_vectors").fetchone()[0] == episodes


async def test_a_retried_identical_add_sent_by_every_process_at_once_is_stored_once(
    workload: Workload, sql: Any
) -> None:
    assert len(workload.retried) == RETRY_ROUNDS * (1 + RETRY_BATCH)
    for content, answers in workload.retried.items():
        assert len(answers) == len(PROCESSES), content
        assert len({a["id"] for a in answers}) == 1, f"{content!r} got several ids: {answers}"
        assert sorted(a["duplicate"] for a in answers) == [False] + [True] * (len(PROCESSES) - 1), answers
        count = sql.execute("SELECT count(*) FROM episodes WHERE content = ?", (content,)).fetchone()[0]
        assert count == 1, content


async def test_a_fresh_server_process_recalls_every_write_and_reports_every_session_count(
    workload: Workload, tmp_path: Path
) -> None:
    missing: list[Written] = []
    async with server(workload.db, tmp_path / "fresh.stderr.log", mode="legacy") as client:
        for session_id, expected in workload.sessions.items():
            opened = await client.call_tool(
                "open_session", {"group_id": GROUP, "session_id": session_id, "mode": "open"}
            )
            assert not opened.is_error, opened.content
            assert opened.structured_content is not None
            assert opened.structured_content["episode_count"] == expected, session_id
        for w in workload.written:
            recalled = await client.call_tool("recall", {"group_id": GROUP, "query": w.token, "limit": 5})
            assert not recalled.is_error, recalled.content
            assert recalled.structured_content is not None
            by_keyword = [
                h["id"] for h in recalled.structured_content["hits"] if "keyword" in h["matched_by"]
            ]
            # neighbours match too (each turn is indexed with the turns around it); the turn itself ranks first
            if by_keyword[:1] != [w.id] or by_keyword.count(w.id) != 1:
                missing.append(w)
    assert missing == [], f"{len(missing)} writes not recalled first by keyword, e.g. {missing[:3]}"


async def test_the_shared_session_resource_of_a_fresh_server_process_reports_every_episode(
    workload: Workload, tmp_path: Path
) -> None:
    uri = f"memory://groups/{GROUP}/sessions/{SHARED}"
    error = None
    async with server(workload.db, tmp_path / "resource.stderr.log") as client:
        try:
            result = await client.read_resource(uri)
        except MCPError as exc:
            error = str(exc)
    assert error is None, f"reading {uri} over stdio failed: {error}"
    detail = json.loads(result.contents[0].text)  # type: ignore[union-attr]
    assert detail["session"]["episode_count"] == workload.sessions[SHARED]
