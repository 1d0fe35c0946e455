"""Typed records the Store takes and returns: what a backend keeps, in the shape the services use.

Pydantic models the tools return (models.py) serve as records where they fit (`TaskInfo`, `Episode`); the
records here are the ones no tool returns as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class RollingSummary:
    """A session's rolling summary: the text, the last sequence it covers, and the turns left out of it."""

    text: str
    covered_through_sequence: int
    updated_at: str
    omitted_sequences: list[int] = field(default_factory=list)

    @property
    def display(self) -> str:
        """The text callers see: the summary, and a note when turns were left out."""
        if not self.omitted_sequences:
            return self.text
        count = len(self.omitted_sequences)
        turns = (
            "turn was too long to summarise and is"
            if count == 1
            else "turns were too long to summarise and are"
        )
        note = f"({count} earlier {turns} kept in long-term memory)"
        return f"{self.text}\n\n{note}" if self.text else note


@dataclass(frozen=True)
class SessionRecord:
    """A stored session: its frozen configuration (the effective one, and the overrides it was created with)."""

    group_id: str
    session_id: str
    configuration: dict[str, Any]
    overrides: dict[str, Any]
    created_at: datetime
    episode_count: int = 0
    rolling_covered_through: int | None = None
