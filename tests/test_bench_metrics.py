"""The LoCoMo benchmark's metrics on tiny hand-made cases with answers worked out by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "metrics.py"
_SPEC = importlib.util.spec_from_file_location("bench_metrics", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
metrics = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(metrics)

aggregate = metrics.aggregate
clean_evidence = metrics.clean_evidence
hit_at_k = metrics.hit_at_k
mean_scores = metrics.mean_scores
normalize_dia_id = metrics.normalize_dia_id
partial_recall_at_k = metrics.partial_recall_at_k
reciprocal_rank = metrics.reciprocal_rank
score_question = metrics.score_question
split_evidence = metrics.split_evidence

KNOWN = {"D1:1", "D1:2", "D1:3", "D2:1", "D2:7", "D11:26", "D30:5"}


# -- evidence cleaning ------------------------------------------------------------------


def test_clean_evidence_keeps_valid_ids_in_order() -> None:
    assert clean_evidence(["D2:1", "D1:3"], KNOWN) == ["D2:1", "D1:3"]


def test_clean_evidence_splits_on_semicolon() -> None:
    assert clean_evidence(["D1:1; D2:7"], KNOWN) == ["D1:1", "D2:7"]


def test_clean_evidence_splits_on_comma_and_whitespace() -> None:
    assert clean_evidence(["D1:1,D1:2 D1:3\tD2:1"], KNOWN) == ["D1:1", "D1:2", "D1:3", "D2:1"]


def test_clean_evidence_accepts_a_single_string() -> None:
    assert clean_evidence("D1:2;D1:1", KNOWN) == ["D1:2", "D1:1"]


def test_clean_evidence_fixes_colon_after_d() -> None:
    assert clean_evidence(["D:11:26"], KNOWN) == ["D11:26"]


def test_clean_evidence_strips_leading_zeros() -> None:
    assert clean_evidence(["D01:03", "D30:05"], KNOWN) == ["D1:3", "D30:5"]


def test_clean_evidence_drops_unknown_and_malformed_ids() -> None:
    assert clean_evidence(["D9:9", "D", "", "x", "D1:1", "D4:36"], KNOWN) == ["D1:1"]


def test_clean_evidence_dedupes_after_normalising() -> None:
    assert clean_evidence(["D1:3", "D01:3; D1:03", "D2:1", "D1:3"], KNOWN) == ["D1:3", "D2:1"]


def test_clean_evidence_can_leave_nothing() -> None:
    assert clean_evidence(["D5:5", "D"], KNOWN) == []


def test_normalize_and_split_building_blocks() -> None:
    assert normalize_dia_id("D:11:26") == "D11:26"
    assert normalize_dia_id("D007:010") == "D7:10"
    assert normalize_dia_id("D10:19") == "D10:19"
    assert normalize_dia_id("D") is None
    assert normalize_dia_id("D1:") is None
    assert split_evidence(["D1:1; D1:2", "D1:3 ,D1:4"]) == ["D1:1", "D1:2", "D1:3", "D1:4"]


# -- per-question metrics ---------------------------------------------------------------

EVIDENCE = {"a", "b"}
RANKED = ["x", "a", "y", "b"]


def test_partial_recall_at_k() -> None:
    assert partial_recall_at_k(RANKED, EVIDENCE, 1) == 0.0
    assert partial_recall_at_k(RANKED, EVIDENCE, 2) == 0.5
    assert partial_recall_at_k(RANKED, EVIDENCE, 3) == 0.5
    assert partial_recall_at_k(RANKED, EVIDENCE, 4) == 1.0
    assert partial_recall_at_k(RANKED, EVIDENCE, 20) == 1.0


def test_partial_recall_with_three_evidence_turns() -> None:
    assert partial_recall_at_k(["a", "z", "c"], ["a", "b", "c"], 3) == pytest.approx(2 / 3)


def test_hit_at_k() -> None:
    assert hit_at_k(RANKED, EVIDENCE, 1) == 0
    assert hit_at_k(RANKED, EVIDENCE, 2) == 1
    assert hit_at_k(RANKED, EVIDENCE, 4) == 1
    assert hit_at_k(["x", "y"], EVIDENCE, 20) == 0


def test_reciprocal_rank() -> None:
    assert reciprocal_rank(RANKED, EVIDENCE) == 0.5
    assert reciprocal_rank(["b"], EVIDENCE) == 1.0
    assert reciprocal_rank(["x", "y", "z", "w", "a"], EVIDENCE) == pytest.approx(0.2)
    assert reciprocal_rank(["x", "y"], EVIDENCE) == 0.0
    assert reciprocal_rank([], EVIDENCE) == 0.0


def test_duplicate_ranked_ids_count_once() -> None:
    ranked = ["a", "a", "a", "b"]
    assert partial_recall_at_k(ranked, EVIDENCE, 3) == 0.5  # a three times is still one of two
    assert partial_recall_at_k(ranked, EVIDENCE, 4) == 1.0
    assert reciprocal_rank(ranked, EVIDENCE) == 1.0


def test_duplicate_evidence_counts_once() -> None:
    assert partial_recall_at_k(["a"], ["a", "a", "b"], 5) == 0.5


def test_no_evidence_scores_zero() -> None:
    assert partial_recall_at_k(["a"], [], 5) == 0.0
    assert hit_at_k(["a"], [], 5) == 0
    assert reciprocal_rank(["a"], []) == 0.0


def test_score_question_has_every_metric() -> None:
    scores = score_question(RANKED, EVIDENCE, ks=(1, 2, 4))
    assert scores == {
        "R@1": 0.0,
        "R@2": 0.5,
        "R@4": 1.0,
        "hit@1": 0.0,
        "hit@2": 1.0,
        "hit@4": 1.0,
        "MRR": 0.5,
    }


def test_score_question_default_ks() -> None:
    assert set(score_question(RANKED, EVIDENCE)) == {
        "R@5",
        "R@10",
        "R@20",
        "hit@5",
        "hit@10",
        "hit@20",
        "MRR",
    }


# -- aggregation ------------------------------------------------------------------------


def test_aggregate_overall_and_per_category() -> None:
    ks = (1, 2)
    records = [
        # q1, category 1: evidence {a, b}; ranked [a, x] -> R@1 .5, R@2 .5, hit 1/1, MRR 1
        {"category": 1, "scores": score_question(["a", "x"], ["a", "b"], ks)},
        # q2, category 1: evidence {c}; ranked [x, c] -> R@1 0, R@2 1, hit 0/1, MRR .5
        {"category": 1, "scores": score_question(["x", "c"], ["c"], ks)},
        # q3, category 2: evidence {d}; ranked [x, y] -> everything 0
        {"category": 2, "scores": score_question(["x", "y"], ["d"], ks)},
    ]
    result = aggregate(records)
    overall = result["overall"]
    assert overall["n"] == 3
    assert overall["R@1"] == pytest.approx(0.5 / 3)
    assert overall["R@2"] == pytest.approx(1.5 / 3)
    assert overall["hit@1"] == pytest.approx(1 / 3)
    assert overall["hit@2"] == pytest.approx(2 / 3)
    assert overall["MRR"] == pytest.approx(1.5 / 3)

    assert list(result["by_category"]) == ["1", "2"]
    first, second = result["by_category"]["1"], result["by_category"]["2"]
    assert first["n"] == 2
    assert first["R@1"] == pytest.approx(0.25)
    assert first["R@2"] == pytest.approx(0.75)
    assert first["hit@1"] == pytest.approx(0.5)
    assert first["hit@2"] == pytest.approx(1.0)
    assert first["MRR"] == pytest.approx(0.75)
    assert second == {"n": 1, "R@1": 0.0, "R@2": 0.0, "hit@1": 0.0, "hit@2": 0.0, "MRR": 0.0}


def test_aggregate_sorts_categories_numerically() -> None:
    records = [{"category": c, "scores": {"MRR": 1.0}} for c in (10, 2, 1)]
    assert list(aggregate(records)["by_category"]) == ["1", "2", "10"]


def test_mean_scores_of_nothing() -> None:
    assert mean_scores([]) == {"n": 0}
    assert aggregate([]) == {"overall": {"n": 0}, "by_category": {}}
