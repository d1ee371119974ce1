"""Search over one index snapshot: SearchIndex (search_index.py) and the parts it is made of.

- engines.py: the seams to what stores an index (KeywordEngine: FTS5, the tantivy copy; VectorSource:
  SQLite blobs, the vector file)
- hybrid.py: the hybrid rule (HybridRule, DEFAULT_RULE and functions on arrays)
- order.py: the order passages are shown in (per-article cap, syndicated copies)
- search_index.py: SearchIndex, loading a snapshot and answering questions

Everything other modules import from `embeddings.search` is named here.
"""

from ..words import fts_terms
from .engines import CONTEXT_WEIGHT, KeywordEngine, VectorSource, fts_match
from .hybrid import ABOUT_ARTICLES, DEFAULT_RULE, HybridRule, rare_share, word_weights
from .order import NEAR_DUPLICATE, PER_ARTICLE, SAME_ARTICLE_PENALTY, Candidates
from .search_index import (
    DEFAULT_K,
    DEFAULT_MODE,
    KEYWORD_LIMIT,
    MAX_K,
    MAX_QUESTION_CHARS,
    MODES,
    RERANK_DEPTH,
    Filters,
    Ranking,
    SearchIndex,
    parse_iso_date,
)

# The default rule's settings under their former names, to read. Setting them changes nothing:
# pass a HybridRule (search(..., rule=HybridRule(feedback_words=0))) instead.
HYBRID_WEIGHT = DEFAULT_RULE.weight
MODEL_READ_WEIGHT = DEFAULT_RULE.model_read_weight
MISSED_EXPONENT = DEFAULT_RULE.missed_exponent
FEEDBACK_WORDS = DEFAULT_RULE.feedback_words
FEEDBACK_COMMON = DEFAULT_RULE.feedback_common
FUSION_DEPTH = DEFAULT_RULE.fusion_depth

__all__ = [
    "ABOUT_ARTICLES",
    "CONTEXT_WEIGHT",
    "DEFAULT_K",
    "DEFAULT_MODE",
    "DEFAULT_RULE",
    "FEEDBACK_COMMON",
    "FEEDBACK_WORDS",
    "FUSION_DEPTH",
    "HYBRID_WEIGHT",
    "KEYWORD_LIMIT",
    "KeywordEngine",
    "MAX_K",
    "MAX_QUESTION_CHARS",
    "MISSED_EXPONENT",
    "MODEL_READ_WEIGHT",
    "MODES",
    "NEAR_DUPLICATE",
    "PER_ARTICLE",
    "RERANK_DEPTH",
    "SAME_ARTICLE_PENALTY",
    "VectorSource",
    "Candidates",
    "Filters",
    "HybridRule",
    "Ranking",
    "SearchIndex",
    "fts_match",
    "fts_terms",
    "parse_iso_date",
    "rare_share",
    "word_weights",
]
