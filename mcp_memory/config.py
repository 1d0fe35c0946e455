"""One frozen `Config`, built once from the command line and the environment."""

from __future__ import annotations

import copy
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_memory.errors import ConfigurationError

APP_DIR_NAME = "mcp-memory"
DB_FILE_NAME = "memory.db"
MAX_LIFE_TIME_S = 600.0
SESSION_CACHE_SIZE = 100
MAX_CONTENT_CHARS = 32_000
VECTOR_CACHE_MB = 1024
KEYWORD_CACHE_MB = 512
MAX_LIGHTWEIGHT_PER_SESSION = 3
AUTO_TRIGGER_THRESHOLD = 20
TASK_TTL_S = 7 * 24 * 3600.0
IMPORTANCE_DECAY_PER_DAY = 0.99
MAINTENANCE_INTERVAL_S = 3600.0
ROLLING_SUMMARY_MAX_TOKENS = 500
ROLLING_SUMMARY_INPUT_TOKENS = 8_000
EMBEDDER_KINDS = ("local", "openai", "hashing")
DEFAULT_MIN_SIMILARITY = 0.2  # below it a meaning-only match is noise (bench/similarity.py; README "Recall")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ShortTermConfig(BaseModel):
    """The session's window of recent episodes."""

    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool = True
    max_episodes: int = Field(20, ge=1, le=1000)
    max_tokens: int = Field(4000, ge=1, le=1_000_000)


class LongTermConfig(BaseModel):
    """Whether the session's episodes are vector-indexed for recall by meaning, and how similar a memory found
    by meaning alone must be to the query to be returned (cosine similarity; 0 keeps any that is not opposite)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    enabled: bool = True
    min_similarity: float = Field(DEFAULT_MIN_SIMILARITY, ge=-1, le=1)


class SessionConfig(BaseModel):
    """A session's effective configuration: defaults, then group base, then session overrides."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    short_term: ShortTermConfig = ShortTermConfig()
    long_term: LongTermConfig = LongTermConfig()


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` over `base`: nested mappings merge key by key, anything else is replaced."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def effective_session_config(*layers: Mapping[str, Any] | None) -> SessionConfig:
    """Deep-merge the layers in order (later wins) and validate the result."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer or {})
    try:
        return SessionConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(
            f"invalid session configuration ({problems}); valid keys are short_term.enabled, "
            "short_term.max_episodes, short_term.max_tokens, long_term.enabled and long_term.min_similarity"
        ) from None


def default_data_dir() -> Path:
    """The user's data directory for this app: XDG on Linux, Application Support on macOS, AppData on Windows."""
    home = Path.home()
    if sys.platform == "win32":
        root = os.environ.get("LOCALAPPDATA") or os.environ.get("APPDATA") or str(home / "AppData" / "Local")
        return Path(root) / APP_DIR_NAME
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / APP_DIR_NAME
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share") / APP_DIR_NAME


@dataclass(frozen=True)
class Config:
    """Everything the server needs to run, decided once at start."""

    db_path: Path = field(default_factory=lambda: default_data_dir() / DB_FILE_NAME)
    db_url: str | None = field(default=None, repr=False)  # a PostgreSQL database instead of the file
    embedder: str = "local"
    embedding_base_url: str | None = None
    embedding_api_key: str | None = None
    embedding_model: str | None = None
    embedding_dimension: int | None = None
    model_dir: Path | None = None
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_model: str | None = None
    max_content_chars: int = MAX_CONTENT_CHARS
    max_life_time_s: float = MAX_LIFE_TIME_S
    session_cache_size: int = SESSION_CACHE_SIZE
    vector_cache_mb: int = VECTOR_CACHE_MB
    keyword_cache_mb: int = KEYWORD_CACHE_MB
    max_lightweight_per_session: int = MAX_LIGHTWEIGHT_PER_SESSION
    auto_trigger_threshold: int = AUTO_TRIGGER_THRESHOLD
    task_ttl_s: float = TASK_TTL_S
    importance_decay_per_day: float = IMPORTANCE_DECAY_PER_DAY
    maintenance_interval_s: float = MAINTENANCE_INTERVAL_S
    maintenance_every_inserts: int = 0
    rolling_summary_max_tokens: int = ROLLING_SUMMARY_MAX_TOKENS
    rolling_summary_input_tokens: int = ROLLING_SUMMARY_INPUT_TOKENS
    base_configuration: Mapping[str, Any] = field(default_factory=dict)
    log_level: str = "INFO"

    @property
    def database(self) -> str:
        """Where the memory is, as logs name it (a URL without its password, or the file)."""
        if self.db_url is None:
            return str(self.db_path)
        scheme, _, rest = self.db_url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"

    def __post_init__(self) -> None:
        if self.embedder not in EMBEDDER_KINDS:
            raise ConfigurationError(
                f"unknown embedder {self.embedder!r}; set MCP_MEMORY_EMBEDDER to one of {', '.join(EMBEDDER_KINDS)}"
            )
        if self.embedder == "openai" and not self.embedding_model:
            raise ConfigurationError(
                "the openai embedder needs a model name: set MCP_MEMORY_EMBEDDING_MODEL (e.g. "
                "text-embedding-3-small, or nomic-embed-text for Ollama)"
            )
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigurationError(
                f"log level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}; set --log-level or "
                "MCP_MEMORY_LOG_LEVEL to one of them"
            )
        if self.max_content_chars < 1 or self.session_cache_size < 1 or self.max_life_time_s < 0:
            raise ConfigurationError(
                "max_content_chars and session_cache_size must be at least 1 and max_life_time_s at least 0"
            )
        if self.max_lightweight_per_session < 0 or self.auto_trigger_threshold < 0:
            raise ConfigurationError(
                "MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION and MEMORIA_AUTO_TRIGGER_THRESHOLD must be 0 or more "
                "(0 turns lightweight summaries, or the automatic trigger, off)"
            )
        if self.task_ttl_s <= 0:
            raise ConfigurationError("MCP_MEMORY_TASK_TTL_S must be more than 0 seconds")
        if not 0 < self.importance_decay_per_day <= 1:
            raise ConfigurationError(
                "MCP_MEMORY_IMPORTANCE_DECAY_PER_DAY must be more than 0 and at most 1 (1 turns decay off)"
            )
        if self.maintenance_every_inserts < 0:
            raise ConfigurationError(
                "MCP_MEMORY_MAINTENANCE_EVERY_INSERTS must be 0 or more (0: only on the interval and on demand)"
            )
        if not self.maintenance_interval_s >= 0:
            raise ConfigurationError(
                "MCP_MEMORY_MAINTENANCE_INTERVAL_S must be 0 or more seconds (0 turns scheduled maintenance off)"
            )
        if not 1 <= self.rolling_summary_max_tokens < self.rolling_summary_input_tokens:
            raise ConfigurationError(
                "MCP_MEMORY_ROLLING_SUMMARY_MAX_TOKENS must be at least 1 and less than "
                "MCP_MEMORY_ROLLING_SUMMARY_INPUT_TOKENS (the most one summarisation prompt may hold)"
            )
        effective_session_config(self.base_configuration)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Build a Config from `MCP_MEMORY_*` variables; keyword overrides (from the CLI) win."""
        env = os.environ if env is None else env
        values = env_values(env, _ENV_VARS)
        if "llm_api_key" not in values and env.get("MEMORIA_LLM_API_KEY"):
            values["llm_api_key"] = env["MEMORIA_LLM_API_KEY"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        database = values.pop("db_path", None)
        if database is not None:
            values.update(database_location(str(database)))
        if "base_configuration" not in values and env.get("MCP_MEMORY_CONFIG"):
            values["base_configuration"] = load_configuration_file(Path(env["MCP_MEMORY_CONFIG"]))
        return cls(**values)


_ENV_VARS: dict[str, tuple[str, type]] = {
    "db_path": ("MCP_MEMORY_DB", str),
    "embedder": ("MCP_MEMORY_EMBEDDER", str),
    "embedding_base_url": ("MCP_MEMORY_EMBEDDING_BASE_URL", str),
    "embedding_api_key": ("MCP_MEMORY_EMBEDDING_API_KEY", str),
    "embedding_model": ("MCP_MEMORY_EMBEDDING_MODEL", str),
    "embedding_dimension": ("MCP_MEMORY_EMBEDDING_DIMENSION", int),
    "model_dir": ("MCP_MEMORY_MODEL_DIR", Path),
    "llm_base_url": ("LLM_BASE_URL", str),
    "llm_api_key": ("LLM_API_KEY", str),
    "llm_model": ("LLM_MODEL", str),
    "max_content_chars": ("MCP_MEMORY_MAX_CONTENT_CHARS", int),
    "max_life_time_s": ("MCP_MEMORY_MAX_LIFE_TIME_S", float),
    "session_cache_size": ("MCP_MEMORY_SESSION_CACHE_SIZE", int),
    "vector_cache_mb": ("MCP_MEMORY_VECTOR_CACHE_MB", int),
    "keyword_cache_mb": ("MCP_MEMORY_KEYWORD_CACHE_MB", int),
    "max_lightweight_per_session": ("MEMORIA_MAX_LIGHTWEIGHT_PER_SESSION", int),
    "auto_trigger_threshold": ("MEMORIA_AUTO_TRIGGER_THRESHOLD", int),
    "task_ttl_s": ("MCP_MEMORY_TASK_TTL_S", float),
    "importance_decay_per_day": ("MCP_MEMORY_IMPORTANCE_DECAY_PER_DAY", float),
    "maintenance_interval_s": ("MCP_MEMORY_MAINTENANCE_INTERVAL_S", float),
    "maintenance_every_inserts": ("MCP_MEMORY_MAINTENANCE_EVERY_INSERTS", int),
    "rolling_summary_max_tokens": ("MCP_MEMORY_ROLLING_SUMMARY_MAX_TOKENS", int),
    "rolling_summary_input_tokens": ("MCP_MEMORY_ROLLING_SUMMARY_INPUT_TOKENS", int),
    "log_level": ("MCP_MEMORY_LOG_LEVEL", str),
}


POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def database_location(value: str) -> dict[str, Any]:
    """`--db` or MCP_MEMORY_DB as a Config field: a PostgreSQL URL, or a SQLite file path."""
    if value.startswith(POSTGRES_SCHEMES):
        return {"db_url": value}
    return {"db_path": Path(value).expanduser()}


def env_values(env: Mapping[str, str], variables: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """The fields whose variable is set (and not empty), each read as its type: {field: (variable, type)}."""
    return {
        name: env_value(var, raw, cast)
        for name, (var, cast) in variables.items()
        if (raw := env.get(var)) not in (None, "")
    }


def listed(value: str) -> tuple[str, ...]:
    """A comma-separated list, without blanks."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def env_value(var: str, raw: str, cast: Any) -> Any:
    """One variable's value as `cast`: a type, "flag" (1/true/yes or 0/false/no) or "list" (comma-separated)."""
    if cast == "flag":
        if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ConfigurationError(f"{var}={raw!r}: use 1 or 0")
        return raw.lower() in ("1", "true", "yes")
    if cast == "list":
        return listed(raw)
    try:
        return Path(raw).expanduser() if cast is Path else cast(raw)
    except ValueError:
        raise ConfigurationError(f"{var}={raw!r} is not a valid {cast.__name__}") from None


def load_configuration_file(path: Path) -> dict[str, Any]:
    """Read the base session configuration from a JSON file."""
    try:
        data = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"configuration file {path} must hold a JSON object")
    return data
