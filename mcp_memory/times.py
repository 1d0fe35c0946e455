"""Time, defined once: now in UTC, the fixed-width ISO 8601 text times are stored as, and reading the times
clients send (ISO 8601 text, a datetime, epoch seconds or milliseconds)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from mcp_memory.errors import ValidationFailed

EPOCH_MS_THRESHOLD = 1e12  # an epoch number above this is in milliseconds


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO 8601, so stored timestamps sort as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def normalize_timestamp(value: Any, *, field: str = "timestamp") -> datetime:
    """An aware UTC datetime from ISO text, a datetime (naive means UTC) or epoch seconds/milliseconds."""
    if isinstance(value, bool):
        raise ValidationFailed(_bad_time(field, value))
    if isinstance(value, datetime):
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:
            raise ValidationFailed(
                f"{field} {value.isoformat()!r} falls outside the years 1 to 9999 once converted to UTC; "
                "give a time within them"
            ) from None
    if isinstance(value, int | float):
        return _from_epoch(value, field)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if _is_number(text):
            return _from_epoch(float(text), field)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationFailed(_bad_time(field, value)) from None
        return normalize_timestamp(parsed, field=field)
    raise ValidationFailed(_bad_time(field, value))


def _from_epoch(value: float, field: str) -> datetime:
    if not math.isfinite(value):
        raise ValidationFailed(_bad_time(field, value))
    seconds = value / 1000 if abs(value) > EPOCH_MS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValidationFailed(_bad_time(field, value)) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _bad_time(field: str, value: Any) -> str:
    return (
        f"{field} {value!r} is not a time; give ISO 8601 text such as '2025-03-01T14:30:00Z', "
        "epoch seconds, or epoch milliseconds"
    )
