"""EMBEDDING_MODEL set to a local multilingual sentence-transformers folder works end to end: index,
the ONNX query model's export, and `corpus-bot ask`. No multilingual model ships offline, so the
test builds one: a WordPiece vocabulary learnt from English, German, French and Spanish text, and a
small randomly initialised BERT. It proves the path, not the quality of a real model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from embeddings.config import Settings
from embeddings.index import run_index
from embeddings.parse import parse_file
from embeddings.query_model import OnnxQueryEmbedder, load_query_embedder, query_model_dir
from tests.helpers import SHIPPED_CORPUS

pytestmark = pytest.mark.model

GERMAN = (
    "Hochwasser in Bayern\n\nVon Katrin Vogel\n\n12. März 2024\n\n"
    "Die Straßen in mehreren Orten waren am Montag überflutet, und viele Häuser mussten geräumt werden.\n\n"
    "Nach Angaben der Behörden sind bisher keine Menschen verletzt worden, aber für die Nacht wird weiterer"
    " Regen erwartet.\n"
)
FRENCH = (
    "Grève dans les transports\n\nPar Claire Dubois\n\nPublié le 4 mars 2024\n\n"
    "Les syndicats ont appelé à une grève de vingt-quatre heures dans les transports publics.\n\n"
    "Selon la direction, le trafic sera très perturbé sur toutes les lignes pendant la journée.\n"
)
SPANISH = (
    "Huelga en Madrid\n\nPor Ana García\n\nPublicado el 5 de marzo de 2024\n\n"
    "Los sindicatos convocaron una huelga para el próximo lunes en el transporte público de la ciudad.\n"
)


@pytest.fixture(scope="module")
def multilingual_model(tmp_path_factory):
    """A local sentence-transformers folder: Transformer (a tiny BERT) -> mean pooling -> Normalize."""
    import warnings

    import torch
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():  # sentence-transformers 6 moved the modules; 5 has only this path
        warnings.simplefilter("ignore")
        from sentence_transformers import models
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    base = tmp_path_factory.mktemp("multilingual")
    texts = [GERMAN, FRENCH, SPANISH] + [p.read_text(encoding="utf-8") for p in sorted(SHIPPED_CORPUS.glob("*.txt"))]
    wordpiece = BertWordPieceTokenizer(lowercase=True, strip_accents=False)  # "März" stays "märz"
    wordpiece.train_from_iterator(texts, vocab_size=3000, min_frequency=1)
    (base / "vocab").mkdir()
    wordpiece.save_model(str(base / "vocab"))
    tokenizer = BertTokenizerFast(vocab_file=str(base / "vocab" / "vocab.txt"), do_lower_case=True, strip_accents=False)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=256)  # fmt: skip
    hf = base / "hf"
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    transformer = models.Transformer(str(hf), max_seq_length=256)
    pooling = models.Pooling(config.hidden_size, pooling_mode="mean")
    folder = base / "tiny-multilingual-bert"
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def multilingual_index(tmp_path_factory, multilingual_model):
    base = tmp_path_factory.mktemp("multilingual-index")
    corpus = base / "corpus"
    corpus.mkdir()
    for path in SHIPPED_CORPUS.glob("*.txt"):
        (corpus / path.name).write_bytes(path.read_bytes())
    for name, text in (("hochwasser.txt", GERMAN), ("greve.txt", FRENCH), ("huelga.txt", SPANISH)):
        (corpus / name).write_text(text, encoding="utf-8")
    settings = Settings(corpus_dir=corpus, index_path=base / "index.sqlite3", embedding_model=str(multilingual_model))
    report = run_index(settings)  # the model is loaded from the folder, as EMBEDDING_MODEL names it
    assert sorted(report.added) == sorted(p.name for p in corpus.iterdir()) and not report.skipped
    return settings


def test_the_query_model_is_exported_and_gives_the_indexing_models_vectors(multilingual_index, multilingual_model):
    from embeddings.embedder import load_embedder

    meta = json.loads((query_model_dir(multilingual_index.index_path) / "meta.json").read_text())
    assert meta["model"] == str(multilingual_model)
    fast = load_query_embedder(multilingual_index.index_path, str(multilingual_model))
    assert isinstance(fast, OnnxQueryEmbedder)
    texts = [p for name, text in (("d.txt", GERMAN), ("f.txt", FRENCH), ("s.txt", SPANISH))
             for p in parse_file(name, text.encode())[0].paragraphs] + ["Wo gab es Hochwasser?"]  # fmt: skip
    full = load_embedder(str(multilingual_model)).encode(texts)
    cosine = (fast.encode(texts) * full).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine


def cli(*args: str, settings: Settings, model) -> dict:
    env = {**os.environ, "INDEX_PATH": str(settings.index_path), "EMBEDDING_MODEL": str(model)}
    result = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", *args, "--json"], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_ask_answers_from_the_multilingual_index(multilingual_index, multilingual_model):
    # A random model ranks at random: what is checked is that the question goes through it.
    answer = cli("ask", "Wo gab es Hochwasser in Bayern?", settings=multilingual_index, model=multilingual_model)
    assert answer["results"] and all(np.isfinite(r["score"]) for r in answer["results"])
    assert cli("stats", settings=multilingual_index, model=multilingual_model)["model"] == str(multilingual_model)
    articles = {a["path"]: a for a in cli("sources", settings=multilingual_index, model=multilingual_model)["articles"]}
    assert (articles["hochwasser.txt"]["authors"], articles["hochwasser.txt"]["published"]) == (
        ["Katrin Vogel"],
        "2024-03-12",
    )
    assert (articles["greve.txt"]["authors"], articles["greve.txt"]["published"]) == (["Claire Dubois"], "2024-03-04")
