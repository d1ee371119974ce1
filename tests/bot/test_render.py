"""bot/render.py without Discord: escaping, highlighting, cutting, and Discord's limits for any input."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace

import discord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import render
from embeddings.answer import Answer, Article, Result
from embeddings.chunk import sentence_spans
from tests.bot.helpers import LIVE_MARKUP, check_message

HOSTILE = [
    "@everyone",
    "@here",
    "<@123456789012345678>",
    "<@!123456789012345678>",
    "<@&1>",
    "<#1>",
    "<:e:1>",
    "<t:1:R>",
    "[link](https://evil.example)",
    "# heading",
    "## h2",
    "### h3",
    "-# subtext",
    "> quote",
    ">>> quote all",
    "```py\nprint(1)\n```",
    "`code`",
    "**bold**",
    "*it*",
    "__under__",
    "~~strike~~",
    "||spoiler||",
    "- item",
    "1. item",
    "\\",
    "https://example.com/a_b_(c)",
    "</ask:1>",
    "@" + "1" * 18,
]


def unescape(markdown: str) -> str:
    """What Discord displays for our escaped text: escapes, <url> brackets and ZWSP vanish."""
    text = re.sub(r"<(https?://[^>\s]+)>", r"\1", markdown)
    text = re.sub(r"\\([^0-9A-Za-z\s])", r"\1", text)
    return text.replace("\u200b", "")


def outside_links(markdown: str) -> str:
    """The text outside <https://...> autolinks (inside one, nothing renders as markup or a mention)."""
    return re.sub(r"<https?://[^>\s]+>", "<link>", markdown)


def test_hostile_snippets_display_verbatim_and_inert():
    for snippet in HOSTILE:
        out = render.escape(snippet)
        assert unescape(out) == snippet, (snippet, out)
        assert not LIVE_MARKUP.search(out), (snippet, out)
        assert "**" not in out and "__" not in out and "||" not in out and "~~" not in out


def test_line_start_syntax_is_escaped_anywhere_in_a_passage():
    text = "Intro line.\n# Heading\n-# small\n> quoted\n- a list\n12. numbered\nplain # not a heading"
    out = render.escape(text)
    assert unescape(out) == text
    assert not LIVE_MARKUP.search(out)
    for line in out.split("\n")[1:-1]:
        assert line.startswith("\\") or re.match(r"\d+\\\.", line), line
    assert out.endswith("plain # not a heading")  # mid-line '#' is no markup: left alone


def test_urls_stay_clickable_and_cannot_swallow_bold():
    text = "Read https://example.com/report_2021. Then stop."
    hl = (0, text.index(" Then"))
    out = render.passage_markdown(text, hl, 4000)
    assert out == "**Read <https://example.com/report_2021>.** Then stop."


def test_only_the_highlight_is_bold():
    text = "Kabul fell on **Sunday**. The Taliban seized Kunduz and Sar-e-Pul on Monday. Then *calm*."
    sentence = "The Taliban seized Kunduz and Sar-e-Pul on Monday."
    hl = (text.index(sentence), text.index(sentence) + len(sentence))
    out = render.passage_markdown(text, hl, 4000)
    assert out == r"Kabul fell on \*\*Sunday\*\*. **The Taliban seized Kunduz and Sar-e-Pul on Monday.** Then \*calm\*."
    assert unescape(out.replace("**The", "The").replace("Monday.**", "Monday.")) == text


def sentences(n: int, words: int = 12) -> str:
    return " ".join(f"Sentence {i} " + " ".join(["word"] * words) + "." for i in range(n))


def test_a_cut_never_leaves_line_start_syntax_before_the_ellipsis():
    for marker in ("-#", "#", "##", "-", "+", "1."):
        text = "word " * 30 + "\n" + marker + " " + "tail " * 300
        for budget in range(150, 175):
            out = render.passage_markdown(text, None, budget)
            assert not LIVE_MARKUP.search(out) and not re.search(r"(?m)^(-#|#{1,3}|[-+]|\d+\.) ", out), (marker, out)


def test_long_passage_is_cut_at_a_sentence_boundary_around_the_highlight():
    text = sentences(80)
    spans = sentence_spans(text)
    hl = spans[60]
    out = render.passage_markdown(text, hl, 1000)
    assert render.dlen(out) <= 1000
    assert out.startswith("… ") and out.endswith(" …")
    assert "**Sentence 60 " in out  # the best-matching sentence is kept, in bold
    inner = out[2:-2].replace("**", "")
    assert inner in text and re.match(r"Sentence \d+ ", inner) and inner.endswith(".")


def test_passage_without_highlight_keeps_its_start():
    text = sentences(80)
    out = render.passage_markdown(text, None, 500)
    assert out.startswith("Sentence 0 ") and out.endswith(". …")


def test_one_giant_sentence_is_cut_at_a_word():
    text = " ".join(["antidisestablishmentarianism"] * 400)
    out = render.passage_markdown(text, None, 1000)
    assert render.dlen(out) <= 1000 and out.endswith("antidisestablishmentarianism …")
    nospace = "x" * 9000
    assert render.dlen(render.passage_markdown(nospace, None, 1000)) <= 1000


def test_astral_characters_count_double():
    text = "😀" * 3000
    out = render.passage_markdown(text, None, 1000)
    assert render.dlen(out) <= 1000 and len(out) < 520


# ------------------------------------------------------------------------- any answer fits

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=60), st.sampled_from([". ", "\n", "\n\n", "😀"])),
    max_size=400,
).map("".join)


@st.composite
def answers(draw):
    n = draw(st.integers(1, 10))
    results = []
    for i in range(n):
        text = draw(hostile_text.filter(lambda t: t.strip()))
        if draw(st.booleans()):
            text = text * draw(st.integers(2, 12))  # very long passages
        spans = sentence_spans(text)
        hl = draw(st.sampled_from(spans)) if spans and draw(st.booleans()) else None
        article = Article(
            id=i,
            key=f"k{i}",
            title=draw(st.one_of(st.none(), hostile_text)),
            source=draw(st.one_of(st.none(), hostile_text)),
            authors=tuple(draw(st.lists(hostile_text, max_size=3))),
            published=draw(st.one_of(st.none(), st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1)))),
            updated=None,
            url=draw(st.one_of(st.none(), st.just("https://example.com/a"), hostile_text)),
            passages=draw(st.integers(1, 10_000)),
        )
        copies = tuple(
            replace(article, key=f"copy{j}", source=draw(st.one_of(st.none(), hostile_text)))
            for j in range(draw(st.integers(0, 5)))
        )
        results.append(
            Result(
                rank=i + 1,
                score=draw(st.floats(-1, 1)),
                passage_id=i,
                position=0,
                text=text,
                article=article,
                highlight=hl,
                weak=draw(st.booleans()),
                also_in=copies,
            )
        )
    return Answer(
        query=draw(hostile_text.filter(str.strip)),
        results=results,
        weak=draw(st.booleans()),
        excluded_undated=draw(st.integers(0, 3)),
        has_more=draw(st.booleans()),
        filters=draw(st.sampled_from([{}, {"source": "@everyone [x](https://e.example)"}])),
    )


def payload(answer: Answer) -> dict:
    return {
        "content": render.answer_content(answer),
        "embeds": [e.to_dict() for e in render.answer_embeds(answer)],
        "allowed_mentions": discord.AllowedMentions.none().to_dict(),
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(answers())
def test_any_answer_fits_discord_limits_and_is_inert(answer):
    data = payload(answer)
    check_message(data)
    for e, r in zip(data["embeds"], answer.results):
        body = e["description"]
        assert body.startswith(render.QUOTE)
        visible = outside_links(body[len(render.QUOTE) :])
        assert not LIVE_MARKUP.search(visible), body
        assert "@everyone" not in visible and "@here" not in visible
        shown = unescape(body[len(render.QUOTE) :].replace("**", ""))
        # verbatim: what is shown is the passage, or whole pieces of it between ellipses
        for piece in filter(None, (p.strip() for p in shown.split("…"))):
            assert " ".join(piece.split()) in " ".join(unescape(render.escape(r.text)).split()), piece
    question = data["content"].split("\n")[0]  # the other lines are the bot's own -# notes
    for text in [question] + [e.get("title", "") for e in data["embeds"]]:
        text = outside_links(text)
        assert not LIVE_MARKUP.search(text) and "@everyone" not in text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_text, min_size=1, max_size=3), st.integers(0, 2))
def test_context_embeds_fit(texts, target):
    article = Article(
        id=1, key="k", title="t" * 500, source="s", authors=(), published=None, updated=None, url=None, passages=3
    )
    passages = [
        Result(rank=0, score=0, passage_id=i, position=i, text=t * 30 or "x", article=article)
        for i, t in enumerate(texts)
    ]
    embeds = [e.to_dict() for e in render.context_embeds(passages, target)]
    check_message({"embeds": embeds, "allowed_mentions": {"parse": []}})


def test_choice_names_fit():
    name, value = render.choice_name("😀" * 80)
    assert render.dlen(name) <= 100 and render.dlen(value) <= 100 and name.startswith(value[:10])


def test_syndicated_copies_are_named_in_the_footer():
    def article(key, source):
        return Article(
            id=1,
            key=key,
            title="Kunduz falls",
            source=source,
            authors=(),
            published=dt.date(2021, 8, 9),
            updated=None,
            url=None,
            passages=4,
        )

    result = Result(
        rank=1,
        score=0.7,
        passage_id=1,
        position=0,
        text="Kunduz fell on Sunday, officials said.",
        article=article("a.txt", "Daily"),
        also_in=(article("wire.txt", "Wire Weekly"),),
    )
    data = payload(Answer(query="q", results=[result], weak=False))
    assert data["embeds"][0]["footer"]["text"].endswith("also in: Wire Weekly (Aug 9, 2021)")
    check_message(data)
