"""Session summaries (Memoria's episodic memory): `full` topic/action/outcome, or `lightweight` points.

Where a summary comes from, in order: the summary the caller wrote (`summary`, so a client with
no LLM still gets summaries, and nothing is paid twice), the configured LLM endpoint, MCP
sampling through the client, else the "LLM not configured" error. Every source goes through the
same validation, so a malformed reply is a clear error and never a stored half-summary.

Tolerances (documented for callers and models):
- JSON may come bare, inside a ```json fence, or with prose around one {...} object.
- full: `topic`, `action` and `outcome` must be non-empty text; a list of strings is joined
  with "; "; other keys are ignored. topic at most 200 characters, the others 2,000.
- lightweight: {"points": [...]} or a bare list; 3 to 5 points (fewer or more is an error, never
  cut or padded); leading bullets ("-", "*", "•", "1.") are removed; a point may have up to 15
  words (the prompt asks for 10) and 150 characters.

Lightweight summaries are limited per session (`MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION`, default 3,
automatic ones included). Like Memoria, the slot is counted before generation, in the same write
transaction that checks it, so concurrent requests (from any process) never pass the limit;
unlike Memoria, a generation that fails gives its slot back, so an LLM outage does not use up a
session's summaries. Full summaries are not limited. Earlier summaries in the session are not
summarised again.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp_memory.errors import (
    ConfigurationError,
    ValidationFailed,
)
from mcp_memory.models import Episode
from mcp_memory.tokens import token_counter

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_MAX_LIGHTWEIGHT_PER_SESSION = 3
DEFAULT_AUTO_TRIGGER_THRESHOLD = 20
FULL_FIELDS = ("topic", "action", "outcome")
MAX_TOPIC_CHARS = 200
MAX_FIELD_CHARS = 2_000
MIN_POINTS, MAX_POINTS = 3, 5
MAX_POINT_WORDS = 15
MAX_POINT_CHARS = 150
MAX_FOCUS_TOPICS = 10
MAX_FOCUS_TOPIC_CHARS = 100
REPLY_MAX_TOKENS = {"full": 800, "lightweight": 300}
CUT_MARK = " [...]"
MAX_JSON_DEPTH = 32  # a summary is a few flat fields: deeper JSON text is refused


@dataclass(frozen=True)
class ModeLimits:
    """How much of a session one summary reads."""

    max_episodes: int
    max_tokens: int


LIMITS: dict[str, ModeLimits] = {
    "full": ModeLimits(max_episodes=200, max_tokens=16_000),
    "lightweight": ModeLimits(max_episodes=50, max_tokens=4_000),
}


def count_tokens(text: str) -> int:
    """Tokens of `text` (tiktoken o200k_base, offline; characters/4 only if its file cannot be read)."""
    return token_counter().count(text)


@dataclass(frozen=True)
class SummarySettings:
    """The per-session lightweight limit and the automatic trigger (0 turns either off)."""

    max_lightweight_per_session: int = DEFAULT_MAX_LIGHTWEIGHT_PER_SESSION
    auto_trigger_threshold: int = DEFAULT_AUTO_TRIGGER_THRESHOLD

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SummarySettings:
        """From MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION and MEMORIA_AUTO_TRIGGER_THRESHOLD."""
        env = os.environ if env is None else env
        return cls(
            _env_count(env, "MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION", DEFAULT_MAX_LIGHTWEIGHT_PER_SESSION),
            _env_count(env, "MEMORIA_AUTO_TRIGGER_THRESHOLD", DEFAULT_AUTO_TRIGGER_THRESHOLD),
        )


def _env_count(env: Mapping[str, str], name: str, default: int) -> int:
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise ConfigurationError(f"{name} must be a whole number of 0 or more, got {text!r}")
    return int(text)


# -- choosing what to read ------------------------------------------------------------------------


def limits_for(mode: str) -> ModeLimits:
    """The input limits of a mode; an unknown mode is a ValidationFailed."""
    if mode not in LIMITS:
        raise ValidationFailed(f"mode {mode!r} is not valid; use 'full' or 'lightweight'")
    return LIMITS[mode]


def render_line(episode: Episode) -> str:
    """One episode as the model reads it."""
    return f"[{episode.timestamp:%Y-%m-%d %H:%M}] {episode.producer} ({episode.role}): {episode.content}"


def select_episodes(
    episodes: Sequence[Episode], mode: str, *, count: Callable[[str], int] = count_tokens
) -> tuple[list[Episode], bool]:
    """The episodes a summary reads, oldest first, and whether any were left out.

    Over the mode's episode cap, keep the first 10% and the last 90% of the cap; then keep
    the newest of those whose rendered lines fit the token budget together. The newest one
    is always kept, cut to the budget if it is alone over it.
    """
    limits = limits_for(mode)
    chosen = list(episodes)
    if len(chosen) > limits.max_episodes:
        head = limits.max_episodes // 10
        chosen = chosen[:head] + chosen[len(chosen) - (limits.max_episodes - head) :]
    kept: list[Episode] = []
    used = 0
    for episode in reversed(chosen):
        tokens = count(render_line(episode))
        if used + tokens > limits.max_tokens:
            if not kept:
                cut = _cut(episode, limits.max_tokens, count)
                return [cut], True
            break
        kept.append(episode)
        used += tokens
    return kept[::-1], len(kept) < len(episodes)


def _cut(episode: Episode, budget: int, count: Callable[[str], int]) -> Episode:
    """The episode with its content shortened until its line fits `budget` tokens."""
    content = episode.content
    chars = len(content)
    while chars > 0:
        trial = episode.model_copy(update={"content": content[:chars] + CUT_MARK})
        tokens = count(render_line(trial))
        if tokens <= budget:
            return trial
        chars = min(int(chars * 0.9), chars * budget // tokens)
    return episode.model_copy(update={"content": CUT_MARK.strip()})


def should_auto_summarize(turn_count: int, threshold: int, done: int) -> bool:
    """Whether a session of `turn_count` turns is due an automatic summary.

    One is due at every multiple of `threshold` turns (20, 40, ...); `done` is how many
    multiples were already handled. 0 (or less) turns the trigger off. A batch that jumps
    past several multiples gives one summary, not one per multiple.
    """
    return threshold > 0 and turn_count // threshold > done


# -- prompts --------------------------------------------------------------------------------------

FULL_SYSTEM = (
    "You summarise one conversation session for a long-term memory. Reply with one JSON object and "
    'nothing else, with three text fields: "topic" (what the session was about, a short phrase), '
    '"action" (what was done or discussed, one to three sentences) and "outcome" (what came of it: '
    "results, decisions, open questions; one to three sentences). Use only what the conversation says."
)
LIGHTWEIGHT_SYSTEM = (
    "You note the highlights of one conversation session for a long-term memory. Reply with one JSON "
    'object and nothing else: {"points": [...]} with 3 to 5 points, most important first, each at most '
    "10 words. Use only what the conversation says."
)


def build_prompt(
    mode: str, session: Sequence[Episode], selected: Sequence[Episode], focus_topics: Sequence[str] = ()
) -> tuple[str, str]:
    """The system prompt and the user prompt for summarising `selected` out of the whole `session`."""
    system = FULL_SYSTEM if mode == "full" else LIGHTWEIGHT_SYSTEM
    parts = []
    if focus_topics:
        parts.append("Pay most attention to these topics: " + "; ".join(focus_topics) + ".")
    parts.append(f"The conversation ({len(selected)} of its {len(session)} messages, oldest first):")
    parts.append("\n".join(_transcript(session, selected)))
    return system, "\n\n".join(parts)


def _transcript(session: Sequence[Episode], selected: Sequence[Episode]) -> list[str]:
    """Rendered lines, with a marker wherever messages were left out."""
    position = {episode.id: index for index, episode in enumerate(session)}
    lines: list[str] = []
    previous = -1
    for episode in selected:
        index = position.get(episode.id, previous + 1)
        if index > previous + 1:
            lines.append(f"[... {index - previous - 1} messages left out ...]")
        lines.append(render_line(episode))
        previous = index
    return lines


# -- parsing and validating -----------------------------------------------------------------------

_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n?(.*?)```", re.DOTALL)
_BULLET = re.compile(r"^(?:[-*•·–]|\d+[.)])\s+")


def parse_json_text(text: str) -> Any:
    """JSON from text that is JSON, holds a ```json fence, or has prose around one {...}; else ValueError."""
    candidates = [text.strip()]
    fence = _FENCE.search(text)
    if fence:
        candidates.append(fence.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        if _nesting(candidate) > MAX_JSON_DEPTH:  # checked first: how deep json.loads gets before a
            raise ValueError(
                "it nests JSON too deeply; a summary is a few flat fields"
            )  # RecursionError varies
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError("it is not JSON")


def _nesting(text: str) -> int:
    """How deep brackets and braces nest in JSON text (those inside strings not counted)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def parse_summary(mode: str, value: Any) -> dict[str, Any]:
    """The validated fields of a summary: topic/action/outcome, or points; a ValueError says what is wrong."""
    if isinstance(value, str):
        value = parse_json_text(value)
    return _full_fields(value) if mode == "full" else {"points": _points(value)}


def _full_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("it must be a JSON object with topic, action and outcome")
    fields = {name: _text(value.get(name)) for name in FULL_FIELDS}
    missing = [name for name, text in fields.items() if not text]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing or empty")
    if len(fields["topic"]) > MAX_TOPIC_CHARS:
        raise ValueError(f"topic has {len(fields['topic'])} characters; keep it to {MAX_TOPIC_CHARS}")
    for name in ("action", "outcome"):
        if len(fields[name]) > MAX_FIELD_CHARS:
            raise ValueError(f"{name} has {len(fields[name])} characters; keep it to {MAX_FIELD_CHARS}")
    return fields


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "; ".join(item.strip() for item in value if item.strip())
    return ""


def _points(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = value.get("points")
    if not isinstance(value, list):
        raise ValueError('it must be {"points": [...]} or a list of 3 to 5 short points')
    if not value:
        raise ValueError("the list of points is empty")
    if not MIN_POINTS <= len(value) <= MAX_POINTS:
        raise ValueError(f"it has {len(value)} points; give {MIN_POINTS} to {MAX_POINTS}")
    points = []
    for number, item in enumerate(value, start=1):
        point = _BULLET.sub("", item.strip()) if isinstance(item, str) else ""
        if not point:
            raise ValueError(f"point {number} is empty or not text")
        words = len(point.split())
        if words > MAX_POINT_WORDS or len(point) > MAX_POINT_CHARS:
            raise ValueError(
                f"point {number} has {words} words; keep each to about 10 words (at most {MAX_POINT_WORDS})"
            )
        points.append(point)
    return points


def render_content(mode: str, fields: Mapping[str, Any]) -> str:
    """The stored text of a summary."""
    if mode == "full":
        return f"Session Summary: {fields['topic']}\n\nActions: {fields['action']}\n\nOutcome: {fields['outcome']}"
    return "Session Highlights:\n" + "\n".join(f"• {point}" for point in fields["points"])


def shape_hint(mode: str) -> str:
    if mode == "full":
        return 'pass {"topic": "...", "action": "...", "outcome": "..."} (or that object as JSON text)'
    return (
        f'pass a list of {MIN_POINTS} to {MAX_POINTS} points of about 10 words each, or {{"points": [...]}}'
    )


def check_focus_topics(topics: Sequence[str] | None) -> list[str]:
    cleaned = [t.strip() for t in topics or () if isinstance(t, str) and t.strip()]
    if len(cleaned) > MAX_FOCUS_TOPICS:
        raise ValidationFailed(f"focus_topics has {len(cleaned)} topics; give at most {MAX_FOCUS_TOPICS}")
    if any(len(t) > MAX_FOCUS_TOPIC_CHARS for t in cleaned):
        raise ValidationFailed(f"each focus topic must be at most {MAX_FOCUS_TOPIC_CHARS} characters")
    return cleaned
