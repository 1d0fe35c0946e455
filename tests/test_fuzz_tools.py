"""Every tool, fuzzed (hypothesis): whatever the arguments, the server answers, an error is clear, a call
that fails writes nothing, and another group's memories are never touched.

One console-script server over stdio serves every example, spoken to in raw JSON-RPC lines as a hostile
client would (json.dumps writes NaN and Infinity literals and escapes unpaired surrogates as \\ud800).
Values mix the valid (the fuzz group's real ids) with the hostile: unknown keys, wrong kinds, NaN and
infinities, huge numbers, unpaired surrogates, control characters, whitespace ids, deep nesting,
oversized text.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlean  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_memory.errors import CATEGORIES
from tests.helpers import TOOLS
from tests.rawstdio import RawServer

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

EXAMPLES_PER_TOOL = 200
CALL_DEADLINE_S = 30.0
TABLES = ("groups", "sessions", "episodes", "facts", "tasks", "summary_counts", "rolling_summaries")
UNCLEAR = ("validation error for", "errors.pydantic.dev", "Traceback", "input_value=", "input_type=")


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"a": value}
    return value


TEXT = st.sampled_from(
    ["fuzz", "s1", "fuzzer", "helper", "canary", "", " ", "\u3000", "\t", "a\x00b", "\x7f", "\ud800", "a\udfffb",
     "x" * 300, "y" * 40_000, "é", "../../etc/passwd", "{}", '{"a": 1}', "[1, 2]", "null", "1e309", "NaN",
     "2025-03-01T14:30:00Z", "9999-12-31T23:59:59-05:00", "summary", "fact", "message", "lightweight", "full"]
)  # fmt: skip
NUMBER = st.sampled_from(
    [0, 1, -1, 7, 100, 101, 2**31, 2**63, 2**70, 0.5, 1.5, -0.0, 1e308, math.nan, math.inf, -math.inf]
)
SCALAR = st.one_of(TEXT, NUMBER, st.booleans(), st.none())
JSON_OBJECT = st.one_of(
    st.dictionaries(st.sampled_from(["project", "a.b", 'q"k', "", "\ud800", "short_term", "long_term"]), SCALAR, max_size=3),
    st.sampled_from([{}, deep(40), deep(400), {"short_term": {"max_episodes": -1}}, {"short_term": {"enabled": "no"}},
                     {"long_term": {"enabled": False}}, {"topic": "t", "action": "a", "outcome": "o"},
                     {"points": ["one point of ten words or so here", "two", "three"]}, {"x": math.nan}]),
)  # fmt: skip
MEMORY = st.fixed_dictionaries(
    {"content": st.one_of(st.just("a memory from the fuzzer"), TEXT), "producer": st.sampled_from(["fuzzer", "helper", "nobody", ""])},
    optional={"role": st.sampled_from(["user", "assistant", "tool", "robot", 1]), "importance": NUMBER,
              "timestamp": st.one_of(TEXT, NUMBER, st.booleans()), "metadata": JSON_OBJECT,
              "memory_type": TEXT, "id": st.integers(), "sesion_id": TEXT},
)  # fmt: skip
VALUE = st.one_of(
    SCALAR,
    JSON_OBJECT,
    st.lists(st.one_of(st.integers(-2, 10**20), st.booleans(), TEXT, st.none()), max_size=4),
    st.lists(MEMORY, min_size=0, max_size=3),
)
VALID = {"group_id": "fuzz", "session_id": "s1", "query": "memory fuzzer", "content": "remember the fuzzer",
         "producer": "fuzzer", "subject": "Fuzzer", "predicate": "likes", "object": "edge cases", "memory_ids": [1],
         "memory_id": 1, "user_ids": ["fuzzer"], "agent_ids": ["helper"], "importance": 0.9, "step": 3,
         "neighbours": 1, "order": "newest", "tiers": ["long_term"], "min_similarity": 0.1, "role": "user",
         "memory_types": ["message"], "focus_topics": ["fuzz"]}  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RawServer, Path]]:
    db = tmp_path_factory.mktemp("fuzz") / "memory.db"
    with RawServer(db) as server:
        server.handshake()
        for tool, arguments in [
            ("create_group", {"group_id": "fuzz", "user_ids": ["fuzzer"], "agent_ids": ["helper"]}),
            ("create_group", {"group_id": "canary", "user_ids": ["bird"]}),
            ("open_session", {"group_id": "fuzz", "session_id": "s1"}),
            ("open_session", {"group_id": "canary", "session_id": "nest"}),
            ("add_memory", {"group_id": "fuzz", "session_id": "s1", "content": "a memory from the fuzzer", "producer": "fuzzer"}),
            ("add_memory", {"group_id": "canary", "session_id": "nest", "content": "the canary sings", "producer": "bird"}),
            ("add_fact", {"group_id": "canary", "subject": "Bird", "predicate": "sings", "object": "at dawn"}),
        ]:  # fmt: skip
            result = server.call_tool(tool, arguments)
            assert not result.get("isError"), result
        yield server, db


def digest(db: Path, where: str = "", episode_columns: str = "*") -> str:
    """A hash of every row of every table the tools write (optionally only `where` rows)."""
    h = hashlib.sha256()
    with closing(sqlean.connect(f"file:{db.as_posix()}?mode=ro", uri=True)) as conn:
        for table in TABLES:
            columns = episode_columns if table == "episodes" else "*"
            condition = f"WHERE {where}" if where else ""
            for row in conn.execute(f"SELECT {columns} FROM {table} {condition} ORDER BY rowid"):
                h.update(repr(tuple(row)).encode("utf-8", "backslashreplace"))
    return h.hexdigest()


def canary(db: Path) -> str:
    """The other group's memories as stored (maintenance may decay their effective importance: that is not theirs
    to protect)."""
    columns = "id, group_id, session_id, sequence, producer_id, content, memory_type, importance, metadata, timestamp"
    return digest(db, "group_id = 'canary'", columns)


def ensure_session(server: RawServer, db: Path) -> None:
    with closing(sqlean.connect(f"file:{db.as_posix()}?mode=ro", uri=True)) as conn:
        exists = conn.execute(
            "SELECT 1 FROM sessions WHERE group_id = 'fuzz' AND session_id = 's1'"
        ).fetchone()
    if exists is None:
        assert not server.call_tool("open_session", {"group_id": "fuzz", "session_id": "s1"}).get("isError")
        assert not server.call_tool("close_session", {"group_id": "fuzz", "session_id": "s1"}).get("isError")


def answer(server: RawServer, tool: str, arguments: dict[str, Any]) -> tuple[bool, str]:
    """(is_error, the text the model reads); a JSON-RPC error counts as an error answer."""
    reply = server.request("tools/call", {"name": tool, "arguments": arguments}, timeout=CALL_DEADLINE_S)
    if "error" in reply:
        return True, str(reply["error"].get("message", ""))
    result = reply["result"]
    text = result["content"][0]["text"] if result.get("content") else ""
    return bool(result.get("isError")), text


def assert_clear(tool: str, text: str) -> None:
    assert text.strip(), "an error with no text"
    assert text.split(":")[0] in CATEGORIES, f"an error without its category word: {text[:200]!r}"
    assert not text.rstrip().endswith(f"Error executing tool {tool}"), f"a crash reached the model: {text!r}"
    assert not any(marker in text for marker in UNCLEAR), f"a raw dump reached the model: {text[:500]!r}"
    assert len(text) < 3000, f"an error of {len(text)} characters"


# The keys of the tools' object arguments (their schemas say only "object", to keep the tool list short).
INNER = {
    "details": ["produced_for", "memory_type", "importance", "metadata", "step", "session_id", "source",
                "confidence", "valid_from", "sesion_id"],
    "filters": ["since", "until", "producer", "role", "memory_types", "metadata", "min_importance",
                "max_importance", "step_from", "step_to", "exclude_types"],
    "options": ["tiers", "min_similarity", "neighbours", "order", "cursor", "focus_topics", "generate_embedding",
                "limit"],
}  # fmt: skip


def value_for(key: str) -> st.SearchStrategy[Any]:
    """Mostly the valid value where there is one (so calls get past the first check), else anything; an object
    argument mostly gets an object of its own keys."""
    if key in INNER:
        inner = st.sampled_from(INNER[key]).flatmap(lambda k: st.tuples(st.just(k), value_for(k)))
        return st.one_of(st.lists(inner, max_size=3).map(dict), st.lists(inner, max_size=3).map(dict), VALUE)
    if key not in VALID:
        return VALUE
    return st.one_of(st.just(VALID[key]), st.just(VALID[key]), st.just(VALID[key]), VALUE)


def arguments_for(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The required arguments, some optional ones, and now and then one the tool does not take."""
    names = sorted(schema.get("properties", {}))
    required = [n for n in names if n in schema.get("required", [])]
    optional = [n for n in names if n not in required]
    unknown = st.one_of(*[st.just([])] * 9, st.sampled_from([["sesion_id"], ["id"], ["extra"]]))
    chosen = st.tuples(st.lists(st.sampled_from(optional or ["extra"]), unique=True), unknown)

    def fill(picked: tuple[list[str], list[str]]) -> st.SearchStrategy[dict[str, Any]]:
        keys = [*required, *(k for k in picked[0] if k in optional), *picked[1]]
        return st.fixed_dictionaries({k: value_for(k) for k in keys})

    return chosen.flatmap(fill)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_answers_clearly_writes_nothing_on_error_and_leaves_other_groups_alone(
    served: tuple[RawServer, Path], tool: str
) -> None:
    server, db = served
    listed = {t["name"]: t for t in server.request("tools/list")["result"]["tools"]}
    schema = listed[tool]["inputSchema"]
    before_canary = canary(db)

    @settings(
        max_examples=EXAMPLES_PER_TOOL, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(arguments_for(schema))
    def check(arguments: dict[str, Any]) -> None:
        ensure_session(server, db)  # an earlier example may have deleted it
        before = digest(db)
        is_error, text = answer(server, tool, arguments)
        if is_error:
            assert_clear(tool, text)
            assert digest(db) == before, f"{tool} failed ({text[:200]!r}) but changed the database"
        assert canary(db) == before_canary, f"{tool} changed another group's memories"

    check()
