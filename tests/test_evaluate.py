"""`corpus-bot eval`: trec_eval-compatible metrics, BEIR loading, cached evaluation indexes."""

import json
import math

import pytest
from click.testing import CliRunner

from bot.cli import cli
from embeddings.errors import EvalDataError
from embeddings.evaluate import load_beir
from embeddings.metrics import evaluate_run, mrr_at, ndcg_at, recall_at
from tests.helpers import ROOT, SCIFACT

BEIR_FIXTURE = ROOT / "tests" / "fixtures" / "beir"

# Hand-computed, and checked once against pytrec_eval (trec_eval's ndcg_cut.10, recall.10, recip_rank).
QRELS = {"q1": {"d1": 1, "d2": 2, "d9": 0}, "q2": {"d3": 1}, "q3": {"d7": 3, "d8": 1, "d1": 2}}
RANKED = {"q1": ["d2", "d5", "d1"], "q2": ["d4", "d5", "d6"], "q3": ["d8", "d1", "x", "y", "d7"]}


def test_ndcg_uses_grades_as_gains_and_log2_discount():
    # q1: DCG = 2/log2(2) + 1/log2(4) = 2.5; IDCG = 2 + 1/log2(3)
    assert ndcg_at(RANKED["q1"], QRELS["q1"], 10) == pytest.approx(2.5 / (2 + 1 / math.log2(3)))
    assert ndcg_at(RANKED["q1"], QRELS["q1"], 10) == pytest.approx(0.9502344167898356)
    assert ndcg_at(RANKED["q3"], QRELS["q3"], 10) == pytest.approx(0.7187145953619216)
    assert ndcg_at(RANKED["q2"], QRELS["q2"], 10) == 0.0
    # Cut-off: d7 at rank 5 no longer counts at k=4.
    assert ndcg_at(RANKED["q3"], QRELS["q3"], 4) < ndcg_at(RANKED["q3"], QRELS["q3"], 5)


def test_recall_and_mrr():
    assert recall_at(RANKED["q1"], QRELS["q1"], 1) == 0.5  # grade-0 judgments are not relevant
    assert recall_at(RANKED["q3"], QRELS["q3"], 2) == pytest.approx(2 / 3)
    assert mrr_at(RANKED["q3"], QRELS["q3"], 10) == 1.0
    assert mrr_at(["x", "d1"], QRELS["q1"], 10) == 0.5
    assert mrr_at(["x", "d1"], QRELS["q1"], 1) == 0.0


def test_means_are_over_judged_queries_and_missing_runs_count_as_zero():
    metrics = evaluate_run({"q1": RANKED["q1"]}, {"q1": QRELS["q1"], "q2": QRELS["q2"]})
    assert metrics["ndcg@10"] == pytest.approx(0.9502344167898356 / 2)
    assert metrics["recall@10"] == 0.5 and metrics["mrr@10"] == 0.5
    assert set(metrics) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}


def test_load_beir_reads_the_fixture():
    data = load_beir(BEIR_FIXTURE)
    assert [d.key for d in data.docs] == ["d1", "d2", "d3", "d4", "d5"]
    assert data.docs[0].title == "Kunduz falls"
    assert set(data.qrels) == {"q1", "q2", "q3"}
    assert data.qrels["q2"] == {"d2": 2, "d4": 1}


def test_load_beir_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(EvalDataError, match="corpus.jsonl is missing"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n{broken\n')
    with pytest.raises(EvalDataError, match="corpus.jsonl line 2: invalid JSON"):
        load_beir(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q"}\n')
    with pytest.raises(EvalDataError, match="queries.jsonl line 1: missing field text"):
        load_beir(tmp_path)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q", "text": "t"}\n')
    with pytest.raises(EvalDataError, match="no qrels.tsv"):
        load_beir(tmp_path)
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\tyes\n")
    with pytest.raises(EvalDataError, match="qrels.tsv line 2: score 'yes' is not an integer"):
        load_beir(tmp_path)


def invoke_eval(tmp_path, *args):
    env = {"INDEX_PATH": str(tmp_path / "data" / "index.sqlite3"), "EMBEDDING_MODEL": "fake-hash-embedder"}
    return CliRunner().invoke(cli, ["eval", str(BEIR_FIXTURE), *args], env=env, catch_exceptions=False)


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_eval_json_shape_for_every_mode(tmp_path, fake_embedder, mode):
    result = invoke_eval(tmp_path, "--mode", mode, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"dataset", "mode", "queries", "ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms"}
    assert data["dataset"] == "beir" and data["mode"] == mode and data["queries"] == 3
    assert set(data["latency_ms"]) == {"p50", "p95"}
    # The fixture's questions share their key words with the relevant document.
    assert data["mrr@10"] == 1.0 if mode != "vector" else data["mrr@10"] > 0.5


def test_second_eval_run_embeds_nothing(tmp_path, fake_embedder):
    invoke_eval(tmp_path, "--json")
    embedded = fake_embedder.texts_embedded
    invoke_eval(tmp_path, "--mode", "vector", "--json")
    # Only the three questions, and the probe text that shows the model is the index's (model_identity.py).
    assert fake_embedder.texts_embedded - embedded == 3 + 1
    assert len(list((tmp_path / "data" / "eval-cache").glob("*.sqlite3"))) == 1


def test_eval_of_a_bad_folder_is_one_clear_line(tmp_path, fake_embedder):
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "is not a folder" in result.output


@pytest.mark.skipif(SCIFACT is None, reason="SCIFACT_DIR (a BEIR-layout folder such as SciFact) not set")
def test_scifact_loads_as_published():
    data = load_beir(SCIFACT)
    assert len(data.docs) == 5183 and len(data.qrels) == 300
    assert sum(len(j) for j in data.qrels.values()) == 339
