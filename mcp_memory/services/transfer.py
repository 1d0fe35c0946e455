"""Save and load: a database (or some of its groups) to a file, and a file back.

Export reads everything in one read transaction on a worker thread and writes each line as its row
is read (transfer/export.py); the file appears whole at the end, or not at all.

Import first checks the whole file (transfer/check.py, or transfer/graph.py for server-memory's), so a
bad line anywhere is an error naming it, with nothing written. Then it writes one session at a time, in
transactions of at most 1,000 memories (transfer/write.py, store/sqlite/transfer.py): other processes on the
file wait for one chunk, never for the whole import, and an import cut short is finished by running it
again (it is idempotent). Last, the new memories get their vectors: they are written pending, then embedded
in batches of EMBED_BATCH, as the maintenance backfill does (the file carries no vectors: they belong
to the exporting server's embedder). Embedding inside the write transactions would hold the write lock
for as long as the model runs and make an embedder failure fail the import; in batches afterwards an
import of 10,000 memories costs 40 calls of the embedder, and whatever is left when a time budget runs
out (or the embedder fails) is indexed by the server's background upkeep, recall finding those
memories by keyword meanwhile.

Progress is one count across the phases (lines checked, memories written, vectors indexed), sent to an
async callback from the worker thread doing the work.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio.from_thread
from anyio.to_thread import run_sync

from mcp_memory.errors import GroupNotFound, ValidationFailed
from mcp_memory.recall.engine import MemoryEngine
from mcp_memory.services.groups import Groups
from mcp_memory.sessions import Sessions
from mcp_memory.store.protocol import Store
from mcp_memory.times import iso
from mcp_memory.transfer.check import Inventory, blocks, check
from mcp_memory.transfer.export import ExportResult, header, output_file, write_export
from mcp_memory.transfer.format import FORMAT, GroupLine, check_source, first_object, read_header
from mcp_memory.transfer.graph import (
    DEFAULT_GRAPH_GROUP,
    GRAPH_AGENT,
    GRAPH_SESSION,
    Graph,
    graph_block,
    is_graph,
    read_graph,
)
from mcp_memory.transfer.write import ImportResult, Writer, tally

log = logging.getLogger(__name__)

EMBED_BATCH = 256  # memories embedded per call of the embedder after an import


@dataclass(frozen=True)
class Progress:
    step: int  # units of work done, increasing across the phases
    steps: int | None  # all of them, once known
    message: str


ProgressCallback = Callable[[Progress], Coroutine[Any, Any, None]]
ExportTarget = Path | TextIO  # a file path, or a stream (the CLI's stdout)
ImportSource = Path


class _Meter:
    """One increasing count across the phases, reported from the worker thread that does the work."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self._progress = progress
        self.step = 0
        self._sent = False
        self.steps: int | None = None
        self.base = 0  # lines checked, once the check is done
        self.memories = 0

    def send(self, step: int, message: str) -> None:
        """Report `step`, unless it is no further than the last report (MCP progress must increase)."""
        if self._progress is None or (step <= self.step and self._sent):
            return
        self.step, self._sent = step, True
        anyio.from_thread.run(self._progress, Progress(step, self.steps, message))

    def checked(self, lines: int) -> None:
        self.send(lines, f"checked {lines} lines")

    def planned(self, lines: int, memories: int) -> None:
        self.base, self.memories, self.steps = lines, memories, lines + 2 * memories

    def wrote(self, done: int) -> None:
        self.send(self.base + done, f"wrote {done} of {self.memories} memories")

    def indexed(self, done: int, pending: int) -> None:
        self.steps = self.base + self.memories + pending
        self.send(self.base + self.memories + done, f"indexed {done} of {pending} vectors")


class Transfers:
    """Export and import for one database."""

    def __init__(
        self,
        store: Store,
        engine: MemoryEngine,
        groups: Groups,
        sessions: Sessions,
        *,
        embedder_name: str,
        max_content_chars: int,
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._engine = engine
        self._groups = groups
        self._sessions = sessions
        self._embedder_name = embedder_name
        self._max_chars = max_content_chars
        self._now = now

    # -- export -------------------------------------------------------------------------

    async def export_memories(
        self,
        target: Path | TextIO,
        group_ids: Sequence[str] | None = None,
        *,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ExportResult:
        """Write these groups (default: all) to `target`; a file path appears whole or not at all."""
        for group_id in group_ids or ():
            await self._groups.get_group(group_id)
        ids = sorted(set(group_ids)) if group_ids else await run_sync(self._store.export_group_ids)
        database_id = await run_sync(self._store.database_id)
        head = partial(
            header, exported_at=iso(self._now()), database_id=database_id,
            embedder=self._embedder_name, group_ids=ids,
        )  # fmt: skip
        meter = _Meter(progress)
        counts = await run_sync(self._export, target, ids, head, overwrite, meter)
        path = str(target) if isinstance(target, Path) else None
        return ExportResult(path=path, database_id=database_id, **counts)

    def _export(
        self, target: Path | TextIO, ids: list[str], head: Any, overwrite: bool, meter: _Meter
    ) -> dict[str, int]:
        def report(done: int, total: int) -> None:
            meter.steps = total
            meter.send(done, f"exported {done} of {total} memories")

        with contextlib.closing(self._store.export_records(ids)) as rows:  # ends its read transaction here
            if not isinstance(target, Path):
                return write_export(rows, target, head, report)
            with output_file(target, overwrite=overwrite) as out:
                return write_export(rows, out, head, report)

    # -- import -------------------------------------------------------------------------

    async def import_memories(
        self,
        path: Path,
        group_id: str | None = None,
        *,
        progress: ProgressCallback | None = None,
        index_budget_s: float | None = None,
    ) -> ImportResult:
        """Import an export (only `group_id`'s records, if given) or a server-memory file (into `group_id`,
        default "memory"); then embed the new memories for up to `index_budget_s` (None: all of them)."""
        meter = _Meter(progress)
        try:
            write = await self._checked(check_source(path), group_id, meter)
        except ValidationFailed as exc:
            raise ValidationFailed(f"{exc}; nothing was imported") from None
        result = await write()
        indexed, pending = await run_sync(self._index, meter, index_budget_s)
        return result.model_copy(update={"vectors_indexed": indexed, "vectors_pending": pending})

    async def _checked(
        self, path: Path, group_id: str | None, meter: _Meter
    ) -> Callable[[], Coroutine[Any, Any, ImportResult]]:
        """Check the whole file (and what it needs of this database); returns what writes it."""
        number, first = await run_sync(first_object, path)
        limit = self._max_chars
        if is_graph(first):
            graph = await run_sync(partial(read_graph, path, limit, meter.checked))
            return partial(self._write_graph, path, graph, group_id or DEFAULT_GRAPH_GROUP, meter)
        if first.get("kind") != FORMAT:
            raise ValidationFailed(
                f"line {number} is neither the header of an mcp-memory export nor a server-memory entity or "
                "relation; pass a file written by export_memory or by server-memory"
            )
        head = read_header(number, first)
        inventory: Inventory = await run_sync(partial(check, path, head, limit, meter.checked))
        selected = _selected(inventory, group_id)
        await self._check_participants(inventory.groups[g] for g in selected)
        return partial(self._write_export, path, inventory, selected, meter)

    async def _write_export(
        self, path: Path, inventory: Inventory, selected: list[str], meter: _Meter
    ) -> ImportResult:
        written = sum(inventory.records_by_group.get(g, 0) for g in selected)
        skipped = max(inventory.lines - 1 - written, 0)  # blank lines and other groups' lines
        result = ImportResult(path=str(path), format="mcp-memory", lines_skipped=skipped)
        writer = Writer(self._store, meter.wrote, result, inventory.header.database_id)
        meter.planned(inventory.lines, sum(inventory.memories_by_group.get(g, 0) for g in selected))
        await run_sync(writer.write_all, blocks(path), set(selected))
        return result

    async def _check_participants(self, groups: Iterable[GroupLine]) -> None:
        """A participant of a group that exists here must keep its role: a user stays a user."""
        for line in groups:
            group = await run_sync(self._store.get_group, line.group_id)
            if group is None:
                continue
            users, agents = set(group.user_ids), set(group.agent_ids)
            clash = sorted((set(line.user_ids) & agents) | (set(line.agent_ids) & users))
            if clash:
                raise ValidationFailed(
                    f"group {line.group_id!r} exists here with {clash} in the other role (user or agent) than "
                    "in the file"
                )

    async def _write_graph(self, path: Path, graph: Graph, group_id: str, meter: _Meter) -> ImportResult:
        """Into the group's server-memory session, made as open_session makes one (held open meanwhile)."""
        result = ImportResult(path=str(path), format="server-memory", lines_skipped=graph.skipped)
        if not graph.entities and not graph.relations:
            return result
        group = await self._graph_group(group_id, result)
        owner = object()
        _, created = await self._sessions.open_session(group_id, GRAPH_SESSION, owner=owner)
        try:
            tally(result.sessions, created)
            block = graph_block(graph, group, iso(self._now()))
            meter.planned(graph.lines, len(block.memories))
            await run_sync(Writer(self._store, meter.wrote, result, GRAPH_AGENT).block, block)
        finally:
            await self._sessions.close_session(group_id, GRAPH_SESSION, owner=owner)
        return result

    async def _graph_group(self, group_id: str, result: ImportResult) -> Any:
        """The target group, made with the agent server-memory if missing, or given that agent."""
        try:
            group = await self._groups.get_group(group_id)
        except GroupNotFound:
            result.groups.added = 1
            return await self._groups.create_group(
                group_id, agent_ids=[GRAPH_AGENT], description="Imported from server-memory's knowledge graph"
            )
        result.groups.existing = 1
        if GRAPH_AGENT not in group.user_ids + group.agent_ids:
            group = await self._groups.add_participants(group_id, agent_ids=[GRAPH_AGENT])
            result.participants_added[group_id] = [GRAPH_AGENT]
        return group

    def _index(self, meter: _Meter, budget_s: float | None) -> tuple[int, int]:
        """Embed pending memories in batches until none is left, the embedder fails or the budget runs out."""
        engine, pending = self._engine, self._store.pending_count()
        deadline = None if budget_s is None else time.monotonic() + budget_s
        done = 0
        while pending and (deadline is None or time.monotonic() < deadline):
            try:
                count = engine.backfill(EMBED_BATCH)
            except Exception as exc:  # noqa: BLE001 - the memories are stored; the upkeep retries
                log.warning("imported memories left pending: embedding failed: %s", exc)
                break
            if count == 0:
                break
            done += count
            meter.indexed(done, pending)
        return done, self._store.pending_count()


def _selected(inventory: Inventory, group_id: str | None) -> list[str]:
    if group_id is None:
        return list(inventory.groups)
    if group_id not in inventory.groups:
        raise ValidationFailed(
            f"the file has no group {group_id!r}; it holds {sorted(inventory.groups)}; pass one of them, "
            "or leave group_id out to import them all"
        )
    return [group_id]
