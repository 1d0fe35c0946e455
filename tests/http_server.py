"""A real `mcp-memory serve --http` process on 127.0.0.1 for tests, and SDK clients that reach it.

`running(tmp_path, "--tokens-file", ...)` starts one on a free port, waits for GET /health and yields a
`Served` (its base URL, process and log); `client(url, token)` is the SDK's HTTP client with a bearer token.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.postgres import free_port
from tests.test_multiprocess import console_script

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


@dataclass
class Served:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def environment(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "HOME": str(tmp_path), "PATH": os.environ.get("PATH", os.defpath), "MCP_MEMORY_EMBEDDER": "hashing",
        **more,
    }  # fmt: skip


@contextlib.contextmanager
def running(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    db: str | None = None,
    port: int | None = None,
) -> Iterator[Served]:
    port = port or free_port()
    log_path = tmp_path / f"server-{port}.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [str(console_script()), "--db", db or str(tmp_path / "m.db"), "serve", "--http", "--port", str(port), *args],
        env=env or environment(tmp_path), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    served = Served(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{served.base}/health", timeout=2) as answer:
                    assert json.load(answer)["status"] == "ok"
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None and time.monotonic() < deadline, served.log_text()
                time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=60)
        log.close()


def client(url: str, token: str | None = None, *, mode: str = "auto", delete_on_close: bool = True) -> Client:
    """The SDK's client over streamable HTTP, sending `token` as a bearer token."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    transport = streamable_http_client(
        url, http_client=create_mcp_http_client(headers=headers), terminate_on_close=delete_on_close
    )
    return Client(transport, mode=mode)  # type: ignore[arg-type]


def post(url: str, headers: dict[str, str], body: object = INITIALIZE) -> tuple[int, dict[str, str], bytes]:
    """A raw POST: the status, headers (lower-cased names) and body."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as refused:
        return int(refused.code), {k.lower(): v for k, v in refused.headers.items()}, refused.read()
