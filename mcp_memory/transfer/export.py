"""Writing an export: the Store's export records as lines transfer/format.py reads, into a file that appears whole.

The file is written beside its final path under a temporary name and renamed over it at the end, so a
failed or interrupted export never leaves half a file where a whole one was expected (nor destroys the
previous one). It is created readable by its owner only: it holds every memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, Field

from mcp_memory.errors import ValidationFailed
from mcp_memory.transfer.format import FORMAT, VERSION, check_path


class ExportResult(BaseModel):
    """What an export wrote."""

    path: str | None = Field(description="The file written (None: a stream).")
    database_id: str = Field(description="This database's identity, recorded in the file.")
    groups: int
    sessions: int
    memories: int
    facts: int
    rolling_summaries: int
    summary_counts: int


EXPORT_PROGRESS_MEMORIES = 1000  # how often an export reports progress
SUFFIX = ".jsonl"


def header(
    counts: dict[str, int], *, exported_at: str, database_id: str, embedder: str, group_ids: list[str]
) -> dict[str, Any]:
    return {
        "kind": FORMAT,
        "version": VERSION,
        "exported_at": exported_at,
        "database_id": database_id,
        "embedder": embedder,
        "groups": group_ids,
        "counts": counts,
    }


def dump(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


def write_export(
    rows: Iterable[tuple[str, dict[str, Any]]],
    out: TextIO,
    head: Callable[[dict[str, int]], dict[str, Any]],
    report: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write the header (made by `head` from the counts, the records' first item), then one line per record
    (the Store's `export_records`); returns the counts."""
    items = iter(rows)
    kind, counts = next(items)
    assert kind == "counts"
    out.write(dump(head(counts)))
    written = 0
    for kind, line in items:
        out.write(dump(line))
        if kind == "memory":
            written += 1
            if report is not None and written % EXPORT_PROGRESS_MEMORIES == 0:
                report(written, counts["memories"])
    if report is not None:
        report(written, counts["memories"])
    return dict(counts)


def check_target(path: Path) -> Path:
    """Where a tool may write an export: a new .jsonl file, by its absolute path, in a folder that exists."""
    check_path(path)
    if path.suffix != SUFFIX:
        raise ValidationFailed(f"path {str(path)!r} does not end in {SUFFIX}; exports are JSON Lines files")
    return path


@contextlib.contextmanager
def output_file(path: Path, *, overwrite: bool) -> Iterator[TextIO]:
    """A text file that appears at `path` whole, once the block ends without an error."""
    _check_free(path, overwrite)
    if not path.parent.is_dir():
        raise ValidationFailed(f"the folder {path.parent} does not exist; create it or pass another path")
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise ValidationFailed(f"cannot write in {path.parent} ({exc.strerror}); pass another path") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        _check_free(path, overwrite)
        os.replace(temporary, path)
    except OSError as exc:
        raise ValidationFailed(f"cannot write {path} ({exc.strerror}); nothing was written") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def _check_free(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise ValidationFailed(f"{path} is a folder; pass the path of a file in it")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise ValidationFailed(
            f"{path} exists already; pass a new file name (an export never overwrites a file)"
        )
