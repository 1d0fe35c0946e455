"""summarize_session and get_task end to end: a real in-process MCP client, a real SQLite file and a
real loopback OpenAI-compatible server (tests/fake_openai.py) or the client's own model via sampling.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlean
import sqlite_vec
from mcp import Client
from mcp_types import CreateMessageRequestParams, CreateMessageResult, TextContent

from mcp_memory.config import Config
from mcp_memory.manager import MemoryManager
from mcp_memory.models import ReadOptions
from mcp_memory.recall.request import RecallStrategy
from mcp_memory.server import build_server
from mcp_memory.services import tasks
from mcp_memory.times import iso
from tests.fake_openai import Delay, FakeOpenAI
from tests.helpers import call, call_error, recall

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP, SESSION, OTHER = "team", "planning", "later"
USERS, AGENTS = ["ana"], ["helper"]
FULL = {"topic": "Database tuning", "action": "Added two indexes to orders", "outcome": "Queries 93% faster"}
POINTS = ["Optimised the slow order queries", "Added two indexes", "Queries are now 93% faster"]
TURNS = [
    ("ana", "user", "The order queries are slow, can we tune the database?"),
    ("helper", "assistant", "I added two indexes on the orders table."),
    ("ana", "user", "Great, the queries are much faster now."),
    ("helper", "assistant", "They went from 900 ms to 60 ms."),
]
NO_LLM = "LLM not configured — episodic memory generation unavailable"
DEADLINE_S = 20.0
CATEGORY = "unavailable: "  # the category word every error starts with (errors.py)


def reply(body: dict[str, Any]) -> str:
    """The fake model's answer: points for a lightweight prompt, topic/action/outcome for a full one."""
    system = body["messages"][0]["content"]
    return json.dumps({"points": POINTS} if '"points"' in system else FULL)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(chat_default=reply) as server:
        yield server


@pytest.fixture
def llm_config(config: Config, fake: FakeOpenAI) -> Config:
    return replace(config, llm_base_url=fake.base_url, llm_api_key="sk-test")


@asynccontextmanager
async def connected(config: Config, **client_options: Any) -> AsyncIterator[Client]:
    async with Client(build_server(config), **client_options) as client:
        yield client


async def seed(client: Client, sessions: tuple[str, ...] = (SESSION, OTHER)) -> None:
    """The group, its sessions, and the conversation in SESSION."""
    await call(client, "create_group", group_id=GROUP, user_ids=USERS, agent_ids=AGENTS)
    for session in sessions:
        await call(client, "open_session", group_id=GROUP, session_id=session)
    memories = [{"producer": p, "role": r, "content": c} for p, r, c in TURNS]
    await call(client, "add_memory", group_id=GROUP, session_id=SESSION, memories=memories)


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database file directly (sqlite-vec loaded)."""
    with closing(sqlean.connect(str(db), isolation_level=None)) as conn:
        conn.enable_load_extension(True)
        sqlite_vec.load(conn)
        return [tuple(row) for row in conn.execute(sql, params).fetchall()]


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll `check` until it returns something truthy, within DEADLINE_S."""
    with anyio.move_on_after(DEADLINE_S):
        while not (value := await check()):
            await anyio.sleep(0.01)
        return value
    pytest.fail(f"timed out waiting for {what}")


async def finished_task(client: Client, task_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        info = await call(client, "get_task", task_id=task_id)
        return None if info["status"] == "processing" else info

    result: dict[str, Any] = await eventually(check, f"task {task_id}")
    return result


# -- sync, with the configured LLM --------------------------------------------------------------


@pytest.mark.parametrize("vector_cache_mb", [1024, 0], ids=["in-memory vectors", "vec0"])
async def test_a_full_summary_is_stored_and_recalled_from_every_session_of_the_group(
    llm_config: Config, fake: FakeOpenAI, vector_cache_mb: int
) -> None:
    async with connected(replace(llm_config, vector_cache_mb=vector_cache_mb)) as client:
        await seed(client)
        result = await call(client, "summarize_session", group_id=GROUP, session_id=SESSION)
        assert result["status"] == "completed" and result["task_id"] is None
        assert result["mode"] == "full" and result["truncated"] is False
        assert result["content"].startswith("Session Summary: Database tuning")
        metadata = result["metadata"]
        assert {k: metadata[k] for k in FULL} == FULL
        assert metadata["source"] == "llm" and metadata["auto_triggered"] is False
        assert len(metadata["source_episode_ids"]) == len(TURNS)
        request = fake.requests_to("/chat/completions")[-1]
        assert request.authorization == "Bearer sk-test"
        assert "900 ms to 60 ms" in request.json["messages"][1]["content"]

        everywhere = await call(client, "recall", group_id=GROUP, query="database tuning indexes")
        stored = next(h for h in everywhere["hits"] if h["id"] == result["memory_id"])
        assert stored["memory_type"] == "summary" and stored["session_id"] == SESSION
        assert stored["producer"] == "helper" and stored["metadata"]["topic"] == "Database tuning"
        # a recall scoped to another session of the group finds the summary too (inside the search)
        scoped = await call(client, "recall", group_id=GROUP, query="database tuning", session_id=OTHER)
        assert [h["id"] for h in scoped["hits"]] == [result["memory_id"]]
        assert set(scoped["hits"][0]["matched_by"]) == {"keyword", "vector"}


@pytest.mark.sqlite_only
async def test_a_scoped_recall_finds_summaries_of_other_sessions_by_vector_alone(config: Config) -> None:
    """Both vector paths (in-memory and vec0) apply 'this session OR a summary' as a search condition."""
    for cache_mb in (1024, 0):
        path = config.db_path.with_name(f"vectors-{cache_mb}.db")
        async with MemoryManager(replace(config, db_path=path, vector_cache_mb=cache_mb)) as manager:
            await manager.groups.create_group(GROUP, USERS, AGENTS)
            for session in (SESSION, OTHER):
                await manager.sessions.open_session(GROUP, session)
            turns = [{"producer": "ana", "content": f"turn {n} about gardening"} for n in range(30)]
            await manager.memories.add_memories(GROUP, OTHER, turns)
            summary = {"producer": "helper", "content": "Session Summary: sailing", "memory_type": "summary"}
            stored = await manager.memories.add_memories(GROUP, SESSION, [summary])
            other_note = {"producer": "ana", "content": "Session Summary: sailing", "memory_type": "note"}
            await manager.memories.add_memories(GROUP, SESSION, [other_note])
            found = await recall(manager,
                GROUP, "Session Summary: sailing", session_id=OTHER, limit=5,
                strategy=RecallStrategy.vector_only(), options=ReadOptions(min_similarity=-1),
            )  # fmt: skip
            ids = [h.id for h in found.hits]
            assert ids[0] == stored.memories[0].id, cache_mb  # the summary, from the other session
            assert {h.session_id for h in found.hits[1:]} == {OTHER}  # never the other session's note
            only_notes = await recall(
                manager,
                GROUP,
                "sailing",
                session_id=OTHER,
                memory_types=["note"],
                strategy=RecallStrategy.vector_only(),
            )
            assert only_notes.hits == []


@pytest.mark.sqlite_only
async def test_generate_embedding_false_stores_the_summary_without_a_vector_but_keywords_find_it(
    llm_config: Config,
) -> None:
    async with connected(llm_config) as client:
        await seed(client)
        result = await call(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, generate_embedding=False
        )
        found = await call(client, "recall", group_id=GROUP, query="database tuning", session_id=OTHER)
        assert [(h["id"], h["matched_by"]) for h in found["hits"]] == [(result["memory_id"], ["keyword"])]
    memory_id = result["memory_id"]
    assert query(
        llm_config.db_path, "SELECT count(*) FROM episode_vectors WHERE rowid = ?", (memory_id,)
    ) == [(0,)]
    assert query(llm_config.db_path, "SELECT memory_type FROM episodes WHERE id = ?", (memory_id,)) == [
        ("summary",)
    ]
    # like a fact, a summary is indexed alone: it is no turn's neighbour ("93" is only in the summary)
    fts = "SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?"
    assert query(llm_config.db_path, fts, ('content : "93"',)) == [(memory_id,)]
    assert query(llm_config.db_path, fts, ('{before after} : "93"',)) == []


def other_points(n: int) -> list[str]:
    """Points that differ from call to call: the same summary again is a duplicate and takes no slot."""
    return [*POINTS[:2], f"Queries are now {90 + n}% faster"]


async def test_three_lightweight_summaries_then_a_rate_limit_that_suggests_full(
    llm_config: Config, fake: FakeOpenAI
) -> None:
    async with connected(llm_config) as client:
        await seed(client)
        for n in range(3):
            fake.queue_chat(json.dumps({"points": other_points(n)}))
            result = await call(
                client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight"
            )
            assert result["metadata"]["points"] == other_points(n)
            assert result["content"].startswith("Session Highlights:\n• ")
        text = await call_error(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight"
        )
        assert "rate limit exceeded" in text and "mode='full'" in text
        for _ in range(4):  # full summaries are not limited
            await call(client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="full")
        # the limit is per session
        await call(client, "add_memory", group_id=GROUP, session_id=OTHER, content="hello", producer="ana")
        await call(client, "summarize_session", group_id=GROUP, session_id=OTHER, mode="lightweight")


# -- async tasks --------------------------------------------------------------------------------


async def test_an_async_summary_returns_a_task_that_completes_and_survives_a_restart(
    llm_config: Config,
) -> None:
    async with connected(llm_config) as client:
        await seed(client)
        started = await call(client, "summarize_session", group_id=GROUP, session_id=SESSION, sync=False)
        assert started["status"] == "processing" and started["task_id"].startswith("task_")
        assert started["mode"] == "full" and started["truncated"] is False and started["memory_id"] is None
        done = await finished_task(client, started["task_id"])
        assert done["status"] == "completed" and done["error"] is None and done["kind"] == "summary"
        assert done["result"]["metadata"]["topic"] == "Database tuning"
        assert datetime.fromisoformat(done["updated_at"]) >= datetime.fromisoformat(done["created_at"])
    async with connected(llm_config) as restarted:
        again = await call(restarted, "get_task", task_id=started["task_id"])
        assert again["status"] == "completed" and again["result"] == done["result"]
        found = await call(restarted, "recall", group_id=GROUP, query="database tuning", session_id=OTHER)
        assert [h["id"] for h in found["hits"]] == [done["result"]["memory_id"]]


async def test_a_failing_llm_fails_the_task_with_the_reason_and_gives_the_lightweight_slot_back(
    llm_config: Config, fake: FakeOpenAI
) -> None:
    fake.chat_default = 500
    async with connected(llm_config) as client:
        await seed(client)
        started = await call(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight", sync=False
        )
        failed = await finished_task(client, started["task_id"])
        assert failed["status"] == "failed" and failed["result"] is None
        assert "HTTP 500" in failed["error"] and "check the server's logs" in failed["error"]
        fake.chat_default = reply
        for _ in range(3):  # the failed generation did not use up one of the three
            await call(client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight")


@pytest.mark.sqlite_only
async def test_a_task_cut_off_by_a_shutdown_is_recorded_failed_and_its_slot_given_back(
    llm_config: Config, fake: FakeOpenAI
) -> None:
    fake.queue_chat(Delay(3.0), json.dumps({"points": POINTS}))
    async with connected(llm_config) as client:
        await seed(client)
        started = await call(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight", sync=False
        )
        await eventually(
            lambda: anyio.to_thread.run_sync(fake.requests_to, "/chat/completions"), "the request"
        )
    async with connected(llm_config) as restarted:
        info = await call(restarted, "get_task", task_id=started["task_id"])
        assert info["status"] == "failed" and info["error"] == tasks.SHUTDOWN_REASON
    assert query(llm_config.db_path, "SELECT lightweight FROM summary_counts") == [(0,)]


def insert_task(db_path: Path, owner: str, created: datetime) -> str:
    """A summary task another server process left `processing`, its lease running LEASE_S from `created`."""
    task_id = f"task_{uuid.uuid4().hex}"
    times = (iso(created), iso(created))
    lease = iso(created + timedelta(seconds=tasks.LEASE_S))
    with closing(sqlean.connect(str(db_path), isolation_level=None)) as conn:
        conn.execute(
            "INSERT INTO tasks(task_id, kind, group_id, session_id, status, created_at, updated_at, owner, "
            "lease_until) VALUES (?, 'summary', ?, ?, 'processing', ?, ?, ?, ?)",
            (task_id, GROUP, SESSION, *times, owner, lease),
        )
    return task_id


@pytest.mark.sqlite_only
async def test_a_task_left_processing_by_a_dead_process_is_reported_failed(config: Config) -> None:
    async with connected(config) as client:
        await seed(client)

    def orphan() -> str:
        return insert_task(config.db_path, "gone:4242:deadbeef", datetime.now(UTC) - timedelta(minutes=5))

    before_start = orphan()
    async with connected(config) as client:
        info = await call(client, "get_task", task_id=before_start)
        assert info["status"] == "failed" and info["error"] == tasks.ORPHAN_REASON
        # a lease that lapses while this server runs is seen on the next read too
        while_running = orphan()
        info = await call(client, "get_task", task_id=while_running)
        assert info["status"] == "failed" and info["error"] == tasks.ORPHAN_REASON


@pytest.mark.sqlite_only
async def test_a_task_of_a_process_that_died_on_this_host_is_failed_at_the_next_start_despite_its_lease(
    config: Config,
) -> None:
    async with connected(config) as client:
        await seed(client)
    exited = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owner = f"{socket.gethostname()}:{int(exited.stdout)}:cafef00d"
    task_id = insert_task(config.db_path, owner, datetime.now(UTC))  # a fresh lease
    async with connected(config) as client:
        status = await call(client, "get_task", task_id=task_id)
    assert status["status"] == "failed" and status["error"] == tasks.ORPHAN_REASON


async def test_get_task_of_an_unknown_task_is_a_clear_error(client: Client) -> None:
    text = await call_error(client, "get_task", task_id="task_nope")
    assert "task 'task_nope' does not exist" in text and "summarize_session" in text
    tools = {t.name: t for t in (await client.list_tools()).tools}
    annotations = tools["get_task"].annotations
    assert annotations is not None and annotations.read_only_hint is True


# -- without a configured LLM: sampling, the caller's summary, the error -------------------------


async def test_mcp_sampling_writes_the_summary_when_no_llm_is_configured(config: Config) -> None:
    asked: list[CreateMessageRequestParams] = []

    async def sampling(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params)
        text = (
            json.dumps({"points": POINTS}) if '"points"' in (params.system_prompt or "") else json.dumps(FULL)
        )
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=text), model="client"
        )

    async with connected(config, mode="legacy", sampling_callback=sampling) as client:
        await seed(client)
        result = await call(client, "summarize_session", group_id=GROUP, session_id=SESSION)
        assert result["metadata"]["source"] == "sampling" and result["metadata"]["topic"] == "Database tuning"
        assert len(asked) == 1 and asked[0].max_tokens > 0
        assert "orders table" in asked[0].messages[0].content.text  # type: ignore[union-attr]
        # the request is over once sync=false returns, so sampling is never used in the background
        text = await call_error(client, "summarize_session", group_id=GROUP, session_id=SESSION, sync=False)
        assert text.startswith(CATEGORY + NO_LLM) and "sync=true" in text
        assert len(asked) == 1


async def test_on_the_2026_protocol_the_callers_summary_is_stored_and_without_any_source_the_error_says_so(
    config: Config,
) -> None:
    asked: list[CreateMessageRequestParams] = []

    async def sampling(context: Any, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="{}"), model="client"
        )

    # the client offers sampling, but the 2026-07-28 protocol has no back-channel: it is never asked
    async with connected(config, sampling_callback=sampling) as client:
        assert client.protocol_version == "2026-07-28"
        await seed(client)
        text = await call_error(client, "summarize_session", group_id=GROUP, session_id=SESSION)
        assert text.startswith(f"{CATEGORY}{NO_LLM}. Configure any OpenAI-compatible endpoint")
        assert (
            "LLM_API_KEY" in text and "LLM_BASE_URL" in text and "LLM_MODEL" in text and "`summary`" in text
        )
        result = await call(client, "summarize_session", group_id=GROUP, session_id=SESSION, summary=FULL)
        assert result["metadata"]["source"] == "caller" and result["content"].startswith("Session Summary:")
        as_text = await call(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight",
            summary=json.dumps(POINTS), sync=False,
        )  # fmt: skip
        done = await finished_task(client, as_text["task_id"])
        assert done["status"] == "completed" and done["result"]["metadata"]["points"] == POINTS
    assert asked == []


async def test_a_configured_llm_comes_before_the_callers_summary(
    llm_config: Config, fake: FakeOpenAI
) -> None:
    async with connected(llm_config) as client:
        await seed(client)
        result = await call(client, "summarize_session", group_id=GROUP, session_id=SESSION, summary=FULL)
        assert result["metadata"]["source"] == "llm"
        assert len(fake.requests_to("/chat/completions")) == 1


@pytest.mark.parametrize(
    ("mode", "summary", "problem"),
    [
        ("full", {"topic": "x", "action": "y"}, "outcome missing or empty"),
        ("lightweight", ["only one point"], "it has 1 points; give 3 to 5"),
        ("full", "not json at all", "it is not JSON"),
    ],
)
@pytest.mark.sqlite_only
async def test_a_malformed_caller_summary_is_a_clear_error_and_nothing_is_stored(
    config: Config, mode: str, summary: Any, problem: str
) -> None:
    async with connected(config) as client:
        await seed(client)
        text = await call_error(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, mode=mode, summary=summary
        )
        assert f"summary is not a valid {mode} summary ({problem})" in text and "nothing was stored" in text
    assert query(config.db_path, "SELECT count(*) FROM episodes WHERE memory_type = 'summary'") == [(0,)]
    assert query(config.db_path, "SELECT count(*) FROM summary_counts WHERE lightweight > 0") == [(0,)]


# -- automatic summaries ------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_every_n_turns_an_automatic_lightweight_summary_is_stored(
    llm_config: Config, fake: FakeOpenAI
) -> None:
    config = replace(llm_config, auto_trigger_threshold=6)
    async with connected(config) as client:
        await seed(client)  # 4 turns: not yet
        await call(
            client, "add_memory", group_id=GROUP, session_id=SESSION, content="One more", producer="ana"
        )
        await call(
            client, "add_memory", group_id=GROUP, session_id=SESSION, content="And six", producer="ana"
        )

        async def automatic() -> list[tuple[Any, ...]]:
            return query(config.db_path, "SELECT metadata FROM episodes WHERE memory_type = 'summary'")

        rows = await eventually(automatic, "the automatic summary")
        assert len(rows) == 1
        metadata = json.loads(rows[0][0])
        assert metadata["mode"] == "lightweight" and metadata["auto_triggered"] is True
        assert metadata["points"] == POINTS and len(metadata["source_episode_ids"]) == 6
        # it shares the lightweight limit: two more are allowed, then the limit
        for n in range(2):
            fake.queue_chat(json.dumps({"points": other_points(n)}))
            await call(client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight")
        text = await call_error(
            client, "summarize_session", group_id=GROUP, session_id=SESSION, mode="lightweight"
        )
        assert "rate limit exceeded" in text


@pytest.mark.sqlite_only
async def test_without_an_llm_the_automatic_trigger_does_nothing(config: Config) -> None:
    async with connected(replace(config, auto_trigger_threshold=2)) as client:
        await seed(client)
        await anyio.sleep(0)
    assert query(config.db_path, "SELECT count(*) FROM episodes WHERE memory_type = 'summary'") == [(0,)]


def test_the_memoria_variables_configure_the_limits(tmp_path: Path) -> None:
    env = {
        "MCP_MEMORY_DB": str(tmp_path / "m.db"),
        "MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION": "5",
        "MEMORIA_AUTO_TRIGGER_THRESHOLD": "0",
        "MCP_MEMORY_TASK_TTL_S": "3600",
    }
    config = Config.from_env(env)
    assert (config.max_lightweight_per_session, config.auto_trigger_threshold, config.task_ttl_s) == (
        5,
        0,
        3600,
    )
    defaults = Config.from_env({"MCP_MEMORY_DB": str(tmp_path / "m.db")})
    assert (defaults.max_lightweight_per_session, defaults.auto_trigger_threshold) == (3, 20)


# -- what cannot be summarised ------------------------------------------------------------------


async def test_a_session_without_episodes_and_an_unknown_session_are_clear_errors(llm_config: Config) -> None:
    async with connected(llm_config) as client:
        await seed(client)
        text = await call_error(client, "summarize_session", group_id=GROUP, session_id=OTHER)
        assert f"session {OTHER!r} in group {GROUP!r} has no episodes to summarise" in text
        text = await call_error(client, "summarize_session", group_id=GROUP, session_id="nowhere")
        assert "session 'nowhere' does not exist" in text and "open_session" in text
        text = await call_error(client, "summarize_session", group_id="nobody", session_id=SESSION)
        assert "group 'nobody' does not exist" in text
        # a summary is not summarised again: a session holding only summaries has no episodes either
        await call(
            client, "add_memory", group_id=GROUP, session_id=OTHER, content="Session Summary: old",
            producer="helper", memory_type="summary",
        )  # fmt: skip
        text = await call_error(client, "summarize_session", group_id=GROUP, session_id=OTHER, sync=False)
        assert "has no episodes to summarise" in text
