"""The benchmark helpers that decide reported numbers: recall@k, exact top-k, percentiles, result parsing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bench.report import format_table, locomo_recall_at_k
from bench.scale import config_overrides, latency_summary, recall_at_k, synthetic_turns, top_k


def test_recall_at_k_counts_the_exact_top_k_found() -> None:
    scores = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.5}
    assert recall_at_k([1, 2, 3], [1, 2, 3], scores, 3) == 1.0
    assert recall_at_k([3, 1, 2], [1, 2, 3], scores, 3) == 1.0  # order within the top k does not matter
    assert recall_at_k([1, 2, 4], [1, 2, 3], scores, 3) == pytest.approx(2 / 3)
    assert recall_at_k([4, 5], [1, 2], scores, 2) == 0.0


def test_recall_at_k_counts_a_tie_with_the_kth_as_correct() -> None:
    # 3 and 4 score the same: either is a correct third neighbour.
    scores = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.7, 5: 0.1}
    assert recall_at_k([1, 2, 4], [1, 2, 3], scores, 3) == 1.0
    assert recall_at_k([1, 2, 4], [1, 2, 3], {**scores, 4: 0.7 - 1e-7}, 3) == 1.0  # float noise
    assert recall_at_k([1, 2, 5], [1, 2, 3], scores, 3) == pytest.approx(2 / 3)


def test_recall_at_k_with_fewer_candidates_than_k_or_repeats() -> None:
    scores = {1: 0.9, 2: 0.8}
    assert recall_at_k([1, 2], [1, 2], scores, 10) == 1.0  # only two exist
    assert recall_at_k([1, 1], [1, 2], scores, 2) == 0.5  # a repeated id counts once
    assert recall_at_k([], [], {}, 10) == 1.0
    assert recall_at_k([7], [1, 2], scores, 2) == 0.0  # an id with no known score is a miss


def test_top_k_is_the_exact_ranking() -> None:
    matrix = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]], dtype=np.float32)
    ids = np.array([10, 11, 12, 13])
    found, scores = top_k(matrix, ids, np.array([1, 0], dtype=np.float32), 3)
    assert found.tolist() == [10, 12, 11]
    assert scores.tolist() == pytest.approx([1.0, 0.6, 0.0])
    found, _ = top_k(matrix, ids, np.array([0, 1], dtype=np.float32), 10)
    assert found.tolist() == [11, 12, 10, 13]
    assert top_k(matrix[:0], ids[:0], np.array([1, 0], dtype=np.float32), 5)[0].tolist() == []


def test_latency_summary_percentiles() -> None:
    summary = latency_summary([float(v) for v in range(1, 101)])
    assert summary["p50"] == pytest.approx(50.5)
    assert summary["p95"] == pytest.approx(95.05)
    assert summary["mean"] == pytest.approx(50.5)
    assert summary["n"] == 100
    assert latency_summary([2.0])["p95"] == 2.0
    assert math.isnan(latency_summary([])["p50"])


def test_synthetic_turns_are_short_varied_and_seeded() -> None:
    turns = list(itertools.islice(synthetic_turns(seed=5), 2000))
    words = [len(t.split()) for t in turns]
    assert 18 <= sum(words) / len(words) <= 23
    assert min(words) >= 15 and max(words) <= 28
    assert len(set(turns)) > 1990
    assert list(itertools.islice(synthetic_turns(seed=5), 50)) == turns[:50]


def test_config_overrides_cast_like_the_defaults() -> None:
    assert config_overrides(["max_content_chars=100", "log_level=DEBUG"]) == {
        "max_content_chars": 100,
        "log_level": "DEBUG",
    }
    with pytest.raises(SystemExit):
        config_overrides(["no_such_field=1"])


def test_locomo_recall_at_k_reads_the_overall_of_a_split() -> None:
    data = {
        "strategies": {
            "bm25": {
                "splits": {
                    "all": {"overall": {"R@5": 0.5, "R@10": 0.6, "hit@5": 0.7, "MRR": 0.4, "n": 9}},
                    "held_out": {"overall": {"R@5": 0.4, "R@10": 0.5}},
                }
            },
            "flat": {"recall@5": 0.1, "recall_at_20": 0.3},
            "empty": {"splits": {}},
        }
    }
    assert locomo_recall_at_k(data) == {"bm25": {5: 0.5, 10: 0.6}, "flat": {5: 0.1, 20: 0.3}}
    assert locomo_recall_at_k(data, "held_out") == {"bm25": {5: 0.4, 10: 0.5}, "flat": {5: 0.1, 20: 0.3}}
    assert locomo_recall_at_k({"no": "strategies"}) == {}


def test_format_table_aligns_columns() -> None:
    text = format_table(["name", "ms"], [["vector", 1.234], ["numpy exact", 12345.0]])
    lines = text.splitlines()
    assert lines[0] == "name" + " " * 13 + "ms"
    assert lines[1] == "-" * 11 + "  " + "-" * 6
    assert lines[2] == "vector" + " " * 9 + "1.23"
    assert lines[3] == "numpy exact  12,345"
    assert len({len(line) for line in lines}) == 1
