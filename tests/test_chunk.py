import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embeddings.chunk import MIN_WORDS, PARAGRAPH_JOIN, make_passages, split_sentences


def words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def count(text: str) -> int:
    return len(text.split())


def test_sentences_respect_abbreviations_and_quotes():
    text = "The U.S. left on Aug. 9, 2021. Mr. Smith said “No.” He left! A. B. Jones came."
    assert split_sentences(text) == [
        "The U.S. left on Aug. 9, 2021.",
        "Mr. Smith said “No.”",
        "He left!",
        "A. B. Jones came.",
    ]


@pytest.mark.timeout(60)  # a hang guard: the quadratic version took minutes on this text
def test_a_long_paragraph_of_rejected_sentence_ends_is_one_sentence_and_its_end_still_splits():
    """Every '. ' below follows a lone letter, an initial as in "J. Smith", so none ends a sentence:
    the text up to the last one is one sentence (a hostile corpus paragraph like this once made every
    /ask quoting it take 7 s)."""
    run = "~~strike~~`code` *it* à. Co " * 6000
    text = run + "Then it ended. Mr. Smith came."
    assert split_sentences(text) == [run + "Then it ended.", "Mr. Smith came."]


def test_each_paragraph_is_a_passage_verbatim():
    paras = [words(12, "alpha") + ".", words(20, "beta") + "."]
    assert make_passages(paras, count_tokens=count, max_tokens=100) == paras


def test_short_fragment_merges_into_next_paragraph():
    paras = ["Short bit.", words(12) + "."]
    out = make_passages(paras, count_tokens=count, max_tokens=100)
    assert out == ["Short bit.\n\n" + words(12) + "."]


def test_trailing_fragment_merges_into_previous():
    paras = [words(12) + ".", "The end."]
    assert make_passages(paras, count_tokens=count, max_tokens=100) == [words(12) + ".\n\nThe end."]


def test_long_paragraph_splits_at_sentence_boundaries_within_budget():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(30)]
    para = " ".join(sentences)
    out = make_passages([para], count_tokens=count, max_tokens=40)
    assert len(out) > 1
    assert all(count(p) <= 40 for p in out)
    # Nothing lost or rewritten: the pieces are whole sentences that rejoin to the paragraph.
    assert " ".join(out) == para
    assert all(p.endswith(".") for p in out)


def test_a_single_overlong_sentence_is_cut_at_words():
    para = words(100) + "."
    out = make_passages([para], count_tokens=count, max_tokens=30)
    assert all(count(p) <= 30 for p in out)
    assert " ".join(out) == para


def assert_verbatim_slices(passages, paragraphs):
    """Each passage is a slice of the paragraphs as joined, in order, with only whitespace between
    two passages: the pieces, joined, are the original text."""
    text = PARAGRAPH_JOIN.join(p.strip() for p in paragraphs if p.strip())
    at = 0
    for passage in passages:
        found = text.find(passage, at)
        assert found >= 0 and not text[at:found].strip(), (passage, text[at:found])
        at = found + len(passage)
    assert not text[at:].strip()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=400), max_size=12), st.integers(min_value=8, max_value=120))
def test_passages_never_empty_and_within_budget(paras, max_tokens):
    out = make_passages(paras, count_tokens=count, max_tokens=max_tokens)
    assert all(p.strip() for p in out)
    assert_verbatim_slices(out, paras)  # every character of the input survives, in order
    assert all(count(p) <= max_tokens for p in out)
    assert MIN_WORDS > 0


# ------------------------------------------------------------------------------ scripts without spaces

ZH = (
    "市议会周二表示，横跨河流的新大桥将于下个月通车，此前工程多次延误。"
    "市长说，这座桥将缩短两岸居民的通勤时间，并减少市中心的交通拥堵。"
    "反对者认为，建设费用远远超出了最初的预算，而且环境评估不够充分！"
    "工程师们解释说，延误主要是由于去年冬天的洪水和材料短缺造成的？"
    "据官方统计，大桥每天预计可承载超过五万辆汽车和数千名行人。"
)
JA = (
    "市議会は火曜日、川に架かる新しい橋が来月開通すると発表した。"
    "市長は、この橋によって両岸の住民の通勤時間が短くなると述べた。"
    "反対派は、建設費が当初の予算を大幅に上回ったと批判している！"
    "技術者によると、遅れの主な原因は昨年冬の洪水と資材不足だったという？"
)


def characters(text: str) -> int:
    """A tokenizer that reads every character as a token, as BERT's reads Chinese, plus two specials."""
    return len(text) + 2


def test_sentences_end_at_the_marks_of_scripts_written_without_spaces():
    assert split_sentences("大桥下个月通车。市长说：“很好！”真的吗？是的") == [
        "大桥下个月通车。",
        "市长说：“很好！”",
        "真的吗？",
        "是的",
    ]
    assert split_sentences("橋が開通した。「本当？」と聞いた。") == ["橋が開通した。", "「本当？」", "と聞いた。"]
    assert split_sentences("पुल अगले महीने खुलेगा। महापौर ने कहा।") == ["पुल अगले महीने खुलेगा।", "महापौर ने कहा।"]
    assert split_sentences("هل يفتح الجسر؟ قال العمدة نعم.") == ["هل يفتح الجسر؟", "قال العمدة نعم."]


def test_a_chinese_paragraph_is_not_a_fragment_and_a_short_line_is():
    paras = ["大桥通车。", ZH, ZH]
    out = make_passages(paras, count_tokens=characters, max_tokens=1000)
    assert out == ["大桥通车。" + PARAGRAPH_JOIN + ZH, ZH]  # before, all three were merged into one


@pytest.mark.parametrize("text", [ZH * 20, JA * 25], ids=["chinese", "japanese"])
def test_a_long_paragraph_without_spaces_splits_at_its_sentence_ends(text):
    out = make_passages([text], count_tokens=characters, max_tokens=256)
    assert len(out) > 10 and "".join(out) == text
    assert all(characters(p) <= 256 and p.endswith(("。", "！", "？")) for p in out)


def test_a_sentence_longer_than_the_model_reads_is_cut_at_tokens_into_pieces_that_join_to_it():
    run = ZH.replace("。", "，").replace("！", "，").replace("？", "，") * 30  # one sentence, no space
    out = make_passages([run], count_tokens=characters, max_tokens=256)
    assert "".join(out) == run and all(characters(p) <= 256 for p in out)
    assert [len(p) for p in out[:-1]] == [254] * (len(out) - 1)  # as full as the model reads


def test_a_cut_never_separates_a_letter_from_its_combining_mark():
    run = "e\u0301" * 1000  # é written as e + a combining acute accent
    out = make_passages([run], count_tokens=characters, max_tokens=255)
    assert "".join(out) == run and all(p[0] == "e" and characters(p) <= 255 for p in out)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(st.sampled_from("大桥通车。！？ a\u0301\n"), max_size=600), max_size=6),
    st.integers(min_value=3, max_value=80),
)
def test_any_text_without_spaces_becomes_pieces_within_budget_that_join_to_it(paras, max_tokens):
    out = make_passages(paras, count_tokens=characters, max_tokens=max_tokens)
    assert_verbatim_slices(out, paras)
    assert all(p.strip() and (characters(p) <= max_tokens or len(p) == 1) for p in out)


@pytest.mark.model
@pytest.mark.parametrize("text", [ZH * 18, JA * 22, ZH.replace("。", "") * 18], ids=["chinese", "japanese", "no-stops"])
def test_passages_of_any_script_fit_the_real_models_input(real_embedder, text):
    """A Chinese paragraph of thousands of tokens was once one passage, of which the model read
    only the first max_tokens."""
    tokens = real_embedder.count_tokens
    assert tokens(text) > 2500
    out = make_passages([text], count_tokens=tokens, max_tokens=real_embedder.max_tokens)
    assert "".join(out) == text
    assert all(tokens(p) <= real_embedder.max_tokens for p in out)
    assert sum(tokens(p) - 2 for p in out) == tokens(text) - 2  # every token read, once
