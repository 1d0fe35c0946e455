"""bench/groups.py end to end at a tiny size: every figure it reports is there and plausible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.groups import main

pytestmark = pytest.mark.slow


def test_the_many_groups_benchmark_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "groups.json"
    main(["--groups", "4", "--size", "12", "--sample", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert (result["groups"], result["memories"]) == (4, 48)
    for case in ("many_groups", "one_group"):
        measured = result[case]
        for figure in ("first_recall_untouched_group_ms", "warm_recall_ms", "first_recall_after_batch_ms"):
            assert 0 < measured[figure]["p50"] < 10_000, (case, figure)
        assert measured["rss_mb"]["after_touching_all"] > 20
        assert measured["copies_mb"]["keywords"] is not None and measured["copies_mb"]["vectors"] is not None
