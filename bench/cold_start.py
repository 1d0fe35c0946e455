"""Cold start over stdio, side by side with the reference `server-memory`: launch -> tools/list answered.

Run: `uv run python bench/cold_start.py [--runs 7] [--embedder local] [--out results.json]`.

Each run spawns a server with the official MCP client (the 2025 handshake, as Claude Desktop speaks it)
and times, from the spawn: the answer to tools/list, and for mcp-memory also the answer to the first
recall after one add_memory (which waits for the manager and the embedding model). The servers take
turns within each run, so a busy machine slows them alike (ratios hold, absolute times do not):

  mcp-memory          the installed console script on a fresh database
  sdk floor           a one-tool MCPServer of the same Python SDK: what any Python MCP server pays
  server-memory node  the reference knowledge-graph server (@modelcontextprotocol/server-memory), `node dist/index.js`
  server-memory npx   the same as its README launches it: `npx -y @modelcontextprotocol/server-memory`

The reference is installed once with npm into bench/.cache (npm registry needed the first time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

BENCH = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).parent / "mcp-memory"
REFERENCE = "@modelcontextprotocol/server-memory"
CACHE = BENCH / ".cache" / "server-memory"
SDK_FLOOR = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("floor")
@server.tool()
def echo(text: str) -> str:
    \"\"\"Echo.\"\"\"
    return text
server.run("stdio")
"""


def reference_script() -> Path:
    """The reference server's entry point, installed with npm on first use."""
    entry = CACHE / "node_modules" / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
    if not entry.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(CACHE), "--no-audit", "--no-fund", REFERENCE], check=True
        )
    return entry


async def time_tools_list(params: StdioServerParameters, recall: bool = False) -> dict[str, float]:
    started = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        await client.list_tools()
        times = {"tools_list_s": time.perf_counter() - started}
        if recall:
            await client.call_tool("create_group", {"group_id": "g", "user_ids": ["u"]})
            await client.call_tool("open_session", {"group_id": "g", "session_id": "s"})
            await client.call_tool(
                "add_memory", {"group_id": "g", "session_id": "s", "content": "hi", "producer": "u"}
            )
            await client.call_tool("recall", {"group_id": "g", "query": "hello"})
            times["first_recall_s"] = time.perf_counter() - started
    return times


def servers(tmp: Path, embedder: str, run: int) -> dict[str, tuple[StdioServerParameters, bool]]:
    floor = tmp / "floor.py"
    floor.write_text(SDK_FLOOR)
    graph = {"MEMORY_FILE_PATH": str(tmp / f"graph{run}.jsonl")}
    ours = ["--db", str(tmp / f"memory{run}.db"), "--embedder", embedder, "--log-level", "WARNING"]
    found: dict[str, tuple[StdioServerParameters, bool]] = {
        "mcp-memory": (StdioServerParameters(command=str(SCRIPT), args=ours), True),
        "sdk floor": (StdioServerParameters(command=sys.executable, args=[str(floor)]), False),
        "server-memory node": (
            StdioServerParameters(command="node", args=[str(reference_script())], env=graph),
            False,
        ),
    }
    if shutil.which("npx"):
        found["server-memory npx"] = (
            StdioServerParameters(command="npx", args=["-y", REFERENCE], env=graph),
            False,
        )
    return found


async def measure(runs: int, embedder: str) -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for run in range(runs):
            for name, (params, recall) in servers(Path(folder), embedder, run).items():
                results.setdefault(name, []).append(await time_tools_list(params, recall))
    return results


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    summary = {
        name: {f"{key}_median": statistics.median(r[key] for r in runs) for key in runs[0]}
        | {"tools_list_s_max": max(r["tools_list_s"] for r in runs)}
        for name, runs in results.items()
    }
    ours = summary["mcp-memory"]["tools_list_s_median"]
    for values in summary.values():
        values["mcp_memory_ratio"] = ours / values["tools_list_s_median"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--embedder", default="local", choices=("local", "hashing"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = anyio.run(measure, args.runs, args.embedder)
    summary = summarise(results)
    print(
        f"cold start over {args.runs} runs (launch -> tools/list answered), mcp-memory embedder {args.embedder}"
    )
    print(f"{'server':<22}{'median':>9}{'max':>9}{'mcp-memory / it':>18}")
    for name, values in summary.items():
        print(
            f"{name:<22}{values['tools_list_s_median']:>8.3f}s{values['tools_list_s_max']:>8.3f}s"
            f"{values['mcp_memory_ratio']:>17.2f}x"
        )
    recall = summary["mcp-memory"].get("first_recall_s_median")
    if recall is not None:
        print(f"mcp-memory's first recall (the model loaded in the background): {recall:.3f}s median")
    if args.out:
        args.out.write_text(
            json.dumps({"embedder": args.embedder, "runs": results, "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
