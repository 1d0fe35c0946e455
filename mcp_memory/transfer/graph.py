"""Importing the knowledge graph of the official server-memory (@modelcontextprotocol/server-memory).

Its file is JSON Lines too: `{"type": "entity", "name": ..., "entityType": ..., "observations": [...]}`
and `{"type": "relation", "from": ..., "to": ..., "relationType": ...}`, one per line, no header. Like its
own loader, lines of other types are skipped and other keys ignored (a fork may add some); blank lines too.

Each observation becomes a memory ("<name>: <observation>", type `observation`, metadata naming the
entity and its type) said by the agent `server-memory`; each entity becomes the fact (name, "is a",
entityType) and each relation the fact (from, relationType, to). They go, in file order, into one
session of the target group, as one block of the export format (transfer/format.py), so the same writer imports
them. The graph has no times: they are stored at the time of the import. Each memory's dedup key is made
from what it says, so importing the file again (or a later version of it) adds only what is new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mcp_memory.episodes import DEFAULT_IMPORTANCE
from mcp_memory.errors import ValidationFailed
from mcp_memory.models import GroupInfo
from mcp_memory.services.triples import FACT_ROLE, fact_producer
from mcp_memory.store.records import FACT_MEMORY_TYPE, fact_key
from mcp_memory.transfer.check import CHECK_PROGRESS_LINES, Block
from mcp_memory.transfer.format import FactLine, MemoryLine, parse_object, read_lines, validate_line

GRAPH_AGENT = "server-memory"  # who said the observations: the agent that kept the graph
GRAPH_SESSION = "server-memory"
DEFAULT_GRAPH_GROUP = "memory"
OBSERVATION_TYPE = "observation"
IS_A = "is a"
GRAPH_TYPES = ("entity", "relation")


def _part(value: str) -> str:
    text = " ".join(value.split())
    if not text:
        raise ValueError("is empty or only whitespace")
    return text


Part = Annotated[str, Field(max_length=500), AfterValidator(_part)]
READ_AS_SERVER_MEMORY = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False, populate_by_name=True)


class EntityLine(BaseModel):
    model_config = READ_AS_SERVER_MEMORY
    type: Literal["entity"]
    name: Part
    entityType: Part  # noqa: N815 - the file's spelling
    observations: list[str]


class RelationLine(BaseModel):
    model_config = READ_AS_SERVER_MEMORY
    type: Literal["relation"]
    source: Part = Field(alias="from")
    to: Part
    relationType: Part  # noqa: N815


@dataclass
class Graph:
    """A server-memory file, checked: entities (by name: types and observations, in file order) and
    relations, each once."""

    entities: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    relations: dict[tuple[str, str, str], tuple[str, str, str]] = field(default_factory=dict)
    lines: int = 0
    skipped: int = 0

    @property
    def memories(self) -> int:
        types = sum(len(t) for t, _ in self.entities.values())
        return types + sum(len(o) for _, o in self.entities.values()) + len(self.relations)


def is_graph(value: dict[str, Any]) -> bool:
    """Whether a file's first object is a server-memory line (of any type: a fork may add its own)."""
    return isinstance(value.get("type"), str) and "kind" not in value


def read_graph(path: Path, max_content_chars: int, report: Callable[[int], None] | None = None) -> Graph:
    """Read and check every line; the first problem raises, naming its line."""
    graph, number = Graph(), 0
    for number, text in read_lines(path):
        value = parse_object(number, text)
        if value.get("type") not in GRAPH_TYPES:
            graph.skipped += 1
        elif value["type"] == "entity":
            _entity(graph, number, validate_line(number, EntityLine, value, "entity"), max_content_chars)
        else:
            relation = validate_line(number, RelationLine, value, "relation")
            triple = (relation.source, relation.relationType, relation.to)
            graph.relations.setdefault(tuple(fact_key(part) for part in triple), triple)  # type: ignore[arg-type]
        if report is not None and number % CHECK_PROGRESS_LINES == 0:
            report(number)
    graph.lines = number
    return graph


def _entity(graph: Graph, number: int, entity: EntityLine, max_content_chars: int) -> None:
    types, observations = graph.entities.setdefault(entity.name, ([], []))
    if entity.entityType not in types:
        types.append(entity.entityType)
    for index, observation in enumerate(entity.observations):
        text = observation.strip()
        if not text or text in observations:  # server-memory keeps each observation once too
            continue
        if len(_observation(entity.name, text)) > max_content_chars:
            raise ValidationFailed(
                f"line {number}: entity.observations.{index} is longer than a memory may be "
                f"({max_content_chars} characters with the entity's name)"
            )
        observations.append(text)


def _observation(name: str, text: str) -> str:
    return f"{name}: {text}"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass
class _Builder:
    """The graph as one block of the export format, ids and sequences numbered in file order."""

    group: GroupInfo
    now: str
    block: Block
    entity_types: dict[str, str] = field(default_factory=dict)

    def memory(self, content: str, key: str, **columns: Any) -> int:
        number = len(self.block.memories) + 1
        defaults = {
            "role": "assistant",
            "producer": GRAPH_AGENT,
            "memory_type": OBSERVATION_TYPE,
            "metadata": {},
        }
        self.block.memories.append(
            MemoryLine(
                kind="memory", id=number, group_id=self.block.group_id, session_id=self.block.session_id,
                sequence=number, produced_for=None, content=content, message=None,
                importance=DEFAULT_IMPORTANCE, effective_importance=DEFAULT_IMPORTANCE, timestamp=self.now,
                created_at=self.now, updated_at=None, retrieval_count=0, last_accessed_at=None,
                dedup_key=f"{GRAPH_AGENT}\x1f{key}", step=None, vector=True, **{**defaults, **columns},
            )
        )  # fmt: skip
        return number

    def fact(self, subject: str, predicate: str, obj: str) -> None:
        number = len(self.block.facts) + 1
        memory_id = self.memory(
            f"{subject} {predicate} {obj}",
            _digest("fact", fact_key(subject), fact_key(predicate), fact_key(obj)),
            role=FACT_ROLE, producer=fact_producer(subject, self.group), memory_type=FACT_MEMORY_TYPE,
            metadata={"fact": {"id": number, "current": True}},
        )  # fmt: skip
        self.block.facts.append(
            FactLine(
                kind="fact", id=number, group_id=self.block.group_id, session_id=self.block.session_id,
                subject=subject, predicate=predicate, object=obj, source=GRAPH_AGENT, confidence=None,
                valid_from=self.now, valid_to=None, created_at=self.now, memory_id=memory_id,
            )
        )  # fmt: skip


def graph_block(graph: Graph, group: GroupInfo, now: str) -> Block:
    """The graph's memories and facts, to write into the group's server-memory session (which exists)."""
    builder = _Builder(group, now, Block(group.group_id, GRAPH_SESSION, None))
    facts: set[tuple[str, str, str]] = set()

    def fact(subject: str, predicate: str, obj: str) -> None:
        keys = (fact_key(subject), fact_key(predicate), fact_key(obj))
        if keys not in facts:  # "Ana" and "ana" are one subject, as add_fact has it
            facts.add(keys)
            builder.fact(subject, predicate, obj)

    for name, (types, observations) in graph.entities.items():
        for entity_type in types:
            fact(name, IS_A, entity_type)
        metadata = {"entity": name, "entity_type": types[0]}
        for text in observations:
            builder.memory(_observation(name, text), _digest(name, text), metadata=metadata)
    for source, relation, target in graph.relations.values():
        fact(source, relation, target)
    return builder.block
