"""Hostile and very long corpus text through the real bot; /sources paging."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from embeddings.config import Settings
from tests.bot.helpers import LIVE_MARKUP, both_stores, check_sent, in_store, started_bot, texts_of
from tests.fake_discord import run
from tests.helpers import FakeEmbedder

HOSTILE_PARAGRAPHS = [
    "Kunduz residents @everyone and @here were pinged by <@123456789012345678> and <@&987654321098765432> in <#1>.",
    "# Kunduz heading that must not be a heading, with [a masked link](https://evil.example) inside.",
    "-# Kunduz subtext line\n> Kunduz quote line\n```\nKunduz code fence\n``` and ||spoiler|| and **bold** Kunduz.",
]


class WideEmbedder(FakeEmbedder):
    """The fake embedder with a huge input limit, so a giant paragraph stays one passage."""

    name = "fake-wide-embedder"
    max_tokens = 1_000_000


@pytest.fixture
def hostile_settings(request, tmp_path):
    corpus = tmp_path / "hostile"
    corpus.mkdir()
    giant = " ".join(f"Kunduz sentence number {i} keeps going with more words about the siege." for i in range(900))
    records = [
        {
            "title": "@everyone **Kunduz** [click](https://evil.example) " + "x" * 400,
            "source": "<@&1> Press",
            "authors": ["@here", "Jane `Doe`"],
            "published": "2021-08-09",
            "url": "https://example.com/kunduz",
            "text": "\n\n".join(HOSTILE_PARAGRAPHS),
        },
        {"title": "A giant paragraph", "source": "Long Times", "text": giant},
    ]
    (corpus / "hostile.json").write_text(json.dumps(records))
    settings = replace(
        Settings.from_env({}),
        corpus_dir=corpus,
        index_path=tmp_path / "index.sqlite3",
        embedding_model=WideEmbedder.name,
    )
    embedder = WideEmbedder()
    return in_store(request, settings, embedder), embedder


@both_stores("hostile_settings")
def test_hostile_and_giant_passages_render_inert_and_within_limits(hostile_settings):
    settings, embedder = hostile_settings

    async def main():
        async with started_bot(settings, embedder) as (bot, fake):
            giant = []
            for k in (1, 4, 10):
                rec = await fake.send_slash(
                    "ask", {"question": "Kunduz siege @everyone <@1>", "results": k}, member=fake.make_member()
                )
                final = await rec.wait_final(timeout=10)
                check_sent(rec)
                assert 1 <= len(final.embeds) <= 4
                for text in texts_of(final.data):
                    assert not LIVE_MARKUP.search(text), text
                    assert "@everyone" not in text and "@here" not in text
                giant += [e["description"] for e in final.embeds if "sentence number" in e["description"]]
            # the 64 KB paragraph is cut after a whole sentence, with an ellipsis
            assert giant and all(b.endswith("the siege. …") for b in giant)
            # /sources lists the hostile title inertly too
            src = await fake.send_slash("sources")
            ev = await src.wait_final()
            check_sent(src)
            assert ev.ephemeral
            description = ev.embeds[0]["description"].replace("](<https://example.com/kunduz>)", "")
            assert not LIVE_MARKUP.search(description.replace("**[", "**")) and "@everyone" not in description

    run(main())


@pytest.fixture
def many_articles(request, tmp_path, fake_embedder):
    corpus = tmp_path / "many"
    corpus.mkdir()
    lines = [
        json.dumps(
            {
                "title": f"Article {i:02d}",
                "source": "Wire",
                "published": f"2021-08-{i % 28 + 1:02d}",
                "text": f"Paragraph about topic {i} with enough words to be a passage of its own here.",
            }
        )
        for i in range(23)
    ]
    (corpus / "wire.jsonl").write_text("\n".join(lines))
    settings = replace(
        Settings.from_env({}),
        corpus_dir=corpus,
        index_path=tmp_path / "index.sqlite3",
        embedding_model=fake_embedder.name,
    )
    return in_store(request, settings)


@both_stores("many_articles")
def test_sources_pages_with_buttons(many_articles, fake_embedder):
    async def main():
        async with started_bot(many_articles, fake_embedder) as (bot, fake):
            rec = await fake.send_slash("sources")
            ev = await rec.wait_final()
            assert rec.callback_type == 4 and ev.ephemeral
            embed = ev.embeds[0]
            assert embed["title"] == "Indexed articles (23)" and embed["footer"]["text"] == "page 1 of 3"
            assert (
                "**1. Article 00**" in embed["description"] and "Wire · Aug 1, 2021 · 1 passage" in embed["description"]
            )
            previous, nxt = ev.components[0]["components"]
            assert previous["disabled"] and not nxt["disabled"]
            for page in (2, 3):
                click = await fake.click(rec, nxt["custom_id"])
                ev = await click.wait_final()
                assert ev.embeds[0]["footer"]["text"] == f"page {page} of 3"
                check_sent(click)
            assert ev.components[0]["components"][1]["disabled"]
            assert "**21. Article 20**" in ev.embeds[0]["description"]
            back = await fake.click(rec, previous["custom_id"])
            assert (await back.wait_final()).embeds[0]["footer"]["text"] == "page 2 of 3"

    run(main())
