"""One live session's memory: its frozen configuration, its references, and its operations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mcp_memory.config import SessionConfig
from mcp_memory.models import AddMemoryResult, Episode, MemoryInput, RecallResult

if TYPE_CHECKING:
    from mcp_memory.manager import MemoryManager


@dataclass(eq=False)
class MemorySession:
    """A live session: shared by everyone who opened it, counted by references per owner."""

    manager: MemoryManager
    group_id: str
    session_id: str
    configuration: SessionConfig
    created_at: datetime
    references: Counter[Hashable] = field(default_factory=Counter)
    idle_since: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.group_id, self.session_id

    @property
    def reference_count(self) -> int:
        return sum(self.references.values())

    async def add(self, memories: Sequence[MemoryInput | dict[str, Any]]) -> AddMemoryResult:
        """Store memories in this session (one transaction)."""
        return await self.manager.add_memories(self.group_id, self.session_id, memories)

    async def recall(self, query: str, **options: Any) -> RecallResult:
        """Recall from this session, with its recent episodes."""
        return await self.manager.recall(self.group_id, query, session_id=self.session_id, **options)

    async def recent(self) -> list[Episode]:
        """The session's short-term window: its newest episodes, oldest first."""
        return await self.manager.recent(self.group_id, self.session_id)

    async def close(self, owner: Hashable | None = None) -> bool:
        """Release one reference taken by `owner` (the manager's default owner if None)."""
        released, _ = await self.manager.close_session(self.group_id, self.session_id, owner=owner)
        return released

    async def flush(self) -> None:
        """Write out anything held in memory before the instance is dropped (nothing is buffered yet)."""
