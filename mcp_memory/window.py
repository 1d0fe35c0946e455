"""The short-term window: a session's newest episodes within a count and a token budget.

MARSYS's trimming: walk back from the newest episode; the newest is always kept, even alone
over budget; a tool call and its results (paired by the call's id) are kept or dropped together;
nothing is deleted, the full history stays stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mcp_memory.models import Episode


def units(episodes: Sequence[Episode]) -> list[list[Episode]]:
    """Episodes grouped so that each tool result stays with the call it answers (oldest first).

    A result that names its call (`tool_call_id`) joins the message whose `tool_calls` hold that id; a result
    whose call is older than these episodes is left out, never shown without it. A result without an id
    (older clients) joins the unit before it, as MARSYS pairs them by position.
    """
    grouped: list[list[Episode]] = []
    caller: dict[str, list[Episode]] = {}
    for episode in episodes:
        if episode.role == "tool" and episode.tool_call_id is not None:
            unit = caller.get(episode.tool_call_id)
            if unit is not None:
                unit.append(episode)
            continue
        if episode.role == "tool" and grouped:
            grouped[-1].append(episode)
            continue
        grouped.append([episode])
        caller.update((call.id, grouped[-1]) for call in episode.tool_calls or ())
    return grouped


def trim(
    episodes: Sequence[Episode], *, max_episodes: int, max_tokens: int, count: Callable[[str], int]
) -> list[Episode]:
    """The newest whole units that fit both budgets, oldest first; the newest unit always."""
    kept: list[list[Episode]] = []
    used_tokens = used_episodes = 0
    for unit in reversed(units(episodes)):
        tokens = sum(count(e.content) for e in unit)
        fits = used_tokens + tokens <= max_tokens and used_episodes + len(unit) <= max_episodes
        if kept and not fits:
            break
        kept.append(unit)
        used_tokens += tokens
        used_episodes += len(unit)
    return [episode for unit in reversed(kept) for episode in unit]
