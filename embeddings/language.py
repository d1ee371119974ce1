"""The language an article is written in, when it is plain: stated in its metadata, or clear from
its most common function words. Used where a language decides how text is read (the order of a
numeric date); None whenever it is not certain.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["DAY_FIRST", "detect_language", "language_code"]

# Languages whose numeric dates are always day first (05.03.2024 is 5 March). English is not
# among them: the US writes month first, the UK day first.
DAY_FIRST = frozenset({"de", "fr", "es"})

# Frequent words of each language that the others do not share (so "la", "que", "en" are out).
_FUNCTION_WORDS = {
    "en": "the and of to is that with was for it on are this have from by were said which has".split(),
    "de": "der die das und ist nicht mit den von dem sich auf für ein eine auch wurde sind zu im".split(),
    "fr": "le les et des est une du dans pour qui pas sur au avec sont été aux cette ont".split(),
    "es": "el los las y del es por una con para se fue sus como más al este han entre".split(),
}
_LANGUAGE_OF = {word: lang for lang, words in _FUNCTION_WORDS.items() for word in words}
_NAMES = {"english": "en", "german": "de", "deutsch": "de", "french": "fr", "français": "fr", "spanish": "es",
          "español": "es"}  # fmt: skip
_MIN_HITS = 12  # a few sentences' worth: a headline alone decides nothing
_MARGIN = 3  # the winner has at least three times the runner-up's count
_WORDS_READ = 2000


def language_code(value: object) -> str | None:
    """'de', 'de-DE', 'de_AT', 'German' -> 'de'; None for anything that is not a language tag."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in _NAMES:
        return _NAMES[text]
    match = re.fullmatch(r"([a-z]{2,3})(?:[-_][a-z0-9]{2,8})*", text)
    return match.group(1) if match else None


def detect_language(paragraphs: Iterable[str]) -> str | None:
    """en, de, fr or es when the text's function words clearly say so, else None."""
    counts: Counter[str] = Counter()
    read = 0
    for paragraph in paragraphs:
        words = re.findall(r"[^\W\d_]+", paragraph.lower())
        counts.update(_LANGUAGE_OF[w] for w in words if w in _LANGUAGE_OF)
        read += len(words)
        if read >= _WORDS_READ:
            break
    ranked = counts.most_common(2) + [("", 0), ("", 0)]
    (best, hits), (_, runner_up) = ranked[0], ranked[1]
    return best if hits >= _MIN_HITS and hits >= _MARGIN * runner_up else None
