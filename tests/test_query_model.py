"""The ONNX query path gives the indexing model's vectors without importing torch."""
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from embeddings.embedder import SentenceTransformerEmbedder
from embeddings.parse import iter_corpus_files, parse_file
from embeddings.query_model import OnnxQueryEmbedder, load_query_embedder, query_model_dir
from tests.conftest import SHIPPED_CORPUS

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def onnx_embedder(shipped_index):
    embedder = load_query_embedder(shipped_index.index_path, shipped_index.embedding_model)
    assert isinstance(embedder, OnnxQueryEmbedder)  # the index job exported it
    return embedder


def shipped_paragraphs() -> list[str]:
    return [p for path in iter_corpus_files(SHIPPED_CORPUS) for d in parse_file(path.name, path.read_bytes()) for p in d.paragraphs]


def test_onnx_vectors_equal_the_indexing_models(onnx_embedder, real_embedder):
    texts = shipped_paragraphs() + ["Who led the resistance to the Taliban?", "x", "🙂 ‏مرحبا zero\u200bwidth", "word " * 400]
    fast, full = onnx_embedder.encode(texts), real_embedder.encode(texts)
    cosine = (fast * full).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert onnx_embedder.dimension == real_embedder.dimension
    assert [onnx_embedder.count_tokens(t) for t in texts[:10]] == [real_embedder.count_tokens(t) for t in texts[:10]]


def test_cli_ask_answers_without_importing_torch(shipped_index):
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr))\n"
        "from bot.cli import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "ask", "Which airplanes did the Biden administration send?", "--json"],
        env={**os.environ, "INDEX_PATH": str(shipped_index.index_path)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "B-52" in json.loads(result.stdout)["results"][0]["text"]
    assert result.stderr.strip().endswith("no torch")


def test_a_damaged_or_foreign_export_falls_back_to_the_full_model(shipped_index, tmp_path):
    index_path = tmp_path / "index.sqlite3"
    folder = query_model_dir(index_path)
    shutil.copytree(query_model_dir(shipped_index.index_path), folder)
    (folder / "model.onnx").write_bytes(b"not a model")
    assert not isinstance(load_query_embedder(index_path, shipped_index.embedding_model), OnnxQueryEmbedder)
    shutil.rmtree(folder)
    shutil.copytree(query_model_dir(shipped_index.index_path), folder)
    assert isinstance(load_query_embedder(index_path, shipped_index.embedding_model), OnnxQueryEmbedder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "model": "another-model"}))
    # An export made for another model is never used for this one.
    assert not isinstance(load_query_embedder(index_path, shipped_index.embedding_model), OnnxQueryEmbedder)


def test_index_job_stores_the_float32_models_vectors(real_embedder, corpus_copy, tmp_path):
    """`corpus-bot index` embeds in bfloat16 where the CPU has it (2-3x faster); what it stores
    must still be the model's vectors: cosine >= 0.9999 to float32, the bar the query path meets."""
    index_path = tmp_path / "index.sqlite3"
    env = {**os.environ, "INDEX_PATH": str(index_path), "CORPUS_DIR": str(corpus_copy)}
    result = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "index"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    from embeddings import store

    with store.reading(index_path) as conn:
        rows = conn.execute(
            "SELECT p.text, v.vectors, p.position FROM passages p JOIN article_vectors v USING (article_id) "
            "ORDER BY p.article_id, p.position"
        ).fetchall()
    texts = [text for text, _, _ in rows]
    stored = np.stack([np.frombuffer(blob, np.float16).reshape(-1, 384)[position] for _, blob, position in rows])
    cosine = (stored.astype(np.float32) * real_embedder.encode(texts)).sum(axis=1)
    assert len(texts) > 50 and cosine.min() >= 0.9999, cosine.min()


def test_bfloat16_bulk_embedding_keeps_the_models_vectors(real_embedder):
    """Forced on: on a CPU without native bfloat16 it is emulated (slow) but must agree just the same."""
    texts = shipped_paragraphs()[:8] + ["word " * 400]
    bulk = SentenceTransformerEmbedder(real_embedder.name, real_embedder.sentence_transformer, bf16=True)
    cosine = (bulk.encode(texts) * real_embedder.encode(texts)).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()
    assert not real_embedder.bf16  # questions and the reference stay float32


def test_the_export_is_fused_and_an_older_unfused_one_is_used_until_the_next_index_run(shipped_index, tmp_path, real_embedder):
    """Format 2 runs attention, layer norms and GELU as onnxruntime's fused kernels (12% faster per
    question); a format 1 export from an earlier version keeps answering until `corpus-bot index`
    replaces it."""
    import onnx

    from embeddings.index import run_index
    from embeddings.query_model import FORMAT

    shipped_folder = query_model_dir(shipped_index.index_path)
    ops = {node.op_type for node in onnx.load(str(shipped_folder / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops

    settings = replace(shipped_index, index_path=tmp_path / "index.sqlite3")
    shutil.copy(shipped_index.index_path, settings.index_path)
    folder = query_model_dir(settings.index_path)
    shutil.copytree(shipped_folder, folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format": 1}))
    assert isinstance(load_query_embedder(settings.index_path, settings.embedding_model), OnnxQueryEmbedder)

    run_index(settings, embedder=real_embedder)
    assert json.loads((folder / "meta.json").read_text())["format"] == FORMAT == 2
    assert isinstance(load_query_embedder(settings.index_path, settings.embedding_model), OnnxQueryEmbedder)
