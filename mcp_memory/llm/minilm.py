"""all-MiniLM-L6-v2, shipped in this package as an int8 ONNX graph and run with onnxruntime.

The graph (mcp_memory/data/minilm/model.onnx, built by tools/build_minilm.py from the model's float32
weights) takes word-piece ids and an attention mask and returns mean-pooled, L2-normalised sentence
vectors, as sentence-transformers does. On 320 varied texts its vectors are within cosine 0.997 of the
float32 model's (0.9996 on average; tests/test_minilm.py), and a text's vector does not depend on the batch.
onnxruntime and tokenizers are imported when the model loads, not before.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIMENSION = 384
MINILM_FILES = ("model.onnx", "tokenizer.json")
MAX_TOKENS = 256  # sentence-transformers truncates all-MiniLM-L6-v2's input here


def default_minilm_dir() -> Path:
    """The model folder shipped inside this package."""
    return Path(__file__).resolve().parent.parent / "data" / "minilm"


def missing_minilm_files(model_dir: Path | None) -> list[str]:
    """Names of the model files absent from ``model_dir`` (all of them when it is None)."""
    if model_dir is None:
        return list(MINILM_FILES)
    return [name for name in MINILM_FILES if not (Path(model_dir) / name).is_file()]


def default_threads() -> int:
    """onnxruntime threads: ``OMP_NUM_THREADS`` when set (the CLI sets it to 1, see ``limit_blas_threads``), else 1."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


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
    """Right-pad id lists with 0 into an id matrix and an attention mask (both int64)."""
    length = max(len(ids) for ids in token_ids)
    ids = np.zeros((len(token_ids), length), dtype=np.int64)
    mask = np.zeros((len(token_ids), length), dtype=np.int64)
    for row, seq in enumerate(token_ids):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


class _Model:
    """The loaded tokenizer and onnxruntime session."""

    def __init__(self, model_dir: Path, threads: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would otherwise spin on the cores the LLM client needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: stderr is the server's log
        self.session: Any = onnxruntime.InferenceSession(
            str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS]/[SEP], truncated like sentence-transformers (256 tokens)."""
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Unit-length sentence vectors for a padded ``(batch, length)`` id matrix."""
        (vectors,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return np.asarray(vectors, dtype=np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (the sentence-transformers model) run with onnxruntime; it loads on first use."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        batch_size: int = 32,
        token_budget: int = 4096,
        threads: int | None = None,
    ) -> None:
        resolved = Path(model_dir) if model_dir is not None else default_minilm_dir()
        missing = missing_minilm_files(resolved)
        if missing:
            raise FileNotFoundError(f"MiniLM files {missing} not found in {resolved}")
        self.model_dir: Path = resolved
        self.name: str = MINILM_NAME
        self.dimension: int = MINILM_DIMENSION
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.threads = threads if threads is not None else default_threads()
        self._lock = threading.Lock()
        self._model: _Model | None = None

    @property
    def loaded(self) -> bool:
        """True once the tokenizer and the graph are in memory."""
        return self._model is not None

    def load(self) -> None:
        """Load the tokenizer and the graph now (idempotent, thread-safe; concurrent embed calls wait for it)."""
        self._get_model()

    def _get_model(self) -> _Model:
        """Return the loaded model, loading it under the lock the first time."""
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model = _Model(self.model_dir, self.threads)
                model = self._model
        return model

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The word-piece ids the model sees for each text (loads the model)."""
        return self._get_model().tokenize(texts)

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
