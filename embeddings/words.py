"""Words of questions and passages, as search, the highlight and the stored word vectors see them.

One regex and one stopword list for all of them, so that the words the keyword query searches
(fts_terms), the words the highlight matches and the words whose vectors the index stores are
the same words.
"""

from __future__ import annotations

import re

WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the their "
    "them they this to was were what when where which who whom why will with would".split()
)


def fts_terms(question: str) -> list[str]:
    """The question's words for the keyword query: casefolded, no stopwords, each once."""
    return list(dict.fromkeys(w for w in (m.casefold() for m in WORD.findall(question)) if w not in STOPWORDS))
