"""A bare JSON-RPC client over the console script's stdin and stdout, line by line.

For what the SDK's client cannot do: send bytes a well-behaved client never would, see every line the
server writes, and kill the server process at a moment of the test's choosing.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = "2025-11-25"
REPLY_TIMEOUT_S = 60.0


def console_script() -> Path:
    script = Path(sys.executable).parent / ("mcp-memory.exe" if sys.platform == "win32" else "mcp-memory")
    assert script.exists(), f"the console script is not installed at {script}; run `uv sync`"
    return script


class RawServer:
    """One `mcp-memory` process on `db`, spoken to in raw JSON-RPC lines."""

    def __init__(self, db: Path, *, env: dict[str, str] | None = None, stderr: Path | None = None) -> None:
        base = {
            "HOME": str(db.parent),
            "PATH": os.environ.get("PATH", os.defpath),
            "MCP_MEMORY_EMBEDDER": "hashing",
        }
        self._stderr = (stderr or db.with_suffix(".stderr")).open("ab")
        self.process = subprocess.Popen(
            [str(console_script()), "--db", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env={**base, **(env or {})},
        )  # fmt: skip
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def handshake(self) -> dict[str, Any]:
        reply = self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        self.send_line(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return reply

    def send_line(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
        assert self.process.stdin is not None
        self.process.stdin.write(data.rstrip(b"\n") + b"\n")
        self.process.stdin.flush()

    def next_line(self, timeout: float = REPLY_TIMEOUT_S) -> bytes | None:
        """The next line the server writes; None once it has closed stdout. Raises queue.Empty on timeout."""
        return self._lines.get(timeout=timeout)

    def reply_to(self, request_id: Any, timeout: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        """The response carrying `request_id`, skipping notifications; fails on any other response."""
        while True:
            line = self.next_line(timeout)
            if line is None:
                raise EOFError(f"the server closed stdout before answering request {request_id!r}")
            message = json.loads(line)
            if "id" not in message:
                continue  # a notification (a log message, say)
            assert message["id"] == request_id, f"expected the reply to {request_id!r}, got {message!r}"
            return message

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = REPLY_TIMEOUT_S
    ) -> dict[str, Any]:
        """Send a request (json.dumps: NaN stays a literal, unpaired surrogates become \\ud800 escapes) and
        return its reply."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send_line(json.dumps(message))
        return self.reply_to(request_id, timeout)

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool's result (`structuredContent`, `isError`, `content`), or an AssertionError on a protocol error."""
        reply = self.request("tools/call", {"name": name, "arguments": arguments})
        assert "result" in reply, reply
        return reply["result"]

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a crash or a killed client would leave it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)

    def close(self) -> int:
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.wait()
        self._stderr.close()
        return code

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
