"""Fact extraction: ask a language model for (subject, predicate, object) triplets, read its answer leniently.

`extract_facts(text, llm)` works with any `LLMClient` of llm/client.py: the configured OpenAI-compatible
endpoint (LLM_API_KEY, LLM_BASE_URL, LLM_MODEL), with the timeout and bounded retries summaries
have too, or MCP sampling.
Models wrap JSON in ```json fences, add a sentence around it, return an object holding the list,
or get an item wrong; all of that is read, and each item that is not a triplet is skipped and
counted. An answer with no JSON list in it at all is an error: nothing is stored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mcp_memory.errors import ExtractionFailed, LLMError, ValidationFailed
from mcp_memory.llm.client import LLMClient
from mcp_memory.services.triples import Triple, check_triple
from mcp_memory.store.records import fact_key

MAX_EXTRACTED_FACTS = 50
REPLY_MAX_TOKENS = 2048  # fifty short facts as JSON objects, with room for a fence or a sentence around them
NOT_CONFIGURED = (
    "LLM not configured — fact extraction unavailable; set LLM_API_KEY (and LLM_BASE_URL, LLM_MODEL for "
    "Ollama, vLLM, LM Studio), or pass subject, predicate and object yourself"
)
LIST_KEYS = ("facts", "triplets", "triples")

SYSTEM = "You extract facts from text and answer with JSON only."
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


async def extract_facts(text: str, llm: LLMClient, limit: int = MAX_EXTRACTED_FACTS) -> Extraction:
    """Ask the model for the facts in `text`; raises ExtractionFailed when it fails or answers no JSON list."""
    prompt = PROMPT.format(text=text, limit=limit)
    try:
        answer = await llm.complete(SYSTEM, prompt, max_tokens=REPLY_MAX_TOKENS)
    except LLMError as exc:  # its message names the endpoint, what failed and what to check
        raise ExtractionFailed(
            f"{exc}; nothing was stored; try again, or pass subject, predicate and object yourself"
        ) from exc
    return parse_triplets(answer, limit)


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
        except (json.JSONDecodeError, RecursionError):  # too deep is not a list of facts either
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
