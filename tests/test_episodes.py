"""Normalising what clients send: timestamps, validation, the retry key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mcp_memory.episodes import parse_memories, prepare_episode
from mcp_memory.errors import ValidationFailed
from mcp_memory.times import iso, normalize_timestamp

MOMENT = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-01T14:30:00Z",
        "2024-03-01T14:30:00+00:00",
        "2024-03-01T16:30:00+02:00",
        "2024-03-01T14:30:00",  # naive text means UTC
        "2024-03-01 14:30:00",
        datetime(2024, 3, 1, 14, 30),  # naive datetime means UTC
        datetime(2024, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
        1709303400,  # epoch seconds
        1709303400.0,
        1709303400000,  # epoch milliseconds (above 1e12)
        "1709303400",
        "1709303400000",
    ],
)
def test_every_accepted_time_form_normalises_to_aware_utc(value: object) -> None:
    result = normalize_timestamp(value)
    assert result == MOMENT
    assert result.tzinfo is UTC


@pytest.mark.parametrize("value", ["yesterday", "", "2024-13-45", True, None, [1], float("nan"), 1e300])
def test_anything_else_is_an_error_that_shows_the_accepted_forms(value: object) -> None:
    with pytest.raises(ValidationFailed, match="ISO 8601"):
        normalize_timestamp(value)


def test_stored_timestamps_are_fixed_width_so_they_sort_as_text() -> None:
    early, late = iso(datetime(2024, 1, 1, tzinfo=UTC)), iso(datetime(2024, 1, 1, 0, 0, 0, 5, tzinfo=UTC))
    assert len(early) == len(late) and early < late


def prepare(**fields: object):
    # through parse_memories, as the manager reads them: an unreadable id fails there, naming the field
    [item] = parse_memories([{"content": "hi", "producer": "ana", **fields}])
    return prepare_episode(item, participants=["ana", "bot"], max_content_chars=100, now=NOW)


def test_a_memory_without_a_timestamp_gets_now_and_no_retry_key() -> None:
    ep = prepare()
    assert ep.timestamp == iso(NOW) and ep.dedup_key is None


def test_the_retry_key_depends_on_producer_time_and_content() -> None:
    base = prepare(timestamp=1709303400)
    assert base.dedup_key == prepare(timestamp="2024-03-01T14:30:00Z").dedup_key
    assert base.dedup_key != prepare(timestamp=1709303401).dedup_key
    assert base.dedup_key != prepare(timestamp=1709303400, content="hello").dedup_key
    assert base.dedup_key != prepare(timestamp=1709303400, producer="bot").dedup_key


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"content": "   "}, "content is empty"),
        ({"content": "x" * 101}, "maximum 100"),
        ({"producer": "zed"}, "['ana', 'bot']"),
        ({"importance": 1.5}, "outside"),
        ({"memory_type": " "}, "memory_type"),
        ({"produced_for": " "}, "produced_for"),
    ],
)
def test_invalid_memories_are_rejected_with_what_to_do(fields: dict, message: str) -> None:
    with pytest.raises(ValidationFailed, match=message.replace("[", r"\[").replace("]", r"\]")):
        prepare(**fields)


def test_a_batch_names_the_first_bad_item() -> None:
    with pytest.raises(ValidationFailed, match=r"memories\[1\].*role"):
        parse_memories(
            [{"content": "a", "producer": "ana"}, {"content": "b", "producer": "ana", "role": "boss"}]
        )
    with pytest.raises(ValidationFailed, match="at most 1000"):
        parse_memories([{"content": "a", "producer": "ana"}] * 1001)
    with pytest.raises(ValidationFailed, match="empty"):
        parse_memories([])
