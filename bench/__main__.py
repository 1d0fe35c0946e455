"""Run every benchmark, then the report: ``uv run python -m bench`` from the repository root.

Runs, each in its own process and in this order: cold_start, embed_speed, ingest, scale and (when
bench/locomo.py is there) locomo, then bench/report.py, which prints the summary and draws the
charts. Results go to bench/results/<name>.json and bench/results/*.png.

  uv run python -m bench                   # everything, default sizes (about 6 minutes on 2 cores)
  uv run python -m bench --quick           # small sizes, results in bench/results/tmp/ (not committed)
  uv run python -m bench --only scale      # some of them (repeat --only / --skip)
  uv run python -m bench --max-size 1000000  # scale up to 1M memories (long)

LoCoMo needs its data set (see bench/locomo.py); when it fails the others still count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
QUICK_RESULTS = RESULTS / "tmp"

sys.path.insert(0, str(ROOT))

from bench.report import print_table, stamp  # noqa: E402


@dataclass
class Benchmark:
    name: str
    args: list[str]
    quick: list[str] = field(default_factory=list)
    stamp: bool = False  # the script writes no environment block: add one
    optional: bool = False  # a failure is reported but does not fail the run

    @property
    def script(self) -> Path:
        return BENCH / f"{self.name}.py"


def benchmarks(max_size: int | None) -> list[Benchmark]:
    scale = [] if max_size is None else ["--max-size", str(max_size)]
    found = [
        Benchmark("cold_start", [], ["--runs", "2"], stamp=True),
        Benchmark("embed_speed", [], ["--turns", "100", "--rounds", "2", "--queries", "20"], stamp=True),
        Benchmark("ingest", [], ["--scale", "0.1"]),
        Benchmark("scale", ["--profile", *scale], ["--max-size", "10000", "--queries", "50"]),
        Benchmark("locomo", [], ["--conversations", "0"], optional=True),
    ]
    return [b for b in found if b.script.is_file()]


def run_one(bench: Benchmark, out: Path, quick: bool) -> tuple[int, float]:
    """Run one benchmark script to completion, its output streaming through; returns code and seconds."""
    command = [
        sys.executable,
        str(bench.script),
        *bench.args,
        *(bench.quick if quick else []),
        "--out",
        str(out),
    ]
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    print(f"\n=== {bench.name}: {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    seconds = time.perf_counter() - started
    if code == 0 and bench.stamp and out.is_file():
        stamp(out)
    return code, seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, results in bench/results/tmp/")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME", help="leave these out")
    parser.add_argument("--max-size", type=int, default=None, help="largest scale size (default 100000)")
    args = parser.parse_args(argv)
    results = QUICK_RESULTS if args.quick else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    chosen = benchmarks(args.max_size)
    unknown = set(args.only + args.skip) - {b.name for b in chosen}
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; known: {[b.name for b in chosen]}")
    chosen = [b for b in chosen if (not args.only or b.name in args.only) and b.name not in args.skip]
    rows, failed = [], []
    started = time.perf_counter()
    for bench in chosen:
        code, seconds = run_one(bench, results / f"{bench.name}.json", args.quick)
        status = "ok" if code == 0 else f"failed ({code})" + (", optional" if bench.optional else "")
        rows.append([bench.name, status, round(seconds, 1)])
        if code != 0 and not bench.optional:
            failed.append(bench.name)
    print("\n=== report", flush=True)
    report = subprocess.run([sys.executable, str(BENCH / "report.py"), "--results", str(results)], cwd=ROOT)
    rows.append(["report", "ok" if report.returncode == 0 else f"failed ({report.returncode})", None])
    print_table(
        ["benchmark", "status", "seconds"], rows, f"bench: {time.perf_counter() - started:.0f} s in all"
    )
    return 1 if failed or report.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
