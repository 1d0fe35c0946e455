"""Reading an export (transfer/format.py's format) in two passes, so a file of any size is checked whole before
anything is written, and never held in memory whole.

`check` reads every line: each record is valid on its own and refers only to what came before it (a
session to its group, a memory to its session, a fact to a memory of its session), nothing repeats, and
the header's counts match (a truncated copy does not). The first problem raises, naming its line. Then
`blocks` reads the file again and hands over one group, or one session's records, at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mcp_memory.errors import ValidationFailed
from mcp_memory.transfer.format import (
    Counts,
    FactLine,
    GroupLine,
    Header,
    MemoryLine,
    Record,
    RollingSummaryLine,
    SessionLine,
    SummaryCountLine,
    at_line,
    records,
)

CHECK_PROGRESS_LINES = 1000  # how often the check reports progress
SUMMARY_MAX_CHARS = 8_000  # manager_summaries.SUMMARY_MAX_CHARS: a summary may be longer than other memories


# -- the first pass: every line checked, and what the file holds -----------------------------------------


@dataclass
class Inventory:
    """What a checked file holds: its groups (by id, with their lines), and how many lines and records."""

    header: Header
    groups: dict[str, GroupLine] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    lines: int = 0
    records_by_group: dict[str, int] = field(default_factory=dict)
    memories_by_group: dict[str, int] = field(default_factory=dict)


@dataclass
class _Block:
    """The session being read, and what its records must not repeat."""

    group_id: str = ""
    session_id: str | None = None
    sequence: int = 0
    memory_ids: set[int] = field(default_factory=set)
    dedup_keys: set[str] = field(default_factory=set)
    facted: set[int] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)


class Checker:
    """Checks an export's records in file order: each refers to what came before it, nothing repeats."""

    def __init__(self, header: Header, max_content_chars: int) -> None:
        self.inventory = Inventory(header)
        self.max_content_chars = max_content_chars
        self._block = _Block()
        self._sessions: set[tuple[str, str]] = set()
        self._memory_ids: set[int] = set()
        self._fact_ids: set[int] = set()
        self._facts: set[tuple[str, ...]] = set()

    def check(self, number: int, record: Record) -> None:
        self.inventory.lines = number
        by_group = self.inventory.records_by_group
        by_group[record.group_id] = by_group.get(record.group_id, 0) + 1
        if isinstance(record, GroupLine):
            self._group(number, record)
        elif isinstance(record, SessionLine):
            self._session(number, record)
        elif isinstance(record, MemoryLine):
            self._memory(number, record)
        elif isinstance(record, FactLine):
            self._fact(number, record)
        else:
            self._session_extra(number, record)

    def _group(self, number: int, line: GroupLine) -> None:
        if line.group_id in self.inventory.groups:
            raise at_line(number, f"repeats group {line.group_id!r}; each group has one group line")
        self.inventory.groups[line.group_id] = line
        self.inventory.counts.groups += 1
        self._block = _Block(group_id=line.group_id)

    def _session(self, number: int, line: SessionLine) -> None:
        self._in_group(number, line.group_id, "session")
        key = (line.group_id, line.session_id)
        if key in self._sessions:
            raise at_line(number, f"repeats session {line.session_id!r} of group {line.group_id!r}")
        self._sessions.add(key)
        self.inventory.counts.sessions += 1
        self._block = _Block(group_id=line.group_id, session_id=line.session_id)

    def _memory(self, number: int, line: MemoryLine) -> None:
        block = self._in_session(number, line.group_id, line.session_id, "memory")
        if line.id in self._memory_ids:
            raise at_line(number, f"repeats memory id {line.id}; each memory has its own id")
        if line.sequence <= block.sequence:
            raise at_line(
                number,
                f"has sequence {line.sequence} after {block.sequence}; a session's memories come in order",
            )
        if line.dedup_key is not None and line.dedup_key in block.dedup_keys:
            raise at_line(number, "repeats the dedup_key of an earlier memory of its session")
        if line.producer not in self.inventory.groups[line.group_id].participants:
            raise at_line(
                number, f"memory.producer {line.producer!r} is not a participant of group {line.group_id!r}"
            )
        limit = max(self.max_content_chars, SUMMARY_MAX_CHARS)
        if len(line.content) > limit:
            raise at_line(number, f"memory.content has {len(line.content)} characters, more than {limit}")
        self._memory_ids.add(line.id)
        block.memory_ids.add(line.id)
        block.sequence = line.sequence
        if line.dedup_key is not None:
            block.dedup_keys.add(line.dedup_key)
        self.inventory.counts.memories += 1
        by_group = self.inventory.memories_by_group
        by_group[line.group_id] = by_group.get(line.group_id, 0) + 1

    def _fact(self, number: int, line: FactLine) -> None:
        block = self._in_session(number, line.group_id, None, "fact")
        if line.id in self._fact_ids:
            raise at_line(number, f"repeats fact id {line.id}; each fact has its own id")
        if line.memory_id not in block.memory_ids:
            raise at_line(
                number, f"fact.memory_id {line.memory_id} is not a memory of the session listed before it"
            )
        if line.memory_id in block.facted:
            raise at_line(number, f"fact.memory_id {line.memory_id} is another fact's memory already")
        identity = (line.group_id, *line.identity)
        if identity in self._facts:
            raise at_line(
                number, "repeats an earlier fact of its group (same subject, predicate, object and period)"
            )
        self._fact_ids.add(line.id)
        self._facts.add(identity)
        block.facted.add(line.memory_id)
        self.inventory.counts.facts += 1

    def _session_extra(self, number: int, line: RollingSummaryLine | SummaryCountLine) -> None:
        block = self._in_session(number, line.group_id, line.session_id, line.kind)
        if line.kind in block.kinds:
            raise at_line(number, f"repeats the {line.kind} of session {line.session_id!r}")
        block.kinds.add(line.kind)
        if isinstance(line, RollingSummaryLine):
            self.inventory.counts.rolling_summaries += 1
        else:
            self.inventory.counts.summary_counts += 1

    def _in_group(self, number: int, group_id: str, kind: str) -> None:
        if group_id != self._block.group_id:
            raise at_line(
                number, f"is a {kind} of group {group_id!r}, which must come after that group's line"
            )

    def _in_session(self, number: int, group_id: str, session_id: str | None, kind: str) -> _Block:
        self._in_group(number, group_id, kind)
        block = self._block
        if block.session_id is None or session_id not in (None, block.session_id):
            raise at_line(
                number, f"is a {kind} that must come after its session's line, with that session's records"
            )
        return block

    def finish(self) -> Inventory:
        """The inventory, once the file's end matches its header (a truncated copy does not)."""
        inventory = self.inventory
        expected = inventory.header.counts
        if expected is not None and expected != inventory.counts:
            raise ValidationFailed(
                f"the file holds {_counted(inventory.counts)} but its header says {_counted(expected)}; "
                "it is incomplete (a truncated copy?) or was edited: export it again"
            )
        if sorted(inventory.header.groups) != sorted(inventory.groups):
            raise ValidationFailed(
                f"the header lists groups {sorted(inventory.header.groups)} but the file holds "
                f"{sorted(inventory.groups)}; export it again"
            )
        return inventory


def _counted(counts: Counts) -> str:
    return ", ".join(f"{value} {name}" for name, value in counts.model_dump().items())


Report = Callable[[int], None]


def check(path: Path, header: Header, max_content_chars: int, report: Report | None = None) -> Inventory:
    """Read and check every line of an export; the first problem raises, naming its line."""
    checker = Checker(header, max_content_chars)
    for number, record in records(path):
        checker.check(number, record)
        if report is not None and number % CHECK_PROGRESS_LINES == 0:
            report(number)
    return checker.finish()


# -- the second pass: what to write, one group or session at a time --------------------------------------


@dataclass
class Block:
    """One session's records, written together (in transactions of a bounded size)."""

    group_id: str
    session_id: str
    session: SessionLine | None  # None: the session exists already (the importer made it)
    memories: list[MemoryLine] = field(default_factory=list)
    facts: list[FactLine] = field(default_factory=list)
    rolling_summary: RollingSummaryLine | None = None
    summary_count: SummaryCountLine | None = None


def blocks(path: Path) -> Iterator[GroupLine | Block]:
    """The checked file again, as group lines and session blocks in file order."""
    block: Block | None = None
    for _, record in records(path):
        if isinstance(record, GroupLine | SessionLine) and block is not None:
            yield block
            block = None
        if isinstance(record, GroupLine):
            yield record
        elif isinstance(record, SessionLine):
            block = Block(record.group_id, record.session_id, record)
        else:
            assert block is not None  # the check saw to it
            _add(block, record)
    if block is not None:
        yield block


def _add(block: Block, record: Record) -> None:
    if isinstance(record, MemoryLine):
        block.memories.append(record)
    elif isinstance(record, FactLine):
        block.facts.append(record)
    elif isinstance(record, RollingSummaryLine):
        block.rolling_summary = record
    elif isinstance(record, SummaryCountLine):
        block.summary_count = record
