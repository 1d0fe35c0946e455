"""`mcp-memory serve --http` (slow): a real server process on 127.0.0.1, reached with the SDK's HTTP client.

Every client shares one manager; a session's references are released when its client ends the session;
foreign Host and Origin headers are refused (421, 403); /health answers; binding beyond loopback is refused
while there is no authentication.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client

from tests.helpers import call, call_error
from tests.postgres import free_port
from tests.test_multiprocess import console_script

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        "HOME": str(tmp_path),
        "PATH": os.environ.get("PATH", os.defpath),
        "MCP_MEMORY_EMBEDDER": "hashing",
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [str(console_script()), "--db", str(tmp_path / "m.db"), "serve", "--http", "--port", str(port)],
        env=environment(tmp_path), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    assert json.load(answer)["status"] == "ok"
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "server.log"
                ).read_text()
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(INITIALIZE).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


async def test_clients_share_one_memory_over_http(server: str) -> None:
    async with Client(f"{server}/mcp") as writer, Client(f"{server}/mcp") as reader:
        await call(writer, "create_group", group_id="g", user_ids=["ana"])
        await call(writer, "open_session", group_id="g", session_id="s")
        await call(
            writer, "add_memory", group_id="g", session_id="s", content="I painted a sunrise", producer="ana"
        )
        found = await call(reader, "recall", group_id="g", query="painted sunrise")
        assert found["hits"][0]["content"] == "I painted a sunrise"


async def test_a_sessions_references_are_released_when_its_client_ends_the_session(server: str) -> None:
    async with Client(f"{server}/mcp", mode="legacy") as other:  # a protocol with sessions
        async with Client(f"{server}/mcp", mode="legacy") as holder:
            await call(holder, "create_group", group_id="g", user_ids=["ana"])
            await call(holder, "open_session", group_id="g", session_id="s")
            refused = await call_error(other, "delete_session", group_id="g", session_id="s")
            assert "is open" in refused
        deleted = await call(other, "delete_session", group_id="g", session_id="s")  # the holder sent DELETE
        assert deleted["deleted_episodes"] == 0


def test_foreign_host_and_origin_headers_are_refused(server: str) -> None:
    assert post(f"{server}/mcp", {}) == 200
    assert post(f"{server}/mcp", {"Host": "evil.example"}) == 421
    assert post(f"{server}/mcp", {"Origin": "http://evil.example"}) == 403


def test_binding_beyond_loopback_is_refused_without_authentication(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(console_script()), "--db", str(tmp_path / "m.db"), "serve", "--http", "--host", "0.0.0.0"],
        env=environment(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0" in done.stderr and "127.0.0.1" in done.stderr
