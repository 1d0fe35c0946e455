"""The LLM clients against a real loopback OpenAI-compatible server, and MCP sampling through a plain callable."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from mcp_memory.llm.client import (
    LLM_NOT_CONFIGURED,
    LLMError,
    OpenAIChatLLM,
    SamplingLLM,
    llm_from_env,
    not_configured_message,
)
from tests.fake_openai import Delay, FakeOpenAI, serve

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    yield from serve()


def client(fake: FakeOpenAI, **options: Any) -> OpenAIChatLLM:
    options = {"timeout_s": 5.0, "max_retries": 0, "backoff_s": 0.01} | options
    return OpenAIChatLLM(fake.base_url, "secret", "fake-model", **options)


# -- configuration ----------------------------------------------------------------------------------


def test_no_key_and_no_base_url_means_no_llm() -> None:
    assert llm_from_env({}) is None
    assert llm_from_env({"LLM_API_KEY": "  ", "LLM_MODEL": "m"}) is None


def test_a_base_url_alone_is_enough_for_a_local_server() -> None:
    llm = llm_from_env({"LLM_BASE_URL": "http://localhost:11434/v1"})
    assert llm is not None
    assert llm.base_url == "http://localhost:11434/v1"
    assert llm.model == "gpt-4o-mini"


def test_the_memoria_key_name_and_the_model_are_read() -> None:
    llm = llm_from_env({"MEMORIA_LLM_API_KEY": "sk-x", "LLM_MODEL": "llama3.2"})
    assert llm is not None
    assert llm.base_url is None
    assert llm.model == "llama3.2"
    assert "api.openai.com" in llm.endpoint


def test_the_not_configured_sentence_is_memorias_and_the_message_says_what_to_do() -> None:
    assert LLM_NOT_CONFIGURED == "LLM not configured — episodic memory generation unavailable"
    message = not_configured_message()
    assert message.startswith(LLM_NOT_CONFIGURED)
    for variable in ("LLM_API_KEY", "LLM_BASE_URL", "LLM_MODEL", "`summary`"):
        assert variable in message


# -- the OpenAI-compatible endpoint -------------------------------------------------------------------


async def test_complete_sends_the_system_and_user_prompts_with_the_key_and_token_limit(
    fake: FakeOpenAI,
) -> None:
    fake.queue_chat("the answer")
    reply = await client(fake).complete("be brief", "what happened?", max_tokens=123)
    assert reply == "the answer"
    [request] = fake.requests_to("/chat/completions")
    assert request.authorization == "Bearer secret"
    assert request.json["model"] == "fake-model"
    assert request.json["max_tokens"] == 123
    assert request.json["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what happened?"},
    ]


async def test_http_500_is_retried_and_the_next_answer_is_returned(fake: FakeOpenAI) -> None:
    fake.queue_chat(500, "recovered")
    assert await client(fake, max_retries=2).complete("s", "p", max_tokens=10) == "recovered"
    assert len(fake.requests_to("/chat/completions")) == 2


async def test_http_500_beyond_the_retries_is_an_llm_error_naming_endpoint_and_model(
    fake: FakeOpenAI,
) -> None:
    fake.queue_chat(500, 500, 500)
    with pytest.raises(LLMError) as caught:
        await client(fake, max_retries=2).complete("s", "p", max_tokens=10)
    message = str(caught.value)
    assert "HTTP 500" in message
    assert "'fake-model'" in message and fake.base_url in message
    assert "server's logs" in message
    assert len(fake.requests_to("/chat/completions")) == 3


async def test_http_401_is_not_retried_and_says_to_check_the_key(fake: FakeOpenAI) -> None:
    fake.queue_chat(401)
    with pytest.raises(LLMError, match="HTTP 401.*check LLM_API_KEY"):
        await client(fake, max_retries=2).complete("s", "p", max_tokens=10)
    assert len(fake.requests_to("/chat/completions")) == 1


async def test_a_reply_slower_than_the_timeout_is_an_llm_error(fake: FakeOpenAI) -> None:
    fake.queue_chat(Delay(3.0), "too late")
    with pytest.raises(LLMError, match=r"timed out after 0\.2 s.*not overloaded"):
        await client(fake, timeout_s=0.2).complete("s", "p", max_tokens=10)


async def test_a_timed_out_attempt_is_retried_and_the_second_attempt_answers(fake: FakeOpenAI) -> None:
    # The first request stalls on the delay; the retry takes the next scripted reply.
    fake.queue_chat(Delay(3.0), "second attempt")
    reply = await client(fake, timeout_s=0.3, max_retries=1).complete("s", "p", max_tokens=10)
    assert reply == "second attempt"


async def test_an_unreachable_endpoint_is_an_llm_error_saying_to_check_the_base_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    llm = OpenAIChatLLM(f"http://127.0.0.1:{port}/v1", None, "m", timeout_s=2, max_retries=0)
    with pytest.raises(LLMError, match="cannot connect.*check LLM_BASE_URL"):
        await llm.complete("s", "p", max_tokens=10)


async def test_an_empty_reply_is_an_llm_error(fake: FakeOpenAI) -> None:
    fake.queue_chat("")
    with pytest.raises(LLMError, match="empty reply"):
        await client(fake).complete("s", "p", max_tokens=10)


class RefusesMaxTokens(FakeOpenAI):
    """A server like OpenAI's newer models: `max_tokens` is refused, `max_completion_tokens` accepted."""

    def _chat_reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "max_tokens" in body:
            message = "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead."
            return 400, {"error": {"message": message, "type": "invalid_request_error"}}
        return super()._chat_reply(body)


async def test_a_model_refusing_max_tokens_is_asked_again_with_max_completion_tokens() -> None:
    with RefusesMaxTokens() as fake:
        fake.queue_chat("fine")
        assert await client(fake).complete("s", "p", max_tokens=50) == "fine"
        first, second = fake.requests_to("/chat/completions")
    assert first.json["max_tokens"] == 50
    assert second.json["max_completion_tokens"] == 50 and "max_tokens" not in second.json


async def test_waiting_for_the_endpoint_does_not_block_the_event_loop(fake: FakeOpenAI) -> None:
    fake.queue_chat(Delay(0.3), "done")
    order: list[str] = []

    async def ask() -> None:
        await client(fake).complete("s", "p", max_tokens=10)
        order.append("llm answered")

    async def other() -> None:
        order.append("other task ran")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ask)
        tasks.start_soon(other)
    assert order == ["other task ran", "llm answered"]


# -- MCP sampling -----------------------------------------------------------------------------------


async def test_sampling_hands_messages_system_prompt_and_limit_to_the_callable() -> None:
    seen: list[tuple[list[dict[str, str]], str, int]] = []

    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        seen.append((messages, system_prompt, max_tokens))
        return "from the client's model"

    reply = await SamplingLLM(send).complete("the system", "the prompt", max_tokens=77)
    assert reply == "from the client's model"
    assert seen == [([{"role": "user", "content": "the prompt"}], "the system", 77)]


async def test_a_failing_sampling_request_is_an_llm_error_suggesting_summary() -> None:
    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        raise RuntimeError("Method not found")

    with pytest.raises(LLMError, match="sampling request failed: Method not found.*`summary`"):
        await SamplingLLM(send).complete("s", "p", max_tokens=10)


async def test_a_sampling_request_nobody_answers_times_out() -> None:
    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        await anyio.Event().wait()
        return "never"

    with pytest.raises(LLMError, match="did not answer the sampling request within 0.05 s"):
        await SamplingLLM(send, timeout_s=0.05).complete("s", "p", max_tokens=10)


async def test_an_empty_sampling_reply_is_an_llm_error() -> None:
    async def send(messages: list[dict[str, str]], system_prompt: str, max_tokens: int) -> str:
        return "  "

    with pytest.raises(LLMError, match="no text"):
        await SamplingLLM(send).complete("s", "p", max_tokens=10)
