"""embeddings.parse / embeddings.dates: article files -> clean articles with metadata.

The shipped-corpus expectations below were checked by reading each file (`cat -A corpus/*.txt`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embeddings.dates import parse_date, parse_date_line
from embeddings.parse import (
    SUPPORTED_SUFFIXES,
    ArticleDoc,
    SkipFile,
    iter_corpus_files,
    load_file,
    parse_file,
    sidecar_bytes,
)

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "corpus"
FIXTURES = HERE / "fixtures" / "parse"

D = dt.date


def shipped(stem_prefix: str) -> ArticleDoc:
    [path] = CORPUS.glob(f"{stem_prefix}_*.txt")
    [doc] = parse_file(path.name, path.read_bytes())
    return doc


def all_text(doc: ArticleDoc) -> str:
    return "\n\n".join(doc.paragraphs) + "\n\n" + (doc.description or "")


# --------------------------------------------------------------------------------------------------
# The shipped corpus
# --------------------------------------------------------------------------------------------------

SHIPPED = {
    "000": dict(
        title="The insurgents' success in northern Afghanistan is an ill omen for Kabul.",
        authors=("Sharif Hassan",),
        published=D(2021, 8, 9),
        updated=None,
        source=None,
        description=None,
        count=8,
        first="Since the Taliban emerged in the 1990s, Afghanistan's north has been the heart of resistance to the"
        " insurgents — predominantly ethnic Pashtun and from the south — and a bulwark against a complete takeover.",
        last="They have also courted fighters from neighboring Tajikistan and Uzbekistan who were unhappy with the"
        " presence of foreign forces and despised the Northern Alliance leaders, analysts say, for corruption and"
        ' cooperating with the "occupation."',
    ),
    "001": dict(
        title="Taliban Enter Key Cities in Afghanistan's North After Swift Offensive",
        authors=("Thomas Gibbons-Neff", "Najim Rahim"),
        published=D(2021, 6, 20),
        updated=D(2021, 8, 6),
        source=None,
        description="The setbacks come at a harrowing moment for Afghanistan, just as American and international"
        " troops are set to leave the country in coming weeks.",
        count=18,
        first="KABUL, Afghanistan — The Taliban entered two provincial capitals in northern Afghanistan Sunday, local"
        " officials said, the culmination of an insurgent offensive that has overrun dozens of rural districts and"
        " forced the surrender and capture of hundreds of government forces and their military equipment in recent"
        " weeks.",
        last="On Saturday, in a clear sign of the deteriorating security situation, the Afghan government appointed a"
        " new acting minister of defense, minister of interior and army chief.",
    ),
    "002": dict(
        title="Taliban Offensive Gobbles Up Territory in Northern Afghanistan",
        authors=(),
        published=None,
        updated=None,
        source=None,
        description="Members of Afghan security forces take their positions during an ongoing clash between Tal",
        count=15,
        first="The Taliban on Monday announced it captured a key district in the northern province of Kunduz and its"
        " forces have encircled the provincial capital, the latest battlefield gains in a relentless campaign waged"
        " by the Islamist extremists against the internationally recognized government in Kabul as U.S. and NATO"
        " forces prepare to end their 20-year intervention in Afghanistan.",
        last="“The war management is weak because they are not keeping one commander two months in one assignment."
        " They are deployed from one place to another and from that place to still another. All the time passes"
        " during these reshuffle,” MP Amir Mohammad Khaksar complained.",
    ),
    "003": dict(
        title="Afghanistan Update",
        authors=(),
        published=None,
        updated=None,
        source=None,
        description=None,
        count=17,
        first="The Taliban offensive swept through northern Afghanistan, adding pressure to the Kabul government as US"
        " troops were preparing to withdraw from the country.",
        last="“This is a very terrible situation. The US government was caught off guard and could not provide a"
        " meaningful response,” Mill said.",
    ),
    "004": dict(
        title="Taliban Overruns Much of Northern Afghanistan in Weekend Offensive",
        authors=("Jason Ditz",),
        published=None,
        updated=None,
        source="Antiwar.com",
        description="Five more provincial capitals have fallen this weekend",
        count=9,
        first="The Afghan government had been losing ground to the Taliban for weeks, and provincial capitals were"
        " starting to be contested. This weekend, the floodgates opened and the Taliban rapidly overran a number of"
        " key cities, seizing no less than five provincial capitals.",
        last="The Taliban issued a statement later Sunday saying there had been no deal on a ceasefire yet, and warning"
        " the US against trying any further intervention. The Biden Administration has ordered B-52 bombers into the"
        " mix, and past comments suggest they’re going to continue to intervene to prevent a total Taliban victory.",
    ),
}


@pytest.mark.parametrize("prefix", sorted(SHIPPED))
def test_shipped_article_metadata_and_shape(prefix):
    want = SHIPPED[prefix]
    doc = shipped(prefix)
    assert doc.key.startswith(prefix)
    assert doc.title == want["title"]
    assert doc.authors == want["authors"]
    assert doc.published == want["published"]
    assert doc.updated == want["updated"]
    assert doc.source == want["source"]
    assert doc.url is None
    assert doc.description == want["description"]
    assert len(doc.paragraphs) == want["count"]
    assert doc.paragraphs[0] == want["first"]
    assert doc.paragraphs[-1] == want["last"]
    assert doc.warnings == ()


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.txt")), ids=lambda p: p.name[:3])
def test_shipped_paragraphs_are_verbatim_slices_of_the_file(path):
    original = path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\r", "\n")
    # the one change parsing makes to text: 004's mojibake (a UTF-8 no-break space read as
    # Windows-1257) is repaired
    original = original.replace("lossesĀ\u00a0 in", "losses\u00a0 in")
    [doc] = parse_file(path.name, path.read_bytes())
    for paragraph in doc.paragraphs:
        assert paragraph and "\x00" not in paragraph
        assert paragraph in original
    # header lines are metadata, not passages
    assert doc.title not in doc.paragraphs
    assert not any(p.startswith(("By ", "Author:")) for p in doc.paragraphs)


FURNITURE = {
    "000": [
        "Taliban Offensive in Afghanistan >",
        "[The Taliban take a sixth provincial capital as government forces reel.](#)",
        "Cities fall to the Taliban in rapid succession.",
        "By Sharif Hassan",
        "Aug. 9, 2021",
    ],
    "001": [
        "Agence France-Presse — Getty Images",
        "Afghan security forces at an army outpost in Kunduz that was attacked by Taliban forces last year.",
        "Sign up for a daily email",
        "Get it sent to your inbox.",
        "Understand the Taliban Takeover in Afghanistan",
        "Who are the Taliban?",
        "Here's more on their origin story and their record as rulers.",
        "Jim Huylebroek for The New York Times",
        "Afghan soldiers fighting Taliban militants in Lashkar Gah last month.",
        "Published June 20, 2021",
        "By Thomas Gibbons-Neff",
    ],
    "002": ["Please let us know if you're having issues with commenting."],
    "003": ["Source link"],
    "004": [
        "Author: Jason Ditz",
        "Jason Ditz is Senior Editor for Antiwar.com.",
        "He has 20 years of experience in foreign policy research",
    ],
}


@pytest.mark.parametrize("prefix", sorted(FURNITURE))
def test_shipped_furniture_is_removed(prefix):
    doc = shipped(prefix)
    for furniture in FURNITURE[prefix]:
        assert furniture not in all_text(doc), furniture
    if doc.description:  # 002's truncated caption and 004's dek live in description, not in the body
        assert doc.description not in doc.paragraphs


REAL_SENTENCES_NEAR_FURNITURE = {
    "000": ['cooperating with the "occupation."'],
    "001": [
        "In another, dozens of government troops surrendered together after running low on ammunition.",
        "The looming U.S. withdrawal means Afghan troops will be left without the kind of combat support",
        "On Friday, Afghanistan's president, Ashraf Ghani, is to meet President Biden at the White House",
        "In the last 24 hours, around a dozen districts have fallen to the Taliban",
        '"There is a new, robust and effective plan to retake areas from which we have pulled back our forces."',
        "There are roughly 400 districts in the country,",
        "Afghan forces and U.S. airstrikes managed to push the insurgents back.",
        "The current situation does not bode well for government forces",
        "according to data collected by The New York Times.",
    ],
    "002": [
        "All the time passes during these reshuffle,” MP Amir Mohammad Khaksar complained.",
        "to help mobilize and train “public uprising forces” against the Taliban.",
    ],
    "003": [
        "“Of course this gives them the upper hand. The north is one of the main areas where many of us hope"
        " resistance will emerge.”",
        "The Taliban also besieged Afghanistan’s second and third largest cities",
        "could not provide a meaningful response,” Mill said.",
    ],
    "004": [
        "That’s a lot of losses\u00a0 in not much time.",  # mojibake "Ā\u00a0" repaired to the no-break space
        "past comments suggest they’re going to continue to intervene to prevent a total Taliban victory.",
    ],
}


@pytest.mark.parametrize("prefix", sorted(REAL_SENTENCES_NEAR_FURNITURE))
def test_shipped_real_sentences_are_kept(prefix):
    body = "\n\n".join(shipped(prefix).paragraphs)
    for sentence in REAL_SENTENCES_NEAR_FURNITURE[prefix]:
        assert sentence in body, sentence


def test_shipped_trailing_nbsp_is_stripped_but_text_kept():
    doc = shipped("002")
    assert not any(p.endswith(("\u00a0", " ")) for p in doc.paragraphs)
    assert any(p.endswith("help push back the Taliban offensive.") for p in doc.paragraphs)


def test_iter_corpus_files_lists_shipped_corpus():
    assert [p.name[:3] for p in iter_corpus_files(CORPUS)] == ["000", "001", "002", "003", "004"]


# --------------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Aug. 9, 2021", D(2021, 8, 9)),
        ("Aug 9, 2021", D(2021, 8, 9)),
        ("Aug 9 2021", D(2021, 8, 9)),
        ("August 9, 2021", D(2021, 8, 9)),
        ("august 9, 2021", D(2021, 8, 9)),
        ("Sept. 11, 2001", D(2001, 9, 11)),
        ("Sep. 11, 2001", D(2001, 9, 11)),
        ("June 20, 2021", D(2021, 6, 20)),
        ("May 3, 2020", D(2020, 5, 3)),
        ("9 August 2021", D(2021, 8, 9)),
        ("9 Aug. 2021", D(2021, 8, 9)),
        ("9th August 2021", D(2021, 8, 9)),
        ("2021-08-09", D(2021, 8, 9)),
        ("2021-08-09T10:15:00Z", D(2021, 8, 9)),
        ("2021-08-09 10:15", D(2021, 8, 9)),
        ("  Aug. 9, 2021  ", D(2021, 8, 9)),
        ("Monday, Aug. 9, 2021", D(2021, 8, 9)),
        ("Aug. 9, 2021, 10:15 a.m. ET", D(2021, 8, 9)),
        ("Aug. 9, 2021 at 3 p.m.", D(2021, 8, 9)),
        ("Feb. 29, 2024", D(2024, 2, 29)),
        ("August. 9, 2021", D(2021, 8, 9)),
        # everyday forms of news sites, in English, French, German and Spanish
        ("3:14 PM EST, Tue March 5, 2024", D(2024, 3, 5)),
        ("10:02 AM ET, Wed March 6, 2024", D(2024, 3, 6)),
        ("11:30 PM PST, March 5, 2024", D(2024, 3, 5)),  # the date as written, never moved to another zone
        ("12. März 2024", D(2024, 3, 12)),
        ("Mi., 6. März 2024, 10:02 Uhr", D(2024, 3, 6)),
        ("4 mars 2024", D(2024, 3, 4)),
        ("1er mars 2024 à 14h30", D(2024, 3, 1)),
        ("5 de marzo de 2024", D(2024, 3, 5)),
        ("martes, 5 de marzo de 2024", D(2024, 3, 5)),
        ("13/05/2024", D(2024, 5, 13)),  # numeric, but only one reading is a real date
        ("2024/03/05", D(2024, 3, 5)),
        ("05/05/2024", D(2024, 5, 5)),
        # rejected: impossible, ambiguous or not a date at all -> None, never a guess
        ("05.03.2024", None),  # 5 March or May 3: needs DATE_ORDER or the article's language
        ("03/05/2024", None),
        ("03/05/24", None),  # the century would be a guess
        ("31.02.2024", None),
        ("March 2024", None),
        ("2 days ago", None),
        ("tomorrow", None),
        ("about March 5, 2024", None),
        ("1709651640", None),  # a bare number is not read as a timestamp
        ("Feb. 30, 2021", None),
        ("Feb. 29, 2021", None),
        ("2021-13-01", None),
        ("2021-02-30", None),
        ("Aug. 32, 2021", None),
        ("Aug. 0, 2021", None),
        ("Augst 9, 2021", None),
        ("Aug. 9, 2021 25:00", None),
        ("Aug. 9", None),
        ("9/8/2021", None),
        ("yesterday", None),
        ("soon", None),
        ("", None),
        ("The Taliban took Kunduz on Aug. 9, 2021.", None),
    ],
)
def test_parse_date(text, expected):
    assert parse_date(text) == expected


def test_an_ambiguous_numeric_date_is_read_in_the_order_given():
    assert (parse_date("03/05/2024", "DMY"), parse_date("03/05/2024", "MDY")) == (D(2024, 5, 3), D(2024, 3, 5))
    assert (parse_date("05.03.2024", "DMY"), parse_date("05.03.2024", "MDY")) == (D(2024, 3, 5), D(2024, 5, 3))
    assert parse_date("31.02.2024", "DMY") is None and parse_date("Feb. 30, 2021", "MDY") is None


def dates_of(line):
    return (line.published and line.published.date(), line.updated and line.updated.date())


def test_parse_date_line_forms():
    line = parse_date_line("Published June 20, 2021 Updated Aug. 6, 2021")
    assert dates_of(line) == (D(2021, 6, 20), D(2021, 8, 6))
    line = parse_date_line("Published: June 20, 2021 | Updated: Aug. 6, 2021, 10:15 a.m. ET")
    assert dates_of(line) == (D(2021, 6, 20), D(2021, 8, 6))
    assert dates_of(parse_date_line("Aug. 9, 2021")) == (D(2021, 8, 9), None)
    assert dates_of(parse_date_line("Updated Aug. 6, 2021")) == (None, D(2021, 8, 6))
    line = parse_date_line("Published Feb. 30, 2021")
    assert (line.published.text, line.published.date(), line.updated) == ("Feb. 30, 2021", None, None)
    for not_a_date_line in ("Published yesterday", "By Sharif Hassan", "It was published Aug. 9, 2021, he said.",
                            "Stand up for March 5, 2024", "Posted in 2024"):  # fmt: skip
        assert parse_date_line(not_a_date_line) is None


@pytest.mark.parametrize(
    "line, published, updated",
    [
        ("Published 3:14 PM EST, Tue March 5, 2024", D(2024, 3, 5), None),
        ("Updated 10:02 AM ET, Wed March 6, 2024", None, D(2024, 3, 6)),
        ("Posted: March 5, 2024", D(2024, 3, 5), None),
        ("Publié le 4 mars 2024", D(2024, 3, 4), None),
        ("Publié le 4 mars 2024 à 14h30 - Mis à jour le 5 mars 2024", D(2024, 3, 4), D(2024, 3, 5)),
        ("Veröffentlicht am 12. März 2024, 14:30 Uhr", D(2024, 3, 12), None),
        ("Aktualisiert am 13. März 2024", None, D(2024, 3, 13)),
        ("Publicado el 5 de marzo de 2024", D(2024, 3, 5), None),
        ("Actualizado: 6 de marzo de 2024 - 14:30 CET", None, D(2024, 3, 6)),
    ],
)
def test_labelled_date_lines_in_four_languages(line, published, updated):
    assert dates_of(parse_date_line(line)) == (published, updated)


def test_an_ambiguous_date_line_is_still_a_date_line():
    line = parse_date_line("Posted: 03/05/2024")
    assert line.published.ambiguous and line.published.date() is None
    assert line.published.date("MDY") == D(2024, 3, 5)


def test_impossible_date_line_is_dropped_with_a_warning_not_guessed():
    text = "A Headline Here\n\nBy Jane Doe\n\nFeb. 30, 2021\n\nThe body of the article is here.\n"
    [doc] = parse_file("a.txt", text.encode())
    assert doc.published is None
    assert doc.paragraphs == ("The body of the article is here.",)
    assert any("Feb. 30, 2021" in w for w in doc.warnings)


# --------------------------------------------------------------------------------------------------
# Headers written the way news sites write them
# --------------------------------------------------------------------------------------------------

BODY_EN = "The city council approved the budget on Tuesday after a long debate.\n\nThe vote was close."
BODY_DE = (
    "Die Straßen in mehreren Orten waren am Montag überflutet, und viele Häuser mussten geräumt werden. Die"
    " Feuerwehr ist mit allen Kräften im Einsatz, und auch das Technische Hilfswerk wurde gerufen.\n\n"
    "Nach Angaben der Behörden sind bisher keine Menschen verletzt worden. Die Lage ist aber nicht entspannt,"
    " denn für die Nacht wird weiterer Regen erwartet, der auf die bereits gesättigten Böden fällt."
)
BODY_FR = (
    "Les syndicats ont appelé à une grève de vingt-quatre heures dans les transports publics, qui pourrait"
    " perturber les déplacements de milliers de voyageurs. Le gouvernement a dit qu'il était prêt au dialogue"
    " avec les représentants des salariés.\n\n"
    "Selon la direction, le trafic sera très perturbé sur les lignes du réseau pendant toute la journée, et"
    " les usagers sont invités à reporter leurs déplacements. Les écoles ne sont pas concernées par cette grève."
)


def parse_text(text: str, key: str = "a.txt", **options) -> ArticleDoc:
    [doc] = parse_file(key, text.encode(), **options)
    return doc


def assert_only_body(doc: ArticleDoc, body: str) -> None:
    """The article's text is exactly its body: no header line is quoted."""
    assert doc.paragraphs == tuple(body.split("\n\n"))


def test_cnn_style_header_is_metadata():
    doc = parse_text(
        "Markets Slide as Rates Rise\n\nBy Marcus Lee, CNN\nUpdated 10:02 AM ET, Wed March 6, 2024\n\n"
        f"Published 3:14 PM EST, Tue March 5, 2024\n\n{BODY_EN}\n"
    )
    assert (doc.title, doc.authors, doc.source) == ("Markets Slide as Rates Rise", ("Marcus Lee",), "CNN")
    assert (doc.published, doc.updated) == (D(2024, 3, 5), D(2024, 3, 6))
    assert_only_body(doc, BODY_EN)
    assert doc.warnings == ()


def test_title_byline_and_date_in_one_block():
    doc = parse_text(f"Markets Slide as Rates Rise\nBy Marcus Lee | Reuters\nMarch 5, 2024\n\n{BODY_EN}\n")
    assert (doc.title, doc.authors, doc.source, doc.published) == (
        "Markets Slide as Rates Rise", ("Marcus Lee",), "Reuters", D(2024, 3, 5)
    )  # fmt: skip
    assert_only_body(doc, BODY_EN)


@pytest.mark.parametrize("date_line", ["05.03.2024", "Posted: 03/05/2024"])
def test_ambiguous_date_glued_to_the_first_paragraph_is_not_quoted_and_not_guessed(date_line):
    doc = parse_text(f"Council Approves Budget\n\n{date_line}\n{BODY_EN}\n")
    assert doc.published is None
    assert_only_body(doc, BODY_EN)
    [warning] = doc.warnings
    assert "could be 2024-" in warning and "DATE_ORDER" in warning and "article kept undated" in warning


@pytest.mark.parametrize("order, expected", [("DMY", D(2024, 5, 3)), ("MDY", D(2024, 3, 5))])
def test_date_order_setting_reads_an_ambiguous_date(order, expected):
    doc = parse_text(f"Council Approves Budget\n\nPosted: 03/05/2024\n\n{BODY_EN}\n", date_order=order)
    assert (doc.published, doc.warnings) == (expected, ())


def test_date_order_setting(tmp_path, fake_embedder):
    from embeddings.config import Settings
    from embeddings.errors import ConfigError
    from embeddings.index import run_index
    from embeddings.store import connect_for_reading

    assert Settings.from_env({}).date_order is None
    assert Settings.from_env({"DATE_ORDER": " dmy "}).date_order == "DMY"
    with pytest.raises(ConfigError, match="DATE_ORDER='YMD' must be DMY"):
        Settings.from_env({"DATE_ORDER": "YMD"})

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "budget.txt").write_text(f"Council Approves Budget\n\nPosted: 03/05/2024\n\n{BODY_EN}\n")
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)

    def published() -> str | None:
        with closing(connect_for_reading(settings.index_path)) as conn:
            return conn.execute("SELECT published FROM articles").fetchone()[0]

    report = run_index(settings)
    assert published() is None and any("DATE_ORDER" in w for _, w in report.warnings)
    report = run_index(replace(settings, date_order="MDY"))  # the file is read again under the new order
    assert report.changed == ["budget.txt"] and published() == "2024-03-05"
    assert run_index(replace(settings, date_order="MDY")).unchanged == ["budget.txt"]


def test_date_order_must_be_known():
    with pytest.raises(ValueError):
        parse_file("a.txt", b"x", date_order="YMD")


def test_german_article_byline_and_dates():
    doc = parse_text(f"Hochwasser in Bayern\n\nVon Katrin Vogel\n\n12. März 2024\n\n{BODY_DE}\n")
    assert (doc.authors, doc.description, doc.published) == (("Katrin Vogel",), None, D(2024, 3, 12))
    assert_only_body(doc, BODY_DE)


def test_a_german_or_french_articles_numeric_date_is_day_first():
    for body in (BODY_DE, BODY_FR):
        doc = parse_text(f"Titel\n\n05.03.2024\n\n{body}\n")
        assert (doc.published, doc.warnings) == (D(2024, 3, 5), ())
        # the language decides over DATE_ORDER, which is for articles whose language does not
        assert parse_text(f"Titel\n\n05.03.2024\n\n{body}\n", date_order="MDY").published == D(2024, 3, 5)


def test_stated_language_decides_a_short_articles_date_order():
    text = "---\ntitle: Kurz\nlang: de-DE\ndate: 05.03.2024\n---\nEin kurzer Text.\n"
    assert parse_text(text, "kurz.md").published == D(2024, 3, 5)
    doc = parse_text(text.replace("lang: de-DE\n", ""), "kurz.md")  # too short to tell its language
    assert doc.published is None
    assert doc.warnings == (
        "front matter date '05.03.2024' could be 2024-03-05 or 2024-05-03 (set DATE_ORDER=DMY or MDY to read it);"
        " article kept undated",
    )


def test_html_lang_attribute_decides_the_date_order():
    html = (
        '<html lang="fr"><head><title>Grève</title></head><body><article><h1>Grève</h1>'
        "<p>Publié le 05/03/2024</p>"
        "<p>Les syndicats ont appelé à une grève de vingt-quatre heures dans les transports publics.</p>"
        "</article></body></html>"
    )
    doc = parse_text(html, "greve.html")
    assert doc.published == D(2024, 3, 5)
    assert not any("05/03/2024" in p for p in doc.paragraphs)


def test_english_text_does_not_decide_the_date_order():
    doc = parse_text(f"Council Approves Budget\n\n05.03.2024\n\n{BODY_EN * 3}\n")
    assert doc.published is None


def test_french_and_spanish_bylines():
    doc = parse_text(f"Grève dans les transports\n\nPar Claire Dubois\n\nPublié le 4 mars 2024\n\n{BODY_FR}\n")
    assert (doc.authors, doc.description, doc.published) == (("Claire Dubois",), None, D(2024, 3, 4))
    assert_only_body(doc, BODY_FR)
    doc = parse_text(
        f"Huelga en Madrid\n\nPor Ana García y Luis Pérez\n\nPublicado el 5 de marzo de 2024\n\n{BODY_EN}\n"
    )
    assert (doc.authors, doc.published) == (("Ana García", "Luis Pérez"), D(2024, 3, 5))


@pytest.mark.parametrize(
    "byline, authors, source",
    [
        ("By Marcus Lee, CNN", ("Marcus Lee",), "CNN"),
        ("By Marcus Lee | Reuters", ("Marcus Lee",), "Reuters"),
        ("By Marcus Lee and Ana Ruiz, The Associated Press", ("Marcus Lee", "Ana Ruiz"), "The Associated Press"),
        ("Von Anna Schmidt, Tagesspiegel", ("Anna Schmidt",), "Tagesspiegel"),
        ("By Marcus Lee, Ana Ruiz", ("Marcus Lee", "Ana Ruiz"), None),
        ("By Lee, Chris and Park, Jin", ("Chris Lee", "Jin Park"), None),
    ],
)
def test_byline_names_and_publication(byline, authors, source):
    doc = parse_text(f"Headline Here\n\n{byline}\n\n{BODY_EN}\n")
    assert (doc.authors, doc.source) == (authors, source)
    assert_only_body(doc, BODY_EN)


@pytest.mark.parametrize(
    "line, authors, source, published",
    [
        ("By Sharif Hassan · Aug 9, 2021", ("Sharif Hassan",), None, D(2021, 8, 9)),
        ("By Marcus Lee | Reuters | March 5, 2024", ("Marcus Lee",), "Reuters", D(2024, 3, 5)),
        ("Von Katrin Vogel | 12. März 2024, 14:30 Uhr", ("Katrin Vogel",), None, D(2024, 3, 12)),
    ],
)
def test_byline_and_date_on_one_line(line, authors, source, published):
    doc = parse_text(f"Headline Here\n\n{line}\n\n{BODY_EN}\n")
    assert (doc.authors, doc.source, doc.published) == (authors, source, published)
    assert_only_body(doc, BODY_EN)


def test_a_title_with_a_bar_is_still_the_title():
    doc = parse_text(f"Markets | The week ahead\n\n{BODY_EN}\n")
    assert doc.title == "Markets | The week ahead"


def test_a_stated_publication_wins_over_the_byline():
    doc = parse_text("---\ntitle: T\nsource: CNN Business\n---\nBy Marcus Lee, CNN\n\nThe body sentence.\n", "a.md")
    assert (doc.authors, doc.source) == (("Marcus Lee",), "CNN Business")


@pytest.mark.parametrize(
    "author, expected",
    [
        ("Lee, Chris and Park, Jin", ("Chris Lee", "Jin Park")),
        ("Lee, Chris", ("Chris Lee",)),
        ("van Gogh, Vincent; Park, Jin", ("Vincent van Gogh", "Jin Park")),
        ("Chris Lee and Jin Park", ("Chris Lee", "Jin Park")),
        ("Chris Lee, Jin Park & Ana Ruiz", ("Chris Lee", "Jin Park", "Ana Ruiz")),
        ("Katrin Vogel und Max Muster", ("Katrin Vogel", "Max Muster")),
    ],
)
def test_front_matter_author_lists(author, expected):
    doc = parse_text(f'---\ntitle: T\nauthor: "{author}"\n---\nThe body sentence.\n', "a.md")
    assert doc.authors == expected


def test_byline_words_starting_a_sentence_stay_text():
    body = "Von Berlin aus fuhren die Züge nach Süden.\n\nPar exemple, la ville a fermé les écoles."
    doc = parse_text(f"Headline\n\n{body}\n")
    assert (doc.authors, doc.paragraphs) == ((), tuple(body.split("\n\n")))


# --------------------------------------------------------------------------------------------------
# Furniture lines and mojibake
# --------------------------------------------------------------------------------------------------


def test_read_more_and_share_lines_are_removed_and_the_sentences_kept():
    text = (
        "Oil Prices Rise\n\nBy Marcus Lee\n\nMarch 5, 2024\n\n"
        "Oil prices rose on Tuesday.\nRead more: Why oil prices matter\nTraders expect more gains.\n\n"
        "Read more: Opec meets in Vienna\n\n"
        "Lesen Sie auch: Ölpreise steigen weiter\n\n"
        "Analysts were surprised by the size of the move.\n\n"
        "Share this article: Facebook Twitter Email Marcus Lee is an energy reporter at Reuters. He lives in London.\n"
    )
    doc = parse_text(text)
    assert doc.paragraphs == (
        "Oil prices rose on Tuesday.", "Traders expect more gains.", "Analysts were surprised by the size of the move."
    )  # fmt: skip
    assert (doc.authors, doc.source) == (("Marcus Lee",), "Reuters")  # the closing bio states the publication
    original = text
    assert all(p in original for p in doc.paragraphs)  # still verbatim slices


def test_share_prompt_after_the_last_sentence_is_removed():
    doc = parse_text(f"Headline\n\n{BODY_EN} Share this story: Facebook, Twitter, WhatsApp\n")
    assert doc.paragraphs[-1] == "The vote was close."


def test_sentences_about_sharing_stay():
    body = "Share prices fell by a third.\n\nShare your thoughts on Facebook, Twitter and email, the mayor said."
    assert parse_text(f"Headline\n\n{body}\n").paragraphs == tuple(body.split("\n\n"))


def test_markdown_row_of_links_is_removed():
    text = (
        "# Title\n\nThe body sentence is here.\n\n[Read more](https://x.example/a) | [Subscribe](https://x.example/s)"
        "\n\nAnother body sentence.\n"
    )
    assert parse_text(text, "a.md").paragraphs == ("The body sentence is here.", "Another body sentence.")


def test_shipped_mojibake_is_repaired():
    body = "\n\n".join(shipped("004").paragraphs)
    assert "Ā" not in body
    assert "That’s a lot of losses\u00a0 in not much time." in body


@pytest.mark.parametrize(
    "written, repaired",
    [
        ("The cafÃ© closed at noon.", "The café closed at noon."),  # UTF-8 read as Windows-1252
        ("He said itâ€™s over.", "He said it’s over."),
        ("Voilà le travail, voilÃ le travail.", "Voilà le travail, voilà le travail."),  # 0xA0 turned into a space
        ("The lossesÂ\u00a0 were heavy.", "The losses\u00a0 were heavy."),
        ("The lossesĀ\u00a0 were heavy.", "The losses\u00a0 were heavy."),  # read as Windows-1257
        # everything else stays as written: curly quotes, ligatures, full-width letters, accents
        ("“Quoted” ﬁne ＡＢＣ Café — naïve.", "“Quoted” ﬁne ＡＢＣ Café — naïve."),
        ("Łódź and Ærøskøbing and Ā la carte.", "Łódź and Ærøskøbing and Ā la carte."),
    ],
)
def test_mojibake_is_repaired_and_nothing_else_changes(written, repaired):
    assert parse_text(f"Headline\n\n{written}\n").paragraphs == (repaired,)


# --------------------------------------------------------------------------------------------------
# Other formats and metadata precedence
# --------------------------------------------------------------------------------------------------


def test_markdown_front_matter_wins_over_text():
    [doc] = parse_file("news/front_matter.md", (FIXTURES / "front_matter.md").read_bytes())
    assert doc.key == "news/front_matter.md"
    assert doc.title == "Grain Ships Leave Port Under New Deal"
    assert doc.source == "Harbour Gazette"
    assert doc.authors == ("Lena Brandt", "Tomás Ortega")  # not "Somebody Else" from the text byline
    assert doc.published == D(2022, 8, 1)  # not July 4, 1999 from the text date line
    assert doc.updated == D(2022, 8, 3)
    assert doc.url == "https://gazette.example/grain-ships"
    assert doc.paragraphs == (
        "The first cargo ship carrying grain under the new agreement left the port on Monday morning, watched by"
        " officials from both sides.",
        "Traders said prices could fall if the shipments continue at the promised pace.\n"
        "Insurers, however, remain cautious about the route.",
    )
    assert doc.warnings == ()


def test_markdown_without_front_matter_uses_heading_and_text_heuristics():
    text = "# Storm Hits Coast\n\nBy Ann Lee and Bo Kim\n\n2023-01-05\n\n## Damage\n\nRoofs were torn off.\n"
    [doc] = parse_file("storm.markdown", text.encode())
    assert doc.title == "Storm Hits Coast"
    assert doc.authors == ("Ann Lee", "Bo Kim")
    assert doc.published == D(2023, 1, 5)
    assert doc.paragraphs == ("Roofs were torn off.",)


def test_markdown_bad_front_matter_date_is_a_warning():
    text = "---\ntitle: Plans\ndate: soon\n---\nThe council will decide next week.\n"
    [doc] = parse_file("plans.md", text.encode())
    assert doc.title == "Plans"
    assert doc.published is None
    assert doc.warnings == ("front matter date 'soon' is not a date; article kept undated",)


def test_markdown_invalid_front_matter_yaml_is_skipped():
    with pytest.raises(SkipFile, match="front matter"):
        parse_file("bad.md", b"---\ntitle: [unclosed\n---\nBody text here.\n")


def test_html_page_extracts_article_and_metadata_without_page_chrome():
    [doc] = parse_file("courier/floods.html", (FIXTURES / "article.html").read_bytes())
    assert doc.title == "Floods Cut Off Mountain Villages"
    assert doc.authors == ("Maria Okafor",)
    assert doc.source == "The Valley Courier"
    assert doc.published == D(2023, 3, 14)
    assert doc.updated == D(2023, 3, 15)
    assert doc.url == "https://valleycourier.example/2023/03/14/floods-cut-off-villages"
    assert doc.paragraphs[0].startswith("Heavy rain over the weekend sent the Arda river over its banks")
    assert doc.paragraphs[-1] == (
        "Engineers expect to reopen the road by the end of the week if the rain stops, but forecasters warned"
        " that more storms were on the way."
    )
    assert any("“By morning the bridge was gone.”" in p for p in doc.paragraphs)
    text = all_text(doc)
    for chrome in ("Weather Centre", "Courier Plus", "Privacy policy", "All rights reserved", "Stay safe everyone",
                   "The council was warned", "Contact the newsroom"):  # fmt: skip
        assert chrome not in text, chrome


def test_html_without_article_text_is_skipped():
    with pytest.raises(SkipFile):
        parse_file("empty.html", b"<html><head><title>x</title></head><body></body></html>")


def test_jsonl_records_keys_and_fields():
    docs = parse_file("feeds/records.jsonl", (FIXTURES / "records.jsonl").read_bytes())
    # records without an `id` are keyed by a hash of their content, not by their line
    assert [re.fullmatch(r"feeds/records\.jsonl#[0-9a-f]{12}", d.key) is not None for d in docs] == [True, True]
    first, second = docs
    assert first.title == "Bridge Reopens After Repairs"
    assert first.source == "Riverside Post"
    assert first.authors == ("Ana Lima", "Joe Park")
    assert first.published == D(2023, 5, 12)
    assert first.url == "https://post.example/bridge"
    assert first.paragraphs == (
        "The old stone bridge reopened to traffic on Friday.",
        "Repairs took eleven months and cost more than planned.",
    )
    assert second.authors == ("Kim Cho",)
    assert (second.published, second.updated) == (D(2023, 6, 2), D(2023, 6, 5))
    # no blank lines in the text: single newlines separate paragraphs
    assert second.paragraphs == (
        "The central library will stay open until 10 p.m. on weekdays.",
        "The change starts next month.",
    )


def test_json_list_of_records():
    docs = parse_file("records.json", (FIXTURES / "records.json").read_bytes())
    assert [re.fullmatch(r"records\.json#[0-9a-f]{12}", d.key) is not None for d in docs] == [True, True]
    assert docs[0].authors == ("Ruth Adeyemi",)
    assert docs[0].published == D(2022, 9, 10)
    assert docs[0].source == "Valley Times"
    assert docs[1].published is None
    assert docs[1].warnings == ("record 2 date 'soon' is not a date; article kept undated",)


def test_json_single_object():
    record = {"id": 1, "title": "One", "text": "Only one record here.", "author": "Al Bo"}
    [doc] = parse_file("one.json", json.dumps(record).encode())
    assert (doc.key, doc.title, doc.authors, doc.paragraphs) == (
        "one.json#1",
        "One",
        ("Al Bo",),
        ("Only one record here.",),
    )


def test_record_keys_survive_edits_and_deletions_of_other_records():
    records = [{"id": "wire-7", "text": "Seven."}, {"text": "No id here."}, {"id": 42, "text": "Forty-two."}]
    lines = [json.dumps(r) for r in records]
    keys = [d.key for d in parse_file("w.jsonl", "\n".join(lines).encode())]
    assert keys[0] == "w.jsonl#wire-7" and keys[2] == "w.jsonl#42"
    # the first line deleted, another record added at the top: the others keep their keys
    edited = [json.dumps({"text": "A new one."}), *lines[1:]]
    assert [d.key for d in parse_file("w.jsonl", "\n".join(edited).encode())][1:] == keys[1:]


def test_record_id_is_made_safe_for_display():
    record = {"id": "a\nb\u202e\x07" + "x" * 200, "text": "Body."}
    [doc] = parse_file("w.jsonl", json.dumps(record).encode())
    assert doc.key == "w.jsonl#a b" + "x" * 77


def test_bad_records_are_skipped_one_by_one():
    data = "\n".join(
        [
            json.dumps({"id": "a", "text": "First."}),
            json.dumps({"text": "Second."}),
            "{broken",
            json.dumps({"id": "a", "text": "Same id."}),
            json.dumps({"text": "Second."}),
            json.dumps({"title": "no text"}),
        ]
    ).encode()
    skipped = []
    docs = parse_file("many.jsonl", data, skipped=skipped)
    assert [d.paragraphs for d in docs] == [("First.",), ("Second.",)]
    assert [(where, reason.split(" (")[0].split(":")[0]) for where, reason in skipped] == [
        ("many.jsonl#3", "invalid JSON"),
        ("many.jsonl#4", "same id as line 1; only the first is indexed"),
        ("many.jsonl#5", "identical to line 2; indexed once"),
        ("many.jsonl#6", "has no text"),
    ]
    skipped = []
    [doc] = parse_file("list.json", b'[{"text": "ok."}, {"text": "   "}]', skipped=skipped)
    assert skipped == [("list.json#2", 'has no text (a "text", "body" or "content" field)')]


def test_jsonl_invalid_line_names_the_line():
    data = b'{"title": "a", "text": "Fine."}\n\n{"title": "b", "text": \n'
    skipped = []
    assert [d.title for d in parse_file("x.jsonl", data, skipped=skipped)] == ["a"]
    assert skipped == [("x.jsonl#3", "invalid JSON: Expecting value")]
    with pytest.raises(SkipFile, match=r"invalid JSON on line 3"):
        parse_file("x.jsonl", data[data.index(b"\n") :])


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"title": "a"', "invalid JSON on line 1"),
        (b'[{"title": "no text"}]', "record 1 has no text"),
        (b'[{"text": "  "}, {"text": "   "}]', "record 1 has no text"),
        (b"[1, 2]", "record 1 is not a JSON object"),
        (b'"just a string"', "object or a list"),
        (b"[]", "empty list"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_json_problems_are_skip_reasons(data, reason):
    with pytest.raises(SkipFile, match=reason):
        parse_file("x.json", data)


def test_sidecar_wins_over_text_and_front_matter(tmp_path):
    article = tmp_path / "story.txt"
    article.write_text("Text Title\n\nBy Text Author\n\nAug. 9, 2021\n\nThe body sentence.\n", encoding="utf-8")
    sidecar = tmp_path / "story.meta.json"
    sidecar.write_text(json.dumps({"title": "Sidecar Title", "author": ["Side Car"], "date": "2020-01-02",
                                   "publication": "The Sidecar Times", "url": "https://x.example/s"}))  # fmt: skip
    assert sidecar_bytes(article) == sidecar.read_bytes()
    [doc] = parse_file("story.txt", article.read_bytes(), sidecar_bytes(article))
    assert (doc.title, doc.authors, doc.published, doc.source, doc.url) == (
        "Sidecar Title", ("Side Car",), D(2020, 1, 2), "The Sidecar Times", "https://x.example/s"
    )  # fmt: skip
    assert doc.paragraphs == ("The body sentence.",)

    md = b"---\ntitle: Front Title\nsource: Front Source\n---\nBody text of the note.\n"
    [doc] = parse_file("note.md", md, b"title: YAML Sidecar Title\n")
    assert (doc.title, doc.source) == ("YAML Sidecar Title", "Front Source")


@pytest.mark.parametrize("listed", [False, True], ids=["stat each", "folder listed once"])
def test_sidecar_lookup_order(tmp_path, listed):
    article = tmp_path / "a.html"
    article.write_text("<p>x</p>")

    def sidecar(path=article):  # the indexer hands over the folder's names; the lookup must not change
        return sidecar_bytes(path, set(os.listdir(tmp_path)) if listed else None)

    (tmp_path / "b.meta.json").write_bytes(b'{"title": "another article"}')
    (tmp_path / "c.meta.json").mkdir()  # named like a sidecar, but a folder
    assert sidecar() == b"" and sidecar(tmp_path / "c.txt") == b""
    (tmp_path / "a.meta.yml").write_bytes(b"title: yml\n")
    assert sidecar() == b"title: yml\n"
    (tmp_path / "a.meta.yaml").write_bytes(b"title: yaml\n")
    assert sidecar() == b"title: yaml\n"
    (tmp_path / "a.meta.json").write_bytes(b'{"title": "json"}')
    assert sidecar() == b'{"title": "json"}'


@pytest.mark.parametrize(
    "sidecar, reason",
    [
        (b'{"title": ', "invalid sidecar: bad JSON on line 1"),
        (b"title: [oops\n", "invalid sidecar: bad YAML"),
        (b"- a\n- b\n", "invalid sidecar: expected a mapping"),
        (b"\xff\xfe\xfa", "invalid sidecar: not UTF-8"),
    ],
)
def test_invalid_sidecar_is_skipped_with_reason(sidecar, reason):
    with pytest.raises(SkipFile, match=reason):
        parse_file("a.txt", b"Title\n\nBody sentence.\n", sidecar)


def test_iter_corpus_files_filters_hidden_sidecars_and_suffixes(tmp_path):
    for name in ["b.txt", "a.md", "sub/c.json", "sub/d.jsonl", "e.html", "f.htm", "g.markdown", "UPPER.TXT",
                 "notes.pdf", "notes.docx", "a.meta.json", "a.meta.yaml", ".hidden.txt", ".git/x.txt",
                 "sub/.cache/y.md"]:  # fmt: skip
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    (tmp_path / "link.txt").symlink_to(tmp_path / "b.txt")
    names = [p.relative_to(tmp_path).as_posix() for p in iter_corpus_files(tmp_path)]
    assert names == ["UPPER.TXT", "a.md", "b.txt", "e.html", "f.htm", "g.markdown", "link.txt", "notes.pdf",
                     "sub/c.json", "sub/d.jsonl"]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------------


def make_pdf(pages: list[list[tuple[int, str]]]) -> bytes:
    """A PDF whose pages show the given (height, text) lines in Helvetica: enough of the format for
    any reader (catalog, page tree, font, content streams, cross-reference table)."""
    objects: list[bytes] = [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>", b""]
    kids = []
    for lines in pages:
        escaped = [text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for _, text in lines]
        stream = "\n".join(f"BT /F1 11 Tf 72 {y} Td ({text}) Tj ET" for (y, _), text in zip(lines, escaped))
        data = stream.encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
                       b" /Resources << /Font << /F1 1 0 R >> >> >>" % (len(objects)))  # fmt: skip
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, len(objects), xref)
    return bytes(out)


def lines_from(top: int, *texts: str) -> list[tuple[int, str]]:
    """Lines 14 points apart from `top` down; an empty text leaves a gap (a paragraph break)."""
    return [(top - 14 * n, text) for n, text in enumerate(texts) if text]


def test_pdf_text_keeps_its_paragraphs_and_header():
    page1 = lines_from(
        740, "Floods Cut Off Mountain Villages", "", "By Maria Okafor", "March 14, 2023", "",
        "Heavy rain over the weekend sent the Arda river over its banks, cutting the",
        "road to three villages and leaving hundreds of people without power.", "",
        "Rescue teams reached the first village on Monday, but the second one remained cut",
        "off because the bridge had been swept away during the night. \u201cBy morning the bridge",
        "was gone,\u201d said one resident. Engineers were sent from the capital to build a tempo-",
        "rary crossing, and the army lent its trucks to carry food and blankets to the",
    )  # fmt: skip
    page1.append((60, "1"))  # a page number
    page2 = lines_from(740, "families who had to leave their homes.", "",
                       "Engineers expect to reopen the road by the end of the week if the rain stops.")  # fmt: skip
    [doc] = parse_file("floods.pdf", make_pdf([page1, page2]))
    assert (doc.title, doc.authors, doc.published) == (
        "Floods Cut Off Mountain Villages",
        ("Maria Okafor",),
        D(2023, 3, 14),
    )
    assert doc.paragraphs == (
        "Heavy rain over the weekend sent the Arda river over its banks, cutting the road to three villages and"
        " leaving hundreds of people without power.",
        "Rescue teams reached the first village on Monday, but the second one remained cut off because the bridge"
        " had been swept away during the night. \u201cBy morning the bridge was gone,\u201d said one resident."
        " Engineers were sent from the capital to build a tempo-rary crossing, and the army lent its trucks to carry"
        " food and blankets to the families who had to leave their homes.",
        "Engineers expect to reopen the road by the end of the week if the rain stops.",
    )


def test_pdf_without_text_or_unreadable_is_skipped_with_the_reason():
    with pytest.raises(SkipFile, match=r"^no text in the PDF \(scanned pages"):
        parse_file("scan.pdf", make_pdf([[]]))
    with pytest.raises(SkipFile, match=r"^could not read the PDF \("):
        parse_file("broken.pdf", b"%PDF-1.4\nthis is not a PDF body\n")
    with pytest.raises(SkipFile, match=r"binary file \(PDF document\)"):
        parse_file("misnamed.txt", make_pdf([lines_from(740, "A title", "", "Some text.")]))


def test_pdf_is_indexed_and_cited_by_its_path(tmp_path, fake_embedder):
    from embeddings.config import Settings
    from embeddings.index import run_index

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "report.pdf").write_bytes(
        make_pdf([lines_from(740, "Harbour Report", "", "The harbour reopened on Friday.")])
    )
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)
    assert run_index(settings).added == ["report.pdf"]


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, codec, name",
    [
        ("Café Title\n\nLe café est fermé.\n", "latin-1", "windows-1252"),
        ("Headline\n\n“Quoted,” she said — it’s fine. Café.\n", "cp1252", "windows-1252"),
        ("Huelga en Madrid\n\nEl presidente anunció que la reunión se celebrará el próximo año.\n", "latin-1",
         "windows-1252"),
        ("Реформа\n\nПравительство объявило о реформе пенсионной системы. Профсоюзы выступили против.\n", "cp1251",
         "windows-1251"),
        ("Zmiany\n\nZażółć gęślą jaźń. Rząd ogłosił reformę systemu emerytalnego, a związki zawodowe"
         " protestują przeciwko zmianom w ustawie.\n", "cp1250", "windows-1250"),
    ],
)  # fmt: skip
def test_legacy_encodings_are_decoded_and_named(text, codec, name):
    [doc] = parse_file("a.txt", text.encode(codec))
    assert doc.paragraphs == (text.split("\n\n")[1].strip(),)
    assert doc.warnings == (f"decoded as {name}",)


def test_utf8_with_a_damaged_byte_is_not_read_as_another_encoding():
    data = "Headline\n\nLe café est fermé.".encode() + b"\xff" + " Voilà.\n".encode()
    with pytest.raises(SkipFile, match=r"^not UTF-8 text \(invalid byte 0xff at offset 30\)$"):
        parse_file("a.txt", data)


def test_undecidable_encoding_is_skipped_with_the_candidates():
    with pytest.raises(SkipFile, match=r"^not UTF-8 text \(invalid byte 0x.. at offset 0\), and .*save it as UTF-8"
                                       r"|^not UTF-8 text \(invalid byte 0x.. at offset 0\), and no text encoding"):  # fmt: skip
        parse_file("a.txt", bytes([0x8D, 0x8F, 0x90, 0x9D, 0x81]) * 3)


def test_decoding_is_reported_once_per_file():
    data = '{"title": "Uno", "text": "El año pasado."}\n{"title": "Dos", "text": "La reunión."}\n'.encode("latin-1")
    first, second = parse_file("r.jsonl", data)
    assert (first.warnings, second.warnings) == (("decoded as windows-1252",), ())
    assert (first.paragraphs, second.paragraphs) == (("El año pasado.",), ("La reunión.",))


def test_index_report_names_the_assumed_encoding(tmp_path, fake_embedder):
    from embeddings.config import Settings
    from embeddings.index import run_index

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "x.txt").write_bytes("Café Title\n\nLe café est fermé depuis lundi.\n".encode("cp1252"))
    settings = Settings(corpus_dir=corpus, index_path=tmp_path / "index.sqlite3", embedding_model=fake_embedder.name)
    report = run_index(settings, embedder=fake_embedder)
    assert report.added == ["x.txt"]
    assert "warning x.txt: decoded as windows-1252" in report.lines()


def test_png_renamed_txt_is_binary():
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    with pytest.raises(SkipFile, match="binary file"):
        parse_file("photo.txt", png)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"  \n\t\r\n \xc2\xa0\n", "whitespace-only"),
        (b"Title\n\nBody\x00text.\n", "binary file"),
        (b"%PDF-1.7\n...", "binary file"),
    ],
)
def test_unreadable_content(data, reason):
    with pytest.raises(SkipFile, match=reason):
        parse_file("a.txt", data)


def test_utf8_bom_and_utf16_bom_decode():
    text = "Headline Here\n\nBy Jane Doe\n\nThe body sentence — with a dash.\n"
    for data in (b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16"), b"\xfe\xff" + text.encode("utf-16-be")):
        [doc] = parse_file("a.txt", data)
        assert (doc.title, doc.authors, doc.paragraphs) == (
            "Headline Here", ("Jane Doe",), ("The body sentence — with a dash.",)
        )  # fmt: skip


def test_crlf_and_cr_line_endings():
    [doc] = parse_file("a.txt", b"Headline\r\n\r\nFirst para.\r\nsame para.\r\n\r\nSecond para.\r")
    assert doc.paragraphs == ("First para.\nsame para.", "Second para.")


def test_nothing_left_after_furniture():
    with pytest.raises(SkipFile, match="no article text after removing page furniture"):
        parse_file("a.txt", b"Related >\n\n- [One](#)\n- [Two](#)\n\nSource link\n")


def test_body_byline_sentence_is_not_an_author():
    text = "Headline\n\nThe first sentence of the body.\n\nBy the numbers, it was a quiet year.\n"
    [doc] = parse_file("a.txt", text.encode())
    assert doc.authors == ()
    assert "By the numbers, it was a quiet year." in doc.paragraphs


def test_load_file_reads_regular_file(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"hello")
    assert load_file(tmp_path / "a.txt", tmp_path) == b"hello"


def test_load_file_refusals(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (root / "out.txt").symlink_to(outside)
    (root / "dangling.txt").symlink_to(root / "missing.txt")
    (root / "loop.txt").symlink_to(root / "loop.txt")
    (root / "empty.txt").write_bytes(b"")
    (root / "big.txt").write_bytes(b"x" * 101)
    (root / "dir.txt").mkdir()
    (root / "inside.txt").symlink_to(root / "big.txt")

    cases = {
        "out.txt": "symlink pointing outside the corpus folder",
        "dangling.txt": "dangling symlink",
        "loop.txt": "symlink loop",
        "empty.txt": "empty file",
        "big.txt": "larger than",
        "dir.txt": "not a regular file",
    }
    for name, reason in cases.items():
        with pytest.raises(SkipFile, match=reason):
            load_file(root / name, root, max_bytes=100)
    assert load_file(root / "inside.txt", root, max_bytes=200) == b"x" * 101  # symlink inside root is fine


def test_load_file_size_reason_wording(tmp_path):
    big = tmp_path / "big.txt"
    with big.open("wb") as handle:  # sparse file: size is checked before reading
        handle.truncate(int(52.4 * 1024 * 1024))
    with pytest.raises(SkipFile) as info:
        load_file(big, tmp_path)
    assert str(info.value) == "larger than the 10 MB limit (52.4 MB)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_load_file_unreadable(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    path.chmod(0)
    with pytest.raises(SkipFile, match="cannot read"):
        load_file(path, tmp_path)


# --------------------------------------------------------------------------------------------------
# Property: any bytes -> clean docs or SkipFile, never another exception
# --------------------------------------------------------------------------------------------------


def _check_docs_or_skip(key: str, data: bytes, sidecar: bytes = b"", order: str | None = None) -> None:
    try:
        docs = parse_file(key, data, sidecar, date_order=order)
    except SkipFile as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert docs
    for doc in docs:
        assert isinstance(doc, ArticleDoc)
        assert doc.paragraphs
        for paragraph in doc.paragraphs:
            assert isinstance(paragraph, str) and paragraph.strip() and "\x00" not in paragraph


_TOKENS = list("ab .,:-#[]()>{}\"'\n\r\t\u00a0—“”é\x00|·Ã©Ā") + [
    "By Jane Doe", "Author: ", "Aug. 9, 2021", "Published ", "---\n", "title: ", "\n\n", "- [x](#)", "Source link",
    "Von ", "Par ", ", CNN", " | Reuters", "Lee, Chris and Park, Jin", "05.03.2024", "03/05/2024", "12. März 2024",
    "3:14 PM EST, Tue March 5, 2024", "Publié le ", "Read more: ", "Share this article: Facebook Twitter Email",
    "[Read more](#) | [Subscribe](#)", "lang: de\n", "date: 03/05/2024\n",
]  # fmt: skip
_TEXTY = st.lists(st.sampled_from(_TOKENS), max_size=60).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from(SUPPORTED_SUFFIXES), data=st.binary(max_size=300))
def test_any_bytes_parse_or_skip(suffix, data):
    _check_docs_or_skip("f" + suffix, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from(SUPPORTED_SUFFIXES), text=_TEXTY, sidecar=st.sampled_from([b"", b"title: x\n", b"{}"]),
       codec=st.sampled_from(["utf-8", "cp1252", "utf-16"]), order=st.sampled_from([None, "DMY", "MDY"]))  # fmt: skip
def test_any_text_parse_or_skip(suffix, text, sidecar, codec, order):
    try:
        data = text.encode(codec)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    _check_docs_or_skip("f" + suffix, data, sidecar, order)


@settings(max_examples=100, deadline=None)
@given(record=st.dictionaries(st.sampled_from(["title", "text", "date", "author", "authors", "source", "url",
                                               "updated"]),  # fmt: skip
                              st.one_of(st.none(), st.integers(), st.text(max_size=30),
                                        st.lists(st.text(max_size=10), max_size=3))))  # fmt: skip
def test_any_json_record_parse_or_skip(record):
    _check_docs_or_skip("r.jsonl", json.dumps(record).encode())


def test_short_record_without_punctuation_is_still_an_article():
    [doc] = parse_file("r.jsonl", b'{"title": "T", "text": "Council approves new bus line"}\n')
    assert doc.paragraphs == ("Council approves new bus line",)
