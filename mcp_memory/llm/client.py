"""Language models for summaries and fact extraction: an OpenAI-compatible endpoint, or the client's
model through MCP sampling.

Both implement `LLMClient`: one async `complete(system, prompt, max_tokens=...)` that returns
the reply text or raises `LLMError` with a message naming what failed and what to check.
`OpenAIChatLLM` is the project's one OpenAI chat client, so every request to the configured
endpoint has the same timeout and retry policy.
Nothing here imports mcp: the server hands `SamplingLLM` a plain async callable.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import anyio

from mcp_memory.errors import LLMError
from mcp_memory.llm.api_errors import api_error_text

log = logging.getLogger(__name__)

DEFAULT_LLM_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_RETRIES = 2
BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0
SAMPLING_TIMEOUT_S = 120.0
OPENAI_DEFAULT_ENDPOINT = "https://api.openai.com/v1 (the OpenAI default)"
RETRYABLE_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))

LLM_NOT_CONFIGURED = "LLM not configured — episodic memory generation unavailable"

SamplingSend = Callable[[list[dict[str, str]], str, int], Awaitable[str]]
"""What the server provides for sampling: `send(messages, system_prompt, max_tokens) -> reply text`."""


class LLMClient(Protocol):
    """Anything that turns a system prompt and a user prompt into reply text."""

    async def complete(self, system: str, prompt: str, *, max_tokens: int) -> str: ...


def not_configured_message() -> str:
    """The full "LLM not configured" error: the sentence, how to configure one, and the alternative."""
    return (
        f"{LLM_NOT_CONFIGURED}. Configure any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, LM Studio) "
        "with the environment variables LLM_API_KEY (or MEMORIA_LLM_API_KEY), LLM_BASE_URL (a base URL "
        "alone is enough for a local server such as http://localhost:11434/v1) and LLM_MODEL (default "
        f"{DEFAULT_LLM_MODEL}), then restart the server; or write the summary yourself and pass it as "
        '`summary` (full: {"topic": ..., "action": ..., "outcome": ...}; lightweight: a list of 3 to 5 '
        "short points)"
    )


def llm_from_env(env: Mapping[str, str]) -> OpenAIChatLLM | None:
    """The configured endpoint, or None when neither an API key nor a base URL is set."""
    api_key = (env.get("LLM_API_KEY") or env.get("MEMORIA_LLM_API_KEY") or "").strip() or None
    base_url = (env.get("LLM_BASE_URL") or "").strip() or None
    if api_key is None and base_url is None:
        return None
    model = (env.get("LLM_MODEL") or "").strip() or DEFAULT_LLM_MODEL
    return OpenAIChatLLM(base_url, api_key, model)


class OpenAIChatLLM:
    """Chat completions from an OpenAI-compatible endpoint, with a timeout and bounded retries.

    Retries (timeouts, connection errors, HTTP 408/409/429/5xx) are our own loop with
    exponential backoff, so the total is bounded by `max_retries` whatever the server says.
    Each call opens its own `AsyncOpenAI` client: summaries are rare, and a client kept across
    calls would be bound to the event loop that first used it.
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        model: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        *,
        backoff_s: float = BACKOFF_S,
        temperature: float | None = None,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.temperature = temperature  # None: the server's default
        self._api_key = api_key or "not-needed"

    @property
    def endpoint(self) -> str:
        """The endpoint as messages name it."""
        return self.base_url or OPENAI_DEFAULT_ENDPOINT

    @property
    def name(self) -> str:
        return f"model {self.model!r} at {self.endpoint}"

    async def complete(self, system: str, prompt: str, *, max_tokens: int) -> str:
        """The reply text; retried within `max_retries`, every failure an `LLMError`."""
        openai = await _openai_module()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        request: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        if self.temperature is not None:
            request["temperature"] = self.temperature
        async with openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
        ) as client:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    await anyio.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
                try:
                    return self._content(await _create(openai, client, request))
                except openai.OpenAIError as exc:
                    error, retryable = self._explain(openai, exc, attempt + 1)
                    if not retryable or attempt == self.max_retries:
                        raise error from exc
                    log.info("LLM request to %s failed (%s); retrying", self.endpoint, error)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _explain(self, openai: ModuleType, exc: Exception, attempts: int) -> tuple[LLMError, bool]:
        """The error to report for a failed request, and whether another attempt may succeed."""
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            return self._status_error(status, api_error_text(exc)), status in RETRYABLE_STATUSES
        if isinstance(exc, openai.APITimeoutError):
            return LLMError(
                f"the request to {self.name} timed out after {self.timeout_s:g} s ({attempts} attempt(s)); "
                "check that the server is up and not overloaded, or use a faster model"
            ), True
        if isinstance(exc, openai.APIConnectionError):
            return LLMError(
                f"cannot connect to {self.name}: {exc}; check LLM_BASE_URL and that the server "
                "(OpenAI, Ollama, vLLM, LM Studio, ...) is running and reachable"
            ), True
        return LLMError(f"the request to {self.name} failed: {exc}; check LLM_BASE_URL and LLM_MODEL"), False

    def _content(self, response: Any) -> str:
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices else None
        if not isinstance(content, str) or not content.strip():
            raise LLMError(
                f"{self.name} returned an empty reply; check that LLM_MODEL names a chat model "
                "that the server has loaded"
            )
        return content

    def _status_error(self, status: int, detail: str) -> LLMError:
        hint = {
            401: "check LLM_API_KEY",
            403: "check LLM_API_KEY and its permissions for this model",
            404: "check LLM_BASE_URL (it usually ends in /v1) and LLM_MODEL",
            429: "the server is rate limiting or the quota is used up; retry later",
        }.get(
            status, "check the server's logs" if status >= 500 else "check LLM_MODEL and the request limits"
        )
        return LLMError(f"the request to {self.name} failed with HTTP {status}: {detail}; {hint}")


class SamplingLLM:
    """The MCP client's own model, asked through sampling by a callable the server provides."""

    name = "the MCP client's model (sampling)"

    def __init__(self, send: SamplingSend, *, timeout_s: float = SAMPLING_TIMEOUT_S) -> None:
        self._send = send
        self.timeout_s = timeout_s

    async def complete(self, system: str, prompt: str, *, max_tokens: int) -> str:
        """The client's reply text; a refusal, an error or silence is an `LLMError`."""
        messages = [{"role": "user", "content": prompt}]
        try:
            with anyio.fail_after(self.timeout_s):
                reply = await self._send(messages, system, max_tokens)
        except TimeoutError:
            raise LLMError(
                f"the MCP client did not answer the sampling request within {self.timeout_s:g} s; "
                "approve sampling requests in the client, or pass `summary` written by you"
            ) from None
        except LLMError:
            raise
        except Exception as exc:  # noqa: BLE001 - the client's failure, whatever its type, is reported
            raise LLMError(
                f"the MCP sampling request failed: {exc}; the client must support sampling (and the "
                "user may have to approve it), or pass `summary` written by you"
            ) from exc
        if not isinstance(reply, str) or not reply.strip():
            raise LLMError(
                "the MCP client answered the sampling request with no text; pass `summary` instead"
            )
        return reply


async def _create(openai: ModuleType, client: Any, request: dict[str, Any]) -> Any:
    """One chat completion; switches to `max_completion_tokens` for models that refuse `max_tokens`."""
    try:
        return await client.chat.completions.create(**request)
    except openai.BadRequestError as exc:
        if "max_tokens" not in request or "max_completion_tokens" not in api_error_text(exc):
            raise
        request["max_completion_tokens"] = request.pop("max_tokens")
        return await client.chat.completions.create(**request)


async def _openai_module() -> ModuleType:
    """`openai`, imported on a worker thread the first time: the import takes long enough to stall the loop."""
    return await anyio.to_thread.run_sync(importlib.import_module, "openai")


@dataclass
class LanguageModels:
    """The language models the services ask, replaceable while the server runs (tests, MCP sampling):
    `chat` writes summaries and rolling summaries, `facts` extracts facts (at temperature 0: the same text,
    the same facts). None: not configured."""

    chat: LLMClient | None = None
    facts: LLMClient | None = None
