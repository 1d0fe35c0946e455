"""Which memories a read selects: a client's `MemoryFilter` checked and turned into the store's `Filters`,
and the cursor that pages through a listing.

Times become epoch seconds, ranges are checked to run forwards, metadata conditions to be dotted paths with
a value, a list of values (any of) or a range (`{"gte": 5, "lt": 10}`). Everything is checked before any
search runs, and every error says what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from mcp_memory.errors import ValidationFailed
from mcp_memory.models import MemoryFilter
from mcp_memory.store.records import RANGE_OPERATORS, Filters
from mcp_memory.times import normalize_timestamp

ROLES = ("user", "assistant", "system", "tool")


def store_filters(
    where: MemoryFilter, session_id: str | None, group_wide_types: tuple[str, ...] = ()
) -> Filters:
    """The store's conditions for `where` within a session (and, with `group_wide_types`, those types from
    every session of the group) or the whole group."""
    since = None if where.since is None else normalize_timestamp(where.since, field="since").timestamp()
    until = None if where.until is None else normalize_timestamp(where.until, field="until").timestamp()
    _forwards("since", since, "until", until)
    _forwards("step_from", where.step_from, "step_to", where.step_to)
    _forwards("min_importance", where.min_importance, "max_importance", where.max_importance)
    for name in ("min_importance", "max_importance"):
        value = getattr(where, name)
        if value is not None and not 0 <= value <= 1:
            raise ValidationFailed(f"{name} {value} is outside [0, 1]")
    if where.role is not None and where.role not in ROLES:
        raise ValidationFailed(f"role {where.role!r} is not valid; use user, assistant, system or tool")
    return Filters(
        session_id=session_id,
        group_wide_types=group_wide_types if session_id is not None else (),
        since=since,
        until=until,
        producer=where.producer,
        role=where.role,
        memory_types=tuple(where.memory_types) if where.memory_types else None,
        metadata=metadata_conditions(where.metadata),
        min_importance=where.min_importance,
        max_importance=where.max_importance,
        step_from=where.step_from,
        step_to=where.step_to,
    )


def _forwards(low_name: str, low: float | None, high_name: str, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValidationFailed(f"{low_name} is after {high_name}; swap them or widen the range")


def metadata_conditions(metadata: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    """(dotted path, condition) pairs: a value, a list of values (any of), or a range of operators."""
    pairs = []
    for path, value in (metadata or {}).items():
        if not path or any(not part for part in path.split(".")):
            raise ValidationFailed(
                f"metadata filter key {path!r} is not a dotted path like 'project' or 'a.b'"
            )
        if isinstance(value, dict):
            _check_range(path, value)
        else:
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str | int | float | bool) for v in values):
                raise ValidationFailed(
                    f"metadata filter {path!r} must be a string, number, boolean, a list of them (any of), "
                    'or a range such as {"gte": 5, "lt": 10}'
                )
        pairs.append((path, value))
    return tuple(pairs)


def _check_range(path: str, bounds: Mapping[str, Any]) -> None:
    unknown = [op for op in bounds if op not in RANGE_OPERATORS]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in bounds.values())
    if not bounds or unknown or not numbers:
        raise ValidationFailed(
            f"metadata filter {path!r}: an object is a range of numbers under {', '.join(RANGE_OPERATORS)}, "
            f'e.g. {{"gte": 5, "lt": 10}}; to match a nested value, use a dotted path such as "{path}.key"'
        )


# -- cursors --------------------------------------------------------------------------------------


def encode_cursor(key: tuple[float | int, ...]) -> str:
    """An opaque cursor for the listing position after `key` (the last listed memory's order key)."""
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> tuple[float | int, ...]:
    """The position a cursor names; anything else is a clear error (cursors come only from a listing)."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or len(key) != width or not all(isinstance(k, int | float) for k in key):
        raise ValidationFailed(
            "cursor is not one this listing gave out; pass the next_cursor of the previous page, or leave it out "
            "to start from the beginning"
        )
    return tuple(key)
