"""Without the MiniLM weights the server still runs, on the hashing embedder, and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from mcp_memory.config import Config
from mcp_memory.server import build_server
from tests.helpers import call

pytestmark = pytest.mark.anyio


async def test_missing_weights_fall_back_to_hashing_with_a_warning_in_the_stats(tmp_path: Path) -> None:
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    config = Config(db_path=tmp_path / "m.db", embedder="local", model_dir=empty)
    async with Client(build_server(config)) as client:
        await call(client, "create_group", group_id="g", user_ids=["u"])
        await call(client, "open_session", group_id="g", session_id="s")
        await call(
            client, "add_memory", group_id="g", session_id="s", content="the red bicycle", producer="u"
        )
        hits = (await call(client, "recall", group_id="g", query="bicycle"))["hits"]
        stats = json.loads((await client.read_resource("memory://stats")).contents[0].text)
    assert [h["content"] for h in hits] == ["the red bicycle"]
    assert stats["embedder"] == "hashing-384"
    assert "MiniLM" in stats["embedder_warning"] and "hashing" in stats["embedder_warning"]


def test_the_model_folder_can_be_set_from_the_environment(tmp_path: Path) -> None:
    assert Config.from_env({"MCP_MEMORY_MODEL_DIR": str(tmp_path)}).model_dir == tmp_path
