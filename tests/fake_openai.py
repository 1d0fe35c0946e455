"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API for tests.

Usage::

    with FakeOpenAI(dimension=16) as server:
        server.queue_chat("first answer", 500, Delay(2.0), "late answer")
        client = OpenAI(base_url=server.base_url, api_key="k")
        ...
        assert server.requests[-1].headers["authorization"] == "Bearer k"

``POST /v1/embeddings`` answers with deterministic vectors (the hashing embedder by default) and
``POST /v1/chat/completions`` with scripted replies. Every request is recorded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from mcp_memory.llm.embeddings import HashingEmbedder

ChatReply = str | int | Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Delay:
    """Script directive: wait ``seconds`` before handling the rest of the script for this request."""

    seconds: float


@dataclass
class RecordedRequest:
    """One request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any

    @property
    def authorization(self) -> str | None:
        """The Authorization header, if any."""
        return self.headers.get("authorization")


@dataclass
class _Script:
    """A queue of scripted replies for one endpoint plus the fallback."""

    items: deque[Any] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pop(self) -> Any:
        """Next scripted item, or None when the queue is empty."""
        with self.lock:
            return self.items.popleft() if self.items else None


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error document."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    kind = "server_error" if status >= 500 else "invalid_request_error"
    text = message or f"fake server scripted HTTP {status} ({phrase})"
    return {"error": {"message": text, "type": kind, "param": None, "code": str(status)}}


class FakeOpenAI:
    """A scriptable OpenAI-compatible server running in a background thread.

    ``reverse_data`` sends embedding rows in reverse order (each keeps its ``index``), as servers may.
    """

    def __init__(
        self,
        *,
        dimension: int = 32,
        chat_default: ChatReply = "OK",
        embed_fn: Callable[[Sequence[str]], np.ndarray] | None = None,
        model_name: str | None = None,
        reverse_data: bool = False,
    ) -> None:
        self.dimension = dimension
        self.chat_default: ChatReply = chat_default
        self.embed_fn = embed_fn or HashingEmbedder(dimension).embed
        self.model_name = model_name
        self.reverse_data = reverse_data
        self.requests: list[RecordedRequest] = []
        self._chat = _Script()
        self._embeddings = _Script()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Bind an ephemeral port and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed handlers, drop kept-alive connections and join the thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses and scripting ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """Base URL for an OpenAI client, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def queue_chat(self, *items: str | int | Delay | Callable[[dict[str, Any]], str]) -> None:
        """Script chat replies: content strings, int HTTP error statuses, Delay directives or callables."""
        with self._chat.lock:
            self._chat.items.extend(items)

    def queue_embeddings(self, *items: int | Delay) -> None:
        """Script the next embedding replies: int HTTP error statuses or Delay directives."""
        with self._embeddings.lock:
            self._embeddings.items.extend(items)

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        """Recorded requests whose path ends with ``path_suffix`` (e.g. "/embeddings")."""
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    # -- request handling (called from handler threads) -------------------------------------------

    def _next(self, script: _Script) -> Any:
        """Pop the next scripted item, honouring Delay directives (interruptible by ``stop``)."""
        item = script.pop()
        while isinstance(item, Delay):
            if self._stopping.wait(item.seconds):
                return None
            item = script.pop()
        return item

    def _embeddings_reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Scripted error or a list of embeddings in OpenAI's format (float or base64)."""
        item = self._next(self._embeddings)
        if isinstance(item, int):
            return item, _error_body(item)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        if not texts or not all(isinstance(t, str) for t in texts):
            return 400, _error_body(400, "'input' must be a string or a non-empty list of strings")
        vectors = np.asarray(self.embed_fn(texts), dtype=np.float32)
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(vector, as_base64)}
            for i, vector in enumerate(vectors)
        ]
        if self.reverse_data:
            data.reverse()
        tokens = sum(len(t.split()) for t in texts)
        return 200, {
            "object": "list",
            "data": data,
            "model": self.model_name or body.get("model", "fake-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _chat_reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Scripted error or a chat.completion whose content comes from the script or the default."""
        item = self._next(self._chat)
        if item is None:
            item = self.chat_default
        if isinstance(item, int):
            return item, _error_body(item)
        content = item(body) if callable(item) else str(item)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        completion_tokens = len(content.split())
        return 200, {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name or body.get("model", "fake-chat"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def _encode(vector: np.ndarray, as_base64: bool) -> list[float] | str:
    """An embedding as a JSON float list or base64 of little-endian float32."""
    if as_base64:
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(v) for v in vector]


class _Handler(BaseHTTPRequestHandler):
    """Routes POSTs to the owning FakeOpenAI; everything else is a 404."""

    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest output is for test results."""

    def setup(self) -> None:
        super().setup()
        self.fake._connections.add(self.connection)

    def finish(self) -> None:
        self.fake._connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        """Record the request and dispatch on its path."""
        body = self._read_json()
        fake = self.fake
        fake.requests.append(
            RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        if body is None:
            self._send(400, _error_body(400, "request body is not valid JSON"))
        elif self.path.rstrip("/").endswith("/embeddings"):
            self._send(*fake._embeddings_reply(body))
        elif self.path.rstrip("/").endswith("/chat/completions"):
            self._reply_chat(body)
        else:
            self._send(404, _error_body(404, f"unknown path {self.path}"))

    def do_GET(self) -> None:
        """Answer ``/v1/models`` with a tiny list; other paths are 404."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake.requests.append(RecordedRequest("GET", self.path, headers, None))
        if self.path.rstrip("/").endswith("/models"):
            self._send(
                200, {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "fake"}]}
            )
        else:
            self._send(404, _error_body(404, f"unknown path {self.path}"))

    def _reply_chat(self, body: dict[str, Any]) -> None:
        """Send a chat completion, as server-sent events when the request asked to stream."""
        status, payload = self.fake._chat_reply(body)
        if status != 200 or not body.get("stream"):
            self._send(status, payload)
            return
        self._send_stream(payload)

    def _read_json(self) -> Any:
        """The request body parsed as JSON, or None if it is not JSON."""
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return None

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        """Send a JSON response; errors ask the client to retry quickly."""
        data = json.dumps(payload).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            if status >= 400:
                self.send_header("retry-after-ms", "1")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_stream(self, completion: dict[str, Any]) -> None:
        """Send a chat completion as two ``chat.completion.chunk`` events and ``[DONE]``."""
        choice = completion["choices"][0]
        base = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        chunks = [
            base | {"choices": [{"index": 0, "delta": choice["message"], "finish_reason": None}]},
            base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        data = events.encode("utf-8")
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve(**kwargs: Any) -> Iterator[FakeOpenAI]:
    """Generator for pytest fixtures: ``yield from serve(dimension=8)`` starts and always stops a server."""
    server = FakeOpenAI(**kwargs).start()
    try:
        yield server
    finally:
        server.stop()
