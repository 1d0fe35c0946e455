"""Turning what a client sends into episodes, and stored rows back into models."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mcp_memory.errors import ValidationFailed
from mcp_memory.models import MemoryInput, ToolCall, id_problem
from mcp_memory.store.records import NewEpisode, keyed_retry_key
from mcp_memory.times import iso, normalize_timestamp

ROLES = ("user", "assistant", "system", "tool")
DEFAULT_IMPORTANCE = 0.5
MAX_BATCH = 1000
MAX_METADATA_CHARS = 16_000


def parse_memories(items: Sequence[Any]) -> list[MemoryInput]:
    """Validate a batch of raw items; the first bad one raises, naming its index."""
    if not items:
        raise ValidationFailed("memories is empty; pass at least one memory, or use content and producer")
    if len(items) > MAX_BATCH:
        raise ValidationFailed(f"a batch holds at most {MAX_BATCH} memories, got {len(items)}; split it")
    parsed = []
    for index, item in enumerate(items):
        try:
            parsed.append(item if isinstance(item, MemoryInput) else MemoryInput.model_validate(item))
        except ValidationError as exc:
            raise ValidationFailed(
                f"memories[{index}] is invalid: {_first_error(exc)}; nothing was stored"
            ) from None
    return parsed


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def prepare_episode(
    item: MemoryInput,
    *,
    participants: Sequence[str],
    max_content_chars: int,
    now: datetime,
) -> NewEpisode:
    """Validate one memory against its group and normalise it; raises ValidationFailed."""
    text = item.content.strip() if isinstance(item.content, str) else ""
    data = item.content if isinstance(item.content, dict) else None
    content = check_content(searchable_text(text, data, item.tool_calls, item.images), max_content_chars)
    _check_participant(item.producer, participants, "producer")
    if item.produced_for is not None and not item.produced_for.strip():
        raise ValidationFailed("produced_for is empty; leave it out or name a participant")
    importance = check_importance(DEFAULT_IMPORTANCE if item.importance is None else item.importance)
    memory_type = check_memory_type(item.memory_type)
    moment = now if item.timestamp is None else normalize_timestamp(item.timestamp)
    metadata_json = metadata_json_text(item.metadata)
    content_hash = content_digest(content)
    dedup_key = None if item.timestamp is None else _digest(item.producer, iso(moment), content_hash)
    return NewEpisode(
        producer_id=item.producer,
        producer_role=item.role,
        produced_for_id=item.produced_for,
        content=content,
        memory_type=memory_type,
        importance=importance,
        metadata_json=metadata_json,
        timestamp=iso(moment),
        ts_epoch=moment.timestamp(),
        content_hash=content_hash,
        dedup_key=dedup_key,
        step=item.step,
        message_json=_message_json(item, text, data, content),
    )


def searchable_text(
    text: str,
    data: dict[str, Any] | None,
    tool_calls: Sequence[ToolCall] | None,
    images: Sequence[str] | None,
) -> str:
    """What a message is searched by (and shown as): its text, then a structured content as JSON, each tool
    call as `called name(arguments)`, each image as `[image ref]`."""
    parts = [text] if text else []
    if data is not None:
        parts.append(_json(data))
    for call in tool_calls or ():
        arguments = call.arguments if isinstance(call.arguments, str) else _json(call.arguments)
        parts.append(f"called {call.name}({arguments})")
    parts += [f"[image {reference}]" for reference in images or ()]
    return "\n".join(parts)


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except ValueError as exc:
        raise ValidationFailed(f"content holds a value JSON cannot carry ({exc}); send JSON values") from None


def _message_json(item: MemoryInput, text: str, data: dict[str, Any] | None, content: str) -> str | None:
    """A conversation message's extras, kept as given; None for a plain memory. `text` is kept when the
    searchable content differs from it, so the message comes back exactly as it was sent."""
    extras = {
        "text": text if content != text else None,
        "data": data,
        "name": item.name,
        "tool_calls": None if item.tool_calls is None else [c.model_dump() for c in item.tool_calls],
        "tool_call_id": item.tool_call_id,
        "images": item.images,
    }
    kept = {key: value for key, value in extras.items() if value is not None}
    return json.dumps(kept, ensure_ascii=False, sort_keys=True) if kept else None


def check_content(text: str, max_chars: int) -> str:
    """The text to store, stripped; empty or over `max_chars` is a ValidationFailed."""
    content = text.strip()
    if not content:
        raise ValidationFailed(
            "content is empty; pass the text to remember (or a JSON object, tool calls, images)"
        )
    check_unicode(content, "content")
    if len(content) > max_chars:
        raise ValidationFailed(
            f"content has {len(content)} characters, more than the maximum {max_chars}; split it into several memories"
        )
    return content


def check_unicode(text: str, field: str) -> str:
    """Text every backend can store: valid Unicode, no unpaired surrogate (a Python caller can hold one), no
    NUL (PostgreSQL's text cannot hold U+0000, so a memory SQLite took could not be copied there)."""
    if "\x00" in text:
        raise ValidationFailed(
            f"{field} holds a NUL character (U+0000) at position {text.index(chr(0))}, which memories cannot "
            "keep; remove it"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationFailed(
            f"{field} holds an unpaired surrogate ({text[exc.start]!r}) at position {exc.start}, which is not "
            "valid Unicode; send valid text"
        ) from None
    return text


def check_id(value: str, field: str, example: str = "ana") -> str:
    """An id a person can read (models.id_problem's rules), for callers that bypass the tools' checks."""
    problem = id_problem(value, example)
    if problem is not None:
        raise ValidationFailed(f"{field} {problem}")
    return value


def check_importance(value: float) -> float:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValidationFailed(f"importance {value} is outside [0, 1]; give a number from 0 to 1")
    return float(value)


def check_memory_type(value: str) -> str:
    if not value.strip():
        raise ValidationFailed("memory_type is empty; use 'message' for conversation turns")
    return value.strip()


def content_digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _check_participant(name: str, participants: Sequence[str], field: str) -> None:
    if name not in participants:
        raise ValidationFailed(
            f"{field} {name!r} is not a participant of this group; use one of {sorted(participants)}, "
            "or create a group that includes it"
        )


def metadata_json_text(metadata: dict[str, Any] | None) -> str:
    try:
        text = json.dumps(metadata or {}, ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"metadata must be a JSON object of JSON values: {exc}") from None
    if len(text) > MAX_METADATA_CHARS:
        raise ValidationFailed(
            f"metadata is {len(text)} characters as JSON; keep it under {MAX_METADATA_CHARS}"
        )
    return text


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def with_retry_keys(episodes: Sequence[NewEpisode], idempotency_key: str | None) -> list[NewEpisode]:
    """Each memory of one call with what a retry of it shares (its `dedup_key`), or None: an untimed
    memory's retry is told by the session's newest turns instead.

    With an idempotency key: the key and the position in the call. Otherwise, for a memory with its own
    time: who, when and what, and how many identical ones came before it in this call, so the same short
    turn said twice ("Yeah", with the session's time) is stored twice, while the same turns sent again,
    alone or inside a longer batch, are each found once.
    """
    if idempotency_key is not None:
        size = len(episodes)
        return [
            replace(ep, dedup_key=keyed_retry_key(idempotency_key, size, i)) for i, ep in enumerate(episodes)
        ]
    seen: Counter[str] = Counter()
    keyed = []
    for ep in episodes:
        if ep.dedup_key is not None:
            earlier = seen[ep.dedup_key]
            seen[ep.dedup_key] += 1
            if earlier:
                ep = replace(ep, dedup_key=_digest(ep.dedup_key, str(earlier)))
        keyed.append(ep)
    return keyed


def embedding_text(producer: str, content: str) -> str:
    """What the embedder sees: the speaker's name keeps who-said-what in the vector."""
    return f"{producer}: {content}"
