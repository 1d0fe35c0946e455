"""Save and load: the JSON Lines format of an export, and reading it back line by line, checked.

An export is UTF-8 text, one JSON object per line, `kind` first. Line 1 is the header:

    {"kind": "mcp-memory-export", "version": 1, "exported_at": "...", "database_id": "...",
     "embedder": "minilm-l6-v2-int8", "groups": ["ana"], "counts": {"groups": 1, "memories": 3, ...}}

then, for each group, its `group` line, and for each of its sessions the `session` line followed by
that session's records: its `memory` lines by sequence, the `fact` lines whose memory is one of them,
its `rolling_summary` and `summary_count` lines. Every column is kept (times as stored, importance and
effective importance, retrieval counts, the dedup key, the message extras) except what the importing
database derives again: content hashes, keyword rows, and vectors (the importing server embeds with its
own embedder; `vector` says whether the memory had one). A memory's `content` is its stored, searchable
text (as corrected, if it was); a message's text as sent is `message.text` when the two differ, so both
come back exactly. Times are fixed-width UTC ISO text; other ISO 8601 forms are read and normalised.

Every line is checked by a pydantic model of its kind (strict: no unknown keys, no coercion), and an
error names its line: `line 17: memory.importance: input should be less than or equal to 1`. The two
passes over a file are transfer/check.py's; no SQL here (store/sqlite/transfer.py writes, services/transfer.py
runs the import).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from mcp_memory.config import effective_session_config
from mcp_memory.episodes import metadata_json_text
from mcp_memory.errors import ValidationFailed
from mcp_memory.models import Identifier, MemoryType, Role, ToolCall
from mcp_memory.store.records import fact_key
from mcp_memory.times import iso, normalize_timestamp

FORMAT = "mcp-memory-export"
VERSION = 1
MAX_LINE_BYTES = 8 * 2**20  # the longest line read: far above any memory (32K characters by default)
LINE = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _moment(value: str) -> str:
    """A stored time: fixed-width UTC ISO text (an export's own times come back unchanged)."""
    return iso(normalize_timestamp(value))


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty or only whitespace")
    return value


Moment = Annotated[str, AfterValidator(_moment)]
Text = Annotated[str, AfterValidator(_text)]
FactPart = Annotated[str, Field(max_length=500), AfterValidator(_text)]
Share = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0)]
RowId = Annotated[int, Field(ge=1)]


class Counts(BaseModel):
    """How many records of each kind a file holds (the header's, checked against the lines)."""

    model_config = LINE
    groups: Count = 0
    sessions: Count = 0
    memories: Count = 0
    facts: Count = 0
    rolling_summaries: Count = 0
    summary_counts: Count = 0


class Header(BaseModel):
    model_config = LINE
    kind: Literal["mcp-memory-export"]
    version: int = Field(ge=1)
    exported_at: Moment
    database_id: Identifier
    embedder: str | None = None
    groups: list[Identifier]
    counts: Counts | None = None


class GroupLine(BaseModel):
    model_config = LINE
    kind: Literal["group"]
    group_id: Identifier
    user_ids: list[Identifier] = Field(max_length=1000)
    agent_ids: list[Identifier] = Field(max_length=1000)
    description: str | None = Field(max_length=2000)
    configuration: dict[str, JsonValue]
    created_at: Moment
    owner: Identifier | None = None  # the principal that created it over authenticated HTTP

    @model_validator(mode="after")
    def _participants(self) -> GroupLine:
        if not self.user_ids and not self.agent_ids:
            raise ValueError("a group needs at least one user or agent")
        both = sorted(set(self.user_ids) & set(self.agent_ids))
        if both:
            raise ValueError(f"{both} would be both a user and an agent")
        effective_session_config(self.configuration)
        return self

    @property
    def participants(self) -> set[str]:
        return {*self.user_ids, *self.agent_ids}


class SessionLine(BaseModel):
    model_config = LINE
    kind: Literal["session"]
    group_id: Identifier
    session_id: Identifier
    configuration: dict[str, JsonValue]
    overrides: dict[str, JsonValue]
    created_at: Moment

    @model_validator(mode="after")
    def _configuration(self) -> SessionLine:
        effective_session_config(self.configuration)
        return self


class MessageExtras(BaseModel):
    """A conversation message's extras as stored (episodes.py); `text` is the text as sent, kept when the
    searchable content differs from it."""

    model_config = LINE
    text: str | None = None
    data: dict[str, JsonValue] | None = None
    name: str | None = Field(None, min_length=1, max_length=200)
    tool_calls: list[ToolCall] | None = None
    tool_call_id: Identifier | None = None
    images: list[str] | None = None


class MemoryLine(BaseModel):
    model_config = LINE
    kind: Literal["memory"]
    id: RowId
    group_id: Identifier
    session_id: Identifier
    sequence: RowId
    producer: Identifier
    role: Role
    produced_for: Identifier | None
    content: Text
    message: dict[str, JsonValue] | None
    memory_type: MemoryType
    importance: Share
    effective_importance: Share
    metadata: dict[str, JsonValue]
    timestamp: Moment
    created_at: Moment
    updated_at: Moment | None
    retrieval_count: Count
    last_accessed_at: Moment | None
    dedup_key: str | None = Field(min_length=1, max_length=2000)
    step: Count | None
    vector: bool

    @model_validator(mode="after")
    def _extras(self) -> MemoryLine:
        if self.message is not None:
            MessageExtras.model_validate(self.message)
        metadata_json_text(self.metadata)  # what add_memory allows
        return self


class FactLine(BaseModel):
    model_config = LINE
    kind: Literal["fact"]
    id: RowId
    group_id: Identifier
    session_id: Identifier | None
    subject: FactPart
    predicate: FactPart
    object: FactPart
    source: str | None = Field(max_length=1000)
    confidence: Share | None
    valid_from: Moment
    valid_to: Moment | None
    created_at: Moment
    memory_id: RowId

    @model_validator(mode="after")
    def _period(self) -> FactLine:
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        return self

    @property
    def identity(self) -> tuple[str, ...]:
        """What makes two facts one: their keys and validity period."""
        keys = (fact_key(self.subject), fact_key(self.predicate), fact_key(self.object))
        return (*keys, self.valid_from if self.valid_to else "", self.valid_to or "")


class RollingSummaryLine(BaseModel):
    model_config = LINE
    kind: Literal["rolling_summary"]
    group_id: Identifier
    session_id: Identifier
    text: str
    covered_through_sequence: Count
    updated_at: Moment
    omitted_sequences: list[RowId]


class SummaryCountLine(BaseModel):
    model_config = LINE
    kind: Literal["summary_count"]
    group_id: Identifier
    session_id: Identifier
    lightweight: Count
    auto_multiple: Count


Record = GroupLine | SessionLine | MemoryLine | FactLine | RollingSummaryLine | SummaryCountLine
KINDS: dict[str, type[BaseModel]] = {
    "group": GroupLine,
    "session": SessionLine,
    "memory": MemoryLine,
    "fact": FactLine,
    "rolling_summary": RollingSummaryLine,
    "summary_count": SummaryCountLine,
}


# -- reading lines ---------------------------------------------------------------------------------------


def check_source(path: Path) -> Path:
    """A file an import may read: an absolute path to a regular file (never a device or a folder)."""
    check_path(path)
    if not path.is_file():
        raise ValidationFailed(f"{path} is not a file that exists; pass the path of an export")
    return path


def check_path(path: Path) -> Path:
    """An absolute path a person could type: no NUL, no unpaired surrogate."""
    text = str(path)
    if "\x00" in text or not text.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == text:
        raise ValidationFailed("path holds a NUL or an invalid character; pass the file's full path as text")
    if not path.is_absolute():
        raise ValidationFailed(f"path {text!r} is not absolute; pass the file's full path")
    return path


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line that is not blank; an unreadable line is a ValidationFailed."""
    with path.open("rb") as file:
        number = 0
        while line := file.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES:
                raise at_line(number, f"is longer than {MAX_LINE_BYTES // 2**20} MB; this is not an export")
            try:
                text = line.decode("utf-8").removeprefix("\ufeff" if number == 1 else "")
            except UnicodeDecodeError:
                raise at_line(number, "is not UTF-8 text") from None
            if text.strip():
                yield number, text


def parse_object(number: int, text: str) -> dict[str, Any]:
    """A line's JSON object: valid Unicode, no NaN or infinity."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise at_line(number, f"is not JSON ({_reason(exc)})") from None
    if not isinstance(value, dict):
        raise at_line(number, "is not a JSON object")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise at_line(number, "holds an unpaired surrogate, which is not valid Unicode") from None
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _reason(exc: Exception) -> str:
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]


def first_object(path: Path) -> tuple[int, dict[str, Any]]:
    """The first non-blank line, parsed (it tells which format the file is in)."""
    for number, text in read_lines(path):
        return number, parse_object(number, text)
    raise ValidationFailed(f"{path} is empty; there is nothing to import")


def read_header(number: int, value: dict[str, Any]) -> Header:
    header = validate_line(number, Header, value, "header")
    if header.version > VERSION:
        newer = f"newer than this mcp-memory reads ({VERSION}); upgrade mcp-memory"
        raise at_line(number, f"says format version {header.version}, {newer}")
    return header


def read_record(number: int, value: dict[str, Any]) -> Record:
    kind = value.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        kinds = ", ".join(KINDS)
        raise at_line(number, f"has no known kind (one of {kinds})")
    record: Record = validate_line(number, model, value, str(kind))  # type: ignore[assignment]
    return record


def validate_line(number: int, model: type[BaseModel], value: dict[str, Any], kind: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in (kind, *error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValidationFailed(f"line {number}: {where}: {message[:1].lower()}{message[1:]}") from None


def at_line(number: int, problem: str) -> ValidationFailed:
    return ValidationFailed(f"line {number} {problem}")


def records(path: Path) -> Iterator[tuple[int, Record]]:
    """Every record after the header, checked one line at a time."""
    lines = read_lines(path)
    next(lines, None)
    for number, text in lines:
        yield number, read_record(number, parse_object(number, text))
