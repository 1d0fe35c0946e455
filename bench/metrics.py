"""Retrieval metrics for the LoCoMo benchmark: evidence cleaning, recall@k, hit@k, MRR, aggregation.

Pure functions, no I/O. A question's evidence is a list of dialogue ids ("D3:12" = session 3,
turn 12); a recall's answer is the ranked list of the dialogue ids of its hits, best first.
Ranks count the slots as returned: an id repeated in the ranked list still takes its slots,
but an evidence turn is only ever counted once.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

KS = (5, 10, 20)
_SEPARATORS = re.compile(r"[;,\s]+")
_DIA_ID = re.compile(r"D:?0*(\d+):0*(\d+)", re.IGNORECASE)


def split_evidence(raw_ids: str | Iterable[str]) -> list[str]:
    """Split raw evidence entries on ';', ',' and whitespace into non-empty tokens, in order."""
    entries = [raw_ids] if isinstance(raw_ids, str) else list(raw_ids)
    return [token for entry in entries for token in _SEPARATORS.split(str(entry)) if token]


def normalize_dia_id(token: str) -> str | None:
    """The canonical 'D<session>:<turn>' form of one token ('D:11:26' -> 'D11:26', 'D01:03' -> 'D1:3'), or None."""
    match = _DIA_ID.fullmatch(token.strip())
    if match is None:
        return None
    return f"D{int(match.group(1))}:{int(match.group(2))}"


def clean_evidence(raw_ids: str | Iterable[str], known_ids: Collection[str]) -> list[str]:
    """Split, normalise, drop ids the conversation does not have, and dedupe keeping the first order."""
    cleaned: list[str] = []
    for token in split_evidence(raw_ids):
        dia_id = normalize_dia_id(token)
        if dia_id is not None and dia_id in known_ids and dia_id not in cleaned:
            cleaned.append(dia_id)
    return cleaned


def partial_recall_at_k(ranked_ids: Sequence[str], evidence: Collection[str], k: int) -> float:
    """Share of the distinct evidence ids found in the first k ranked slots (0.0 when there is no evidence)."""
    wanted = set(evidence)
    if not wanted:
        return 0.0
    return len(wanted.intersection(ranked_ids[:k])) / len(wanted)


def hit_at_k(ranked_ids: Sequence[str], evidence: Collection[str], k: int) -> int:
    """1 if any evidence id is in the first k ranked slots, else 0."""
    return int(not set(evidence).isdisjoint(ranked_ids[:k]))


def reciprocal_rank(ranked_ids: Sequence[str], evidence: Collection[str]) -> float:
    """1 / (1-based rank of the first evidence id in the ranked list), 0.0 if none is there."""
    wanted = set(evidence)
    for rank, dia_id in enumerate(ranked_ids, start=1):
        if dia_id in wanted:
            return 1.0 / rank
    return 0.0


def score_question(
    ranked_ids: Sequence[str], evidence: Collection[str], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Every metric for one question: R@k and hit@k for each k, and MRR."""
    scores: dict[str, float] = {}
    for k in ks:
        scores[f"R@{k}"] = partial_recall_at_k(ranked_ids, evidence, k)
    for k in ks:
        scores[f"hit@{k}"] = float(hit_at_k(ranked_ids, evidence, k))
    scores["MRR"] = reciprocal_rank(ranked_ids, evidence)
    return scores


def mean_scores(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over rows (all rows share the same keys), with n; empty rows give n = 0."""
    if not rows:
        return {"n": 0}
    means: dict[str, float] = {"n": len(rows)}
    for key in rows[0]:
        means[key] = sum(row[key] for row in rows) / len(rows)
    return means


def aggregate(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean metrics overall and per category from records {'category': c, 'scores': score_question(...)}."""
    records = list(records)
    by_category: dict[str, list[Mapping[str, float]]] = {}
    for record in records:
        by_category.setdefault(str(record["category"]), []).append(record["scores"])
    return {
        "overall": mean_scores([r["scores"] for r in records]),
        "by_category": {c: mean_scores(by_category[c]) for c in sorted(by_category, key=_category_key)},
    }


def _category_key(category: str) -> tuple[int, str]:
    """Sort categories numerically when they are numbers."""
    return (int(category), "") if category.isdigit() else (1 << 30, category)
