"""Text embedders: all-MiniLM-L6-v2 (shipped, see llm/minilm.py), a hashing fallback, and OpenAI-compatible endpoints.

Every embedder returns float32 rows of unit length (an all-zero row only for empty text) and is safe to
call from several worker threads at once. Heavy imports (onnxruntime, tokenizers, openai) happen on first use.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mcp_memory.errors import EmbeddingError
from mcp_memory.llm.api_errors import api_error_text
from mcp_memory.llm.minilm import (
    MINILM_DIMENSION,
    MINILM_NAME,
    MiniLMEmbedder,
    default_minilm_dir,
    missing_minilm_files,
)

logger = logging.getLogger("mcp_memory.llm.embeddings")

__all__ = [
    "EMBEDDER_KINDS",
    "Embedder",
    "EmbeddingError",
    "MINILM_DIMENSION",
    "MINILM_NAME",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "default_minilm_dir",
    "l2_normalize",
    "make_embedder",
    "missing_minilm_files",
]
EMBEDDER_KINDS = ("local", "openai", "hashing")


@runtime_checkable
class Embedder(Protocol):
    """What the store and manager need from an embedding backend."""

    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length; all-zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.float32(1e-12))


# --------------------------------------------------------------------------------------------------
# Hashing embedder
# --------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+", re.UNICODE)
_STOPWORD_TEXT = """
a an and are as at be but by do does for from has have i if in into is it its me my no not of on or so
that the their them then there these they this to was we were what when which who will with you your
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_SUFFIXES = ("ingly", "edly", "ings", "ing", "ies", "ied", "es", "ed", "ly", "s")


def _stem(word: str) -> str:
    """Crude suffix stripping so that run, runs and running share a feature."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                return stem + "y"
            if len(stem) > 3 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
                stem = stem[:-1]
            return stem
    return word


def _hash_features(text: str) -> Counter[str]:
    """Counts of stemmed content words (``w:``) and their character trigrams (``c:``)."""
    words = _WORD_RE.findall(text.lower())
    content = [w for w in words if w not in _STOPWORDS] or words
    features: Counter[str] = Counter()
    for word in content:
        stem = _stem(word)
        features["w:" + stem] += 1
        padded = f"<{stem}>"
        features.update("c:" + padded[i : i + 3] for i in range(len(padded) - 2))
    return features


@lru_cache(maxsize=65536)
def _bucket(feature: str, dimension: int) -> tuple[int, float]:
    """Stable (bucket, sign) for a feature, from blake2b so it is identical across processes."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return digest % dimension, (1.0 if (digest >> 63) & 1 else -1.0)


class HashingEmbedder:
    """Deterministic bag-of-words and character-trigram hashing; matches words, not meaning."""

    WORD_WEIGHT = 1.0
    TRIGRAM_WEIGHT = 0.35

    def __init__(self, dimension: int = MINILM_DIMENSION) -> None:
        if dimension < 16:
            raise ValueError(f"hashing dimension must be at least 16, got {dimension}")
        self.dimension: int = dimension
        self.name: str = f"hashing-{dimension}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed each text independently; empty or symbol-only text gives a zero row."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._vector(text)
        return l2_normalize(out)

    def _vector(self, text: str) -> np.ndarray:
        """Unnormalised hashed vector with sublinear term frequency."""
        vector = np.zeros(self.dimension, dtype=np.float64)
        for feature, count in _hash_features(text).items():
            bucket, sign = _bucket(feature, self.dimension)
            weight = self.WORD_WEIGHT if feature.startswith("w:") else self.TRIGRAM_WEIGHT
            vector[bucket] += sign * weight * (1.0 + math.log(count))
        return vector


# --------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints
# --------------------------------------------------------------------------------------------------

_PROBE_TEXT = "dimension probe"


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Ollama, LM Studio, vLLM).

    Give ``dimension`` (MCP_MEMORY_EMBEDDING_DIMENSION) when you can. If it is None, the first ``embed``
    learns it from its response, and reading ``dimension`` before that sends one probe request (on
    Python 3.11 an ``isinstance(x, Embedder)`` check reads it too).
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        model: str,
        dimension: int | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        batch_size: int = 256,
    ) -> None:
        self.base_url = base_url
        self.model = model
        self.name: str = f"openai:{model}"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.batch_size = batch_size
        self._api_key = api_key or "not-needed"
        self._dimension = dimension
        self._lock = threading.RLock()
        self._client: Any = None

    @property
    def dimension(self) -> int:
        """Vector size; probes the endpoint once if it was neither given nor learnt yet."""
        if self._dimension is None:
            with self._lock:
                if self._dimension is None:
                    self._dimension = self._request([_PROBE_TEXT]).shape[1]
        return self._dimension

    @dimension.setter
    def dimension(self, value: int) -> None:
        self._dimension = value

    @property
    def dimension_known(self) -> bool:
        """Whether reading ``dimension`` is free (given, learnt, or set from the database)."""
        return self._dimension is not None

    @property
    def endpoint(self) -> str:
        """Human-readable endpoint for messages."""
        return self.base_url or "https://api.openai.com/v1 (the OpenAI default)"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed in requests of ``batch_size`` inputs; empty texts are not sent and get zero rows."""
        todo = [i for i, text in enumerate(texts) if text.strip()]
        chunks = [todo[start : start + self.batch_size] for start in range(0, len(todo), self.batch_size)]
        results = [self._request([texts[i] for i in chunk]) for chunk in chunks]
        if self._dimension is None and results:
            self._dimension = results[0].shape[1]
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for chunk, vectors in zip(chunks, results, strict=True):
            out[chunk] = self._checked(vectors)
        return out

    def _checked(self, vectors: np.ndarray) -> np.ndarray:
        """Reject vectors whose size differs from the configured dimension."""
        if vectors.shape[1] != self._dimension:
            raise EmbeddingError(
                f"{self.endpoint} returned {vectors.shape[1]}-dimensional vectors for model {self.model!r}, "
                f"but {self._dimension} were expected; set MCP_MEMORY_EMBEDDING_DIMENSION to match the model "
                "(a memory database keeps the dimension it was created with)"
            )
        return vectors

    def _get_client(self) -> Any:
        """Create the ``openai.OpenAI`` client (thread-safe, shared) on first use."""
        with self._lock:
            if self._client is not None:
                return self._client
            from openai import OpenAI

            self._client = OpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self.timeout_s,
                max_retries=self.max_retries,
            )
        return self._client

    def _request(self, inputs: list[str]) -> np.ndarray:
        """One embeddings call; returns L2-normalised float32 rows in input order."""
        import openai

        try:
            response = self._get_client().embeddings.create(
                model=self.model, input=inputs, encoding_format="float"
            )
        except openai.APIStatusError as exc:
            raise EmbeddingError(self._status_message(exc.status_code, api_error_text(exc))) from exc
        except openai.APITimeoutError as exc:
            raise EmbeddingError(
                f"embedding request to {self.endpoint} (model {self.model!r}) timed out after {self.timeout_s}s; "
                "check that the server is up and not overloaded, or raise the timeout"
            ) from exc
        except openai.APIConnectionError as exc:
            raise EmbeddingError(
                f"cannot connect to the embedding endpoint {self.endpoint} (model {self.model!r}): {exc}; "
                "check MCP_MEMORY_EMBEDDING_BASE_URL and that the server (Ollama, LM Studio, vLLM, ...) is running"
            ) from exc
        except openai.OpenAIError as exc:
            raise EmbeddingError(
                f"embedding request to {self.endpoint} (model {self.model!r}) failed: {exc}"
            ) from exc
        return self._parse(response, len(inputs))

    def _parse(self, response: Any, expected: int) -> np.ndarray:
        """Order the response rows by ``index`` and validate their count and shape."""
        data = sorted(response.data, key=lambda item: item.index)
        try:
            vectors = np.array([item.embedding for item in data], dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EmbeddingError(f"{self.endpoint} returned malformed embeddings for {self.model!r}") from exc
        if len(data) != expected or vectors.ndim != 2 or vectors.shape[1] == 0:
            raise EmbeddingError(
                f"{self.endpoint} returned {len(data)} embeddings for {expected} inputs (model {self.model!r}); "
                "check that the server supports batched /embeddings requests"
            )
        return l2_normalize(vectors)

    def _status_message(self, status: int, detail: str) -> str:
        """An error message naming the endpoint, the model and what to check for an HTTP status."""
        hint = {
            401: "check MCP_MEMORY_EMBEDDING_API_KEY",
            403: "check MCP_MEMORY_EMBEDDING_API_KEY and its permissions",
            404: "check MCP_MEMORY_EMBEDDING_BASE_URL (it usually ends in /v1) and MCP_MEMORY_EMBEDDING_MODEL",
            429: "the server is rate limiting; retry later or lower the request rate",
        }.get(status, "check the server logs" if status >= 500 else "check the model name and request limits")
        return (
            f"embedding request to {self.endpoint} (model {self.model!r}) failed with HTTP {status}: "
            f"{detail}; {hint}"
        )


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(message: str) -> None:
    """Log a warning the first time this exact message is seen in the process."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.warning(message)


def _make_local(model_dir: Path | None, dimension: int | None) -> tuple[Embedder, str | None]:
    """MiniLM when its files are present, else the hashing embedder with a warning."""
    if dimension not in (None, MINILM_DIMENSION):
        raise ValueError(
            f"the local embedder ({MINILM_NAME}) produces {MINILM_DIMENSION}-dimensional vectors, "
            f"not {dimension}; unset MCP_MEMORY_EMBEDDING_DIMENSION"
        )
    resolved = Path(model_dir) if model_dir is not None else default_minilm_dir()
    missing = missing_minilm_files(resolved)
    if not missing:
        return MiniLMEmbedder(resolved), None
    fix = (
        "point MCP_MEMORY_MODEL_DIR at a folder with model.onnx and tokenizer.json (tools/build_minilm.py)"
        if model_dir is not None
        else "reinstall mcp-memory (its wheel ships them)"
    )
    warning = (
        f"MiniLM files {missing} not found in {resolved}; using the hashing embedder, which matches words "
        f"not meaning; {fix}"
    )
    _warn_once(warning)
    return HashingEmbedder(MINILM_DIMENSION), warning


def make_embedder(
    kind: str = "local",
    *,
    model_dir: Path | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    dimension: int | None = None,
) -> tuple[Embedder, str | None]:
    """Build the embedder for ``kind`` ("local", "openai" or "hashing") and return it with an optional warning."""
    normalized = (kind or "local").strip().lower()
    if normalized == "local":
        return _make_local(model_dir, dimension)
    if normalized == "hashing":
        return HashingEmbedder(dimension or MINILM_DIMENSION), None
    if normalized == "openai":
        if not model:
            raise ValueError(
                "the openai embedder needs a model name: set MCP_MEMORY_EMBEDDING_MODEL "
                "(e.g. text-embedding-3-small, or nomic-embed-text for Ollama)"
            )
        return OpenAIEmbedder(base_url, api_key, model, dimension), None
    raise ValueError(f"unknown embedding kind {kind!r}; valid kinds are: {', '.join(EMBEDDER_KINDS)}")
