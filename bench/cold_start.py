"""Cold start of the stdio server: launch -> tools/list answered -> first recall answered.

Run: `uv run python bench/cold_start.py [--runs 5] [--embedder local] [--out results.json]`.
Each run launches the installed `mcp-memory` console script on a fresh database with the
official MCP client (the 2025 handshake, as Claude Desktop speaks it) and times, from
the moment the process is spawned: the answer to tools/list, and the answer to the first
recall after one add_memory (which waits for the embedding model to load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

SCRIPT = Path(sys.executable).parent / "mcp-memory"


async def one_run(embedder: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        params = StdioServerParameters(
            command=str(SCRIPT),
            args=["--db", str(Path(tmp) / "memory.db"), "--embedder", embedder, "--log-level", "WARNING"],
        )
        started = time.perf_counter()
        async with Client(params, mode="legacy") as client:
            await client.list_tools()
            listed = time.perf_counter() - started
            await client.call_tool("create_group", {"group_id": "g", "user_ids": ["u"]})
            await client.call_tool("open_session", {"group_id": "g", "session_id": "s"})
            await client.call_tool(
                "add_memory", {"group_id": "g", "session_id": "s", "content": "hi", "producer": "u"}
            )
            await client.call_tool("recall", {"group_id": "g", "query": "hello"})
            recalled = time.perf_counter() - started
    return {"tools_list_s": listed, "first_recall_s": recalled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--embedder", default="local", choices=("local", "hashing"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = [anyio.run(one_run, args.embedder) for _ in range(args.runs)]
    summary = {
        key: {"median": statistics.median(r[key] for r in runs), "max": max(r[key] for r in runs)}
        for key in ("tools_list_s", "first_recall_s")
    }
    print(f"cold start over {args.runs} runs, embedder {args.embedder}")
    print(f"{'measure':<28}{'median':>10}{'max':>10}")
    for key, values in summary.items():
        print(f"{key:<28}{values['median']:>9.3f}s{values['max']:>9.3f}s")
    if args.out:
        args.out.write_text(
            json.dumps({"embedder": args.embedder, "runs": runs, "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
