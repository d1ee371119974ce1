"""The highlighted sentence: which sentence of a quoted passage answers the question.

Both renderers show it in bold (`Result.highlight`, a span of the passage's verbatim text).
"""
from __future__ import annotations

import re

from .chunk import sentence_spans

WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the their "
    "them they this to was were what when where which who whom why will with would".split()
)


def content_words(text: str) -> set[str]:
    """The words of text, casefolded, without stopwords and one-letter words."""
    return {w for w in (m.casefold() for m in WORD.findall(text)) if w not in STOPWORDS and len(w) > 1}


def best_sentence(question: str, text: str) -> tuple[int, int] | None:
    """Span of the sentence sharing the most question terms (prefix-matched, so 'seized' ~ 'seize')."""
    spans = sentence_spans(text)
    if len(spans) < 2:
        return None
    q = content_words(question)
    if not q:
        return None

    def overlap(span: tuple[int, int]) -> int:
        # A term t matches a word w equal to it, or one of 4+ letters where one's first five
        # letters begin the other; as set lookups (this runs for every sentence of every result).
        words = content_words(text[span[0] : span[1]])
        long = [w for w in words if len(w) >= 4]
        four = {w for w in long if len(w) == 4}
        heads = {n: {w[:n] for w in long if len(w) >= n} for n in {len(t[:5]) for t in q}}
        return sum(1 for t in q if t in words or t[:4] in four or t[:5] in heads[len(t[:5])])

    scores = [overlap(span) for span in spans]
    best = max(range(len(spans)), key=scores.__getitem__)  # the first of equals, as max() picks
    return spans[best] if scores[best] else None
