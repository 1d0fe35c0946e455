"""A hostile client on the real stdio path: every request line gets exactly one reply with its id, the
server keeps answering, and a rejected write stores nothing.

The console script is launched as a client launches it; raw bytes go to its stdin and raw lines come
back from its stdout. Lines the SDK's own transport dropped without a reply (an unpaired surrogate,
JSON nested hundreds of levels deep, bytes that are not UTF-8, JSON cut short) are among them. The
reader's and the writer's pure parts are tested on their own below, without a process.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCNotification, JSONRPCResponse

from mcp_memory.server.stdio import MAX_MESSAGE_DEPTH, encode_message, read_line, scan_id
from tests.test_stdio import base_env, console_script

REPLY_DEADLINE_S = 30.0
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601


class RawServer:
    """The console script with raw pipes; a thread collects stdout lines so a missing reply times out."""

    def __init__(self, db: Path) -> None:
        env = {**base_env(db.parent), "MCP_MEMORY_EMBEDDER": "hashing"}
        self.stderr = (db.parent / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [str(console_script()), "--db", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
        )  # fmt: skip
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.transcript: list[dict[str, Any]] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, raw: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(raw if raw.endswith(b"\n") else raw + b"\n")
        self.process.stdin.flush()

    def next_reply(self) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=REPLY_DEADLINE_S)
        except queue.Empty:
            raise AssertionError(f"no reply within {REPLY_DEADLINE_S} s; got {self.transcript}") from None
        assert line is not None, "the server closed stdout"
        message = json.loads(line)  # Python's json: an echoed surrogate id comes back as "\ud800"
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line
        self.transcript.append(message)
        return message

    def until(self, *ids: Any) -> dict[Any, dict[str, Any]]:
        """Replies up to the ones carrying `ids`, by id; replies to other ids fail the test."""
        got: dict[Any, dict[str, Any]] = {}
        while not set(ids) <= set(got):
            message = self.next_reply()
            assert message.get("id") in ids and message.get("id") not in got, message
            got[message["id"]] = message
        return got

    def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(json.dumps(body).encode())
        return self.until(request_id)[request_id]

    def tool(self, request_id: Any, name: str, **arguments: Any) -> dict[str, Any]:
        return self.request(request_id, "tools/call", {"name": name, "arguments": arguments})["result"]

    def finish(self) -> int:
        """Close stdin; every line left must be a reply already accounted for. Returns the exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        line = self.lines.get(timeout=REPLY_DEADLINE_S)
        assert line is None, f"an extra line after every request was answered: {line!r}"
        code = self.process.wait(timeout=REPLY_DEADLINE_S)
        self.stderr.close()
        return code


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RawServer]:
    raw = RawServer(tmp_path / "memory.db")
    try:
        raw.request(0, "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "hostile", "version": "1"},
        })  # fmt: skip
        raw.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        assert raw.tool("setup-1", "create_group", group_id="g", user_ids=["ana"])["isError"] is False
        assert raw.tool("setup-2", "open_session", group_id="g", session_id="s")["isError"] is False
        yield raw
    finally:
        if raw.process.poll() is None:
            raw.process.kill()
            raw.process.wait()


def tool_line(request_id: int, name: str, arguments: bytes) -> bytes:
    """A tools/call line whose arguments are given as raw JSON text (so it can hold what json.dumps won't)."""
    head = (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"{name}","arguments":'
    )
    return head.encode() + arguments + b"}}"


ADD = b'"group_id":"g","session_id":"s","producer":"ana"'
DEEP_300 = b'{"a":' * 300 + b"1" + b"}" * 300

# (line, expected reply: a JSON-RPC error code or "tool" for a tool error, a fragment of its text)
HOSTILE: list[tuple[str, bytes, int | str, str]] = [
    ("surrogate in the id", b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', INVALID_REQUEST, "the id holds"),
    ("surrogate in content", tool_line(1, "add_memory", b"{" + ADD + b',"content":"caf\\ud800"}'), "tool", "content holds an unpaired surrogate"),
    ("surrogate in producer", tool_line(2, "add_memory", b'{"group_id":"g","session_id":"s","producer":"an\\udc00a","content":"x"}'), "tool", "producer holds an unpaired surrogate"),
    ("surrogate in a query", tool_line(3, "recall", b'{"group_id":"g","query":"\\ud83d"}'), "tool", "query holds an unpaired surrogate (U+D83D)"),
    ("surrogate in a metadata key", tool_line(4, "add_memory", b"{" + ADD + b',"content":"x","details":{"metadata":{"k\\ud800":1}}}'), "tool", "a key of details.metadata holds"),
    ("surrogate in group_id", tool_line(5, "open_session", b'{"group_id":"g\\ud800","session_id":"s"}'), "tool", "group_id holds an unpaired surrogate"),
    ("metadata 300 deep", tool_line(6, "add_memory", b"{" + ADD + b',"content":"x","details":{"metadata":' + DEEP_300 + b"}}"), INVALID_REQUEST, "argument 'details' of 'add_memory'"),
    ("configuration 300 deep", tool_line(7, "create_group", b'{"group_id":"h","user_ids":["a"],"configuration":' + DEEP_300 + b"}"), INVALID_REQUEST, "argument 'configuration'"),
    ("summary 300 deep", tool_line(8, "summarize_session", b'{"group_id":"g","session_id":"s","summary":' + DEEP_300 + b"}"), INVALID_REQUEST, "argument 'summary'"),
    ("metadata 40 deep", tool_line(9, "add_memory", b"{" + ADD + b',"content":"x","details":{"metadata":' + b'{"a":' * 40 + b"1" + b"}" * 42), "tool", "details nests lists and objects more than 32 levels deep"),
    ("100,000 levels deep", tool_line(10, "add_memory", b"{" + ADD + b',"content":"x","details":{"metadata":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"), INVALID_REQUEST, f"more than {MAX_MESSAGE_DEPTH} levels deep"),
    ("100,000 levels deep, id last", b'{"jsonrpc":"2.0","method":"ping","params":{"x":' + b"[" * 100_000 + b"]" * 100_000 + b'},"id":11}', INVALID_REQUEST, "levels deep"),
    ("JSON cut short", b'{"jsonrpc":"2.0","id":12,"method":"tools/list"', PARSE_ERROR, "the line is not JSON"),
    ("not UTF-8", tool_line(13, "add_memory", b"{" + ADD + b',"content":"caf\xe9"}'), PARSE_ERROR, "not valid UTF-8 (byte 0xe9"),
    ("an encoded surrogate", tool_line(14, "add_memory", b"{" + ADD + b',"content":"\xed\xa0\x80"}'), PARSE_ERROR, "not valid UTF-8 (byte 0xed"),
    ("NaN importance", tool_line(15, "add_memory", b"{" + ADD + b',"content":"x","details":{"importance":NaN}}'), "tool", "importance is nan; send a finite number"),
    ("Infinity in a batch", tool_line(16, "add_memory", b'{"group_id":"g","session_id":"s","memories":[{"producer":"ana","content":"x","importance":-Infinity}]}'), "tool", "memories[0].importance is -inf"),
    ("a 30-digit id", tool_line(17, "delete_memory", b'{"group_id":"g","memory_ids":[' + b"9" * 30 + b"]}"), "tool", "memory_ids[0] is too large"),
    ("a 5,000-digit number", tool_line(18, "delete_memory", b'{"group_id":"g","memory_ids":[' + b"9" * 5000 + b"]}"), PARSE_ERROR, "more than 4,300 digits"),
    ("a misspelt argument", tool_line(19, "recall", b'{"group_id":"g","query":"x","sesion_id":"s"}'), "tool", "did you mean 'session_id'?"),
    ("true as a memory id", tool_line(20, "delete_memory", b'{"group_id":"g","memory_ids":[true]}'), "tool", "memory_ids[0] must be an integer; got true"),
    ("text as importance", tool_line(21, "add_memory", b"{" + ADD + b',"content":"x","details":{"importance":"0.5"}}'), "tool", "importance must be a number"),
    ("a method that is a number", b'{"jsonrpc":"2.0","id":22,"method":7}', INVALID_REQUEST, "not a JSON-RPC 2.0 message"),
    ("a surrogate in a resource uri", b'{"jsonrpc":"2.0","id":23,"method":"resources/read","params":{"uri":"memory://groups/\\ud800"}}', "error", "the uri holds an unpaired surrogate"),
    ("a reply that cannot be encoded", b'{"jsonrpc":"2.0","id":24,"method":"x\\ud800"}', METHOD_NOT_FOUND, "Method not found"),
    ("no id to be found", b"garbage", PARSE_ERROR, "the line is not JSON"),
    ("a batch", b'[{"jsonrpc":"2.0","id":25,"method":"ping"}]', INVALID_REQUEST, "a batch"),
    ("a boolean id", b'{"jsonrpc":"2.0","id":true,"method":"ping"}', INVALID_REQUEST, "the id must be text or an integer"),
]  # fmt: skip
NO_ID = {"no id to be found", "a batch", "a boolean id"}


def expected_id(name: str, line: bytes) -> Any:
    if name in NO_ID:
        return None
    return scan_id(line.decode("utf-8", "surrogateescape"))


def check_reply(name: str, reply: dict[str, Any], kind: int | str, fragment: str) -> None:
    if kind == "tool":
        assert reply["result"]["isError"] is True, (name, reply)
        text = reply["result"]["content"][0]["text"]
    else:
        assert kind == "error" or reply["error"]["code"] == kind, (name, reply)
        text = reply["error"]["message"]
    assert fragment in text, (name, text)
    assert "pydantic" not in text and "https://" not in text, (name, text)


@pytest.mark.slow
def test_every_hostile_line_gets_exactly_one_reply_with_its_id_and_the_server_keeps_answering(
    server: RawServer,
) -> None:
    for number, (name, line, kind, fragment) in enumerate(HOSTILE):
        request_id = expected_id(name, line)
        server.send(line)
        server.send(json.dumps({"jsonrpc": "2.0", "id": f"ping-{number}", "method": "ping"}).encode())
        replies = server.until(request_id, f"ping-{number}")
        check_reply(name, replies[request_id], kind, fragment)
        assert replies[f"ping-{number}"]["result"] == {}, name
    server.send(b"")  # a blank line is no request: no reply
    server.send(b'{"jsonrpc":"2.0","id":"crlf","method":"ping"}\r\n')
    assert server.until("crlf")["crlf"]["result"] == {}

    opened = server.tool("after", "open_session", group_id="g", session_id="s", mode="open")
    assert opened["structuredContent"]["episode_count"] == 0, "a rejected add_memory stored something"
    groups = server.request("groups", "resources/read", {"uri": "memory://groups"})
    assert [g["group_id"] for g in json.loads(groups["result"]["contents"][0]["text"])] == ["g"]
    assert server.finish() == 0
    ids = Counter(json.dumps(message.get("id")) for message in server.transcript)
    assert ids[json.dumps(None)] == len(NO_ID)
    assert all(count == 1 for request_id, count in ids.items() if request_id != "null"), ids


@pytest.mark.slow
def test_a_valid_line_after_a_rejected_one_is_stored_once_and_recalled(server: RawServer) -> None:
    server.send(tool_line(1, "add_memory", b"{" + ADD + b',"content":"caf\xe9 au lait"}'))
    assert server.until(1)[1]["error"]["code"] == PARSE_ERROR
    stored = server.tool(
        2, "add_memory", group_id="g", session_id="s", producer="ana", content="café au lait"
    )
    assert stored["structuredContent"]["stored"] == 1
    recalled = server.tool(3, "recall", group_id="g", query="café")["structuredContent"]
    assert [hit["content"] for hit in recalled["hits"]] == ["café au lait"]  # not "caf\ufffd au lait"
    assert server.finish() == 0


# -- the reader and the writer, without a process ---------------------------------------------


def test_the_id_of_a_line_no_parser_reads_is_found_at_the_top_level_only() -> None:
    deep = "[" * 100_000
    assert scan_id('{"params":{"id":1,"x":' + deep + ',"id":"top"') is None  # "id" inside params is not it
    assert scan_id('{"params":{"id":1},"id":"top","x":' + deep) == "top"
    assert scan_id('{"x":"\\"id\\": 3","id" : 4,' + deep) == 4
    assert scan_id('{"id":"\\ud800",' + deep) == "\ud800"  # echoed as the client escaped it
    assert scan_id("[" + deep) is None and scan_id('{"id":true') is None and scan_id('{"id":1.5') is None
    assert scan_id('{"id":[' + deep) is None
    assert scan_id('{"id":"\udce9",') is None  # a byte that was not UTF-8: the id cannot be known


def test_blank_lines_and_unreadable_client_replies_get_no_answer() -> None:
    assert read_line(b"\r\n") is None and read_line(b"   \n") is None
    assert read_line(b'{"jsonrpc":"2.0","id":1,"result":7}') is None


def test_a_valid_line_is_passed_on_as_the_sdk_would_read_it() -> None:
    message = read_line(b'{"jsonrpc":"2.0","id":7,"method":"tools/list"}\r\n')
    assert isinstance(message, SessionMessage)
    assert message.message.model_dump(exclude_unset=True) == {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/list",
    }


def test_a_reply_that_cannot_be_encoded_becomes_an_error_for_its_request() -> None:
    reply = JSONRPCResponse(jsonrpc="2.0", id=9, result={"content": "x\ud800"})
    line = encode_message(reply)
    assert line is not None
    error = json.loads(line)
    assert error["id"] == 9 and error["error"]["code"] == -32603
    assert "could not encode its reply" in error["error"]["message"]
    assert encode_message(JSONRPCNotification(jsonrpc="2.0", method="x\ud800")) is None
    assert encode_message(JSONRPCResponse(jsonrpc="2.0", id=1, result={"ok": "é"})) == (
        '{"jsonrpc":"2.0","id":1,"result":{"ok":"é"}}'.encode()
    )
