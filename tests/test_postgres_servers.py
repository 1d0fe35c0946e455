"""Three `mcp-memory` server processes on one PostgreSQL database, writing and recalling at once (a team).

One workload runs for the module: three stdio server processes (the console script with a postgresql://
--db), each driven by its own client, write at the same time to a session of their own and to one shared
session, in single adds and batches; after every write each recalls a word only another server wrote;
then all three send the same retried adds, and replace the same fact, at the same moment. The tests check,
by reading the database directly, that nothing failed, was lost or stored twice, that sequences are
unique, that exactly one value of the fact stayed current, and that each server found the others' writes
in its next recall (the change feed kept its in-memory keyword and vector copies current).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.helpers import as_sent
from tests.postgres import fresh_database
from tests.test_multiprocess import console_script

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.reliability]

GROUP = "team"
SHARED = "shared"
PROCESSES = ("alpha", "beta", "gamma")
ROUNDS = 12  # per server: a single add and a batch into each of its two sessions, then a recall
BATCH = 5
RETRIES = 4
DEADLINE_S = 240.0


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url) as url:
        yield url


@asynccontextmanager
async def server(url: str, log: Path) -> AsyncIterator[Client]:
    env = {
        "HOME": str(log.parent),
        "PATH": os.environ.get("PATH", os.defpath),
        "MCP_MEMORY_EMBEDDER": "hashing",
        "MCP_MEMORY_DB": url,
    }
    params = StdioServerParameters(command=str(console_script()), args=[], env=env)
    with log.open("a", encoding="utf-8") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:  # type: ignore[arg-type]
            yield client


@dataclass
class Workload:
    url: str
    logs: list[Path]
    written: list[tuple[str, str, int, int, str]] = field(
        default_factory=list
    )  # process, session, id, seq, text
    failures: list[str] = field(default_factory=list)
    found: dict[str, list[bool]] = field(
        default_factory=dict
    )  # process -> each recall found the others' word
    retried: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused_delete: str = ""


async def _call(work: Workload, client: Client, who: str, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, as_sent(tool, arguments))
    if result.is_error:
        work.failures.append(f"{who} {tool}: {result.content[0].text if result.content else result!r}")  # type: ignore[union-attr]
        return {}
    assert result.structured_content is not None
    return result.structured_content


def _word(process: str, round_: int) -> str:
    return f"zq{process}r{round_}"


async def _write(work: Workload, client: Client, process: str, round_: int, barrier: Any) -> None:
    word = _word(process, round_)
    for session in (f"solo-{process}", SHARED):
        single = {"content": f"{process} noted {word} in {session}", "producer": "ana"}
        batch = [{"content": f"{process} batch {round_} item {k} of {session}", "producer": "helper",
                  "role": "assistant"} for k in range(BATCH)]  # fmt: skip
        for memories in ([single], batch):
            answer = await _call(work, client, process, "add_memory", group_id=GROUP, session_id=session,
                                 memories=memories)  # fmt: skip
            for memory, added in zip(memories, answer.get("memories", []), strict=False):
                work.written.append((process, session, added["id"], added["sequence"], memory["content"]))
    await barrier(round_)
    others = [_word(other, round_) for other in PROCESSES if other != process]
    for other in others:
        hits = await _call(work, client, process, "recall", group_id=GROUP, query=other, limit=3)
        work.found.setdefault(process, []).append(any(other in h["content"] for h in hits.get("hits", [])))


async def _retry_and_replace(work: Workload, client: Client, process: str) -> None:
    for i in range(RETRIES):
        memory = {"content": f"retried {i}: the review moved", "producer": "ana",
                  "timestamp": f"2025-03-0{i + 1}T09:00:00Z"}  # fmt: skip
        answer = await _call(work, client, process, "add_memory", group_id=GROUP, session_id=SHARED, **memory)
        if answer:
            work.retried.setdefault(memory["content"], []).append(answer["memories"][0])
    await _call(work, client, process, "add_fact", group_id=GROUP, subject="the team", predicate="meets on",
                object=f"day of {process}", replace=True)  # fmt: skip


async def _run(work: Workload) -> None:
    arrived: dict[int, int] = Counter()
    passed: dict[int, anyio.Event] = {}
    ready, go, tried = anyio.Event(), anyio.Event(), anyio.Event()
    finished: set[str] = set()

    async def barrier(round_: int) -> None:
        """Every server has written this round before any recalls it."""
        event = passed.setdefault(round_, anyio.Event())
        arrived[round_] += 1
        if arrived[round_] == len(PROCESSES):
            event.set()
        await event.wait()

    async def worker(process: str, log: Path) -> None:
        async with server(work.url, log) as client:
            await ready.wait()
            for session in (f"solo-{process}", SHARED):
                await _call(work, client, process, "open_session", group_id=GROUP, session_id=session)
            for round_ in range(ROUNDS):
                await _write(work, client, process, round_, barrier)
            finished.add(process)
            if len(finished) == len(PROCESSES):
                go.set()
            await go.wait()
            await _retry_and_replace(work, client, process)
            if process == "alpha":  # beta still holds its own session open: another server may not delete it
                result = await client.call_tool(
                    "delete_session", {"group_id": GROUP, "session_id": "solo-beta"}
                )
                work.refused_delete = result.content[0].text if result.is_error else ""  # type: ignore[union-attr]
                tried.set()
            await tried.wait()  # every server keeps its sessions open until alpha has tried

    async with anyio.create_task_group() as tasks:
        for process, log in zip(PROCESSES, work.logs, strict=True):
            tasks.start_soon(worker, process, log)
        async with server(work.url, work.logs[0]) as creator:
            await _call(work, creator, "creator", "create_group", group_id=GROUP, user_ids=["ana"],
                        agent_ids=["helper"])  # fmt: skip
        ready.set()


@pytest.fixture(scope="module")
async def workload(database: str, tmp_path_factory: pytest.TempPathFactory) -> Workload:
    root = tmp_path_factory.mktemp("postgres-servers")
    work = Workload(url=database, logs=[root / f"{p}.log" for p in PROCESSES])
    with anyio.fail_after(DEADLINE_S):
        await _run(work)
    return work


def _rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


async def test_no_call_failed_and_no_server_logged_a_traceback(workload: Workload) -> None:
    assert workload.failures == [], "\n".join(workload.failures)
    assert len(workload.written) == len(PROCESSES) * ROUNDS * 2 * (1 + BATCH)
    logs = "\n".join(log.read_text(errors="replace") for log in workload.logs)
    assert "Traceback" not in logs, logs


async def test_every_write_is_stored_once_with_a_unique_sequence(workload: Workload) -> None:
    stored = {row[0]: (row[1], row[2], row[3]) for row in _rows(
        workload.url, "SELECT id, session_id, sequence, content FROM episodes WHERE group_id = %s "
        "AND memory_type = 'message'", (GROUP,))}  # fmt: skip
    assert len(stored) == len(workload.written) + len(workload.retried)
    for _, session, episode_id, sequence, content in workload.written:
        assert stored[episode_id] == (session, sequence, content)
    sequences = Counter((session, sequence) for session, sequence, _ in stored.values())
    assert [key for key, n in sequences.items() if n > 1] == []
    shared = [s for s, _, _ in stored.values() if s == SHARED]
    assert sorted(seq for s, seq, _ in stored.values() if s == SHARED) == list(range(1, len(shared) + 1))


async def test_the_shared_session_really_interleaved_the_servers_writes(workload: Workload) -> None:
    rows = _rows(workload.url, "SELECT content FROM episodes WHERE group_id = %s AND session_id = %s "
                 "ORDER BY sequence", (GROUP, SHARED))  # fmt: skip
    writers = [row[0].split()[0] for row in rows if row[0].split()[0] in PROCESSES]
    switches = sum(a != b for a, b in zip(writers, writers[1:], strict=False))
    assert switches >= 6, f"the writes barely interleaved ({switches} switches): the test proves little"


async def test_a_retried_add_sent_by_every_server_at_once_is_stored_once(workload: Workload) -> None:
    assert len(workload.retried) == RETRIES
    for content, answers in workload.retried.items():
        assert len({a["id"] for a in answers}) == 1, content
        assert sum(not a["duplicate"] for a in answers) == 1, content
        assert _rows(workload.url, "SELECT count(*) FROM episodes WHERE content = %s", (content,))[0][0] == 1


async def test_replacing_one_fact_from_every_server_at_once_leaves_exactly_one_current(
    workload: Workload,
) -> None:
    facts = _rows(
        workload.url, "SELECT object, valid_to FROM facts WHERE group_id = %s ORDER BY id", (GROUP,)
    )
    assert len(facts) == len(PROCESSES)
    assert sum(valid_to is None for _, valid_to in facts) == 1


async def test_each_server_found_the_others_writes_in_its_next_recall(workload: Workload) -> None:
    assert set(workload.found) == set(PROCESSES)
    for process, found in workload.found.items():
        assert found and all(found), (process, found)


async def test_a_session_another_server_holds_open_is_not_deleted(workload: Workload) -> None:
    assert "open on another server" in workload.refused_delete, workload.refused_delete
    rows = _rows(workload.url, "SELECT count(*) FROM sessions WHERE group_id = %s AND session_id = 'solo-beta'",
                 (GROUP,))  # fmt: skip
    assert rows[0][0] == 1
