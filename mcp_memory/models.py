"""Pydantic models the tools take and return; their schemas are what clients see."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

Role = Literal["user", "assistant", "system", "tool"]
OpenMode = Literal["create", "open", "open_or_create"]
MaintenanceTrigger = Literal["schedule", "on_demand", "inserts"]
MAX_ID_CHARS = 200
MAX_RECALL_LIMIT = 100  # the most hits one recall returns

STRICT_INPUT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
"""What clients send is read as sent: no unknown fields, no coercion across kinds (true is not 1,
"0.5" is not a number, 2.0 is not an integer), no NaN or infinity."""


def id_problem(value: str, example: str = "ana") -> str | None:
    """Why `value` is not an id a person can read, or None: ids are shown, compared and typed by people."""
    stripped = value.strip()  # str.strip knows every Unicode space, U+3000 included
    if not stripped:
        return f"is empty or only whitespace; send a readable id such as {example!r}"
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cs":
            return (
                f"holds an unpaired surrogate (U+{ord(char):04X}) at position {position}, which is not "
                "valid Unicode; send the id as valid text"
            )
        if category == "Cc":
            return (
                f"holds a control character ({char!r}) at position {position}; ids are readable text, "
                "remove it"
            )
    if stripped != value:
        return f"has leading or trailing whitespace; send {stripped!r}"
    return None


def _readable(value: str, example: str) -> str:
    problem = id_problem(value, example)
    if problem is not None:
        # the message goes in the context: a template would read braces in the id as placeholders
        raise PydanticCustomError("readable_id", "{problem}", {"problem": problem})
    return value


ID_LENGTH = Field(max_length=MAX_ID_CHARS, json_schema_extra={"minLength": 1})
Identifier = Annotated[str, ID_LENGTH, AfterValidator(partial(_readable, example="ana"))]
"""A group, session, user, agent or task id: 1 to 200 characters of readable text."""
MemoryType = Annotated[str, ID_LENGTH, AfterValidator(partial(_readable, example="message"))]


def _not_a_bool(value: Any) -> Any:
    """pydantic would read True as 1 (one second after 1970); a boolean is never a time."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time; give ISO 8601 text, epoch seconds or epoch milliseconds")
    return value


TimestampInput = Annotated[
    datetime | int | float | str,
    BeforeValidator(_not_a_bool),
    WithJsonSchema({"type": ["string", "number"]}),  # ISO 8601 text or epoch seconds/milliseconds
]


class MemoryFilter(BaseModel):
    """Which memories a recall or a listing may return: every condition given must hold."""

    model_config = STRICT_INPUT
    since: TimestampInput | None = Field(None, description="Only memories at or after this time.")
    until: TimestampInput | None = Field(None, description="Only memories at or before this time.")
    producer: Identifier | None = Field(None, description="Only what this participant said.")
    role: Role | None = Field(None, description="Only this role.")
    memory_types: list[MemoryType] | None = Field(None, description="Only these types.")
    metadata: dict[str, Any] | None = Field(
        None,
        description='Metadata values by dotted path, e.g. {"project": "x"}; a list means any of; a range is '
        '{"gte": 5, "lt": 10} (gt, gte, lt, lte).',
    )
    min_importance: float | None = Field(None, ge=0, le=1, description="Only this important or more (0-1).")
    max_importance: float | None = Field(None, ge=0, le=1, description="Only this important or less (0-1).")
    step_from: int | None = Field(None, ge=0, description="Only steps from this one on.")
    step_to: int | None = Field(None, ge=0, description="Only steps up to this one.")


class ToolCall(BaseModel):
    """A tool call an assistant message makes (MARSYS, OpenAI): its id pairs it with the tool's result."""

    model_config = STRICT_INPUT
    id: Identifier = Field(description="The call's id; the result message carries it as tool_call_id.")
    name: str = Field(min_length=1, max_length=200, description="The tool called.")
    arguments: dict[str, Any] | str = Field(default_factory=dict, description="Its arguments (JSON or text).")


class MemoryInput(BaseModel):
    """One memory to store: what was said, by whom, and when; a conversation message's extras are optional."""

    model_config = STRICT_INPUT
    content: str | dict[str, Any] = Field(
        "", description="The text to remember, or a JSON object (a state, a structured result)."
    )
    producer: Identifier = Field(
        description="Who said or produced it: one of the group's user_ids or agent_ids."
    )
    role: Role = Field("user", description="user, assistant, system or tool.")
    produced_for: Identifier | None = Field(None, description="Who it was addressed to, if anyone.")
    timestamp: TimestampInput | None = Field(
        None, description="When it was said: ISO 8601, or epoch seconds/milliseconds. Default: now (UTC)."
    )
    memory_type: MemoryType = Field(
        "message", description="message (default), note, fact, summary, action, ..."
    )
    importance: float | None = Field(None, description="0 to 1; default 0.5.")
    metadata: dict[str, Any] | None = Field(None, description="Any JSON object, filterable in recall.")
    step: int | None = Field(None, ge=0, description="An agent's step number, if it counts steps.")
    name: str | None = Field(None, min_length=1, max_length=200, description="The author's name (a tool's).")
    tool_calls: list[ToolCall] | None = Field(None, description="Tool calls this message makes.")
    tool_call_id: Identifier | None = Field(None, description="The call this tool result answers.")
    images: list[str] | None = Field(None, description="Image references: URLs or paths.")


class GroupInfo(BaseModel):
    """A group: the permanent participants who share a memory."""

    group_id: str
    user_ids: list[str]
    agent_ids: list[str]
    description: str | None = None
    configuration: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    session_count: int = 0
    episode_count: int = 0
    created: bool = Field(False, description="True when this call created the group (create_group).")
    owner: str | None = Field(
        None, description="The principal that created it over authenticated HTTP; None when made without."
    )


class SessionInfo(BaseModel):
    """A session's identity, configuration and state."""

    group_id: str
    session_id: str
    created: bool = Field(False, description="True when this call created the session.")
    reference_count: int = Field(description="Open references to the live session, across all connections.")
    configuration: dict[str, Any]
    episode_count: int
    created_at: datetime
    rolling_summary: str = Field(
        "off (no LLM configured)",
        description="Whether turns leaving the short-term window are condensed into a rolling summary: "
        "'on', 'off (no LLM configured)' or 'off (short-term memory disabled)'.",
    )
    rolling_summary_covered_through: int | None = Field(
        None,
        description="The sequence of the newest episode the rolling summary covers (None: no summary yet).",
    )


class CloseResult(BaseModel):
    """What close_session did."""

    group_id: str
    session_id: str
    released: bool = Field(description="False when this connection held no reference to the session.")
    reference_count: int = Field(description="References left on the live session.")
    message: str


class AddedMemory(BaseModel):
    """The id given to one stored memory; duplicate means an identical memory was already stored."""

    id: int
    sequence: int
    duplicate: bool


class AddMemoryResult(BaseModel):
    """The stored memories, in the order given."""

    group_id: str
    session_id: str
    memories: list[AddedMemory]
    stored: int = Field(description="How many were new.")
    duplicates: int = Field(description="How many were already stored (a retried call) and kept once.")
    embedding_pending: bool = Field(
        False, description="True when the embedder failed; the memories are stored and will be indexed later."
    )


class Episode(BaseModel):
    """One stored memory."""

    id: int
    group_id: str
    session_id: str
    sequence: int
    timestamp: datetime
    producer: str
    role: Role
    produced_for: str | None = None
    content: str = Field(description="The text (for a structured message, what it is searched by).")
    memory_type: str
    importance: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    step: int | None = None
    name: str | None = None
    data: dict[str, Any] | None = Field(
        None, description="The structured content, when it was a JSON object."
    )
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    images: list[str] | None = None
    retrieval_count: int = Field(0, description="How many recalls have returned it.")
    last_accessed_at: datetime | None = Field(None, description="When a recall last returned it.")
    effective_importance: float | None = Field(
        None, description="Its importance as recall weighs it: decayed with age, raised by retrievals."
    )


Tier = Literal["recent", "long_term", "summaries"]
MAX_LIST_LIMIT = 100  # the most memories one page of a listing holds
ListOrder = Literal["oldest", "newest"]
MAX_NEIGHBOURS = 5


class ReadOptions(BaseModel):
    """How a read goes beyond its filters: for a search, which tiers, how sure a match by meaning must be and how
    much context; for a listing, its order and page (one object: the tool list stays short)."""

    model_config = STRICT_INPUT
    tiers: list[Tier] | None = Field(
        None,
        description="recent: the session's latest turns; long_term: every stored memory but summaries; "
        "summaries: session summaries. Default: all three.",
    )
    min_similarity: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="Drop memories found by meaning alone whose cosine similarity to the query is lower "
        "(keyword matches always stay). Default: the session's long_term.min_similarity.",
    )
    neighbours: int = Field(
        0, ge=0, le=MAX_NEIGHBOURS, description="Add each hit's n turns before and after."
    )
    order: ListOrder = Field("oldest", description="A listing's order.")
    cursor: str | None = Field(None, description="A listing's next page: the previous page's next_cursor.")


class RecallHit(Episode):
    """A recalled memory with its relevance score (higher is better)."""

    score: float | None = Field(
        description="Its rank score in this recall (fusion of the searches): compare hits, not recalls; null in a "
        "listing."
    )
    similarity: float | None = Field(
        None,
        description="Cosine similarity of its vector to the query's (-1 to 1), when the vector search found it.",
    )
    matched_by: list[Literal["keyword", "vector", "time"]] = Field(
        description='"keyword" and "vector": the searches that found it; "time": it was stored in (or within '
        "three days of) the date, month or year the query names, which ranks it higher."
    )
    context: list[Episode] = Field(
        default_factory=list, description="With neighbours: the turns around it in its session, oldest first."
    )


class MemoryPage(BaseModel):
    """One page of a group's (or a session's) memories in order: a session's by sequence, a group's by time."""

    group_id: str
    session_id: str | None = None
    order: ListOrder
    memories: list[Episode]
    next_cursor: str | None = Field(None, description="Pass it as cursor for the next page; null: no more.")


class RecallResult(BaseModel):
    """Memories relevant to a query, best first, and the session's most recent turns when a session was given;
    without a query, a page of memories in order."""

    group_id: str
    query: str | None = Field(None, description="Null: a listing in order, not a search.")
    hits: list[RecallHit]
    recent: list[Episode] = Field(
        default_factory=list,
        description="The session's newest episodes, oldest first (only with session_id).",
    )
    vector_search: bool = Field(description="False when only keyword search ran (no embedder available).")
    rolling_summary: str | None = Field(
        None,
        description="The session's rolling summary of the turns that left its recent window (only with "
        "session_id, when there is one).",
    )
    order: ListOrder | None = Field(None, description="A listing's order.")
    next_cursor: str | None = Field(
        None, description="A listing's next page: pass it as cursor; null: no more."
    )

    @classmethod
    def listing(cls, page: MemoryPage) -> RecallResult:
        """A page of a listing in recall's shape: hits in order, with no score."""
        hits = [RecallHit(**memory.model_dump(), score=None, matched_by=[]) for memory in page.memories]
        return cls(
            group_id=page.group_id,
            hits=hits,
            vector_search=False,
            order=page.order,
            next_cursor=page.next_cursor,
        )


class Fact(BaseModel):
    """A fact about a user or project: subject, predicate, object, and when it held (valid_to null: current)."""

    id: int
    group_id: str
    subject: str
    predicate: str
    object: str
    current: bool
    valid_from: datetime
    valid_to: datetime | None = Field(None, description="When a newer fact replaced it; null while current.")
    session_id: str | None = None
    source: str | None = None
    confidence: float | None = None
    memory_id: int | None = Field(None, description="The memory (of type fact) that recall finds it by.")
    created_at: datetime


class StoredFact(Fact):
    """A fact add_fact stored, or found already stored (duplicate)."""

    duplicate: bool = Field(description="True when this was already a current fact; nothing new was stored.")


class FactDetails(BaseModel):
    """Where and when a fact holds, for add_fact (one object: the tool list is short)."""

    model_config = STRICT_INPUT
    session_id: Identifier | None = None
    source: str | None = None
    confidence: float | None = Field(None, ge=0, le=1)
    valid_from: TimestampInput | None = None


class FactResult(BaseModel):
    """What add_fact stored; with text, also how many facts the model found and how many it got wrong."""

    group_id: str
    facts: list[StoredFact]
    stored: int = Field(description="How many facts were new.")
    duplicates: int = Field(description="How many were already current facts.")
    replaced: list[int] = Field(
        default_factory=list, description="Ids of facts closed by replace=true; they stay as history."
    )
    extracted: int | None = Field(None, description="With text: how many well-formed facts the model found.")
    skipped_malformed: int | None = Field(
        None, description="With text: how many items of the model's answer were not facts and were skipped."
    )
    embedding_pending: bool = Field(
        False, description="True when the embedder failed; the facts are stored and will be indexed later."
    )


class FactList(BaseModel):
    """A group's facts, current ones first, then the replaced ones, newest first."""

    group_id: str
    facts: list[Fact]
    total: int = Field(description="How many facts match; facts holds at most the first 200.")


class DeleteResult(BaseModel):
    """How many memories were deleted."""

    group_id: str
    deleted: int


class DeleteSessionResult(BaseModel):
    """A deleted session."""

    group_id: str
    session_id: str
    deleted_episodes: int


class SessionDetail(BaseModel):
    """A session with its recent episodes, for the session resource."""

    session: SessionInfo
    recent: list[Episode]
    rolling_summary: str | None = Field(
        None, description="The rolling summary of the turns that left the recent window, if any."
    )


class GroupDetail(BaseModel):
    """A group with its most recent sessions, for the group resource."""

    group: GroupInfo
    sessions: list[SessionInfo]


class MaintenanceReport(BaseModel):
    """What one maintenance pass did."""

    started_at: datetime
    trigger: MaintenanceTrigger
    duration_ms: float
    importance_decay_per_day: float = Field(description="The decay factor applied (1: no decay).")
    importance_updated: int = Field(
        description="Memories whose effective importance changed; none is deleted."
    )
    tasks_expired: int = Field(description="Finished background tasks past their time to live, deleted.")
    orphaned_tasks_failed: int = Field(description="Tasks whose server stopped, marked failed.")
    vectors_backfilled: int = Field(description="Memories whose embedding had failed, now vector-indexed.")
    sessions_evicted: int = Field(description="Idle cached sessions dropped (their memories stay).")
    errors: list[str] = Field(default_factory=list, description="Steps that failed; the others still ran.")


class ImportanceStats(BaseModel):
    """How important the stored memories are, as given and as recall sees them after decay."""

    mean: float
    mean_effective: float
    effective_below_0_1: int = Field(description="Memories whose effective importance fell below 0.1.")


class RetrievalStats(BaseModel):
    """How often recall has returned memories."""

    total: int = Field(description="Retrievals counted over every memory.")
    episodes_retrieved: int = Field(description="Memories returned by recall at least once.")


class Stats(BaseModel):
    """Counts, sizes, importance, the embedder in use and the last maintenance pass."""

    database_path: str
    database_bytes: int
    schema_version: int
    embedder: str
    embedding_dimension: int
    embedder_warning: str | None = None
    episodes_by_type: dict[str, int]
    groups: list[dict[str, Any]]
    largest_sessions: list[dict[str, Any]]
    producers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Per group and producer (a user or an agent), most first (at most 200): episodes, mean "
        "effective importance, retrievals.",
    )
    pending_vectors: int
    live_sessions: int
    open_references: int
    episodes_total: int = 0
    episodes_by_tier: dict[str, int] = Field(
        default_factory=dict,
        description="pending_vectors: waiting for an embedding (it failed; indexed later), however new; the "
        "others are recent (stored in the last 24 hours), long_term (vector-indexed) or not_vector_indexed "
        "(found by keyword only).",
    )
    importance: ImportanceStats | None = None
    retrievals: RetrievalStats | None = None
    last_maintenance: MaintenanceReport | None = Field(
        None, description="The newest maintenance pass by any server process on this database."
    )


class UpdatedMemory(BaseModel):
    """A memory corrected in place: the same id, session, sequence and time, with its new fields."""

    memory: Episode
    embedding_pending: bool = Field(
        False, description="True when the new text could not be embedded yet; it is indexed later."
    )


SummaryMode = Literal["full", "lightweight"]
SummarySource = Literal["caller", "llm", "sampling"]
TaskStatus = Literal["processing", "completed", "failed"]


class SummaryOptions(BaseModel):
    """summarize_session's rarer options (one object: the tool list is short)."""

    model_config = STRICT_INPUT
    focus_topics: list[str] | None = None
    generate_embedding: bool = True


class SummaryResult(BaseModel):
    """A stored session summary."""

    memory_id: int = Field(description="The id of the stored summary memory (memory_type 'summary').")
    content: str
    truncated: bool = Field(
        description="True when the session was over the mode's input limits and only part of it was read."
    )
    mode: SummaryMode
    metadata: dict[str, Any] = Field(
        description="topic/action/outcome (full) or points (lightweight), and source_episode_ids."
    )
    auto_triggered: bool = False
    duplicate: bool = Field(
        False,
        description="True when this summary was already stored (a retry); it used no new lightweight slot.",
    )


class SummarizeResponse(BaseModel):
    """What summarize_session returns: the stored summary (sync), or the task that is making it."""

    status: Literal["completed", "processing"] = Field(
        description="completed: the summary is stored (below); processing: poll get_task with task_id."
    )
    mode: SummaryMode
    truncated: bool = Field(
        description="True when the session was over the mode's input limits and only part of it was read."
    )
    task_id: str | None = Field(None, description="With sync=false: the task to poll with get_task.")
    memory_id: int | None = Field(None, description="The stored summary memory (memory_type 'summary').")
    content: str | None = None
    metadata: dict[str, Any] | None = Field(
        None, description="topic/action/outcome (full) or points (lightweight), source_episode_ids, source."
    )
    duplicate: bool = Field(False, description="True when this summary was already stored; nothing new was.")

    @classmethod
    def done(cls, result: SummaryResult) -> SummarizeResponse:
        return cls(
            status="completed",
            mode=result.mode,
            truncated=result.truncated,
            memory_id=result.memory_id,
            content=result.content,
            metadata=result.metadata,
            duplicate=result.duplicate,
        )


class TaskInfo(BaseModel):
    """A background task: `processing` until it is `completed` (with a result) or `failed` (with an error)."""

    task_id: str
    kind: str = Field(description="What the task does, e.g. 'summary'.")
    group_id: str | None = Field(None, description="The group it works on.")
    status: TaskStatus
    created_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None = Field(None, description="The finished task's result.")
    error: str | None = Field(None, description="Why the task failed.")


class GroupListing(BaseModel):
    """Groups with their counts; with a group_id, that group and its sessions (newest first)."""

    groups: list[GroupInfo]
    sessions: list[SessionInfo] | None = Field(None, description="The group's sessions, when one was named.")
