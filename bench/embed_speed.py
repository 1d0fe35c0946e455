"""Time the local MiniLM embedder: model load, single-query latency and batch throughput.

Run with ``uv run python bench/embed_speed.py [--turns 500] [--out results.json]``. Thread counts are
inherited from the environment (OMP_NUM_THREADS for onnxruntime, OPENBLAS_NUM_THREADS for numpy; 1 when
unset, as the server sets them) so settings can be compared; ``--contend`` keeps one CPU busy with a
spinning subprocess during the measurements, as a busy laptop would. ``--float32-source DIR`` (a folder
with all-MiniLM-L6-v2's model.safetensors and tokenizer.json) also times the float32 numpy implementation
the server ran before the int8 graph (tools/minilm_numpy.py), in the same run, and reports the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as the server does
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcp_memory.llm.embeddings import Embedder, MiniLMEmbedder  # noqa: E402

SUBJECTS = ["I", "we", "my manager", "the team", "our client", "you", "the new intern", "my sister"]
VERBS = ["need to", "decided to", "want to", "forgot to", "promised to", "will try to", "should"]
ACTIONS = [
    "move the deploy to Friday",
    "rewrite the billing service in Go",
    "book flights to Lisbon for the conference",
    "review the pull request about caching",
    "switch the database from Postgres to SQLite",
    "prepare slides for the quarterly planning meeting",
    "fix the flaky integration test on CI",
    "call the dentist about the appointment",
]
TAILS = [
    "because the staging cluster keeps timing out",
    "before the end of the sprint",
    "so that the numbers are ready for the board",
    "after we talk to the security team",
    "unless the budget gets approved this week",
    "and let everyone know in the channel",
]
QUERIES = ["when is the deploy?", "what did we decide about the database", "flights to Lisbon"]
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def synthetic_turns(count: int, seed: int = 7) -> list[str]:
    """Deterministic short conversational turns of roughly 15-25 words."""
    rng = random.Random(seed)
    turns = []
    for _ in range(count):
        parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(ACTIONS), rng.choice(TAILS)]
        if rng.random() < 0.5:
            parts.append("— " + rng.choice(TAILS))
        turns.append(" ".join(parts) + ".")
    return turns


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def time_load(embedder: Any) -> float:
    """Seconds to load tokenizer and weights."""
    start = time.perf_counter()
    embedder.load()
    return time.perf_counter() - start


def time_queries(embedder: Embedder, repeats: int) -> list[float]:
    """Milliseconds per single-text embed call, after one warm-up."""
    embedder.embed([QUERIES[0]])
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        embedder.embed([QUERIES[i % len(QUERIES)]])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def time_batch(embedder: Embedder, turns: list[str], rounds: int) -> float:
    """Best turns/second over a few rounds of embedding all turns in one call."""
    embedder.embed(turns[:64])
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.embed(turns)
        best = min(best, time.perf_counter() - start)
    return len(turns) / best


def start_spinner() -> subprocess.Popen[bytes]:
    """A subprocess that keeps one CPU core busy until terminated."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run every measurement (optionally next to a spinning process) and return the results."""
    spinner = start_spinner() if args.contend else None
    try:
        return measure(args)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()


def time_embedder(make: Callable[[], Any], turns: list[str], args: argparse.Namespace) -> dict[str, object]:
    """Load time (building and loading the embedder), single-query latency and batch throughput."""
    start = time.perf_counter()
    embedder = make()
    if hasattr(embedder, "load"):
        embedder.load()
    load_s = time.perf_counter() - start
    latencies = time_queries(embedder, args.queries)
    tokens = [len(ids) for ids in embedder.tokenize(turns)]
    return {
        "load_s": round(load_s, 3),
        "query_ms_p50": round(statistics.median(latencies), 2),
        "query_ms_p95": round(percentile(latencies, 95), 2),
        "batch_turns_per_s": round(time_batch(embedder, turns, args.rounds), 1),
        "mean_tokens_per_turn": round(statistics.mean(tokens), 1),
    }


def measure(args: argparse.Namespace) -> dict[str, object]:
    """The shipped embedder's figures, and the float32 numpy reference's beside them when asked."""
    turns = synthetic_turns(args.turns)
    results: dict[str, object] = {"embedder": "all-MiniLM-L6-v2, int8 ONNX (onnxruntime)"}
    results.update(time_embedder(lambda: MiniLMEmbedder(batch_size=args.batch_size), turns, args))
    if args.float32_source is not None:
        sys.path.insert(0, str(ROOT / "tools"))
        from minilm_numpy import MiniLMNumpy

        reference = time_embedder(
            lambda: MiniLMNumpy(args.float32_source, batch_size=args.batch_size), turns, args
        )
        results["float32_numpy"] = reference
        results["speedup_vs_float32_numpy"] = {
            "batch_turns_per_s": round(
                float(results["batch_turns_per_s"]) / float(reference["batch_turns_per_s"]), 2
            ),  # type: ignore[arg-type]
            "query_ms_p50": round(float(results["query_ms_p50"]) / float(reference["query_ms_p50"]), 2),  # type: ignore[arg-type]
        }
    results.update(
        {
            "turns": len(turns),
            "mean_words_per_turn": round(statistics.mean(len(t.split()) for t in turns), 1),
            "batch_size": args.batch_size,
            "contended": args.contend,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "threads": {name: os.environ.get(name, "") for name in THREAD_VARS},
        }
    )
    return results


def print_table(results: dict[str, object]) -> None:
    """Print the results as a two-column table."""
    for key, value in results.items():
        print(f"{key:<22} {value}")


def main() -> None:
    """Parse arguments, run the benchmark, print and optionally save the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="batch rounds; the best one is reported")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--contend", action="store_true", help="keep one CPU busy while measuring")
    parser.add_argument(
        "--float32-source", type=Path, default=None, help="also time the float32 numpy model from this folder"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON to this path")
    args = parser.parse_args()
    results = run(args)
    print_table(results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
