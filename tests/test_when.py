"""Time-aware recall: the period a query names (recall/when.py) and how recall favours memories stored in it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from mcp import Client

from mcp_memory.recall.when import named_period
from tests.helpers import call

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

NOW = datetime(2026, 11, 21, 15, 30, tzinfo=UTC)


def day(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("What did John do the week before August 3, 2023?", day(2023, 8, 3), day(2023, 8, 4)),
        ("what happened on 1 February, 2023", day(2023, 2, 1), day(2023, 2, 2)),
        ("the 3rd of Sept 2023", day(2023, 9, 3), day(2023, 9, 4)),
        ("Aug. 3rd, 2023", day(2023, 8, 3), day(2023, 8, 4)),
        ("logs from 2024-02-29", day(2024, 2, 29), day(2024, 3, 1)),
        ("what did Maria donate in December 2023?", day(2023, 12, 1), day(2024, 1, 1)),
        ("How often did she go to the beach in 2023?", day(2023, 1, 1), day(2024, 1, 1)),
        ("between March 3 and May 5, 2023", day(2023, 3, 3), day(2023, 5, 6)),
        ("trips in 2022 and in 2023", day(2022, 1, 1), day(2024, 1, 1)),
        # Without a year: the latest such day or month that has begun.
        ("what did we plan on March 3?", day(2026, 3, 3), day(2026, 3, 4)),
        ("what did we plan for December 24?", day(2025, 12, 24), day(2025, 12, 25)),
        ("what did I cook in November", day(2026, 11, 1), day(2026, 12, 1)),
        ("what did I cook during December", day(2025, 12, 1), day(2026, 1, 1)),
        # Relative to the clock (a Saturday).
        ("what did I say yesterday", day(2026, 11, 20), day(2026, 11, 21)),
        ("notes from today", day(2026, 11, 21), day(2026, 11, 22)),
        ("what did we decide last week", day(2026, 11, 9), day(2026, 11, 16)),
        ("this week's plans", day(2026, 11, 16), day(2026, 11, 23)),
        ("bills from last month", day(2026, 10, 1), day(2026, 11, 1)),
        ("goals for this year", day(2026, 1, 1), day(2027, 1, 1)),
        ("what changed in the past week", datetime(2026, 11, 14, 15, 30, tzinfo=UTC), NOW),
    ],
)
def test_named_period(text: str, start: datetime, end: datetime) -> None:
    period = named_period(text, NOW)
    assert period is not None
    assert (period.start, period.end) == (start, end)


@pytest.mark.parametrize(
    "text",
    [
        "what may the kids want for dinner",  # "may" is a verb here
        "how long is the march to the castle",
        "what is the wifi password",
        "February 30, 2023",  # not a date
        "the 12 o'clock meeting with 30 people",
    ],
)
def test_no_period_in_words_that_name_no_date(text: str) -> None:
    assert named_period(text, NOW) is None


def test_the_words_that_named_the_period_are_kept() -> None:
    period = named_period("between March 3 and May 5, 2023", NOW)
    assert period is not None and period.words == "March 3, May 5, 2023"


# -- through recall ---------------------------------------------------------------------------


async def _seed(client: Client) -> dict[str, int]:
    await call(client, "create_group", group_id="g", user_ids=["ana"], agent_ids=["bot"])
    await call(client, "open_session", group_id="g", session_id="s")
    stored = await call(
        client,
        "add_memory",
        group_id="g",
        session_id="s",
        memories=[
            {"content": "We went hiking by the lake.", "producer": "ana", "timestamp": "2023-05-03T10:00:00Z"},
            {"content": "We went hiking by the lake again.", "producer": "ana", "timestamp": "2023-08-03T10:00:00Z"},
            {"content": "The lake was frozen, no hiking.", "producer": "ana", "timestamp": "2024-01-20T10:00:00Z"},
        ],
    )  # fmt: skip
    ids = [m["id"] for m in stored["memories"]]
    return {"may": ids[0], "august": ids[1], "january": ids[2]}


async def recall(client: Client, query: str) -> list[dict]:
    return (await call(client, "recall", group_id="g", query=query))["hits"]


async def test_recall_ranks_first_what_was_stored_in_the_named_period(client: Client) -> None:
    ids = await _seed(client)
    for query, wanted in (
        ("where did we go hiking in May 2023?", "may"),
        ("where did we go hiking on August 3, 2023?", "august"),
        ("hiking at the lake in 2024", "january"),
        ("hiking around 2023-08-05", "august"),  # within the three days' slack
    ):
        hits = await recall(client, query)
        assert hits[0]["id"] == ids[wanted], query
        assert "time" in hits[0]["matched_by"]
        assert all("time" not in h["matched_by"] for h in hits[1:]), query


async def test_a_named_time_only_reorders_what_the_searches_found(client: Client) -> None:
    ids = await _seed(client)
    hits = await recall(client, "what did we do in May 2023?")  # "do" and "may" find nothing
    assert ids["may"] not in [h["id"] for h in hits if "keyword" in h["matched_by"]]
    assert all(set(h["matched_by"]) != {"time"} for h in hits)
    plain = await recall(client, "hiking by the lake")
    assert all("time" not in h["matched_by"] for h in plain)


async def test_a_period_nothing_was_stored_in_changes_nothing(client: Client) -> None:
    await _seed(client)
    named = await recall(client, "hiking by the lake in 2019")
    assert len(named) == 3
    assert all("time" not in h["matched_by"] for h in named)
