"""Fact extraction: ask a language model for (subject, predicate, object) triplets, read its answer leniently.

`extract_facts(text, complete)` works with any `complete(prompt) -> str`: the OpenAI-compatible
client below (LLM_API_KEY, LLM_BASE_URL, LLM_MODEL), another LLM client, or MCP sampling.
Models wrap JSON in ```json fences, add a sentence around it, return an object holding the list,
or get an item wrong; all of that is read, and each item that is not a triplet is skipped and
counted. An answer with no JSON list in it at all is an error: nothing is stored.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp_memory.api_errors import api_error_text
from mcp_memory.config import Config
from mcp_memory.errors import ExtractionFailed, ValidationFailed
from mcp_memory.fact_table import fact_key
from mcp_memory.facts import Triple, check_triple

Complete = Callable[[str], str]
"""A language model: the prompt in, the reply text out (raises ExtractionFailed on failure)."""

MAX_EXTRACTED_FACTS = 50
DEFAULT_LLM_MODEL = "gpt-4o-mini"
LLM_TIMEOUT_S = 30.0
LLM_MAX_RETRIES = 2
NOT_CONFIGURED = (
    "LLM not configured — fact extraction unavailable; set LLM_API_KEY (and LLM_BASE_URL, LLM_MODEL for "
    "Ollama, vLLM, LM Studio), or pass subject, predicate and object yourself"
)
LIST_KEYS = ("facts", "triplets", "triples")

PROMPT = """\
Extract the stable facts stated in the text below: who someone is, where they live or work, what they
like, own, decided or plan, and facts about projects. Leave out greetings, opinions about the
conversation and anything uncertain.

Answer with only a JSON list of objects with the keys "subject", "predicate" and "object", for example:
[{{"subject": "Ana", "predicate": "lives in", "object": "Lisbon"}}]
Name the subject explicitly (never "I", "he" or "she"), keep each part short, give at most {limit}
facts, and answer [] if the text states none.

Text:
<<<
{text}
>>>"""

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Extraction:
    """The facts read from a model's answer (at most the limit), how many it gave, and how many were malformed."""

    triplets: list[Triple]
    found: int
    malformed: int


def extract_facts(text: str, complete: Complete, limit: int = MAX_EXTRACTED_FACTS) -> Extraction:
    """Ask the model for the facts in `text`; raises ExtractionFailed when it fails or answers no JSON list."""
    return parse_triplets(complete(PROMPT.format(text=text, limit=limit)), limit)


def parse_triplets(answer: str, limit: int = MAX_EXTRACTED_FACTS) -> Extraction:
    """Triplets from a model's answer: distinct, well-formed, at most `limit`; bad items are counted."""
    unique: dict[tuple[str, str, str], Triple] = {}
    malformed = 0
    for item in _items(_json(answer)):
        triplet = _triplet(item)
        if triplet is None:
            malformed += 1
        else:
            unique.setdefault(tuple(fact_key(part) for part in triplet), triplet)  # type: ignore[arg-type]
    found = list(unique.values())
    return Extraction(found[:limit], len(found), malformed)


def _json(answer: str) -> Any:
    """The JSON in an answer: fenced, bare, or the outermost [...] inside some prose."""
    fenced = _FENCE.search(answer)
    text = (fenced.group(1) if fenced else answer).strip()
    start, end = text.find("["), text.rfind("]")
    for candidate in (text, text[start : end + 1] if 0 <= start < end else None):
        if candidate is None:
            continue
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
    raise ExtractionFailed(
        f"the language model's answer is not a JSON list of facts ({_preview(answer)}); nothing was stored; "
        "try again, or pass subject, predicate and object yourself"
    )


def _items(data: Any) -> list[Any]:
    if isinstance(data, dict):
        lists = [data[key] for key in LIST_KEYS if isinstance(data.get(key), list)]
        data = lists[0] if lists else [data]
    if not isinstance(data, list):
        raise ExtractionFailed(
            f"the language model answered {type(data).__name__} JSON, not a list of facts; nothing was "
            "stored; try again, or pass subject, predicate and object yourself"
        )
    return data


def _triplet(item: Any) -> Triple | None:
    if isinstance(item, dict):
        parts = [item.get("subject"), item.get("predicate"), item.get("object")]
    elif isinstance(item, list) and len(item) == 3:
        parts = item
    else:
        return None
    try:
        return check_triple(*parts)
    except ValidationFailed:
        return None


def _preview(answer: str, chars: int = 80) -> str:
    flat = " ".join(answer.split())
    if not flat:
        return "it was empty"
    return f"it began {flat[:chars]!r}" if len(flat) > chars else f"it was {flat!r}"


class OpenAICompletion:
    """`complete(prompt) -> str` over an OpenAI-compatible chat API; thread-safe, one client shared.

    Blocking: call it on a worker thread. The client times out after LLM_TIMEOUT_S and retries
    connection errors, 408, 409, 429 and 5xx answers LLM_MAX_RETRIES times.
    """

    def __init__(self, base_url: str | None, api_key: str | None, model: str) -> None:
        self.base_url = base_url
        self.model = model
        self._api_key = api_key or "not-needed"
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"model {self.model!r} at {self.base_url or 'https://api.openai.com/v1'}"

    def __call__(self, prompt: str) -> str:
        import openai

        try:
            response = self._get_client().chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": prompt}], temperature=0
            )
        except openai.APIStatusError as exc:
            raise ExtractionFailed(
                f"the request to {self.endpoint} failed with HTTP {exc.status_code}: {api_error_text(exc)}; "
                f"{_hint(exc.status_code)}; nothing was stored, or pass subject, predicate and object yourself"
            ) from exc
        except openai.OpenAIError as exc:  # connection errors and timeouts, after the retries
            raise ExtractionFailed(
                f"cannot reach {self.endpoint}: {exc}; check LLM_BASE_URL and that the server is running; "
                "nothing was stored, or pass subject, predicate and object yourself"
            ) from exc
        choices = response.choices or []
        return (choices[0].message.content if choices else None) or ""

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key,
                    timeout=LLM_TIMEOUT_S,
                    max_retries=LLM_MAX_RETRIES,
                )
            return self._client


def completion_from_config(config: Config) -> OpenAICompletion | None:
    """The configured model, or None when neither LLM_API_KEY nor LLM_BASE_URL is set."""
    if not (config.llm_api_key or config.llm_base_url):
        return None
    return OpenAICompletion(config.llm_base_url, config.llm_api_key, config.llm_model or DEFAULT_LLM_MODEL)


def _hint(status: int) -> str:
    return {
        401: "check LLM_API_KEY",
        403: "check LLM_API_KEY and its permissions",
        404: "check LLM_BASE_URL (it usually ends in /v1) and LLM_MODEL",
        429: "the server is rate limiting; try again later",
    }.get(status, "check the server's logs" if status >= 500 else "check LLM_MODEL")
