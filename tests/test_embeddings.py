"""Embedders: hashing, OpenAI over a real HTTP server, and the factory (MiniLM itself: test_minilm.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mcp_memory.llm.embeddings import (
    Embedder,
    EmbeddingError,
    HashingEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    make_embedder,
)
from tests.fake_openai import Delay, FakeOpenAI, serve


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    yield from serve(dimension=32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- hashing --------------------------------------------------------------------------------------


def test_hashing_embedder_is_deterministic_across_processes() -> None:
    text = "Deploy moved to Friday because staging is flaky"
    code = (
        "import json; from mcp_memory.llm.embeddings import HashingEmbedder; "
        f"print(json.dumps(HashingEmbedder(64).embed([{text!r}])[0].tolist()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    np.testing.assert_array_equal(
        np.array(json.loads(out.stdout), dtype=np.float32), HashingEmbedder(64).embed([text])[0]
    )


def test_hashing_ranks_texts_sharing_words_above_unrelated_text() -> None:
    query, related, unrelated = HashingEmbedder().embed(
        [
            "when is the database migration",
            "the database migration is on Tuesday",
            "I like green tea with lemon",
        ]
    )
    assert cosine(query, related) > 0.4
    assert cosine(query, related) > cosine(query, unrelated) + 0.3


def test_hashing_stems_so_running_and_runs_overlap() -> None:
    running, runs, cooking = HashingEmbedder().embed(["running", "runs", "cooking"])
    assert cosine(running, runs) > 0.8
    assert cosine(running, runs) > cosine(running, cooking) + 0.3


def test_hashing_gives_a_zero_row_only_for_empty_text() -> None:
    embedder = HashingEmbedder(128)
    vectors = embedder.embed(["", "   ", "the", "something to remember"])
    assert embedder.name == "hashing-128" and isinstance(embedder, Embedder)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [0.0, 0.0, 1.0, 1.0], atol=1e-6)


# -- OpenAI-compatible endpoint -------------------------------------------------------------------


def openai_embedder(fake: FakeOpenAI, **kwargs: object) -> OpenAIEmbedder:
    options: dict = {
        "api_key": "sk-test",
        "model": "text-embedding-test",
        "dimension": fake.dimension,
    } | kwargs
    return OpenAIEmbedder(fake.base_url, **options)


def test_openai_embedder_preserves_order_across_batched_requests(fake: FakeOpenAI) -> None:
    texts = [f"memory number {i} about topic {i * 7}" for i in range(8)]
    vectors = openai_embedder(fake, batch_size=3).embed(texts)
    assert [len(r.json["input"]) for r in fake.requests_to("/embeddings")] == [3, 3, 2]
    np.testing.assert_allclose(vectors, HashingEmbedder(fake.dimension).embed(texts), atol=1e-6)


def test_openai_embedder_reorders_rows_by_their_index_field() -> None:
    with FakeOpenAI(dimension=16, reverse_data=True) as server:
        texts = ["first text", "second text", "third text"]
        vectors = openai_embedder(server).embed(texts)
    np.testing.assert_allclose(vectors, HashingEmbedder(16).embed(texts), atol=1e-6)


def test_openai_embedder_sends_bearer_key_model_and_float_format(fake: FakeOpenAI) -> None:
    embedder = openai_embedder(fake)
    embedder.embed(["hello"])
    request = fake.requests_to("/embeddings")[0]
    assert request.authorization == "Bearer sk-test"
    assert request.json["model"] == "text-embedding-test"
    assert request.json["encoding_format"] == "float"
    assert embedder.name == "openai:text-embedding-test" and isinstance(embedder, Embedder)


def test_openai_embedder_without_api_key_sends_a_placeholder(fake: FakeOpenAI) -> None:
    OpenAIEmbedder(fake.base_url, None, "nomic-embed-text", dimension=fake.dimension).embed(["hi"])
    assert fake.requests[0].authorization == "Bearer not-needed"


def test_openai_embedder_returns_zero_rows_for_empty_text_without_sending_it(fake: FakeOpenAI) -> None:
    vectors = openai_embedder(fake).embed(["", "kept", "  "])
    assert fake.requests[0].json["input"] == ["kept"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [0.0, 1.0, 0.0], atol=1e-6)


def test_openai_http_500_raises_embedding_error_naming_url_and_model(fake: FakeOpenAI) -> None:
    fake.queue_embeddings(500)
    with pytest.raises(EmbeddingError) as caught:
        openai_embedder(fake, max_retries=0).embed(["anything"])
    message = str(caught.value)
    assert fake.base_url in message and "text-embedding-test" in message
    assert "HTTP 500" in message and "server logs" in message


def test_openai_http_401_error_points_at_the_api_key_setting(fake: FakeOpenAI) -> None:
    fake.queue_embeddings(401)
    with pytest.raises(EmbeddingError, match="HTTP 401.*MCP_MEMORY_EMBEDDING_API_KEY"):
        openai_embedder(fake, max_retries=0).embed(["anything"])


def test_openai_embedder_retries_a_transient_server_error(fake: FakeOpenAI) -> None:
    fake.queue_embeddings(503)
    vectors = openai_embedder(fake, max_retries=1).embed(["survives one failure"])
    assert len(fake.requests_to("/embeddings")) == 2
    assert vectors.shape == (1, fake.dimension)


def test_openai_connection_refused_raises_embedding_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    embedder = OpenAIEmbedder(url, None, "nomic-embed-text", dimension=8, max_retries=0)
    with pytest.raises(EmbeddingError, match="cannot connect.*127.0.0.1.*nomic-embed-text.*BASE_URL"):
        embedder.embed(["hello"])


def test_openai_timeout_raises_embedding_error(fake: FakeOpenAI) -> None:
    fake.queue_embeddings(Delay(10.0))
    embedder = openai_embedder(fake, timeout_s=0.2, max_retries=0)
    with pytest.raises(EmbeddingError, match="timed out after 0.2s"):
        embedder.embed(["slow"])


def test_openai_dimension_is_probed_once_when_read_before_any_embed(fake: FakeOpenAI) -> None:
    embedder = openai_embedder(fake, dimension=None)
    assert fake.requests == []
    assert embedder.dimension == 32
    assert embedder.dimension == 32
    embedder.embed(["after the probe"])
    assert [r.json["input"] for r in fake.requests] == [["dimension probe"], ["after the probe"]]


def test_openai_dimension_is_learnt_from_the_first_embed_without_a_probe(fake: FakeOpenAI) -> None:
    embedder = openai_embedder(fake, dimension=None)
    assert embedder.embed(["", "learns the size"]).shape == (2, 32)
    assert embedder.dimension == 32
    assert len(fake.requests) == 1


def test_openai_wrong_dimension_raises_embedding_error(fake: FakeOpenAI) -> None:
    with pytest.raises(
        EmbeddingError, match="32-dimensional.*16 were expected.*MCP_MEMORY_EMBEDDING_DIMENSION"
    ):
        openai_embedder(fake, dimension=16).embed(["mismatch"])


# -- the fake server itself ------------------------------------------------------------------------


def test_fake_server_scripts_chat_replies_errors_and_defaults(fake: FakeOpenAI) -> None:
    from openai import InternalServerError, OpenAI

    client = OpenAI(base_url=fake.base_url, api_key="k", max_retries=0)
    fake.queue_chat("scripted", 500, Delay(0.01), lambda body: f"saw {body['model']}")
    fake.chat_default = "fallback"

    def ask() -> str | None:
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        return reply.choices[0].message.content

    assert ask() == "scripted"
    with pytest.raises(InternalServerError):
        ask()
    assert ask() == "saw m"
    assert ask() == "fallback"
    assert fake.requests_to("/chat/completions")[0].json["messages"][0]["content"] == "hi"


def test_fake_server_streams_chat_when_asked(fake: FakeOpenAI) -> None:
    from openai import OpenAI

    fake.queue_chat("streamed answer")
    stream = OpenAI(base_url=fake.base_url, api_key="k").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "streamed answer"


def test_fake_server_answers_base64_embeddings_for_the_default_openai_client(fake: FakeOpenAI) -> None:
    from openai import OpenAI

    response = OpenAI(base_url=fake.base_url, api_key="k").embeddings.create(model="m", input=["abc"])
    assert fake.requests[0].json["encoding_format"] == "base64"
    np.testing.assert_allclose(response.data[0].embedding, HashingEmbedder(32).embed(["abc"])[0], atol=1e-6)


# -- factory --------------------------------------------------------------------------------------


def test_make_embedder_local_without_model_files_falls_back_to_hashing_with_one_logged_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.WARNING, logger="mcp_memory.llm.embeddings"):
        embedder, warning = make_embedder("local", model_dir=tmp_path)
        again, again_warning = make_embedder("local", model_dir=tmp_path)
    assert isinstance(embedder, HashingEmbedder) and embedder.dimension == 384
    assert isinstance(again, HashingEmbedder) and again_warning == warning
    assert warning is not None and str(tmp_path) in warning and "model.onnx" in warning
    assert "MCP_MEMORY_MODEL_DIR" in warning
    records = [r for r in caplog.records if r.name == "mcp_memory.llm.embeddings"]
    assert [r.getMessage() for r in records] == [warning]
    assert capsys.readouterr().out == ""


def test_make_embedder_local_with_installed_weights_returns_unloaded_minilm() -> None:
    embedder, warning = make_embedder("local")
    assert isinstance(embedder, MiniLMEmbedder) and not embedder.loaded
    assert warning is None


def test_make_embedder_local_rejects_a_dimension_other_than_384() -> None:
    with pytest.raises(ValueError, match="384-dimensional.*MCP_MEMORY_EMBEDDING_DIMENSION"):
        make_embedder("local", dimension=768)


def test_make_embedder_unknown_kind_raises_value_error_listing_valid_kinds() -> None:
    with pytest.raises(ValueError, match="local, openai, hashing"):
        make_embedder("word2vec")


def test_make_embedder_openai_without_model_names_the_setting() -> None:
    with pytest.raises(ValueError, match="MCP_MEMORY_EMBEDDING_MODEL"):
        make_embedder("openai", base_url="http://127.0.0.1:1/v1")


def test_make_embedder_builds_hashing_and_openai_embedders(fake: FakeOpenAI) -> None:
    hashing, _ = make_embedder("hashing", dimension=64)
    remote, warning = make_embedder("openai", base_url=fake.base_url, model="m", dimension=32)
    assert (hashing.name, hashing.dimension) == ("hashing-64", 64)
    assert (remote.name, remote.dimension, warning) == ("openai:m", 32, None)
    assert fake.requests == []


def test_embeddings_module_imports_without_onnxruntime_tokenizers_or_openai() -> None:
    code = (
        "import sys\n"
        "import mcp_memory.llm.embeddings\n"
        "print(sorted(m for m in ('tokenizers', 'onnxruntime', 'openai', 'httpx2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert importlib.util.find_spec("torch") is None
