"""The text a model reads for each tool's result: short, and holding every id it may need next.

The structured content keeps every field; the text goes into the conversation, so it is written for
tokens. A memory is one line, `#12 2023-05-08 Caroline: text` (id, day, who, what; its type in
brackets unless it is a message); pretty-printed JSON cost ten times the memories it carried. Results
without a renderer of their own are compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

Result = Mapping[str, Any]


def render(tool: str, result: Result) -> str:
    return RENDERERS.get(tool, compact_json)(result)


def compact_json(result: Result) -> str:
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"))


def when(timestamp: str) -> str:
    """'2023-05-08T13:56:00Z' -> '2023-05-08' (UTC, as stored): the day is what recall is asked about; the
    structured content keeps the time to the microsecond."""
    return timestamp[:10]


def memory_line(memory: Result) -> str:
    kind = "" if memory["memory_type"] == "message" else f" [{memory['memory_type']}]"
    return f"#{memory['id']} {when(memory['timestamp'])} {memory['producer']}{kind}: {memory['content']}"


def _recall(result: Result) -> str:
    if result.get("query") is None:
        return _page(result)
    hits = result["hits"]
    if hits:
        lines = ["best first:"]
        for hit in hits:
            lines.append(memory_line(hit))
            lines += [f"  {memory_line(turn)}" for turn in hit.get("context") or ()]
    else:
        lines = [f"no memory matches {result['query']!r} yet"]
    if result.get("rolling_summary"):
        lines.append(f"earlier in this session: {result['rolling_summary']}")
    if result.get("recent"):
        lines.append("latest turns of this session, oldest first:")
        lines += [memory_line(episode) for episode in result["recent"]]
    if not result.get("vector_search", True):
        lines.append("(found by keywords only: no embedder is available)")
    return "\n".join(lines)


def _ids(memories: list[Result]) -> str:
    return " ".join(f"#{m['id']}" for m in memories)


def _added(result: Result) -> str:
    new = [m for m in result["memories"] if not m["duplicate"]]
    old = [m for m in result["memories"] if m["duplicate"]]
    parts = [
        f"stored {len(new)} in {result['group_id']}/{result['session_id']}"
        + (f": {_ids(new)}" if new else "")
    ]
    if old:
        parts.append(f"{len(old)} already stored (a retry): {_ids(old)}")
    if result.get("embedding_pending"):
        parts.append("their vectors will be added later (the embedder failed)")
    return "; ".join(parts)


def _group(result: Result) -> str:
    created = " (created)" if result.get("created") else ""
    users, agents = ", ".join(result["user_ids"]) or "none", ", ".join(result["agent_ids"]) or "none"
    return (
        f"group {result['group_id']}{created}: users {users}; agents {agents}; "
        f"{result['session_count']} sessions, {result['episode_count']} memories"
    )


def _session(result: Result) -> str:
    state = "created" if result.get("created") else "open"
    return (
        f"session {result['session_id']} of {result['group_id']} {state}: {result['episode_count']} memories, "
        f"{result['reference_count']} references"
    )


def _listing(result: Result) -> str:
    lines = [_group(group) for group in result["groups"]] or ["no groups yet: create_group makes one"]
    if result.get("sessions") is not None:
        lines.append(f"sessions, newest first ({len(result['sessions'])}):")
        lines += [
            f"{s['session_id']}: {s['episode_count']} memories, since {when(s['created_at'])}"
            for s in result["sessions"]
        ]
    return "\n".join(lines)


def _fact_line(fact: Result) -> str:
    state = "current" if fact["current"] else f"until {when(fact['valid_to'])}"
    return f"#{fact['id']} {fact['subject']} / {fact['predicate']} / {fact['object']} ({state})"


def _facts(result: Result) -> str:
    lines = [f"stored {result['stored']} facts, {result['duplicates']} already known"]
    lines += [_fact_line(fact) for fact in result["facts"]]
    if result.get("replaced"):
        lines.append("replaced (kept as history): " + " ".join(f"#{i}" for i in result["replaced"]))
    return "\n".join(lines)


def _page(result: Result) -> str:
    lines = [f"{len(result['hits'])} memories, {result['order']} first:"]
    lines += [memory_line(memory) for memory in result["hits"]]
    if result.get("next_cursor"):
        lines.append(f"more: cursor={result['next_cursor']}")
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[Result], str]] = {
    "recall": _recall,
    "add_memory": _added,
    "create_group": _group,
    "add_participants": _group,
    "list_groups": _listing,
    "open_session": _session,
    "close_session": lambda r: f"{r['message']}; {r['reference_count']} references left",
    "update_memory": lambda r: "updated " + memory_line(r["memory"]),
    "delete_memory": lambda r: f"deleted {r['deleted']} memories from {r['group_id']}",
    "delete_session": lambda r: f"deleted session {r['session_id']} and its {r['deleted_episodes']} memories",
    "add_fact": _facts,
}
