"""Session summaries (Memoria) against a real loopback OpenAI-compatible server, and the tasks table.

The service's two callables (read a session's episodes, store a summary) are the manager's
side; here they are a small in-memory session. Counters and tasks live in a real SQLite file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_memory.errors import (
    ConfigurationError,
    InvalidSummary,
    LLMError,
    LLMNotConfigured,
    MemoryServerError,
    NoEpisodes,
    RateLimited,
    TaskNotFound,
    ValidationFailed,
)
from mcp_memory.llm.client import LanguageModels, OpenAIChatLLM, SamplingLLM
from mcp_memory.llm.summaries import (
    SummarySettings,
    count_tokens,
    parse_json_text,
    parse_summary,
    render_line,
    select_episodes,
    should_auto_summarize,
)
from mcp_memory.models import Episode, GroupInfo, TaskInfo
from mcp_memory.services import tasks
from mcp_memory.services.summaries import SummaryService
from mcp_memory.store.records import SessionRecord
from mcp_memory.store.sqlite.store import Store
from tests.fake_openai import Delay, FakeOpenAI, serve

pytestmark = [pytest.mark.anyio, pytest.mark.both_backends]

GROUP, SESSION = "g", "s1"
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
FULL_REPLY = {"topic": "Database tuning", "action": "Added two indexes", "outcome": "Queries 93% faster"}
POINTS = ["Optimised the slow queries", "Added two indexes", "Queries are 93% faster"]
NOT_CONFIGURED = (
    "LLM not configured — episodic memory generation unavailable. Configure any OpenAI-compatible "
    "endpoint (OpenAI, Ollama, vLLM, LM Studio) with the environment variables LLM_API_KEY (or "
    "MEMORIA_LLM_API_KEY), LLM_BASE_URL (a base URL alone is enough for a local server such as "
    "http://localhost:11434/v1) and LLM_MODEL (default gpt-4o-mini), then restart the server; or write "
    'the summary yourself and pass it as `summary` (full: {"topic": ..., "action": ..., "outcome": ...}; '
    "lightweight: a list of 3 to 5 short points)"
)


def episode(number: int, content: str | None = None, **fields: Any) -> Episode:
    """The session's turn `number` (1-based): alice and the bot take turns."""
    values: dict[str, Any] = {
        "id": number,
        "group_id": GROUP,
        "session_id": SESSION,
        "sequence": number,
        "timestamp": START + timedelta(minutes=number),
        "producer": "alice" if number % 2 else "bot",
        "role": "user" if number % 2 else "assistant",
        "content": content if content is not None else f"turn-{number:04d} about the database",
        "memory_type": "message",
        "importance": 0.5,
    }
    return Episode(**(values | fields))


def episodes(count: int) -> list[Episode]:
    return [episode(n) for n in range(1, count + 1)]


def ids(selected: list[Episode]) -> list[int]:
    return [e.id for e in selected]


@dataclass
class SessionMemory:
    """The manager's side: a session's episodes, and the summaries stored into it."""

    episodes: list[Episode]
    stored: list[dict[str, Any]] = field(default_factory=list)

    async def fetch(self, group_id: str, session_id: str) -> list[Episode]:
        assert (group_id, session_id) == (GROUP, SESSION)
        return list(self.episodes)

    async def store(
        self, group_id: str, session_id: str, text: str, metadata: dict[str, Any], generate_embedding: bool
    ) -> tuple[int, bool]:
        memory_id = 10_000 + len(self.stored)
        self.stored.append({"text": text, "metadata": metadata, "generate_embedding": generate_embedding})
        self.episodes.append(
            episode(
                memory_id, text, sequence=len(self.episodes) + 1, memory_type="summary", metadata=metadata
            )
        )
        return memory_id, False


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "memory.db", embedder_name="hashing-16", dimension=16)
    opened.insert_group(GroupInfo(group_id=GROUP, user_ids=["alice"], agent_ids=["bot"], created_at=START))
    opened.insert_session(
        SessionRecord(group_id=GROUP, session_id=SESSION, configuration={}, overrides={}, created_at=START)
    )
    yield opened
    opened.close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    yield from serve()


def endpoint(fake: FakeOpenAI, **options: Any) -> OpenAIChatLLM:
    options = {"timeout_s": 5.0, "max_retries": 0, "backoff_s": 0.01} | options
    return OpenAIChatLLM(fake.base_url, "k", "fake-model", **options)


def service(
    store: Store, memory: SessionMemory, llm: Any = None, settings: SummarySettings | None = None
) -> SummaryService:
    return SummaryService(
        fetch_episodes=memory.fetch, store_summary=memory.store, store=store,
        models=LanguageModels(chat=llm), settings=settings,
    )  # fmt: skip


def sent_prompt(fake: FakeOpenAI) -> str:
    return str(fake.requests_to("/chat/completions")[-1].json["messages"][1]["content"])


def used(store: Store) -> int:
    return store.lightweight_used(GROUP, SESSION)


# -- which episodes a summary reads -------------------------------------------------------------------


def one_token(text: str) -> int:
    return 1


def test_a_session_within_both_limits_is_read_whole() -> None:
    selected, truncated = select_episodes(episodes(30), "full", count=one_token)
    assert ids(selected) == list(range(1, 31))
    assert truncated is False


def test_a_session_exactly_at_the_cap_is_not_truncated() -> None:
    assert select_episodes(episodes(200), "full", count=one_token)[1] is False
    assert select_episodes(episodes(50), "lightweight", count=one_token)[1] is False


def test_over_the_full_cap_the_first_20_and_the_last_180_are_kept() -> None:
    selected, truncated = select_episodes(episodes(250), "full", count=one_token)
    assert ids(selected) == list(range(1, 21)) + list(range(71, 251))
    assert truncated is True


def test_over_the_lightweight_cap_the_first_5_and_the_last_45_are_kept() -> None:
    selected, truncated = select_episodes(episodes(60), "lightweight", count=one_token)
    assert ids(selected) == list(range(1, 6)) + list(range(16, 61))
    assert truncated is True


def test_over_the_token_budget_the_newest_that_fit_are_kept() -> None:
    selected, truncated = select_episodes(episodes(250), "full", count=lambda text: 100)
    assert ids(selected) == list(range(91, 251))  # 16,000 tokens / 100 per line
    assert truncated is True
    selected, _ = select_episodes(episodes(10), "lightweight", count=lambda text: 1000)
    assert ids(selected) == [7, 8, 9, 10]


def test_the_token_walk_stops_at_the_first_episode_that_does_not_fit() -> None:
    sizes = {"turn-0003": 3500, "turn-0004": 1000}

    def count(text: str) -> int:
        return next((n for marker, n in sizes.items() if marker in text), 10)

    selected, truncated = select_episodes(episodes(4), "lightweight", count=count)
    assert ids(selected) == [4]  # turns 1 and 2 would fit, but only a recent stretch is kept
    assert truncated is True


def test_a_newest_episode_alone_over_the_budget_is_kept_cut_to_fit() -> None:
    huge = episode(1, "word " * 8000)
    [selected], truncated = select_episodes([huge], "lightweight")
    assert truncated is True
    assert selected.content.endswith("[...]")
    assert count_tokens(render_line(selected)) <= 4000 < count_tokens(render_line(huge))


def test_an_unknown_mode_is_a_validation_error() -> None:
    with pytest.raises(ValidationFailed, match="use 'full' or 'lightweight'"):
        select_episodes(episodes(3), "brief")


# -- the automatic trigger ----------------------------------------------------------------------------


def test_the_automatic_trigger_fires_once_at_each_multiple_of_the_threshold() -> None:
    assert not should_auto_summarize(19, 20, 0)
    assert should_auto_summarize(20, 20, 0)
    assert not should_auto_summarize(20, 20, 1)
    assert not should_auto_summarize(39, 20, 1)
    assert should_auto_summarize(40, 20, 1)
    assert should_auto_summarize(45, 20, 0)  # a jump past two multiples is due once
    assert not should_auto_summarize(45, 20, 2)


def test_a_threshold_of_zero_turns_the_trigger_off() -> None:
    assert not should_auto_summarize(100, 0, 0)


def test_settings_come_from_the_memoria_variables() -> None:
    assert SummarySettings.from_env({}) == SummarySettings(3, 20)
    settings = SummarySettings.from_env(
        {"MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION": "5", "MEMORIA_AUTO_TRIGGER_THRESHOLD": "0"}
    )
    assert settings == SummarySettings(max_lightweight_per_session=5, auto_trigger_threshold=0)
    with pytest.raises(ConfigurationError, match="MEMORIA_AUTO_TRIGGER_THRESHOLD must be a whole number"):
        SummarySettings.from_env({"MEMORIA_AUTO_TRIGGER_THRESHOLD": "-1"})


# -- parsing and validating ----------------------------------------------------------------------------


def test_json_is_read_bare_in_a_fence_or_with_prose_around_it() -> None:
    assert parse_json_text('{"a": 1}') == {"a": 1}
    assert parse_json_text('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_text('Here it is:\n```\n["x"]\n```\nDone.') == ["x"]
    assert parse_json_text('Sure! {"a": 1} Hope that helps.') == {"a": 1}
    with pytest.raises(ValueError, match="not JSON"):
        parse_json_text("Topic: databases")


def test_full_fields_are_trimmed_and_a_list_of_actions_is_joined() -> None:
    fields = parse_summary("full", {"topic": " T ", "action": ["a", "b"], "outcome": "o", "extra": 1})
    assert fields == {"topic": "T", "action": "a; b", "outcome": "o"}


def test_a_full_summary_missing_a_field_is_rejected() -> None:
    with pytest.raises(ValueError, match="action, outcome missing or empty"):
        parse_summary("full", {"topic": "T", "action": "  "})


def test_points_lose_their_bullets_and_must_number_three_to_five() -> None:
    assert parse_summary("lightweight", ["- one", "• two", "3. three"]) == {"points": ["one", "two", "three"]}
    assert parse_summary("lightweight", {"points": POINTS}) == {"points": POINTS}
    with pytest.raises(ValueError, match="it has 2 points; give 3 to 5"):
        parse_summary("lightweight", ["a", "b"])
    with pytest.raises(ValueError, match="it has 6 points; give 3 to 5"):
        parse_summary("lightweight", list("abcdef"))
    with pytest.raises(ValueError, match="the list of points is empty"):
        parse_summary("lightweight", {"points": []})


def test_a_point_may_have_fifteen_words_but_not_sixteen() -> None:
    fifteen, sixteen = " ".join(["w"] * 15), " ".join(["w"] * 16)
    assert parse_summary("lightweight", [fifteen, "b", "c"])["points"][0] == fifteen
    with pytest.raises(ValueError, match="point 1 has 16 words"):
        parse_summary("lightweight", [sixteen, "b", "c"])


# -- summaries from the configured endpoint ----------------------------------------------------------


async def test_a_full_summary_is_stored_as_text_with_its_fields_and_source_episodes(
    store: Store, fake: FakeOpenAI
) -> None:
    memory = SessionMemory(episodes(6))
    fake.queue_chat(json.dumps(FULL_REPLY))
    result = await service(store, memory, endpoint(fake)).summarize(GROUP, SESSION, mode="full")
    expected = "Session Summary: Database tuning\n\nActions: Added two indexes\n\nOutcome: Queries 93% faster"
    assert result.content == expected
    assert (result.mode, result.truncated, result.auto_triggered) == ("full", False, False)
    assert result.memory_id == 10_000
    assert result.metadata == {
        "mode": "full",
        **FULL_REPLY,
        "source_episode_ids": [1, 2, 3, 4, 5, 6],
        "source": "llm",
        "auto_triggered": False,
    }
    assert memory.stored == [{"text": expected, "metadata": result.metadata, "generate_embedding": True}]
    request = fake.requests_to("/chat/completions")[0].json
    assert '"topic"' in request["messages"][0]["content"]
    assert "alice (user): turn-0001 about the database" in request["messages"][1]["content"]


async def test_a_lightweight_summary_in_a_json_fence_becomes_highlights(
    store: Store, fake: FakeOpenAI
) -> None:
    memory = SessionMemory(episodes(4))
    fake.queue_chat("```json\n" + json.dumps({"points": POINTS}) + "\n```")
    result = await service(store, memory, endpoint(fake)).summarize(
        GROUP, SESSION, mode="lightweight", generate_embedding=False
    )
    assert result.content == (
        "Session Highlights:\n• Optimised the slow queries\n• Added two indexes\n• Queries are 93% faster"
    )
    assert result.metadata["points"] == POINTS
    assert memory.stored[0]["generate_embedding"] is False
    assert used(store) == 1


async def test_focus_topics_go_into_the_prompt(store: Store, fake: FakeOpenAI) -> None:
    fake.queue_chat(json.dumps(FULL_REPLY))
    result = await service(store, SessionMemory(episodes(3)), endpoint(fake)).summarize(
        GROUP, SESSION, focus_topics=["indexes", " latency "]
    )
    assert "Pay most attention to these topics: indexes; latency." in sent_prompt(fake)
    assert result.metadata["focus_topics"] == ["indexes", "latency"]


async def test_bad_json_from_the_model_is_an_error_and_nothing_is_stored(
    store: Store, fake: FakeOpenAI
) -> None:
    memory = SessionMemory(episodes(4))
    fake.queue_chat("The session was about databases.")
    with pytest.raises(InvalidSummary) as caught:
        await service(store, memory, endpoint(fake)).summarize(GROUP, SESSION, mode="lightweight")
    assert str(caught.value) == (
        f"model 'fake-model' at {fake.base_url} returned an unusable lightweight summary (it is not JSON); "
        "nothing was stored. Try again, or write the summary yourself and pass it as `summary`"
    )
    assert memory.stored == []


async def test_an_empty_list_of_points_from_the_model_is_an_error(store: Store, fake: FakeOpenAI) -> None:
    memory = SessionMemory(episodes(4))
    fake.queue_chat('{"points": []}')
    with pytest.raises(InvalidSummary, match=r"\(the list of points is empty\)"):
        await service(store, memory, endpoint(fake)).summarize(GROUP, SESSION, mode="lightweight")
    assert memory.stored == []


async def test_a_full_reply_missing_the_outcome_is_an_error(store: Store, fake: FakeOpenAI) -> None:
    memory = SessionMemory(episodes(4))
    fake.queue_chat('{"topic": "t", "action": "a"}')
    with pytest.raises(InvalidSummary, match=r"\(outcome missing or empty\)"):
        await service(store, memory, endpoint(fake)).summarize(GROUP, SESSION)
    assert memory.stored == []


async def test_http_500_after_the_retries_is_an_llm_error_and_nothing_is_stored(
    store: Store, fake: FakeOpenAI
) -> None:
    memory = SessionMemory(episodes(4))
    fake.queue_chat(500, 500, 500)
    with pytest.raises(LLMError, match="failed with HTTP 500"):
        await service(store, memory, endpoint(fake, max_retries=2)).summarize(GROUP, SESSION)
    assert len(fake.requests_to("/chat/completions")) == 3
    assert memory.stored == []


async def test_a_model_slower_than_the_timeout_is_an_llm_error(store: Store, fake: FakeOpenAI) -> None:
    memory = SessionMemory(episodes(4))
    fake.queue_chat(Delay(3.0), json.dumps(FULL_REPLY))
    with pytest.raises(LLMError, match="timed out"):
        await service(store, memory, endpoint(fake, timeout_s=0.2)).summarize(GROUP, SESSION)
    assert memory.stored == []


async def test_an_over_long_session_sends_the_first_10_percent_and_the_last_90_percent(
    store: Store, fake: FakeOpenAI
) -> None:
    fake.queue_chat(json.dumps(FULL_REPLY))
    result = await service(store, SessionMemory(episodes(250)), endpoint(fake)).summarize(GROUP, SESSION)
    prompt = sent_prompt(fake)
    kept = list(range(1, 21)) + list(range(71, 251))
    assert all(f"turn-{n:04d} " in prompt for n in kept)
    assert not any(f"turn-{n:04d} " in prompt for n in range(21, 71))
    assert "[... 50 messages left out ...]" in prompt
    assert "(200 of its 250 messages, oldest first)" in prompt
    assert result.truncated is True
    assert result.metadata["source_episode_ids"] == kept


async def test_earlier_summaries_are_not_summarised_again(store: Store, fake: FakeOpenAI) -> None:
    memory = SessionMemory(episodes(3))
    summarizer = service(store, memory, endpoint(fake))
    fake.queue_chat(json.dumps(FULL_REPLY), json.dumps(FULL_REPLY))
    await summarizer.summarize(GROUP, SESSION)
    second = await summarizer.summarize(GROUP, SESSION)
    assert second.metadata["source_episode_ids"] == [1, 2, 3]
    assert "Session Summary" not in sent_prompt(fake)


# -- where a summary comes from ----------------------------------------------------------------------


async def test_without_an_llm_sampling_or_a_summary_the_error_says_what_to_configure(store: Store) -> None:
    with pytest.raises(LLMNotConfigured) as caught:
        await service(store, SessionMemory(episodes(3))).summarize(GROUP, SESSION)
    assert str(caught.value) == NOT_CONFIGURED


async def test_a_caller_written_full_summary_is_stored_without_any_llm(store: Store) -> None:
    memory = SessionMemory(episodes(3))
    result = await service(store, memory).summarize(GROUP, SESSION, summary=json.dumps(FULL_REPLY))
    assert result.content.startswith("Session Summary: Database tuning\n\nActions: ")
    assert result.metadata["source"] == "caller"
    assert result.metadata["source_episode_ids"] == [1, 2, 3]
    assert len(memory.stored) == 1


async def test_a_caller_written_list_of_points_makes_a_lightweight_summary(store: Store) -> None:
    result = await service(store, SessionMemory(episodes(3))).summarize(
        GROUP, SESSION, mode="lightweight", summary=POINTS
    )
    assert result.metadata["points"] == POINTS
    assert used(store) == 1


async def test_a_malformed_caller_summary_is_rejected_with_the_shape_to_send(store: Store) -> None:
    memory = SessionMemory(episodes(3))
    with pytest.raises(InvalidSummary) as caught:
        await service(store, memory).summarize(GROUP, SESSION, mode="lightweight", summary=["a", "b"])
    assert str(caught.value) == (
        "summary is not a valid lightweight summary (it has 2 points; give 3 to 5); pass a list of 3 to 5 "
        'points of about 10 words each, or {"points": [...]}; nothing was stored'
    )
    assert memory.stored == []
    assert used(store) == 0


async def test_a_configured_llm_is_used_before_a_caller_summary(store: Store, fake: FakeOpenAI) -> None:
    fake.queue_chat(json.dumps({"topic": "from the model", "action": "a", "outcome": "o"}))
    result = await service(store, SessionMemory(episodes(3)), endpoint(fake)).summarize(
        GROUP, SESSION, summary=FULL_REPLY
    )
    assert result.metadata["source"] == "llm" and result.metadata["topic"] == "from the model"
    assert len(fake.requests_to("/chat/completions")) == 1


async def test_sampling_through_a_plain_async_callable_writes_the_summary(store: Store) -> None:
    calls: list[tuple[list[dict[str, str]], str, int]] = []

    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        calls.append((messages, system_prompt, max_tokens))
        return json.dumps({"points": POINTS})

    result = await service(store, SessionMemory(episodes(3))).summarize(
        GROUP, SESSION, mode="lightweight", sampling=SamplingLLM(send)
    )
    assert result.metadata["source"] == "sampling"
    [(messages, system_prompt, _)] = calls
    assert '{"points": [...]}' in system_prompt
    assert "turn-0003" in messages[0]["content"]


async def test_a_configured_llm_is_preferred_over_sampling(store: Store, fake: FakeOpenAI) -> None:
    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        raise AssertionError("sampling must not be asked")

    fake.queue_chat(json.dumps(FULL_REPLY))
    result = await service(store, SessionMemory(episodes(3)), endpoint(fake)).summarize(
        GROUP, SESSION, sampling=SamplingLLM(send)
    )
    assert result.metadata["source"] == "llm"


async def test_a_session_without_episodes_is_an_error(store: Store) -> None:
    with pytest.raises(NoEpisodes, match="session 's1' in group 'g' has no episodes to summarise"):
        await service(store, SessionMemory([])).summarize(GROUP, SESSION, summary=FULL_REPLY)


async def test_a_session_holding_only_summaries_is_an_error(store: Store) -> None:
    memory = SessionMemory([episode(1, "Session Summary: x", memory_type="summary")])
    with pytest.raises(NoEpisodes):
        await service(store, memory).summarize(GROUP, SESSION, summary=FULL_REPLY)


# -- the lightweight limit ---------------------------------------------------------------------------


async def test_the_fourth_lightweight_summary_is_refused_and_full_ones_are_not_limited(store: Store) -> None:
    summarizer = service(store, SessionMemory(episodes(3)))
    for _ in range(3):
        await summarizer.summarize(GROUP, SESSION, mode="lightweight", summary=POINTS)
    with pytest.raises(RateLimited) as caught:
        await summarizer.summarize(GROUP, SESSION, mode="lightweight", summary=POINTS)
    assert str(caught.value) == (
        "rate limit exceeded: session 's1' in group 'g' has had its 3 lightweight summaries (automatic "
        "ones count too); use mode='full', which is not limited, or raise MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION"
    )
    for _ in range(4):
        await summarizer.summarize(GROUP, SESSION, mode="full", summary=FULL_REPLY)
    assert used(store) == 3


async def test_the_limit_is_counted_before_generation(store: Store, fake: FakeOpenAI) -> None:
    summarizer = service(store, SessionMemory(episodes(3)), endpoint(fake), SummarySettings(1, 0))
    job = await summarizer.prepare(GROUP, SESSION, mode="lightweight")
    with pytest.raises(RateLimited):
        await summarizer.prepare(GROUP, SESSION, mode="lightweight")
    fake.queue_chat(json.dumps({"points": POINTS}))
    assert (await job.run()).mode == "lightweight"
    assert used(store) == 1


async def test_a_failed_generation_gives_its_slot_back(store: Store, fake: FakeOpenAI) -> None:
    summarizer = service(store, SessionMemory(episodes(3)), endpoint(fake), SummarySettings(1, 0))
    fake.queue_chat("not json", 500)
    for _ in range(2):
        with pytest.raises(MemoryServerError):
            await summarizer.summarize(GROUP, SESSION, mode="lightweight")
        assert used(store) == 0
    fake.queue_chat(json.dumps({"points": POINTS}))
    await summarizer.summarize(GROUP, SESSION, mode="lightweight")
    assert used(store) == 1


async def test_a_job_that_will_not_run_can_give_its_slot_back(store: Store) -> None:
    summarizer = service(store, SessionMemory(episodes(3)))
    job = await summarizer.prepare(GROUP, SESSION, mode="lightweight", summary=POINTS)
    assert used(store) == 1
    await job.cancel()
    assert used(store) == 0


async def test_a_limit_of_zero_refuses_every_lightweight_summary(store: Store) -> None:
    with pytest.raises(RateLimited):
        await service(store, SessionMemory(episodes(3)), settings=SummarySettings(0, 0)).summarize(
            GROUP, SESSION, mode="lightweight", summary=POINTS
        )


def test_the_counters_go_with_their_session(store: Store) -> None:
    store.write(lambda conn: conn.execute("INSERT INTO summary_counts VALUES (?, ?, 2, 1)", (GROUP, SESSION)))
    store.delete_session(GROUP, SESSION)
    assert store.read("SELECT count(*) FROM summary_counts")[0][0] == 0


# -- automatic summaries -----------------------------------------------------------------------------


async def test_an_automatic_summary_comes_at_the_threshold_marked_auto_triggered(
    store: Store, fake: FakeOpenAI
) -> None:
    memory = SessionMemory(episodes(4))
    summarizer = service(store, memory, endpoint(fake), SummarySettings(3, 4))
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 3) is None
    assert fake.requests_to("/chat/completions") == []
    fake.queue_chat(json.dumps({"points": POINTS}))
    result = await summarizer.maybe_auto_summarize(GROUP, SESSION, 4)
    assert result is not None
    assert result.auto_triggered is True and result.mode == "lightweight"
    assert memory.stored[0]["metadata"]["auto_triggered"] is True
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 5) is None
    memory.episodes.extend(episode(n) for n in range(5, 9))
    fake.queue_chat(json.dumps({"points": POINTS}))
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 8) is not None
    assert len(fake.requests_to("/chat/completions")) == 2


async def test_automatic_summaries_share_the_lightweight_limit(store: Store, fake: FakeOpenAI) -> None:
    summarizer = service(store, SessionMemory(episodes(8)), endpoint(fake), SummarySettings(1, 4))
    fake.queue_chat(json.dumps({"points": POINTS}))
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 4) is not None
    with pytest.raises(RateLimited):
        await summarizer.summarize(GROUP, SESSION, mode="lightweight", summary=POINTS)
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 8) is None
    assert len(fake.requests_to("/chat/completions")) == 1


async def test_a_failed_automatic_summary_is_logged_and_not_retried_for_that_multiple(
    store: Store, fake: FakeOpenAI
) -> None:
    summarizer = service(store, SessionMemory(episodes(4)), endpoint(fake), SummarySettings(3, 4))
    fake.queue_chat("no json here")
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 4) is None
    assert await summarizer.maybe_auto_summarize(GROUP, SESSION, 4) is None
    assert len(fake.requests_to("/chat/completions")) == 1
    assert used(store) == 0


async def test_no_automatic_summary_without_an_llm_or_when_turned_off(store: Store, fake: FakeOpenAI) -> None:
    assert await service(store, SessionMemory(episodes(20))).maybe_auto_summarize(GROUP, SESSION, 20) is None
    off = service(store, SessionMemory(episodes(20)), endpoint(fake), SummarySettings(3, 0))
    assert await off.maybe_auto_summarize(GROUP, SESSION, 20) is None
    assert fake.requests_to("/chat/completions") == []


# -- tasks in the database ---------------------------------------------------------------------------


def new_task(
    store: Store, owner: str = "me", *, session_id: str | None = SESSION, lease_s: float = 30
) -> TaskInfo:
    return store.create_task(
        kind="summary", group_id=GROUP, session_id=session_id, owner=owner, now=START,
        lease_until=START + timedelta(seconds=lease_s),
    )  # fmt: skip


def finish(store: Store, task_id: str, owner: str = "me", **outcome: Any) -> bool:
    status = "failed" if "error" in outcome else "completed"
    return store.finish_task(
        task_id, owner, status=status, now=START, expires_at=START + timedelta(hours=1), **outcome
    )


def test_a_task_goes_from_processing_to_completed_with_its_result(store: Store) -> None:
    info = new_task(store)
    assert info.status == "processing" and info.task_id.startswith("task_")
    assert finish(store, info.task_id, result={"memory_id": 7})
    done = store.get_task(info.task_id)
    assert done is not None
    assert (done.status, done.result, done.error, done.kind) == (
        "completed",
        {"memory_id": 7},
        None,
        "summary",
    )
    assert done.created_at == info.created_at and done.updated_at >= done.created_at


def test_a_failed_task_keeps_its_error_and_only_its_owner_finishes_it(store: Store) -> None:
    info = new_task(store, session_id=None)
    assert not finish(store, info.task_id, "someone else", error="no")
    assert finish(store, info.task_id, error="the model timed out")
    failed = store.get_task(info.task_id)
    assert failed is not None
    assert (failed.status, failed.error, failed.result) == ("failed", "the model timed out", None)


def test_a_processing_task_is_orphaned_only_once_its_lease_lapses(store: Store) -> None:
    info = new_task(store, "gone")
    later = START + timedelta(days=1)

    def fail_lapsed(seconds: float) -> int:
        return store.fail_lapsed_tasks("owner died", now=START + timedelta(seconds=seconds), expires_at=later)

    assert fail_lapsed(29) == 0
    assert store.renew_task_lease(info.task_id, "gone", START + timedelta(seconds=50))
    assert fail_lapsed(49) == 0
    assert fail_lapsed(51) == 1
    orphan = store.get_task(info.task_id)
    assert orphan is not None and (orphan.status, orphan.error) == ("failed", "owner died")
    assert not store.renew_task_lease(info.task_id, "gone", later)


def test_expire_deletes_finished_tasks_past_their_time_but_never_running_ones(store: Store) -> None:
    running, finished = new_task(store).task_id, new_task(store).task_id
    finish(store, finished, result={})
    assert store.expire_tasks(START + timedelta(minutes=59)) == 0
    assert store.expire_tasks(START + timedelta(days=365)) == 1
    assert store.get_task(finished) is None
    assert (found := store.get_task(running)) is not None and found.status == "processing"


def test_tasks_survive_a_restart_and_are_seen_by_another_process(store: Store, tmp_path: Path) -> None:
    info = new_task(store)
    other = Store(tmp_path / "memory.db", embedder_name="hashing-16", dimension=16)
    try:
        assert (seen := other.get_task(info.task_id)) is not None and seen.status == "processing"
        finish(store, info.task_id, result={"ok": True})
        assert (seen := other.get_task(info.task_id)) is not None and seen.result == {"ok": True}
    finally:
        other.close()
    store.close()
    reopened = Store(tmp_path / "memory.db", embedder_name="hashing-16", dimension=16)
    try:
        assert (seen := reopened.get_task(info.task_id)) is not None and seen.status == "completed"
    finally:
        reopened.close()


async def test_a_submitted_summary_is_processing_then_completed_with_its_result(store: Store) -> None:
    runner = tasks.TaskRunner(store)
    release = anyio.Event()
    summarizer = service(store, SessionMemory(episodes(3)))
    job = await summarizer.prepare(GROUP, SESSION, summary=FULL_REPLY)

    async def work() -> Any:
        await release.wait()
        return await job.run()

    async with anyio.create_task_group() as group:
        info = await runner.submit(group, "summary", GROUP, SESSION, work)
        assert (await runner.get(info.task_id)).status == "processing"
        release.set()
    done = await runner.get(info.task_id)
    assert done.status == "completed"
    assert done.result is not None and done.result["memory_id"] == 10_000
    assert done.result["content"].startswith("Session Summary: Database tuning")


async def test_a_failing_task_records_the_error_message_the_model_reads(store: Store) -> None:
    runner = tasks.TaskRunner(store)
    summarizer = service(store, SessionMemory(episodes(3)))

    async def work() -> Any:
        return await summarizer.summarize(GROUP, SESSION)

    async with anyio.create_task_group() as group:
        info = await runner.submit(group, "summary", GROUP, SESSION, work)
    failed = await runner.get(info.task_id)
    assert (failed.status, failed.error) == ("failed", NOT_CONFIGURED)


async def test_a_task_cut_short_by_shutdown_is_recorded_as_failed(store: Store) -> None:
    runner = tasks.TaskRunner(store)

    async def work() -> Any:
        await anyio.Event().wait()
        return {}

    async with anyio.create_task_group() as group:
        info = await runner.submit(group, "summary", GROUP, SESSION, work)
        group.cancel_scope.cancel()
    failed = await runner.get(info.task_id)
    assert (failed.status, failed.error) == ("failed", tasks.SHUTDOWN_REASON)


class RenewalsSeen:
    """The task store, telling when a lease has been renewed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.renewed = anyio.Event()
        self.leases: list[datetime] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def renew_task_lease(self, task_id: str, owner: str, until: datetime) -> bool:
        renewed = self.store.renew_task_lease(task_id, owner, until)
        self.leases.append(until)
        anyio.from_thread.run_sync(self.renewed.set)
        return renewed


async def test_a_running_task_renews_its_lease(store: Store) -> None:
    seen = RenewalsSeen(store)
    runner = tasks.TaskRunner(seen, heartbeat_s=0.01)

    async def work() -> Any:
        await seen.renewed.wait()
        return {"renewed": True}

    async with anyio.create_task_group() as group:
        info = await runner.submit(group, "summary", GROUP, SESSION, work)
    assert (await runner.get(info.task_id)).result == {"renewed": True}
    stored = store.read("SELECT lease_until FROM tasks WHERE task_id = ?", (info.task_id,))
    assert seen.leases and stored[0][0] is None  # renewed while running; no lease once finished
    assert seen.leases[0] > info.created_at + timedelta(seconds=tasks.LEASE_S - 1)


async def test_reading_a_task_fails_it_when_its_owner_stopped_renewing_the_lease(store: Store) -> None:
    dead = store.create_task(
        kind="summary", group_id=GROUP, session_id=SESSION, owner="dead", now=START, lease_until=START
    )
    info = await tasks.TaskRunner(store).get(dead.task_id)
    assert (info.status, info.error) == ("failed", tasks.ORPHAN_REASON)


async def test_an_unknown_task_id_is_a_clear_error(store: Store) -> None:
    with pytest.raises(TaskNotFound, match="task 'task_nope' does not exist"):
        await tasks.TaskRunner(store).get("task_nope")


@pytest.mark.parametrize("limit", [1_000, 20_000])
def test_json_nested_too_deeply_is_refused_whatever_the_recursion_limit(limit: int) -> None:
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        for text in ("[" * 5000, '{"a": ' * 40 + "1" + "}" * 40):
            with pytest.raises(ValueError, match="nests JSON too deeply"):
                parse_json_text(text)
    finally:
        sys.setrecursionlimit(previous)
    assert parse_json_text('{"topic": "[[[[ not nesting ]]]] \\" {{{{"}') == {
        "topic": '[[[[ not nesting ]]]] " {{{{'
    }
