"""Facts: stable knowledge about a user or project as (subject, predicate, object), with time.

A fact is stored twice over, in one transaction: a row of the facts table (store/sqlite/facts.py), which
holds its validity period and is what duplicates and replacement work on; and an episode of
memory_type "fact" whose content is "subject predicate object", so that recall finds facts by
keyword and by meaning through the indexes every memory has, with no search code of its own.
The episode goes to the session the fact was learned in, or else to the group's "facts" session,
created on demand.

Who "said" a fact's episode: the participant the subject names, when it names one (subject "Ana",
user "ana"), because recall matches participants' names against the speaker only, and "what does
Ana like" must find the facts about Ana; otherwise the group's first agent (its first user if it
has none). Either passes the participant check. The role is "system": a fact is a note the memory
keeps, not a turn of the conversation, so recall(role="user") leaves facts out.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any

from mcp_memory.episodes import DEFAULT_IMPORTANCE
from mcp_memory.errors import ValidationFailed
from mcp_memory.models import Fact, FactResult, GroupInfo, StoredFact
from mcp_memory.store.records import FACT_MEMORY_TYPE, NewEpisode, NewFact, StoredFacts, fact_key
from mcp_memory.times import iso

FACTS_SESSION = "facts"
FACT_ROLE = "system"
MAX_FACT_PART_CHARS = 500
MAX_SOURCE_CHARS = 1000

Triple = tuple[str, str, str]

_PARTS = (
    ("subject", "who or what the fact is about, e.g. 'Ana'"),
    ("predicate", "the relation, e.g. 'lives in'"),
    ("object", "its value, e.g. 'Lisbon'"),
)


def check_triple(subject: Any, predicate: Any, object_: Any) -> Triple:
    """The three parts with whitespace collapsed (numbers read as text); raises ValidationFailed."""
    cleaned = []
    for (name, example), value in zip(_PARTS, (subject, predicate, object_), strict=True):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise ValidationFailed(f"{name} must be text; pass {example}")
        text = " ".join((value or "").split())
        if not text:
            raise ValidationFailed(f"{name} is empty; pass {example}, or pass text to extract facts from")
        if len(text) > MAX_FACT_PART_CHARS:
            raise ValidationFailed(
                f"{name} has {len(text)} characters, more than {MAX_FACT_PART_CHARS}; keep a fact short "
                "and store the details with add_memory"
            )
        cleaned.append(text)
    return cleaned[0], cleaned[1], cleaned[2]


def check_confidence(confidence: float | None) -> float | None:
    if confidence is not None and not 0.0 <= confidence <= 1.0:
        raise ValidationFailed(
            f"confidence {confidence} is outside [0, 1]; pass a probability such as 0.9, or leave it out"
        )
    return confidence


def check_source(source: str | None) -> str | None:
    text = (source or "").strip()
    if len(text) > MAX_SOURCE_CHARS:
        raise ValidationFailed(f"source has {len(text)} characters; keep it under {MAX_SOURCE_CHARS}")
    return text or None


def fact_producer(subject: str, group: GroupInfo) -> str:
    """The participant the subject names, else the group's first agent, else its first user."""
    named = [p for p in group.user_ids + group.agent_ids if fact_key(p) == fact_key(subject)]
    return named[0] if named else (group.agent_ids or group.user_ids)[0]


def prepare_fact(
    triple: Triple,
    *,
    group: GroupInfo,
    session_id: str | None,
    source: str | None,
    confidence: float | None,
    valid_from: datetime,
    max_content_chars: int,
) -> tuple[NewFact, NewEpisode]:
    """The fact's row and its episode (the metadata naming the fact is filled in when it is written)."""
    content = " ".join(triple)
    if len(content) > max_content_chars:
        raise ValidationFailed(
            f"the fact {content[:60]!r}... has {len(content)} characters, more than the maximum "
            f"{max_content_chars} of a memory; shorten it"
        )
    moment = iso(valid_from)
    episode = NewEpisode(
        producer_id=fact_producer(triple[0], group),
        producer_role=FACT_ROLE,
        produced_for_id=None,
        content=content,
        memory_type=FACT_MEMORY_TYPE,
        importance=DEFAULT_IMPORTANCE,
        metadata_json="{}",
        timestamp=moment,
        ts_epoch=valid_from.timestamp(),
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
        dedup_key=None,
    )
    return NewFact(*triple, session_id, source, confidence, moment), episode


def stored_fact(fact: Fact, duplicate: bool) -> StoredFact:
    return StoredFact(**fact.model_dump(), duplicate=duplicate)


def check_request(
    subject: Any, predicate: Any, object_: Any, text: str | None, max_text_chars: int
) -> Triple | None:
    """The triple to store, or None when the facts are to be extracted from `text` (checked here)."""
    if text is None:
        return check_triple(subject, predicate, object_)
    if any(part is not None for part in (subject, predicate, object_)):
        raise ValidationFailed("pass either text or subject, predicate and object, not both")
    if not text.strip():
        raise ValidationFailed(
            "text is empty; pass the text to extract facts from, or subject, predicate and object"
        )
    if len(text) > max_text_chars:
        raise ValidationFailed(
            f"text has {len(text)} characters, more than the maximum {max_text_chars}; "
            "extract from it in several calls"
        )
    return None


def fact_result(
    group_id: str,
    stored: StoredFacts | None,
    *,
    pending: bool = False,
    extracted: int | None = None,
    malformed: int | None = None,
) -> FactResult:
    pairs = [] if stored is None else zip(stored.facts, stored.duplicate, strict=True)
    facts = [stored_fact(fact, duplicate) for fact, duplicate in pairs]
    duplicates = sum(f.duplicate for f in facts)
    return FactResult(
        group_id=group_id,
        facts=facts,
        stored=len(facts) - duplicates,
        duplicates=duplicates,
        replaced=[] if stored is None else stored.closed,
        extracted=extracted,
        skipped_malformed=malformed,
        embedding_pending=pending,
    )
