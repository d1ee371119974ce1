"""Passages: the article's paragraphs, sized for the model, quoted verbatim later.

A passage is one paragraph, except that a fragment too short to stand alone is merged into its
neighbour and a paragraph too long for the model is split at sentence boundaries, in any script
(Chinese and Japanese end sentences with 。！？ and no space, Hindi with ।, Arabic with ؟ ...);
a sentence still too long is cut at words, and a word (or a run of text without spaces) at
tokens. Passage text is always the article's own text, and it is embedded as is: prefixing the
title was measured and lost (docs/retrieval.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

# A paragraph with fewer words than this is a fragment ("Read on." / a one-line quote tail):
# alone it embeds poorly and quotes badly, so it joins its neighbour.
MIN_WORDS = 8
PARAGRAPH_JOIN = "\n\n"

_ABBREVIATIONS = {
    "mr",
    "mrs",
    "ms",
    "dr",
    "prof",
    "sen",
    "rep",
    "gov",
    "gen",
    "col",
    "lt",
    "sgt",
    "capt",
    "st",
    "jr",
    "sr",
    "co",
    "corp",
    "inc",
    "ltd",
    "vs",
    "etc",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "u.s",
    "u.k",
    "u.n",
    "e.g",
    "i.e",
    "a.m",
    "p.m",
}
# Candidate sentence ends: terminal punctuation, optional closing quotes/brackets, then whitespace
# (`latin`, checked for abbreviations below); or a mark that only ever ends a sentence, in scripts
# that put no space after it (`script`): ideographic and full-width stops (。｡！？), the Devanagari
# danda (। ॥), Arabic and Urdu (؟ ۔), Armenian (։), Ethiopic (። ፧), Myanmar (။), Khmer (។ ៕), Tibetan (།).
_CLOSERS = "\"'”’)\\]」』）》〉】〕"
_BOUNDARY = re.compile(
    rf"(?P<latin>[.!?]+[{_CLOSERS}]*\s+)"
    rf"|(?P<script>[。｡！？!?]*[。｡！？।॥؟۔։።፧။។៕།][。｡！？!?]*[{_CLOSERS}]*\s*)"
)
# Scripts written without spaces between words: each character counts as half a word when deciding
# whether a paragraph is a fragment (a Chinese word is one to two characters).
_UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003134f]"  # Thai, Lao, Myanmar, Khmer, kana, CJK ideographs
)
_MAX_CHARS_PER_TOKEN = 32  # WordPiece reads a word of over 100 characters as one unknown token; text is denser
_WORD_BEFORE = re.compile(r"[\w.]+$")  # the word a candidate end follows ("Mr", "U.S", "J")
_LONGEST_ABBREVIATION = max(map(len, _ABBREVIATIONS))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of text; together they cover every non-space character."""
    spans, start = [], 0
    for match in _BOUNDARY.finditer(text):
        end = match.end()
        nxt = text[end : end + 1]
        if not nxt:
            continue
        if match.group("script"):
            spans.append((start, match.start() + len(match.group().rstrip())))
            start = end
            continue
        if not (nxt.isupper() or nxt.isdigit() or nxt in "\"“‘'(["):
            continue
        # Only the few characters before the end are looked at: searching all of text[start:end]
        # took seconds on a long paragraph whose candidate ends were all rejected (start stays put).
        window = max(start, match.start() - _LONGEST_ABBREVIATION - 1)
        before = _WORD_BEFORE.search(text, window, match.start())
        # "Aug. 9" / "Mr. Smith" / "J. Smith" are not sentence ends; '.”' always is.
        if before and match.group().rstrip() == ".":
            word = before.group().lower()
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        spans.append((start, match.start() + len(match.group().rstrip())))
        start = end
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def word_count(text: str) -> int:
    """Words, for scripts with and without spaces between them."""
    unspaced = len(_UNSPACED.findall(text))
    return len(_UNSPACED.sub(" ", text).split()) + unspaced // 2


def _joins_previous(char: str) -> bool:
    """A character that belongs with the one before it (a combining mark, a joiner, a variation
    selector): a cut just before it would split what a reader sees as one character."""
    return unicodedata.category(char) in ("Mn", "Mc", "Me") or char in "\u200c\u200d" or "\ufe00" <= char <= "\ufe0f"


def _cut_end(text: str, a: int, b: int, count_tokens: Callable[[str], int], max_tokens: int) -> int:
    """The largest end in (a, b] such that text[a:end] fits, never before a character that joins
    the previous one; at least one character, so a cut always moves on. Each guess extrapolates
    the characters per token counted so far, every other one bisects: a few token counts of about
    the piece's length, never the whole rest (a long run would cost quadratic time)."""
    good, bad = a, b + 1  # text[a:good] fits; text[a:bad] does not (b + 1: not known yet)
    guess, step = min(b, a + max_tokens), 0
    while bad - good > 1:
        tokens = count_tokens(text[a:guess])
        if tokens <= max_tokens:
            good = guess
        else:
            bad = guess
        estimate = a + (guess - a) * max_tokens // max(tokens, 1)
        step += 1
        guess = estimate if step % 2 else (good + bad) // 2
        guess = min(max(guess, good + 1), bad - 1, b)
    end = max(good, a + 1)
    while a + 1 < end < b and _joins_previous(text[end]):
        end -= 1
    return end


def _cut(text: str, a: int, b: int, count_tokens: Callable[[str], int], max_tokens: int) -> list[tuple[int, int]]:
    """A word or a run without spaces (Chinese, Japanese, a long URL) too long for the model, as
    adjacent spans that each fit: what the model reads is then all of it."""
    spans = []
    while a < b:
        end = _cut_end(text, a, b, count_tokens, max_tokens)
        spans.append((a, end))
        a = end
    return spans


def _split_long(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Greedy packing of whole sentences into pieces that fit; a single over-long sentence is cut at
    words, and an over-long word at tokens. Pieces are slices of text, so the quoted words are
    exactly the article's, and between two pieces there is only whitespace."""

    def fits(piece: str) -> bool:
        return count_tokens(piece) <= max_tokens

    # Each unit is counted once. A piece's count is estimated as the sum of its units' (tokenizers
    # split at whitespace and punctuation, so counts add up) and then checked once: counting every
    # growing piece tokenized a long Chinese paragraph five times over.
    special = count_tokens("")  # the tokens every text gets ([CLS] and [SEP] for BERT models)
    units: list[tuple[int, int, int]] = []  # start, end, tokens without the special ones
    for a, b in sentence_spans(text):
        tokens = count_tokens(text[a:b])
        if tokens <= max_tokens:
            units.append((a, b, tokens - special))
            continue
        for match in re.finditer(r"\S+", text[a:b]):
            start, end = a + match.start(), a + match.end()
            tokens = count_tokens(text[start:end])
            if tokens <= max_tokens:
                units.append((start, end, tokens - special))
            else:
                pieces = _cut(text, start, end, count_tokens, max_tokens)
                units += [(x, y, count_tokens(text[x:y]) - special) for x, y in pieces]
    pieces: list[str] = []
    i = 0
    while i < len(units):
        j, total = i + 1, units[i][2]
        while j < len(units) and special + total + units[j][2] <= max_tokens:
            total += units[j][2]
            j += 1
        while j > i + 1 and not fits(text[units[i][0] : units[j - 1][1]]):  # the estimate was short
            j -= 1
        pieces.append(text[units[i][0] : units[j - 1][1]])
        i = j
    return pieces


def make_passages(
    paragraphs: Sequence[str],
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int,
) -> list[str]:
    """Paragraphs -> passage texts in article order."""
    merged: list[str] = []
    pending = ""  # a fragment waiting to be joined to the next paragraph
    for para in (p.strip() for p in paragraphs):
        if not para:
            continue
        if pending:
            para = pending + PARAGRAPH_JOIN + para
            pending = ""
        if word_count(para) < MIN_WORDS:
            pending = para
            continue
        merged.append(para)
    if pending:
        if merged:
            merged[-1] = merged[-1] + PARAGRAPH_JOIN + pending
        else:
            merged.append(pending)

    def tokens(text: str) -> int:
        # A text of more characters than any tokenizer reads in max_tokens tokens is too long
        # without counting it: tokenizers slow down on a long run without spaces (seconds for
        # 300,000 Chinese characters), and the pieces it is cut into are each counted anyway.
        return max_tokens + 1 if len(text) > _MAX_CHARS_PER_TOKEN * max_tokens else count_tokens(text)

    passages: list[str] = []
    for para in merged:
        passages.extend([para] if tokens(para) <= max_tokens else _split_long(para, tokens, max_tokens))
    return passages
