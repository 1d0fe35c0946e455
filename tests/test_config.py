"""Configuration: where the database lives, the environment, deep merging."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mcp_memory.config import Config, deep_merge, default_data_dir, effective_session_config
from mcp_memory.errors import ConfigurationError


def test_the_default_database_lives_in_the_users_data_directory_never_a_temp_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    path = Config.from_env({}).db_path
    assert path.name == "memory.db"
    assert not str(path).startswith(tempfile.gettempdir())
    assert "cache" not in str(path).lower()
    if sys.platform.startswith("linux"):
        assert path == Path.home() / ".local" / "share" / "mcp-memory" / "memory.db"


def test_xdg_data_home_is_honoured_on_linux(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert default_data_dir() == tmp_path / "mcp-memory"


def test_environment_variables_and_overrides_build_the_config(tmp_path: Path) -> None:
    env = {
        "MCP_MEMORY_DB": str(tmp_path / "x.db"),
        "MCP_MEMORY_EMBEDDER": "hashing",
        "MCP_MEMORY_MAX_LIFE_TIME_S": "5",
    }
    config = Config.from_env(env)
    assert (config.db_path, config.embedder, config.max_life_time_s) == (tmp_path / "x.db", "hashing", 5.0)
    assert Config.from_env(env, db_path=tmp_path / "cli.db").db_path == tmp_path / "cli.db"


def test_bad_environment_values_name_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="MCP_MEMORY_SESSION_CACHE_SIZE"):
        Config.from_env({"MCP_MEMORY_SESSION_CACHE_SIZE": "lots"})
    with pytest.raises(ConfigurationError, match="local, openai, hashing"):
        Config.from_env({"MCP_MEMORY_EMBEDDER": "magic"})
    with pytest.raises(ConfigurationError, match="MCP_MEMORY_EMBEDDING_MODEL"):
        Config.from_env({"MCP_MEMORY_EMBEDDER": "openai"})
    with pytest.raises(ConfigurationError, match="MCP_MEMORY_LOG_LEVEL"):
        Config.from_env({"MCP_MEMORY_LOG_LEVEL": "LOUD"})


@pytest.mark.slow
@pytest.mark.parametrize(
    "env",
    [{"MCP_MEMORY_EMBEDDER": "magic"}, {"MCP_MEMORY_EMBEDDER": "openai"}, {"MCP_MEMORY_LOG_LEVEL": "LOUD"}],
)
def test_a_bad_setting_stops_the_console_script_with_one_line_and_no_traceback(
    tmp_path: Path, env: dict[str, str]
) -> None:
    script = Path(sys.executable).parent / "mcp-memory"
    run = subprocess.run(
        [str(script), "--db", str(tmp_path / "m.db"), "stats"],
        capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", ""), **env},
    )  # fmt: skip
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("mcp-memory: "), run.stderr


def test_a_configuration_file_supplies_the_base_session_configuration(tmp_path: Path) -> None:
    path = tmp_path / "base.json"
    path.write_text('{"short_term": {"max_episodes": 5}}')
    config = Config.from_env({"MCP_MEMORY_CONFIG": str(path)})
    assert effective_session_config(config.base_configuration).short_term.max_episodes == 5
    path.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="JSON object"):
        Config.from_env({"MCP_MEMORY_CONFIG": str(path)})


def test_deep_merge_merges_nested_keys_and_the_override_wins() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": 1}
    assert deep_merge(base, {"a": {"y": 3, "z": 4}, "b": {"new": True}}) == {
        "a": {"x": 1, "y": 3, "z": 4},
        "b": {"new": True},
    }
    assert base == {"a": {"x": 1, "y": 2}, "b": 1}


def test_unknown_session_configuration_keys_are_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ConfigurationError, match="short_term.max_episodes"):
        effective_session_config({"short_term": {"max_epsiodes": 3}})


def test_a_postgresql_url_names_a_postgres_database_and_a_path_a_file(tmp_path: Path) -> None:
    url = "postgresql://memory:secret@db.internal:5432/memory"
    config = Config.from_env({"MCP_MEMORY_DB": url})
    assert (config.db_url, config.database) == (url, "postgresql://db.internal:5432/memory")  # no password
    assert Config.from_env({}, db_path="postgres://db/m").db_url == "postgres://db/m"
    on_file = Config.from_env({"MCP_MEMORY_DB": str(tmp_path / "m.db")})
    assert (on_file.db_url, on_file.db_path) == (None, tmp_path / "m.db")
