"""What a copy is checked by: counts and a checksum of each kind of record, over what the records say.

`mcp-memory copy` moves a memory between databases (SQLite and PostgreSQL) through the export format, then
reads the copied groups back from both sides and compares. What each record says leaves out what a
database gives it itself (ids, and the retry keys and fact ids that follow from them), so a copy that holds
every record the source holds has the same counts and checksums, whichever backends they are on.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

# Per kind, the fields that say what a record is (not where a database put it).
FIELDS: dict[str, tuple[str, ...]] = {
    "group": ("group_id", "user_ids", "agent_ids", "description", "configuration", "owner"),
    "session": ("group_id", "session_id", "configuration", "overrides"),
    "memory": (
        "group_id", "session_id", "sequence", "producer", "role", "produced_for", "content", "message",
        "memory_type", "importance", "timestamp", "step",
    ),
    "fact": (
        "group_id", "session_id", "subject", "predicate", "object", "source", "confidence", "valid_from",
        "valid_to",
    ),
    "rolling_summary": ("group_id", "session_id", "text", "covered_through_sequence"),
    "summary_count": ("group_id", "session_id", "lightweight", "auto_multiple"),
}  # fmt: skip


def fingerprint(kind: str, record: dict[str, Any]) -> str:
    """The record's fields of FIELDS[kind] as canonical JSON (a memory's metadata without the ids in it)."""
    said = [kind, *(record.get(name) for name in FIELDS[kind])]
    if kind == "memory":
        said.append(_metadata(record.get("metadata") or {}))
    return json.dumps(said, sort_keys=True, ensure_ascii=False)


def _metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata as it says the same on every database: a fact's id and a summary's source ids left out."""
    kept = {key: value for key, value in metadata.items() if key != "source_episode_ids"}
    if isinstance(kept.get("fact"), dict):
        kept["fact"] = {key: value for key, value in kept["fact"].items() if key != "id"}
    return kept


def digest(records: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per kind: how many records, and a SHA-256 over their fingerprints in sorted order (so the order the
    database reads them in does not matter)."""
    found: dict[str, list[str]] = {kind: [] for kind in FIELDS}
    for kind, record in records:
        if kind in found:
            found[kind].append(fingerprint(kind, record))
    result = {}
    for kind, prints in found.items():
        hashed = hashlib.sha256()
        for line in sorted(prints):
            hashed.update(line.encode())
            hashed.update(b"\n")
        result[kind] = {"count": len(prints), "sha256": hashed.hexdigest()}
    return result


def missing(
    source: Iterable[tuple[str, dict[str, Any]]], target: Iterable[tuple[str, dict[str, Any]]]
) -> int:
    """How many of the source's records the target does not hold (counted with repeats)."""
    wanted = Counter(fingerprint(kind, record) for kind, record in source if kind in FIELDS)
    held = Counter(fingerprint(kind, record) for kind, record in target if kind in FIELDS)
    return sum((wanted - held).values())
