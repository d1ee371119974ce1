"""Passages: the article's paragraphs, sized for the model, quoted verbatim later.

A passage is one paragraph, except that a fragment too short to stand alone is merged into its
neighbour and a paragraph too long for the model is split at sentence boundaries. Passage text is
always the article's own text, and it is embedded as is: prefixing the title was measured and lost
(docs/retrieval.md).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# A paragraph with fewer words than this is a fragment ("Read on." / a one-line quote tail):
# alone it embeds poorly and quotes badly, so it joins its neighbour.
MIN_WORDS = 8
PARAGRAPH_JOIN = "\n\n"

_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sen", "rep", "gov", "gen", "col", "lt", "sgt", "capt", "st",
    "jr", "sr", "co", "corp", "inc", "ltd", "vs", "etc", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "u.n", "e.g", "i.e", "a.m", "p.m",
}
# Candidate sentence ends: terminal punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_WORD_BEFORE = re.compile(r"[\w.]+$")  # the word a candidate end follows ("Mr", "U.S", "J")
_LONGEST_ABBREVIATION = max(map(len, _ABBREVIATIONS))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the sentences of text; together they cover every non-space character."""
    spans, start = [], 0
    for match in _BOUNDARY.finditer(text):
        end = match.end()
        nxt = text[end : end + 1]
        if not nxt or not (nxt.isupper() or nxt.isdigit() or nxt in "\"“‘'(["):
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


def _split_long(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Greedy packing of whole sentences into pieces that fit; a single over-long sentence is cut at
    words. Pieces are slices of text, so the quoted words are exactly the article's."""
    units: list[tuple[int, int]] = []
    for a, b in sentence_spans(text):
        if fits(text[a:b]):
            units.append((a, b))
        else:
            units += [(a + m.start(), a + m.end()) for m in re.finditer(r"\S+", text[a:b])]
    pieces: list[str] = []
    start = end = None
    for a, b in units:
        if start is not None and fits(text[start:b]):
            end = b
            continue
        if start is not None:
            pieces.append(text[start:end])
        start, end = a, b
    if start is not None:
        pieces.append(text[start:end])
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
        if len(para.split()) < MIN_WORDS:
            pending = para
            continue
        merged.append(para)
    if pending:
        if merged:
            merged[-1] = merged[-1] + PARAGRAPH_JOIN + pending
        else:
            merged.append(pending)

    def fits(text: str) -> bool:
        return count_tokens(text) <= max_tokens

    passages: list[str] = []
    for para in merged:
        passages.extend([para] if fits(para) else _split_long(para, fits))
    return passages
