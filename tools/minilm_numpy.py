"""The float32 reference: all-MiniLM-L6-v2 computed with numpy from its model.safetensors.

This is the implementation mcp-memory shipped until the int8 ONNX graph replaced it (mcp_memory/embeddings.py
before that change), kept here, outside the package, to compute the reference vectors the shipped embedder
is tested against (tools/minilm_reference.py). It matches sentence-transformers to 1e-5.
"""

from __future__ import annotations

import json
import math
import struct
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


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


class MiniLMNumpy:
    """all-MiniLM-L6-v2 in float32 numpy from a folder with model.safetensors and tokenizer.json."""

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, model_dir: Path, *, batch_size: int = 32, token_budget: int = 4096) -> None:
        self.model = _MiniLM(Path(model_dir), max_tokens=256)
        self.batch_size = batch_size
        self.token_budget = token_budget
        self._lock = threading.Lock()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS]/[SEP], truncated at 256 tokens."""
        return self.model.tokenize(texts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts in length-sorted batches and return rows in input order."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        token_ids = self.model.tokenize(texts)
        lengths = [len(ids) for ids in token_ids]
        for batch in _length_batches(lengths, self.batch_size, self.token_budget):
            ids, mask = _pad([token_ids[i] for i in batch])
            out[batch] = self.model.forward(ids, mask)
        return out
