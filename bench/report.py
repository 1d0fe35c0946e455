"""Gather the benchmark results in bench/results/ into one summary and draw the charts.

Run with ``uv run python bench/report.py``. Reads every ``bench/results/*.json``, prints a summary of
each, and writes ``bench/results/latency.png`` (recall latency against memory count, from scale.json)
and ``bench/results/recall_at_k.png`` (recall@k per strategy, from locomo.json when it exists).

This module also defines the result format the other scripts write: ``write_result`` stamps each
file with the git commit, the date, the CPU count and the Python version (``environment``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
RECALL_KS = (5, 10, 20)
LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}


# -- the result format ------------------------------------------------------------------------


def git_commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files have uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Where and when a result was measured."""
    return {
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "threads": {name: os.environ.get(name, "") for name in THREAD_VARS},
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def write_result(name: str, data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Write ``path`` (default bench/results/<name>.json) with the environment first; returns the path."""
    path = RESULTS / f"{name}.json" if path is None else path
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "environment": environment(), **data}
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def stamp(path: Path) -> None:
    """Add the environment to a result file written by a script that does not (cold_start, embed_speed)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "environment" not in data:
        data = {"benchmark": path.stem, "environment": environment(), **data}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned plain text: the first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [value.rjust(width) for value, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    if title:
        print(f"\n{title}")
    print(format_table(headers, rows))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- reading results --------------------------------------------------------------------------


def load_results(results_dir: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Every JSON result in the folder, by file stem; unreadable files are reported and skipped."""
    results: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"skipping {path.name}: {exc}")
            continue
        if isinstance(data, dict):
            results[path.stem] = data
    return results


_RECALL_KEY = re.compile(r"^(?:r|recall)\s*(?:@|_at_)\s*(\d+)$", re.IGNORECASE)


def _recall_values(block: Any) -> dict[int, float]:
    """{k: value} from the keys of a mapping spelled like "R@5", "recall@10" or "recall_at_20"."""
    if not isinstance(block, Mapping):
        return {}
    found: dict[int, float] = {}
    for key, value in block.items():
        match = _RECALL_KEY.match(str(key).strip())
        if match and isinstance(value, int | float) and not isinstance(value, bool):
            found[int(match.group(1))] = float(value)
    return found


def locomo_recall_at_k(data: Mapping[str, Any], split: str = "all") -> dict[str, dict[int, float]]:
    """Recall@k per strategy from bench/locomo.py's result: ``strategies.<name>.splits.<split>.overall``.

    A strategy block that holds the numbers directly (``{"strategies": {"bm25": {"R@5": 0.5}}}``)
    is read as well; keys may be spelled "R@5", "recall@5" or "recall_at_5".
    """
    found: dict[str, dict[int, float]] = {}
    strategies = data.get("strategies")
    if not isinstance(strategies, Mapping):
        return found
    for name, block in strategies.items():
        if not isinstance(block, Mapping):
            continue
        splits = block.get("splits")
        if isinstance(splits, Mapping):
            chosen = splits.get(split)
            overall = chosen.get("overall") if isinstance(chosen, Mapping) else None
            values = _recall_values(overall)
        else:
            values = _recall_values(block)
        if values:
            found[str(name)] = values
    return found


# -- charts -----------------------------------------------------------------------------------


def draw_latency(scale: Mapping[str, Any], out: Path) -> Path:
    """Latency against memory count (log-log), p50 solid and p95 dashed: our vector search, numpy brute
    force over the same vectors, sqlite-vec alone when measured, and recall end to end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = scale["sizes"]
    sizes = [row["size"] for row in rows]
    series = [
        ("vector search (ours)", lambda r: r.get("vector_search_ms"), "tab:blue"),
        ("numpy exact, brute force", lambda r: r.get("numpy_exact_ms"), "tab:gray"),
        ("sqlite-vec alone", lambda r: (r.get("sqlite_vec") or {}).get("vector_search_ms"), "tab:green"),
        ("keyword search (ours)", lambda r: r.get("keyword_search_ms"), "tab:purple"),
        ("FTS5 bm25 alone", lambda r: r.get("fts5_keyword_ms"), "tab:brown"),
        ("manager.recall end to end", lambda r: r.get("recall_ms"), "tab:orange"),
    ]
    fig, ax = plt.subplots(figsize=(9, 5), dpi=120)
    for label, get, color in series:
        points = [(row["size"], get(row)) for row in rows if get(row)]
        if not points:
            continue
        xs = [x for x, _ in points]
        ax.plot(xs, [v["p50"] for _, v in points], "o-", color=color, label=f"{label}, p50")
        ax.plot(xs, [v["p95"] for _, v in points], "s--", color=color, alpha=0.55, label=f"{label}, p95")
    targets: dict[int, list[Mapping[str, Any]]] = {}
    for goal in scale.get("goals", []):
        if "target_ms" in goal:
            targets.setdefault(goal["size"], []).append(goal)
    for size, goals in targets.items():
        target = goals[0]["target_ms"]
        ax.scatter([size], [target], marker="_", s=500, linewidths=2.5, zorder=5, color="tab:red")
        verdicts = ", ".join(
            f"{g.get('what', 'vector search')} {'met' if g.get('met') else 'NOT met'}" for g in goals
        )
        ax.annotate(
            f"goal: p50 <= {target:g} ms ({verdicts})", (size, target), textcoords="offset points",
            xytext=(0, -9), ha="right", va="top", fontsize=7, color="tab:red", bbox=LABEL_BOX,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xticks(sizes, [_count_label(s) for s in sizes])
    ax.set_xlim(min(sizes) / 1.6, max(sizes) * 1.6)
    ax.set_xlabel("memories in the group (log)")
    ax.set_ylabel("milliseconds per query (log)")
    origin = _origin(scale)
    ax.set_title(
        f"Recall latency at scale, query embedding excluded ({scale.get('parameters', {}).get('queries', '?')} "
        f"queries per point)\n{origin['cpus']} CPUs, commit {_commit_label(origin['commit'])}",
        fontsize=10,
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _commit_label(commit: str) -> str:
    dirty = commit.endswith("-dirty")
    return commit.removesuffix("-dirty")[:10] + (" + uncommitted changes" if dirty else "")


def draw_recall_at_k(locomo: Mapping[str, Any], out: Path) -> Path | None:
    """Recall@k against k, one colour per strategy: all conversations solid, the held-out split dashed."""
    everything = locomo_recall_at_k(locomo, "all")
    if not everything:
        return None
    held_out = locomo_recall_at_k(locomo, "held_out")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (name, values) in enumerate(everything.items()):
        color = colors[n % len(colors)]
        ks = [k for k in RECALL_KS if k in values] or sorted(values)
        ax.plot(ks, [values[k] for k in ks], "o-", color=color, label=f"{name}, all conversations")
        shift = (n - (len(everything) - 1) / 2) * 24  # side by side, so equal values stay readable
        for k in ks:
            ax.annotate(f"{values[k]:.2f}", (k, values[k]), textcoords="offset points", xytext=(shift, 9),
                        ha="center", fontsize=7, color=color, bbox=LABEL_BOX)  # fmt: skip
        other = held_out.get(name, {})
        other_ks = [k for k in ks if k in other]
        if other_ks and other != values:
            ax.plot(other_ks, [other[k] for k in other_ks], "s--", color=color, alpha=0.55,
                    label=f"{name}, held-out split")  # fmt: skip
    all_ks = sorted({k for values in everything.values() for k in values})
    ax.set_xticks(all_ks)
    ax.set_xlim(all_ks[0] - 2, all_ks[-1] + 2)
    ax.set_ylim(0, 1.0)
    ax.set_xlabel("k (memories recalled)")
    ax.set_ylabel("recall@k (turn level)")
    env = _origin(locomo)
    ax.set_title(
        f"LoCoMo retrieval: recall@k by strategy\nembedder {locomo.get('embedder', '?')}, "
        f"commit {_commit_label(env['commit'])}",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _origin(data: Mapping[str, Any]) -> dict[str, Any]:
    """Commit, date and CPU count of a result, from our environment block or locomo's own fields."""
    env = data.get("environment") or {}
    machine = data.get("machine") or {}
    commit = env.get("git_commit") or data.get("git_commit") or "?"
    if data.get("git_uncommitted_files") and not str(commit).endswith("-dirty"):
        commit = f"{commit}-dirty"
    return {
        "commit": str(commit),
        "date": env.get("date") or data.get("date") or "?",
        "cpus": env.get("cpu_count") or machine.get("cpu_count"),
    }


def _count_label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# -- summary ----------------------------------------------------------------------------------


def summarize(results: Mapping[str, Mapping[str, Any]], folder: Path = RESULTS) -> None:
    """Print where each result came from, then the headline numbers of the known benchmarks."""
    rows = []
    for name, data in results.items():
        origin = _origin(data)
        rows.append([name, _commit_label(origin["commit"]), origin["date"], origin["cpus"]])
    print_table(["result", "commit", "date", "cpus"], rows, f"results in {_shown(folder)}")
    if "scale" in results:
        scale = results["scale"]
        print_table(
            ["memories", "vector p50 ms", "vector p95 ms", "numpy p50 ms", "ratio p50", "recall@10",
             "BM25 p50 ms", "FTS5 bm25 p50 ms", "recall p50 ms", "recall p95 ms"],
            [
                [row["size"], row["vector_search_ms"]["p50"], row["vector_search_ms"]["p95"],
                 row["numpy_exact_ms"]["p50"], row.get("ratio_p50"), row.get("recall_at_10"),
                 row["keyword_search_ms"]["p50"], (row.get("fts5_keyword_ms") or {}).get("p50"),
                 row["recall_ms"]["p50"], row["recall_ms"]["p95"]]
                for row in scale.get("sizes", [])
            ],
            "scale: recall latency (query embedding excluded)",
        )  # fmt: skip
    if "ingest" in results:
        print_table(
            ["embedding", "per call", "memories", "memories/s", "call p50 ms", "call p95 ms"],
            [
                [r["embedding"], r["batch"], r["memories"], r["memories_per_s"], r["call_ms"]["p50"],
                 r["call_ms"]["p95"]]
                for r in results["ingest"].get("runs", [])
            ],
            "ingest: add_memories throughput",
        )  # fmt: skip
    if "cold_start" in results and isinstance(results["cold_start"].get("summary"), Mapping):
        summary = results["cold_start"]["summary"]
        print_table(
            ["launch -> tools/list (stdio)", "median s", "max s", "mcp-memory / it"],
            [
                [key, v.get("tools_list_s_median"), v.get("tools_list_s_max"), v.get("mcp_memory_ratio")]
                for key, v in summary.items()
                if isinstance(v, Mapping)
            ],
            f"cold_start: mcp-memory embedder {results['cold_start'].get('embedder', '?')}",
        )
    if "embed_speed" in results:
        speed = results["embed_speed"]
        keys = ("load_s", "query_ms_p50", "query_ms_p95", "batch_turns_per_s", "mean_tokens_per_turn")
        print_table(["embed_speed (MiniLM)", "value"], [[k, speed.get(k)] for k in keys if k in speed])
    if "locomo" in results:
        strategies = locomo_recall_at_k(results["locomo"])
        if strategies:
            ks = sorted({k for values in strategies.values() for k in values})
            print_table(
                ["strategy", *(f"R@{k}" for k in ks)],
                [[name, *(values.get(k) for k in ks)] for name, values in strategies.items()],
                f"locomo: recall@k, all conversations (embedder {results['locomo'].get('embedder', '?')})",
            )
    goals = [(name, g) for name, data in results.items() for g in data.get("goals", [])]
    if goals:
        print_table(
            ["benchmark", "goal", "measured", "met"],
            [[name, g["goal"], g["measured"], g["met"]] for name, g in goals],
            "goals",
        )


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of JSON results and charts")
    args = parser.parse_args(argv)
    results = load_results(args.results)
    if not results:
        print(f"no results in {args.results}; run `uv run python -m bench` first")
        return 1
    summarize(results, args.results)
    print()
    if results.get("scale", {}).get("sizes"):
        print(f"wrote {_shown(draw_latency(results['scale'], args.results / 'latency.png'))}")
    else:
        print("no scale.json: skipping the latency chart (run bench/scale.py)")
    if "locomo" not in results:
        print("no locomo.json: skipping the recall@k chart (run bench/locomo.py)")
    elif (out := draw_recall_at_k(results["locomo"], args.results / "recall_at_k.png")) is not None:
        print(f"wrote {_shown(out)}")
    else:
        print(
            "locomo.json holds no recall@k per strategy (strategies.<name>.splits.all.overall.R@k): no chart"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
