"""Search over one index snapshot: SearchIndex (search_index.py) and the parts it is made of.

- order.py: the order passages are shown in (per-article cap, syndicated copies)
- search_index.py: SearchIndex, loading a snapshot and answering questions

Everything other modules import from `embeddings.search` is named here.
"""
from .order import NEAR_DUPLICATE, PER_ARTICLE, SAME_ARTICLE_PENALTY, Candidates
from .search_index import (
    ABOUT_ARTICLES, COMMON_TERM_MIN, COMMON_TERM_SHARE, CONTEXT_WEIGHT, DEFAULT_K, DEFAULT_MODE, FEEDBACK_COMMON,
    FEEDBACK_WORDS, FUSION_DEPTH, HYBRID_WEIGHT, KEYWORD_LIMIT, MAX_K, MAX_QUESTION_CHARS, MISSED_EXPONENT, MODEL_READ_WEIGHT,
    MODES, RARE_WORDS_HELD, RERANK_DEPTH, Filters, Ranking, SearchIndex, fts_match, parse_iso_date, rare_share,
    word_weights,
)
from ..words import fts_terms

__all__ = [
    "ABOUT_ARTICLES", "COMMON_TERM_MIN", "COMMON_TERM_SHARE", "CONTEXT_WEIGHT", "DEFAULT_K", "DEFAULT_MODE",
    "FEEDBACK_COMMON", "FEEDBACK_WORDS", "FUSION_DEPTH", "HYBRID_WEIGHT", "KEYWORD_LIMIT", "MAX_K", "MAX_QUESTION_CHARS",
    "MISSED_EXPONENT", "MODEL_READ_WEIGHT", "MODES", "NEAR_DUPLICATE", "PER_ARTICLE", "RARE_WORDS_HELD", "RERANK_DEPTH",
    "SAME_ARTICLE_PENALTY", "Candidates", "Filters", "Ranking", "SearchIndex", "fts_match", "fts_terms", "parse_iso_date",
    "rare_share", "word_weights",
]
