"""The rolling session summary (MemMachine's short-term memory): turns that leave the window, condensed.

When episodes fall out of a session's short-term window (window.py), an LLM folds them into the
session's rolling summary: "the previous summary + these turns -> an updated summary". The
manager runs one pass per session at a time, in order, in the background after each add.

- The previous summary is never lost: the new text is built from it, and the row is written only
  when every LLM call of the pass succeeded (one short transaction). A failure (HTTP error,
  timeout, empty reply) leaves the row untouched; the next add retries.
- A prompt over the input budget is split: the batch is folded in halves, in order (recursively),
  each half starting from the summary the one before produced.
- A single turn that cannot fit alone is left out, recorded in `omitted_sequences`, and the
  summary says so; it stays in long-term memory like every other episode.
- Summaries and facts (memory types `summary` and `fact`) are not turns and are skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from mcp_memory.models import Episode

SYSTEM_PROMPT = (
    "You maintain the rolling summary of a conversation. You are given the summary so far (possibly "
    "empty) and the turns that came after it, oldest first. Reply with the updated summary only: plain "
    "text, no preamble, at most {max_tokens} tokens. Keep every fact, decision, name, number and open "
    "question from the summary so far that still matters, and add what the new turns say."
)


@dataclass
class RollOutcome:
    """What one pass did."""

    status: str  # "updated", "nothing to summarise", "failed", "off"
    summarised: int = 0  # turns folded into the summary
    omitted: list[int] = field(default_factory=list)  # sequences of turns too long to fit
    llm_calls: int = 0
    covered_through_sequence: int | None = None
    error: str | None = None


def left_window(
    episodes: Sequence[Episode], window: Sequence[Episode], covered_through: int, skip_types: Sequence[str]
) -> list[Episode]:
    """The turns (oldest first) that have left the window and are not yet in the summary."""
    if not window:
        return []
    first = window[0].sequence
    return [e for e in episodes if covered_through < e.sequence < first and e.memory_type not in skip_types]


def render_turns(turns: Sequence[Episode]) -> str:
    return "\n".join(f"[{e.sequence}] {e.producer} ({e.role}): {e.content}" for e in turns)


def build_prompt(previous: str, turns: Sequence[Episode]) -> str:
    return (
        f"Summary so far:\n{previous.strip() or '(none yet)'}\n\n"
        f"New turns, oldest first:\n{render_turns(turns)}\n\n"
        "Reply with the updated summary."
    )


Complete = Callable[[str, str, int], Awaitable[str]]


@dataclass
class Folder:
    """Folds turns into a summary, splitting what does not fit; raises on any failed LLM call."""

    complete: Complete
    count: Callable[[str], int]
    max_tokens: int
    input_tokens: int
    calls: int = 0
    omitted: list[int] = field(default_factory=list)

    @property
    def system(self) -> str:
        return SYSTEM_PROMPT.format(max_tokens=self.max_tokens)

    async def fold(self, previous: str, turns: Sequence[Episode]) -> str:
        if not turns:
            return previous
        prompt = build_prompt(previous, turns)
        if self.count(self.system) + self.count(prompt) > self.input_tokens:
            if len(turns) == 1:
                self.omitted.append(turns[0].sequence)
                return previous
            half = len(turns) // 2
            return await self.fold(await self.fold(previous, turns[:half]), turns[half:])
        self.calls += 1
        reply = (await self.complete(self.system, prompt, self.max_tokens)).strip()
        if not reply:
            raise ValueError("the model returned an empty summary")
        return reply
