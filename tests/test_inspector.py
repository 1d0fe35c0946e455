"""The MCP Inspector (the reference client's command line, from npm) lists every tool of the console script.

Needs Node (npx) and npm registry access on the first run; without npx the test fails, it does not skip:
every CI machine of this project has Node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TOOLS

pytestmark = pytest.mark.slow

# Pinned: 0.15.0 is the last release that runs on Node 20 (0.16 and later need Node >= 22.7.5), and the
# same version behaves the same on every machine.
INSPECTOR = "@modelcontextprotocol/inspector@0.15.0"
INSPECTOR_TIMEOUT_S = 300  # the first run downloads the package (about 20 s here); later runs take 2 s


def test_the_mcp_inspector_cli_lists_every_tool_of_the_console_script(tmp_path: Path) -> None:
    npx = shutil.which("npx")
    assert npx is not None, "npx is not installed: install Node.js 20 or later to run the MCP Inspector check"
    script = Path(sys.executable).parent / ("mcp-memory.exe" if sys.platform == "win32" else "mcp-memory")
    assert script.exists(), f"the console script is not installed at {script}; run `uv sync`"
    db = tmp_path / "memory.db"
    env = {**os.environ, "CI": "true", "npm_config_yes": "true", "npm_config_update_notifier": "false"}
    env.pop("MCP_MEMORY_DB", None)
    # Default embedder (local MiniLM): the Inspector times out if the handshake waits for a model.
    env.pop("MCP_MEMORY_EMBEDDER", None)
    completed = subprocess.run(
        [npx, "-y", INSPECTOR, "--cli", str(script), "--db", str(db), "--method", "tools/list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=INSPECTOR_TIMEOUT_S,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    listed = json.loads(completed.stdout)
    assert {tool["name"] for tool in listed["tools"]} == TOOLS
    for tool in listed["tools"]:
        assert tool["description"].strip(), tool["name"]
        assert tool["inputSchema"]["type"] == "object", tool["name"]
