"""Search over a real SQLite index built with the fake embedder: ranking plumbing, filters, caps, snapshots."""

import datetime as dt
import re

import numpy as np
import pytest

from embeddings.embedder import load_reranker
from embeddings.errors import IndexMissingError, ModelLoadError, ModelMismatchError, QueryError
from embeddings.index import run_index
from embeddings.search import (
    DEFAULT_RULE,
    SAME_ARTICLE_PENALTY,
    Filters,
    HybridRule,
    SearchIndex,
    fts_match,
    fts_terms,
    word_weights,
)

WITHOUT_FEEDBACK = HybridRule(feedback_words=0)


@pytest.fixture
def index(fake_settings):
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_settings.embedding_model, weak_score=0.2)
    yield idx
    idx.close()


def test_result_carries_verbatim_text_metadata_and_position(index, fake_embedder, fake_settings):
    answer = index.search("Ahmed Shah Massoud anti-Taliban commander killed by Al Qaeda", fake_embedder)
    top = answer.results[0]
    assert "Ahmed Shah Massoud" in top.text
    assert top.text in (fake_settings.corpus_dir / top.article.key).read_text()
    assert top.article.title == "The insurgents' success in northern Afghanistan is an ill omen for Kabul."
    assert top.article.authors == ("Sharif Hassan",)
    assert top.article.published == dt.date(2021, 8, 9)
    assert top.rank == 1 and top.position_label == f"paragraph {top.position + 1} of {top.article.passages}"
    assert [r.rank for r in answer.results] == list(range(1, len(answer.results) + 1))
    vector_only = index.search("Ahmed Shah Massoud anti-Taliban commander", fake_embedder, mode="vector")
    assert all(a.score >= b.score for a, b in zip(vector_only.results, vector_only.results[1:]))


def test_default_k_is_five_and_at_most_two_passages_per_article(index, fake_embedder):
    answer = index.search("Taliban Kunduz", fake_embedder)
    assert len(answer.results) == 5
    keys = [r.article.key for r in answer.results]
    assert max(keys.count(k) for k in keys) <= 2


def test_paging_continues_without_repeats(index, fake_embedder):
    first = index.search("Taliban districts government forces", fake_embedder, k=3)
    second = index.search("Taliban districts government forces", fake_embedder, k=3, offset=3)
    assert first.has_more
    assert [r.rank for r in second.results] == [4, 5, 6]
    assert not {r.passage_id for r in first.results} & {r.passage_id for r in second.results}


def test_source_filter_matches_publication_or_title(index, fake_embedder):
    answer = index.search("Taliban", fake_embedder, filters=Filters(source="antiwar"))
    assert answer.results and {r.article.source for r in answer.results} == {"Antiwar.com"}
    answer = index.search("Taliban", fake_embedder, filters=Filters(source="afghanistan update"))
    assert {r.article.title for r in answer.results} == {"Afghanistan Update"}


def test_date_filter_excludes_undated_articles_and_says_how_many(index, fake_embedder):
    answer = index.search("Taliban", fake_embedder, filters=Filters(since=dt.date(2021, 8, 1)))
    assert {r.article.published for r in answer.results} == {dt.date(2021, 8, 9)}
    assert answer.excluded_undated == 3
    assert "3 undated articles left out by the date filter." in answer.notices
    answer = index.search("Taliban", fake_embedder, filters=Filters(until=dt.date(2021, 7, 1)))
    assert {r.article.published for r in answer.results} == {dt.date(2021, 6, 20)}


def test_filters_that_match_nothing_say_so(index, fake_embedder):
    answer = index.search("Taliban", fake_embedder, filters=Filters(source="no such paper"))
    assert answer.results == [] and answer.notices[0].startswith("Nothing in the corpus matches")


def test_weak_answers_are_flagged_but_still_shown(index, fake_embedder):
    answer = index.search("sourdough starter hydration", fake_embedder)
    assert answer.weak and answer.results
    assert all(r.weak for r in answer.results)
    assert "answers this question well" in answer.notices[0]


@pytest.mark.parametrize(
    "question, k, message",
    [
        ("   ", 5, "empty"),
        ("x" * 5000, 5, "too long"),
        ("Taliban", 0, "between 1 and"),
        ("Taliban", 21, "between 1 and"),
    ],
)
def test_bad_questions_get_specific_errors(index, fake_embedder, question, k, message):
    with pytest.raises(QueryError, match=message):
        index.search(question, fake_embedder, k=k)


def test_context_returns_neighbouring_paragraphs_in_order(index, fake_embedder):
    hit = index.search("Ahmed Shah Massoud", fake_embedder).results[0]
    around = index.context(hit.passage_id)
    assert [r.position for r in around] == [hit.position - 1, hit.position, hit.position + 1]
    assert {r.article.key for r in around} == {hit.article.key}


def test_snapshot_keeps_answering_from_its_own_state_after_a_reindex(fake_settings, fake_embedder):
    run_index(fake_settings)
    old = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    for p in fake_settings.corpus_dir.iterdir():
        p.write_text(p.read_text() + "\n\nEvery article now ends with a zebra sentence for this test.\n")
    run_index(fake_settings)
    answer = old.search("Ahmed Shah Massoud", fake_embedder)  # its passage ids were deleted by the new run
    assert answer.results and all(r.text for r in answer.results)
    assert not any("zebra" in r.text for r in old.search("zebra sentence", fake_embedder, k=20).results)
    new = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    assert "zebra" in new.search("zebra sentence", fake_embedder).results[0].text
    old.close()
    new.close()


def test_missing_index_tells_the_user_to_build_it(tmp_path):
    with pytest.raises(IndexMissingError, match="corpus-bot index"):
        SearchIndex.load(tmp_path / "none.sqlite3", model_name="m", weak_score=0.3)


def test_querying_with_another_model_is_refused(fake_settings):
    run_index(fake_settings)
    with pytest.raises(ModelMismatchError) as err:
        SearchIndex.load(fake_settings.index_path, model_name="other-model", weak_score=0.3)
    assert "fake-hash-embedder" in str(err.value) and "other-model" in str(err.value)


HOSTILE_QUESTIONS = [
    '"unbalanced quote',
    "Kunduz AND",
    "NEAR(Kabul Kunduz)",
    "-Taliban",
    "title:Kunduz",
    "Kab*",
    "(((",
    "'; DROP TABLE passages; --",
    "OR OR OR",
    "🙂🙂",
    "‏مرحبا",
    "zero\u200bwidth",
    "^Kabul",
    "a AND NOT b",
]


@pytest.mark.parametrize("question", HOSTILE_QUESTIONS)
@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
def test_fts_syntax_typed_by_users_never_errors(index, fake_embedder, question, mode):
    if re.search(r"\w", question):
        assert isinstance(index.search(question, fake_embedder, mode=mode).results, list)
    else:  # nothing to search for: refused before any engine sees it
        with pytest.raises(QueryError, match="no words"):
            index.search(question, fake_embedder, mode=mode)


def test_keyword_mode_finds_exact_rare_names(index, fake_embedder):
    answer = index.search("Sebghatullah Selab", fake_embedder, mode="keyword")
    assert "Sebghatullah Selab" in answer.results[0].text
    assert all(r.text for r in answer.results)


def test_keyword_index_matches_the_title_as_context(index, fake_embedder):
    answer = index.search("Gobbles", fake_embedder, mode="keyword")
    assert answer.results and {r.article.title for r in answer.results} == {
        "Taliban Offensive Gobbles Up Territory in Northern Afghanistan"
    }


def test_hybrid_mode_ranks_from_both_lists(index, fake_embedder):
    answer = index.search("Sebghatullah Selab deputy Faryab", fake_embedder, mode="hybrid")
    assert "Sebghatullah Selab" in answer.results[0].text


def assert_keyword_side_adds_up_each_words_bm25_times_its_weight(index):
    """Hybrid's keyword side searches the words one by one and adds up their BM25 times their
    weights; BM25 being a sum over the words, that must equal the words' own searches added up.
    (Word vectors of zero: nothing of a word is in any passage's vector, so each counts weight + 1.)"""
    weights = {"kunduz": 0.25, "selab": 1.0}
    coverage = index.keyword_coverage(list(weights), None, weights, np.zeros((2, index.vectors.dim), np.float32))
    alone = {w: dict(zip(*index.keyword_hits(w))) for w in weights}
    assert set(coverage.rows) == set(alone["kunduz"]) | set(alone["selab"])
    ranked = [sum(weights[w] * alone[w].get(int(r), 0.0) for w in weights) for r in coverage.rows]
    assert all(a >= b - 1e-5 for a, b in zip(ranked, ranked[1:])), "best first"
    want = [
        sum((weights[w] + 1) * alone[w].get(int(r), 0.0) for w in weights) / index.idf_sum(list(weights))
        for r in coverage.rows
    ]
    assert coverage(coverage.rows) == pytest.approx(want, rel=1e-5)


def test_weighted_keyword_score_is_each_words_bm25_times_its_weight(index):
    assert_keyword_side_adds_up_each_words_bm25_times_its_weight(index)


def keyword_part(index, embedder, weights, rows, rule):
    """The words' coverage of the passages: each word's BM25 (the word searched alone) times its
    weight plus (1 - cos(word, passage))^rule.missed_exponent, over the words' idf sum. The fake
    embedder's token is the word, so a word's vector is its own."""
    total = np.zeros(len(rows))
    for word, weight in weights.items():
        alone = dict(zip(*index.keyword_hits(word)))
        bm25 = np.array([alone.get(int(r), 0.0) for r in rows])
        # (against the passage vectors as the scan's int8 codes hold them)
        missed = (1 - np.clip(index.vectors.approx(rows) @ embedder.encode([word])[0], 0, 1)) ** rule.missed_exponent
        total += bm25 * (weight + missed)
    return total / index.idf_sum(list(weights))


def expected_hybrid_scores(index, embedder, question, rows, rule):
    """Hybrid scores recomputed from their parts: cosine + rule.weight x the question words'
    coverage (each at its word_weights weight) + rule.weight x the BM25 of the best passage's
    feedback words (one keyword query) over their idf sum."""
    terms = fts_terms(question)
    assert all(index.term_count(t) for t in terms)  # (else the vectors rank alone: the test below)
    feedback = index.feedback_words(terms, int(rows[0]), rule)
    assert feedback
    feedback_bm25 = dict(zip(*index.keyword_hits(" ".join(feedback))))
    query = embedder.encode([question])[0]
    coverage = keyword_part(index, embedder, word_weights(terms, embedder, rule), rows, rule)
    return (
        index.vectors.get(rows) @ query
        + rule.weight * coverage
        + rule.weight * np.array([feedback_bm25.get(int(r), 0.0) for r in rows]) / index.idf_sum(feedback)
    )


@pytest.mark.parametrize("question", ["Kunduz Selab district", "Taliban Faryab governor captured", "B-52 bombers"])
@pytest.mark.parametrize(
    "rule", [DEFAULT_RULE, HybridRule(weight=0.5, model_read_weight=0.5, missed_exponent=2, feedback_words=3)]
)
def test_hybrid_counts_each_words_bm25_more_where_the_passages_vector_misses_the_word(
    index, fake_embedder, question, rule
):
    """(with the product's rule, and with another one passed in: every part follows the rule given)"""
    ranking = index.rank(question, fake_embedder, n=10, mode="hybrid", rule=rule)
    rows, scores = ranking.candidates.rows[:30], ranking.candidates.scores[:30]
    assert np.allclose(scores, expected_hybrid_scores(index, fake_embedder, question, rows, rule), atol=1e-5)
    assert list(scores) == sorted(scores, reverse=True)


def test_feedback_words_are_the_best_passages_rarest_words_the_question_does_not_use(index):
    rows, _ = index.keyword_hits("Sebghatullah Selab")
    row = int(rows[0])
    words = index.feedback_words(["sebghatullah", "deputy"], row)
    text = index._texts([row])[int(index.passage_ids[row])].casefold()
    counts = [index.term_count(w) for w in words]
    assert "selab" in words and "sebghatullah" not in words and "deputy" not in words
    assert 0 < len(words) <= DEFAULT_RULE.feedback_words and all(w in text and len(w) >= 3 for w in words)
    assert counts == sorted(counts) and all(0 < c <= DEFAULT_RULE.feedback_common * index.passage_count for c in counts)
    left_out = {w for w in fts_terms(text) if len(w) >= 3 and w not in words and w not in {"sebghatullah", "deputy"}}
    assert left_out and all(index.term_count(w) >= counts[-1] for w in left_out), "the rarest are kept"


def test_idf_sum_is_fts5s_idf_of_the_question_words(index):
    n = index.passage_count
    selab = index.term_count("selab")
    assert 0 < selab < n / 2
    assert index.idf_sum(["selab"]) == pytest.approx(np.log((n - selab + 0.5) / (selab + 0.5)))
    assert index.idf_sum(["selab", "xyzzyq"]) == index.idf_sum(["selab"])  # a word no passage has adds nothing
    assert 0 < index.idf_sum(["taliban"]) <= 1e-6  # in most passages: FTS5 floors its idf


def test_hybrid_ranks_by_cosine_when_no_word_of_the_question_is_in_the_corpus(index, fake_embedder):
    """(and the feedback from the best passage: without it, by cosine alone)"""
    question = "xyzzyq quuxplonk"
    assert not len(index.keyword_hits(question)[0])

    def ranked(mode, rule=DEFAULT_RULE):
        return [
            (r.passage_id, r.score) for r in index.search(question, fake_embedder, mode=mode, k=10, rule=rule).results
        ]

    assert ranked("hybrid", WITHOUT_FEEDBACK) == ranked("vector") != ranked("hybrid")


def test_hybrid_ranks_by_cosine_when_the_question_uses_an_ordinary_word_no_passage_has(index, fake_embedder):
    """Such a question is phrased in other words than the corpus: its keyword matches are incidental.
    A missing word the model cuts into pieces or with a digit (a name, a code) does not count.
    (Compared without the feedback from the best passage, which applies to every question.)"""

    def ranked(question, mode):
        return [
            r.passage_id for r in index.search(question, fake_embedder, mode=mode, k=10, rule=WITHOUT_FEEDBACK).results
        ]

    assert ranked("Kunduz district", "hybrid") != ranked("Kunduz district", "vector")
    assert not index.term_count("quokka") and word_weights(["quokka"], fake_embedder)["quokka"] < 1.0
    assert ranked("Kunduz district quokka", "hybrid") == ranked("Kunduz district quokka", "vector")
    assert not index.term_count("777") and word_weights(["777"], fake_embedder)["777"] == 1.0
    assert ranked("Kunduz district 777", "hybrid") != ranked("Kunduz district 777", "vector")


def test_feedback_brings_up_the_passage_sharing_the_best_ones_rare_names(fake_settings, fake_embedder):
    """The inquiry's passage shares no word with the question, only the names in the passage that
    answers it: the keyword feedback from that passage puts it second, above a passage about
    another dam."""
    corpus = fake_settings.corpus_dir
    for shipped in corpus.iterdir():
        shipped.unlink()
    (corpus / "report.txt").write_text(
        "Tarbela report\n\nThe Tarbela dam burst after engineer Khogyani warned the Balochistan authority for months.\n"
    )
    (corpus / "inquiry.txt").write_text(
        "Inquiry\n\nEngineer Khogyani had warned the Balochistan water authority for months, the inquiry heard.\n"
    )
    (corpus / "texas.txt").write_text(
        "Texas\n\nTexas opened a new dam for irrigation, to the delight of its farmers.\n"
    )
    for n in range(20):
        (corpus / f"market{n}.txt").write_text(
            f"Market {n}\n\nWheat prices at market {n} rose as growers sold grain early.\n"
        )
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)

    def keys(rule=DEFAULT_RULE):
        return [
            r.article.key for r in idx.search("Why did the Tarbela dam burst?", fake_embedder, k=3, rule=rule).results
        ]

    assert keys() == ["report.txt", "inquiry.txt", "texas.txt"]
    assert keys(WITHOUT_FEEDBACK)[:2] == ["report.txt", "texas.txt"]
    idx.close()


@pytest.mark.parametrize("mode", ["vector", "hybrid", "keyword"])
def test_an_answer_is_weak_only_when_every_passage_shown_is(index, fake_embedder, mode):
    """A passage is weak when its cosine is low and it lacks the question's rare words; the answer
    when every passage shown is, which a hybrid or keyword ranking need not put first."""
    for question in ["Sebghatullah Selab deputy Faryab", "Taliban Kunduz airport", "quokka sourdough bread", "B-52"]:
        answer = index.search(question, fake_embedder, mode=mode)
        if answer.results:
            assert answer.weak == all(r.weak for r in answer.results), (question, mode)
            assert all(r.score < index.weak_score for r in answer.results if r.weak), (question, mode)


def test_a_passage_holding_the_questions_rare_words_is_not_weak(fake_settings, fake_embedder):
    """With a threshold no cosine reaches, only the rare words (names, numbers, jargon) decide: a
    passage holding them is not weak, one holding only part of their weight (a coincidental surname,
    "us" for "US") is."""
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=1.01)
    rare = idx.rare_words("Who is Sebghatullah Selab, in 2021 and in the US?", fake_embedder)
    assert set(rare) == {"sebghatullah", "selab", "2021", "US"}  # capitalised, a number, an acronym; not "who"
    assert rare["US"] < rare["sebghatullah"]  # many passages say US: it weighs less

    def weak(question):
        answer = idx.search(question, fake_embedder, k=3)
        return answer.weak, answer.results[0]

    is_weak, top = weak("Who is Sebghatullah Selab?")
    assert not is_weak and not top.weak and "Sebghatullah Selab" in top.text
    assert weak("Who is Sebghatullah Merkelbach?")[0]  # the surname no passage has weighs the most
    assert not weak("What did Jason Ditz say?")[0]  # names in the byline count
    assert weak("Who is Maria Hassan?")[0]
    assert weak("What did the quokka tell us about the weekend?")[0]  # no rare word: the cosine decides
    idx.close()


def test_authors_and_publications_are_keyword_evidence_for_their_articles_passages(index, fake_embedder):
    """Names that are only in an article's metadata (the byline, the publication) find its passages,
    as its title does; the words a question uses about the articles ("write") do not make hybrid
    search drop its keyword side."""
    ditz = "004_df801900fabe096f.txt"
    assert all("Ditz" not in r.text for r in index.search("Jason Ditz", fake_embedder, mode="vector", k=20).results)
    keyword = index.search("Jason Ditz", fake_embedder, mode="keyword", k=20).results
    assert len(keyword) == 9 and {r.article.key for r in keyword} == {ditz}
    hassan = index.search("Sharif Hassan", fake_embedder, mode="keyword", k=20).results
    # his 8 passages first, but for the one that names Mazar-e-Sharif in its text
    assert [r.article.key for r in hassan[:9]].count("000_84e6feabee5314c5.txt") == 8
    assert index.search("What did Jason Ditz write?", fake_embedder).results[0].article.key == ditz
    assert {r.article.source for r in index.search("Antiwar.com", fake_embedder, mode="keyword").results} == {
        "Antiwar.com"
    }


def test_keyword_index_follows_every_reindex(fake_settings, fake_embedder):
    run_index(fake_settings)
    target = fake_settings.corpus_dir / "002_19231adb1c3244eb.txt"
    target.write_text(target.read_text() + "\n\nA quokka was seen near the Kunduz checkpoint on Tuesday morning.\n")
    (fake_settings.corpus_dir / "004_df801900fabe096f.txt").unlink()
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    assert "quokka" in idx.search("quokka", fake_embedder, mode="keyword").results[0].text
    removed = idx.search("Sheberghan Taloqan", fake_embedder, mode="keyword").results
    assert removed and all(r.article.key != "004_df801900fabe096f.txt" for r in removed)
    fts_rows = idx._conn.execute("SELECT COUNT(*) FROM passage_fts").fetchone()[0]
    assert fts_rows == idx.passage_count
    idx.close()


def test_keyword_search_leaves_out_words_most_passages_contain_on_a_large_corpus(index):
    """At 1M passages a word in 5% of them costs most of the keyword search's time; the thresholds
    are scaled down here to the 67-passage corpus ("taliban" is in most passages, "selab" in one)."""
    everywhere = index.keyword_hits("Taliban")[0]
    assert len(everywhere) > index.passage_count / 2
    both = index.keyword_hits("Taliban Selab")[0]
    assert len(both) >= len(everywhere)  # small corpus: nothing pruned

    scaled = HybridRule(common_term_min=5, common_term_share=0.2)
    rows = index.keyword_hits("Taliban Selab", rule=scaled)[0]
    assert 0 < len(rows) < 5 and set(rows) == set(index.keyword_hits("Selab", rule=scaled)[0])
    # A question made only of common words still searches, with the rarest of them.
    assert len(index.keyword_hits("Taliban", rule=scaled)[0]) == len(everywhere)


def test_fts_query_quotes_every_word():
    assert fts_match(fts_terms('Kunduz AND "Kabul" -x NEAR(a b)')) == '"kunduz" OR "kabul" OR "x" OR "near" OR "b"'
    assert fts_match(fts_terms("the of and")) == ""


def test_syndicated_copies_collapse_into_one_result_with_also_in(fake_settings, fake_embedder):
    original = fake_settings.corpus_dir / "000_84e6feabee5314c5.txt"
    copy = fake_settings.corpus_dir / "wire_copy.txt"
    # The same story reprinted elsewhere with a changed dateline word, so it is not a byte duplicate.
    copy.write_text(original.read_text().replace("Since the Taliban", "Ever since the Taliban"))
    (fake_settings.corpus_dir / "wire_copy.meta.json").write_text('{"source": "Wire Copy Weekly"}')
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    answer = idx.search("Ahmed Shah Massoud famed anti-Taliban commander", fake_embedder, k=5)
    massoud = [r for r in answer.results if "Ahmed Shah Massoud" in r.text]
    assert len(massoud) == 1
    assert [a.key for a in massoud[0].also_in] in (["wire_copy.txt"], ["000_84e6feabee5314c5.txt"])
    assert massoud[0].also_in_label.startswith("also in: ")
    # Passages that merely share a topic are not collapsed.
    assert all(not r.also_in for r in answer.results if r is not massoud[0])
    idx.close()


class PreferWordReranker:
    """Scores passages by whether they contain one word: enough to see the re-ranking happen."""

    name = "prefer-word"

    def __init__(self, word: str) -> None:
        self.word = word
        self.seen: list[int] = []

    def scores(self, question, passages):
        self.seen.append(len(passages))
        return np.array([1.0 if self.word in p else 0.0 for p in passages])


def test_a_reranker_reorders_the_top_passages(index, fake_embedder):
    plain = index.search("Taliban districts government", fake_embedder, k=3)
    third = plain.results[2].text
    reranker = PreferWordReranker(third)  # the re-ranker likes the passage the search put third
    answer = index.search("Taliban districts government", fake_embedder, k=3, reranker=reranker)
    assert answer.results[0].text == third
    assert reranker.seen == [min(50, index.passage_count)]
    assert [r.rank for r in answer.results] == [1, 2, 3]


def test_a_missing_rerank_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="RERANK_MODEL='/no/such/model'"):
        load_reranker("/no/such/model")


def all_pages(idx, question, embedder, k=20, **options):
    """Every result of a question, page after page of k, as the CLI's --offset and the bot's More give them."""
    results, offset = [], 0
    while True:
        answer = idx.search(question, embedder, k=k, offset=offset, **options)
        results += answer.results
        if not answer.has_more:
            return results
        offset += k


def test_an_article_that_fills_the_best_candidates_hides_nothing(fake_settings, fake_embedder):
    """An article with 80 paragraphs on the question's subject fills the best candidates. The other
    articles score far below it (more than the penalty), so its passages come first; paging goes on
    through all of them and then the other articles', each passage once. Ranked as documents (what
    evaluation asks: an infinite penalty leaves an article's other passages out), the pool widens
    past the 80 to the other articles."""
    paragraphs = [
        f"Quokka census {n}: the quokka colony on Rottnest island counted again, tally {n}." for n in range(80)
    ]
    (fake_settings.corpus_dir / "quokka_diary.txt").write_text("\n\n".join(paragraphs) + "\n")
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    question = "quokka colony census on Rottnest island"
    for mode in ("vector", "hybrid"):
        answer = idx.search(question, fake_embedder, k=5, mode=mode)
        assert [r.article.key for r in answer.results] == ["quokka_diary.txt"] * 5, mode
        everything = all_pages(idx, question, fake_embedder, mode=mode)
        assert len({r.passage_id for r in everything}) == len(everything) == idx.passage_count, mode
        assert [r.rank for r in everything] == list(range(1, idx.passage_count + 1))
        assert [r.article.key for r in everything[:20]] == ["quokka_diary.txt"] * 20, mode
        documents = idx.rank(question, fake_embedder, n=5, per_article=1, penalty=np.inf, mode=mode)
        articles = [idx.articles[idx.passage_article[i]].key for i in documents.picked]
        assert articles[0] == "quokka_diary.txt" and len(set(articles)) == 5, mode
    idx.close()


def test_keyword_mode_reads_its_best_hits_vectors_and_pages_as_every_hits_would(
    fake_settings, fake_embedder, monkeypatch
):
    """Keyword mode orders its hits by BM25 and needs their cosines (shown, and the near-copy
    check) only for the best of them: a pool, widened when the article penalty uses it up. The
    pages are what ranking every hit at once gives, ties at the pool's edge included."""
    paragraphs = [  # six lengths: hits tie in six groups
        f"Quokka census {n}: the quokka colony on Rottnest island counted" + ", again" * (n % 6) + "."
        for n in range(90)
    ]
    (fake_settings.corpus_dir / "quokka_diary.txt").write_text("\n\n".join(paragraphs) + "\n")
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    question = "quokka colony census"
    read = []
    dot = idx.vectors.dot
    monkeypatch.setattr(idx.vectors, "dot", lambda query, rows: read.append(len(rows)) or dot(query, rows))

    def pages():
        return [
            (r.rank, r.passage_id, r.score, r.relevance, r.weak)
            for r in all_pages(idx, question, fake_embedder, k=7, mode="keyword")
        ]

    pooled = pages()
    hits = len(idx.keyword_hits(question)[0])
    assert len(pooled) == hits >= 80 and read[0] == 64  # the first page read a pool's
    at_once = idx.rank(question, fake_embedder, n=hits, mode="keyword")
    assert [(passage_id, relevance) for _, passage_id, _, relevance, _ in pooled] == [
        (int(idx.passage_ids[i]), relevance) for i, relevance in zip(at_once.picked, at_once.picked_relevance)
    ]
    idx.close()


def test_pages_continue_the_order_exactly_and_relevance_never_rises(index, fake_embedder):
    """The order does not depend on k or the offset: pages of 3 put together are the first page of
    20, and the relevance shown never rises from one result to the next (the article penalty can put
    a passage with a higher cosine below one with a lower)."""
    for mode in ("vector", "hybrid", "keyword"):
        question = "Taliban districts government forces Kunduz"
        whole = index.search(question, fake_embedder, k=20, mode=mode).results
        pages = [
            r
            for offset in range(0, 18, 3)
            for r in index.search(question, fake_embedder, k=3, offset=offset, mode=mode).results
        ]
        assert [(r.rank, r.passage_id) for r in pages] == [(r.rank, r.passage_id) for r in whole[:18]], mode
        shown = all_pages(index, question, fake_embedder, mode=mode)
        assert all(a.relevance >= b.relevance for a, b in zip(shown, shown[1:])), mode
    shown = all_pages(index, "Taliban districts government forces Kunduz", fake_embedder)
    assert any(a.score < b.score for a, b in zip(shown, shown[1:]))  # cosine alone would look out of order


def test_the_first_page_prefers_variety_and_later_pages_go_on_into_the_same_articles(index, fake_embedder):
    """An article's third passage comes before another article's passage only when its score is
    higher by more than the penalty; it is shown at its score less the penalty; paging reaches every
    passage of every article. (Vector mode: there the ranking score is the cosine.)"""
    for question in ("Taliban Kunduz", "Taliban districts government forces", "provincial capitals fell"):
        shown = all_pages(index, question, fake_embedder, mode="vector")
        assert len(shown) == index.passage_count
        first = [r.article.key for r in shown[:5]]
        assert max(first.count(k) for k in first) <= 2, question
        nth = [[s.article.key for s in shown[: at + 1]].count(r.article.key) for at, r in enumerate(shown)]
        for at, r in enumerate(shown):
            assert r.relevance == pytest.approx(r.score - (SAME_ARTICLE_PENALTY if nth[at] > 2 else 0), abs=1e-6)
            if nth[at] > 2:  # above every later best-two passage of another article by more than the penalty
                later = [o.score for o, m in zip(shown[at + 1 :], nth[at + 1 :]) if m <= 2]
                assert all(r.score - SAME_ARTICLE_PENALTY >= o - 1e-6 for o in later), question


def test_a_filter_that_leaves_one_article_shows_its_passages_in_ranking_order(index, fake_embedder):
    for mode in ("vector", "hybrid"):
        answer = index.search(
            "Taliban capitals weekend", fake_embedder, k=3, filters=Filters(source="antiwar"), mode=mode
        )
        assert len(answer.results) == 3 and {r.article.source for r in answer.results} == {"Antiwar.com"}
        every = all_pages(
            index, "Taliban capitals weekend", fake_embedder, filters=Filters(source="antiwar"), mode=mode
        )
        assert len(every) == 9 == every[0].article.passages
        if mode == "vector":  # the ranking's own order: by cosine
            assert [r.score for r in every] == sorted((r.score for r in every), reverse=True)


def test_hybrid_paging_goes_past_the_passages_it_fuses(fake_settings, fake_embedder):
    """Hybrid fuses the best fusion_depth passages by meaning and by keywords; filtered to an article
    of more paragraphs than that, paging still reaches every one (the rest follow by cosine)."""
    paragraphs = [
        f"Harbour log {n}: the ferry left at {n % 24} hours with {n} passengers aboard."
        for n in range(DEFAULT_RULE.fusion_depth + 40)
    ]
    paragraphs[7] = "Harbour log 7: a quokka was seen on the ferry ramp."
    (fake_settings.corpus_dir / "harbour_log.txt").write_text("Harbour log\n\n" + "\n\n".join(paragraphs) + "\n")
    run_index(fake_settings)
    idx = SearchIndex.load(fake_settings.index_path, model_name=fake_embedder.name, weak_score=0.2)
    every = all_pages(idx, "quokka on the ferry", fake_embedder, filters=Filters(source="harbour log"))
    assert "quokka" in every[0].text
    assert len({r.passage_id for r in every}) == len(every) == len(paragraphs)
    assert all(a.relevance >= b.relevance for a, b in zip(every, every[1:]))
    idx.close()


def test_the_hybrid_rule_scores_arrays_without_an_index():
    """What a passage scores is the rule's alone: a word's BM25 counts its weight, plus all of it
    again where the passage's vector misses the word (cosine 0), none where it carries it (cosine 1)."""
    from embeddings.search import hybrid

    bm25 = np.array([[2.0, 0.0, 2.0], [0.0, 0.0, 1.0]], np.float32)  # 2 words x 3 passages
    cosine = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)  # of each word to the 2 passages that match
    rule = HybridRule(missed_exponent=1)
    got = hybrid.coverage(bm25, [0.25, 1.0], cosine, idf_sum=4.0, rule=rule)
    assert got == pytest.approx([2.0 * 0.25 / 4, 0.0, (2.0 * 1.25 + 1.0 * 2.0) / 4])
    assert hybrid.keyword_bonus(got, HybridRule(weight=0.5)) == pytest.approx(got / 2)
    assert not hybrid.coverage(bm25, [0.25, 1.0], cosine, idf_sum=0.0).any()  # no word any passage has

    counts = {"kunduz": 3, "selab": 1, "taliban": 60, "ok": 1}
    picked = hybrid.feedback_words(
        list(counts), ["kunduz"], lambda words: [counts[w] for w in words], 100, HybridRule(feedback_words=1)
    )
    assert picked == ["selab"]  # not asked, at least 3 letters, in at most 10% of passages: the rarest
    assert hybrid.without_common(["taliban", "selab"], counts.get, 100, HybridRule(common_term_min=5)) == ["selab"]
