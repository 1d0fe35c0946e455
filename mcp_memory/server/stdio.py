"""MCP over stdin and stdout that answers every request line, whatever it holds.

The SDK's stdio transport decodes stdin with errors="replace" (invalid UTF-8 silently becomes U+FFFD
and is stored so), parses each line with pydantic-core's JSON parser, which refuses an unpaired
surrogate escape ("\\ud800") and nesting past about 200 levels, and drops such a line: its request is
never answered. Its writer raises on a reply it cannot encode, which ends the server.

Here each line is read as bytes and decoded strictly; Python's json parses it. A line that is not a
JSON-RPC message is answered at once with a JSON-RPC error for its id (found by a scan of the top
level when no parser can read the line; null only when there is none). Everything else goes to the
server, whose tool-argument checks name what is wrong inside the arguments. A reply that cannot be
encoded becomes an error reply for its request. stdin and stdout are claimed as the SDK claims them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import anyio
from mcp.server.lowlevel import Server

# The SDK's own claim of fd 0 and 1 (stray output from a handler or a child misses the wire); its
# stdio_server() offers no way to read bytes, so its reader cannot be kept.
from mcp.server.stdio import _claim_fd, _open_stdin_diversion, _open_stdout_diversion
from mcp.shared._context_streams import ContextReceiveStream, ContextSendStream, create_context_streams
from mcp.shared.message import SessionMessage
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCResponse,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from mcp_memory.errors import CATEGORIES
from mcp_memory.server.arguments import MAX_ARGUMENT_DEPTH

log = logging.getLogger(__name__)

MAX_MESSAGE_DEPTH = 64
"""Objects and lists in one message nest at most this deep (tool arguments: 32 levels, arguments.py)."""
RequestId = str | int

# A JSON string (escapes kept whole), or a run of anything else: enough to follow the top level.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[^"]+')
_COLON = re.compile(r"\s*:\s*")


async def serve_stdio(server: Server[Any]) -> None:
    """Serve `server` on this process's stdin and stdout until stdin ends."""
    with _claimed_stdio() as (stdin, stdout):
        out = _Output(stdout)
        read_send, read_receive = create_context_streams[SessionMessage | Exception](0)
        write_send, write_receive = create_context_streams[SessionMessage](0)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_read_lines, stdin, read_send, out)
            tasks.start_soon(_write_messages, write_receive, out)
            await server.run(read_receive, write_send, server.create_initialization_options())


@contextmanager
def _claimed_stdio() -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """The wire's stdin and stdout as bytes; while serving, fd 0 reads nothing and fd 1 goes to stderr."""
    stdin, release_stdin = _claim_fd(0, sys.stdin, "rb", _open_stdin_diversion)
    try:
        stdout, release_stdout = _claim_fd(1, sys.stdout, "wb", _open_stdout_diversion)
        try:
            yield stdin, stdout
        finally:
            if release_stdout is not None:
                release_stdout()
    finally:
        if release_stdin is not None:
            release_stdin()


class _Output:
    """stdout, one whole line at a time: replies from the server and from the reader never interleave."""

    def __init__(self, stdout: BinaryIO) -> None:
        self._file = anyio.wrap_file(stdout)
        self._lock = anyio.Lock()

    async def line(self, data: bytes) -> None:
        async with self._lock:
            await self._file.write(data + b"\n")
            await self._file.flush()


async def _read_lines(
    stdin: BinaryIO, messages: ContextSendStream[SessionMessage | Exception], out: _Output
) -> None:
    async with messages:
        while True:
            # read and parse off the event loop: a line of megabytes must not stall the replies
            raw, outcome = await anyio.to_thread.run_sync(_next_line, stdin)
            if not raw:
                return
            if isinstance(outcome, SessionMessage):
                await messages.send(outcome)
            elif outcome is not None:
                await out.line(outcome)


def _next_line(stdin: BinaryIO) -> tuple[bytes, SessionMessage | bytes | None]:
    raw = stdin.readline()
    return raw, _read_guarded(raw) if raw else None


async def _write_messages(messages: ContextReceiveStream[SessionMessage], out: _Output) -> None:
    async with messages:
        async for item in messages:
            data = encode_message(item.message)
            if data is not None:
                await out.line(data)


def _read_guarded(raw: bytes) -> SessionMessage | bytes | None:
    try:
        return read_line(raw)
    except Exception:  # noqa: BLE001 - the reader must outlive any line; the client still gets an answer
        log.exception("could not read a line from stdin")
        return error_line(None, INTERNAL_ERROR, "the server could not read this line; send it again")


def read_line(raw: bytes) -> SessionMessage | bytes | None:
    """A message for the server, or the error reply to write at once, or None (a blank line, or a reply
    from the client that cannot be read: there is no request to answer)."""
    line = raw.rstrip(b"\r\n")
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(line, exc)
    try:
        parsed = json.loads(text)
    except RecursionError:
        return _too_deep(scan_id(text))
    except ValueError as exc:
        return error_line(scan_id(text), PARSE_ERROR, f"the line is not JSON ({_reason(exc)}); {ONE_MESSAGE}")
    return _message(parsed)


ONE_MESSAGE = (
    'send one JSON-RPC message per line: {"jsonrpc": "2.0", "id": 1, "method": ..., "params": {...}}'
)


def _not_utf8(line: bytes, exc: UnicodeDecodeError) -> bytes:
    request_id = scan_id(line.decode("utf-8", "surrogateescape"))
    return error_line(
        request_id,
        PARSE_ERROR,
        f"the line is not valid UTF-8 (byte 0x{line[exc.start]:02x} at offset {exc.start}); "
        "encode every message as UTF-8",
    )


def _too_deep(request_id: RequestId | None, where: str = "") -> bytes:
    return error_line(
        request_id,
        INVALID_REQUEST,
        f"the message nests more than {MAX_MESSAGE_DEPTH} levels deep{where}; a message may nest at most "
        f"{MAX_MESSAGE_DEPTH} levels and each tool argument at most {MAX_ARGUMENT_DEPTH}: flatten it",
    )


def _deep_argument(message: dict[str, Any]) -> str:
    """Which tool argument made a message too deep, as words for the error, when it is a tool call."""
    params = message.get("params")
    if message.get("method") != "tools/call" or not isinstance(params, dict):
        return ""
    arguments = params.get("arguments")
    if not isinstance(arguments, dict):
        return ""
    deep = next(
        (name for name, value in arguments.items() if nesting_depth(value) > MAX_ARGUMENT_DEPTH), None
    )
    return "" if deep is None else f" (in the argument {deep!r} of {params.get('name')!r})"


def _reason(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return "an integer with more than 4,300 digits"  # the only other ValueError json.loads raises


def _message(parsed: Any) -> SessionMessage | bytes | None:
    if not isinstance(parsed, dict):
        what = (
            "a batch (a JSON array), which MCP does not use" if isinstance(parsed, list) else "not an object"
        )
        return error_line(None, INVALID_REQUEST, f"the line is {what}; {ONE_MESSAGE}")
    request_id = _echoable(parsed.get("id"))
    if nesting_depth(parsed) > MAX_MESSAGE_DEPTH:
        return _too_deep(request_id, _deep_argument(parsed))
    if isinstance(parsed.get("id"), str) and not _is_unicode(parsed["id"]):
        return error_line(
            parsed["id"],
            INVALID_REQUEST,
            "the id holds an unpaired surrogate, which is not valid Unicode; use an integer id or valid text",
        )
    return _validated(parsed, request_id)


def _validated(parsed: dict[str, Any], request_id: RequestId | None) -> SessionMessage | bytes | None:
    try:
        message = jsonrpc_message_adapter.validate_python(parsed, by_name=False)
    except ValidationError as exc:
        if "method" not in parsed and ("result" in parsed or "error" in parsed):
            log.warning("dropped a reply from the client that is not JSON-RPC: %s", _first_problem(exc))
            return None
        return error_line(
            request_id,
            INVALID_REQUEST,
            f"the line is not a JSON-RPC 2.0 message ({_first_problem(exc)}); {ONE_MESSAGE}",
        )
    if isinstance(message, JSONRPCNotification) and "id" in parsed:
        # pydantic read a request whose id is neither text nor an integer as a notification: no answer
        return error_line(
            None, INVALID_REQUEST, f"the id must be text or an integer, not {json.dumps(parsed['id'])[:40]}"
        )
    return SessionMessage(message)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _echoable(value: Any) -> RequestId | None:
    """An id a reply can carry: text or an integer, as the client sent it."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def nesting_depth(value: Any) -> int:
    """How deep objects and lists nest in `value` (a scalar: 0), without recursion; stops past the limit."""
    deepest = 0
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack and deepest <= MAX_MESSAGE_DEPTH:
        item, level = stack.pop()
        deepest = max(deepest, level)
        inner = item.values() if isinstance(item, dict) else item
        stack.extend((child, level + 1) for child in inner if isinstance(child, dict | list))
    return deepest


def scan_id(text: str) -> RequestId | None:
    """The top-level "id" of a line no parser reads (nested 100,000 deep, cut short): follow the brackets
    and strings, and read the value after the first key "id" at depth 1."""
    if not text.lstrip().startswith("{"):
        return None
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if not token.startswith('"'):
            depth += token.count("{") + token.count("[") - token.count("}") - token.count("]")
        elif depth == 1 and (colon := _COLON.match(text, match.end())) and _is_id_key(token):
            return _id_at(text, colon.end())
    return None


def _is_id_key(token: str) -> bool:
    try:
        return bool(json.loads(token) == "id")
    except ValueError:
        return False


def _id_at(text: str, position: int) -> RequestId | None:
    try:
        value, end = json.JSONDecoder().raw_decode(text, position)
    except (ValueError, RecursionError):
        return None
    # raw surrogates in the text are bytes that were not UTF-8: the client's id cannot be told from them
    return _echoable(value) if _is_unicode(text[position:end]) else None


def error_line(request_id: RequestId | None, code: int, message: str) -> bytes:
    """A JSON-RPC error reply, its message starting with its category word as every error's does (errors.py).
    ASCII escapes: an id with an unpaired surrogate goes back as the client wrote it ("\\ud800"), which the
    client's parser read once already."""
    category = "internal" if code == INTERNAL_ERROR else "invalid"
    if not message.startswith(CATEGORIES):
        message = f"{category}: {message}"
    reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
    return json.dumps(reply, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def encode_message(message: JSONRPCMessage) -> bytes | None:
    """The message as one line of UTF-8 JSON. One that cannot be encoded (text that is not Unicode, nesting
    pydantic refuses) becomes an error reply for its request, and the server keeps serving."""
    try:
        return message.model_dump_json(by_alias=True, exclude_unset=True).encode("utf-8")
    except Exception as exc:  # noqa: BLE001 - the writer must outlive any reply
        log.error("could not encode a %s as JSON: %r", type(message).__name__, exc)
    if isinstance(message, JSONRPCError):  # its text quoted the request: show what cannot be sent as \uXXXX
        return error_line(message.id, message.error.code, _printable(message.error.message))
    if isinstance(message, JSONRPCResponse):
        return error_line(
            message.id,
            INTERNAL_ERROR,
            "the server could not encode its reply as JSON: it holds text that is not valid Unicode (an "
            "unpaired surrogate, stored before such text was refused) or nests too deeply",
        )
    return None  # a request or notification of ours: nobody waits for it


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
