"""`mcp-memory serve --http` (slow): a real server process on 127.0.0.1, reached with the SDK's HTTP client.

Every client shares one manager. A session's references are released when its client ends the session or
it stays idle past the timeout; stateless requests take none. Foreign Host and Origin headers are refused
(421, 403); /health answers; binding beyond loopback is refused without authentication; the settings
have environment variables; each request logs a line without the memory's text; SIGTERM lets a write in
flight finish.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.fake_openai import Delay, FakeOpenAI
from tests.helpers import call, call_error
from tests.http_server import client, environment, post, running
from tests.postgres import free_port
from tests.test_multiprocess import console_script

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with running(tmp_path) as served:
        yield served.base


async def test_clients_share_one_memory_over_http(server: str) -> None:
    async with client(f"{server}/mcp") as writer, client(f"{server}/mcp") as reader:
        await call(writer, "create_group", group_id="g", user_ids=["ana"])
        await call(writer, "open_session", group_id="g", session_id="s")
        await call(
            writer, "add_memory", group_id="g", session_id="s", content="I painted a sunrise", producer="ana"
        )
        found = await call(reader, "recall", group_id="g", query="painted sunrise")
        assert found["hits"][0]["content"] == "I painted a sunrise"


async def test_a_sessions_references_are_released_when_its_client_ends_the_session(server: str) -> None:
    async with client(f"{server}/mcp", mode="legacy") as other:  # a protocol with sessions
        async with client(f"{server}/mcp", mode="legacy") as holder:
            await call(holder, "create_group", group_id="g", user_ids=["ana"])
            await call(holder, "open_session", group_id="g", session_id="s")
            refused = await call_error(other, "delete_session", group_id="g", session_id="s")
            assert "is open" in refused
        deleted = await call(other, "delete_session", group_id="g", session_id="s")  # the holder sent DELETE
        assert deleted["deleted_episodes"] == 0


def test_foreign_host_and_origin_headers_are_refused(server: str) -> None:
    assert post(f"{server}/mcp", {})[0] == 200
    assert post(f"{server}/mcp", {"Host": "evil.example"})[0] == 421
    assert post(f"{server}/mcp", {"Origin": "http://evil.example"})[0] == 403


def test_binding_beyond_loopback_is_refused_without_authentication(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(console_script()), "--db", str(tmp_path / "m.db"), "serve", "--http", "--host", "0.0.0.0"],
        env=environment(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0" in done.stderr and "127.0.0.1" in done.stderr


async def test_a_session_idle_past_the_timeout_releases_its_references(tmp_path: Path) -> None:
    with running(tmp_path, "--session-idle-timeout", "1.5") as served:
        async with client(served.url, mode="legacy") as other:
            # a client that goes away without ending its session (no DELETE)
            async with client(served.url, mode="legacy", delete_on_close=False) as holder:
                await call(holder, "create_group", group_id="g", user_ids=["ana"])
                opened = await call(holder, "open_session", group_id="g", session_id="s")
                assert opened["reference_count"] == 1
            assert "is open" in await call_error(other, "delete_session", group_id="g", session_id="s")
            await anyio.sleep(4)  # the SDK ends the idle session; its references go with it
            deleted = await call(other, "delete_session", group_id="g", session_id="s")
            assert deleted["deleted_episodes"] == 0


@pytest.mark.parametrize("stateless", [True, False], ids=["stateless", "modern-protocol"])
async def test_stateless_requests_take_no_references(tmp_path: Path, stateless: bool) -> None:
    """--stateless (any protocol) and the 2026-07-28 protocol (no sessions) hold nothing open."""
    with running(tmp_path, *(["--stateless"] if stateless else [])) as served:
        async with (
            client(served.url, mode="legacy" if stateless else "auto") as first,
            client(served.url) as other,
        ):
            await call(first, "create_group", group_id="g", user_ids=["ana"])
            opened = await call(first, "open_session", group_id="g", session_id="s")
            assert opened["reference_count"] == 0 and opened["created"]
            await call(first, "add_memory", group_id="g", session_id="s", content="kept", producer="ana")
            closed = await call(first, "close_session", group_id="g", session_id="s")
            assert not closed["released"] and "stateless" in closed["message"]
            deleted = await call(other, "delete_session", group_id="g", session_id="s")  # nobody holds it
            assert deleted["deleted_episodes"] == 1


async def test_settings_come_from_the_environment_too(tmp_path: Path) -> None:
    env = environment(
        tmp_path, MCP_MEMORY_HTTP="1", MCP_MEMORY_STATELESS="1", MCP_MEMORY_ALLOWED_HOSTS="memory.internal:*"
    )
    port = free_port()
    process = subprocess.Popen(
        [str(console_script()), "--db", str(tmp_path / "m.db")],
        env={**env, "MCP_MEMORY_PORT": str(port)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 30
        while True:
            try:
                if post(url, {})[0] == 200:
                    break
            except urllib.error.URLError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert post(url, {"Host": "memory.internal:80"})[0] == 200
        status, headers, _ = post(url, {})
        assert "mcp-session-id" not in headers  # stateless: no sessions
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_each_request_logs_a_line_without_the_memorys_text(tmp_path: Path) -> None:
    with running(tmp_path) as served:
        async with client(served.url) as memory:
            await call(memory, "create_group", group_id="g", user_ids=["ana"])
            await call(memory, "open_session", group_id="g", session_id="s")
            await call(
                memory, "add_memory", group_id="g", session_id="s", content="my pin is 4711", producer="ana"
            )
            await call_error(memory, "recall", group_id="nowhere", query="pin")
            await memory.read_resource("memory://groups")
    text = served.log_text()
    lines = [
        json.loads(line.split("mcp_memory.requests: ", 1)[1])
        for line in text.splitlines()
        if "mcp_memory.requests: " in line
    ]
    assert [(r["kind"], r["name"], r["group_id"], r["outcome"]) for r in lines] == [
        ("tool", "create_group", "g", "ok"),
        ("tool", "open_session", "g", "ok"),
        ("tool", "add_memory", "g", "ok"),
        ("tool", "recall", "nowhere", "not_found"),
        ("resource", "memory://groups", None, "ok"),
    ]
    assert all(r["principal"] is None and r["duration_ms"] >= 0 for r in lines)
    assert "4711" not in text and "pin" not in text


async def test_sigterm_lets_a_write_in_flight_finish(tmp_path: Path) -> None:
    """The embedder answers slowly; SIGTERM arrives while add_memory waits for it: the call still succeeds
    and the memory is in the database after the process has exited."""
    with FakeOpenAI(dimension=16) as embeddings:
        env = environment(
            tmp_path, MCP_MEMORY_EMBEDDER="openai", MCP_MEMORY_EMBEDDING_BASE_URL=embeddings.base_url,
            MCP_MEMORY_EMBEDDING_MODEL="slow-embedder", MCP_MEMORY_EMBEDDING_API_KEY="k",
            MCP_MEMORY_SHUTDOWN_TIMEOUT_S="20",
        )  # fmt: skip
        with running(tmp_path, env=env) as served:
            async with client(served.url) as memory:
                await call(memory, "create_group", group_id="g", user_ids=["ana"])
                await call(memory, "open_session", group_id="g", session_id="s")
                seen = len(embeddings.requests_to("/embeddings"))
                embeddings.queue_embeddings(Delay(2.0))
                answer: dict[str, object] = {}

                async def write() -> None:
                    answer.update(
                        await call(
                            memory,
                            "add_memory",
                            group_id="g",
                            session_id="s",
                            content="last words",
                            producer="ana",
                        )
                    )

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(write)
                    while len(embeddings.requests_to("/embeddings")) == seen:  # the write is in flight
                        await anyio.sleep(0.05)
                    served.process.send_signal(signal.SIGTERM)
            assert answer["stored"] == 1
            # uvicorn raises the signal again once it has shut down: the exit status says SIGTERM
            assert served.process.wait(timeout=30) in (0, -signal.SIGTERM)
            assert "Application shutdown complete" in served.log_text()
        stats = subprocess.run(
            [str(console_script()), "--db", str(tmp_path / "m.db"), "stats"],
            env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert sum(json.loads(stats.stdout)["episodes_by_type"].values()) == 1
