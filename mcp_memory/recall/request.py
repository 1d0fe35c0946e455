"""A read of memory as one request, built once at the edge (the recall tool, the CLI, Python) and passed down.

`RecallRequest` says what to read: a search when it has a query, else a listing in order; where (the group,
maybe one session); how many; which memories may come back (`filters`); and how to search or page
(`options`). `RecallStrategy` is how a search ranks; only benchmarks and tests change it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from mcp_memory.models import MAX_RECALL_LIMIT, MemoryFilter, ReadOptions

# Tuned on LoCoMo conversations 0-2 only (bench/locomo.py): MiniLM alone is far weaker than BM25 over turns
# with their neighbours, so it gets a fifth of the weight. A candidate stored in the period the query names
# ("in May 2023", recall/when.py) gains what first place in a list of TIME_WEIGHT is worth.
KEYWORD_WEIGHT = 1.0
VECTOR_WEIGHT = 0.2
TIME_WEIGHT = 1.0


@dataclass(frozen=True)
class RecallStrategy:
    """How recall ranks: the weight of each retriever in the fusion, and of a named time (0 turns one off)."""

    keyword_weight: float = KEYWORD_WEIGHT
    vector_weight: float = VECTOR_WEIGHT
    time_weight: float = TIME_WEIGHT

    @classmethod
    def keyword_only(cls) -> RecallStrategy:
        return cls(keyword_weight=1.0, vector_weight=0.0, time_weight=0.0)

    @classmethod
    def vector_only(cls) -> RecallStrategy:
        return cls(keyword_weight=0.0, vector_weight=1.0, time_weight=0.0)


class RecallRequest(BaseModel):
    """One read: with a query, memories by relevance (and the session's latest turns); without, in order."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    group_id: str
    query: str | None = Field(None, description="None: a listing in order, not a search.")
    session_id: str | None = None
    limit: int = Field(10, description=f"1 to {MAX_RECALL_LIMIT}.")
    filters: MemoryFilter = Field(default_factory=MemoryFilter)
    options: ReadOptions = Field(default_factory=ReadOptions)
    strategy: RecallStrategy = Field(default_factory=RecallStrategy)
