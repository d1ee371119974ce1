"""Which sentence to highlight: accuracy of each method on the labelled question/passage pairs.

    python -m bench.experiments.highlight [tests/fixtures/highlight/pairs.jsonl]

A pair is a question, a passage of two or more sentences (from the shipped corpus, or news-like
text written for the set) and the sentence that answers it; a method is right when it picks that
sentence (no highlight counts as wrong). The question's vector is the bundled model's, as the
search computes it. Methods:

- shared words (before): the sentence sharing the most question words, loosely matched by their
  first letters; none when no word is shared (the rule before embeddings/highlight.py).
- sentence vectors: each sentence embedded alone by the model (a model call per sentence: at
  question time, or stored at index time).
- late chunking: the mean of the model's output token vectors over the sentence's tokens, the whole
  passage as input (one pass per passage, at index time).
- word vectors: the mean of the sentence's words' stored vectors (word_vectors.py; no model call).
- "+ λ shared": plus λ × the share of the question's words the sentence holds.
- default: embeddings.highlight.best_sentence as it ships.

Prints one line per method: accuracy, and the ids it gets wrong.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from embeddings.chunk import sentence_spans
from embeddings.embedder import load_embedder
from embeddings.highlight import best_sentence, content_words, shared_share, words_of
from embeddings.word_vectors import WordVectors

from .common import ROOT
from .sentence_vectors import late_vectors

PAIRS = ROOT / "tests" / "fixtures" / "highlight" / "pairs.jsonl"
LAMBDAS = (0.1, 0.2, 0.3)
_OLD_WORD = re.compile(r"\w+")


def old_terms(text: str) -> set[str]:
    from embeddings.highlight import STOPWORDS

    return {w for w in (m.casefold() for m in _OLD_WORD.findall(text)) if w not in STOPWORDS and len(w) > 1}


def shared_words_before(question: str, text: str) -> int | None:
    """The rule before: most shared words (counted), None when none is shared."""
    q = old_terms(question)
    counts = [shared_share(q, old_terms(text[a:b])) * len(q) for a, b in sentence_spans(text)]
    best = int(np.argmax(counts)) if counts else 0
    return best if q and counts[best] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "pairs",
        type=Path,
        nargs="?",
        default=PAIRS,
        help="labelled pairs, one JSON object a line [tests/fixtures/highlight/pairs.jsonl]",
    )
    path = parser.parse_args().pairs
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    embedder = load_embedder()
    spans = [sentence_spans(p["passage"]) for p in pairs]
    labels = [[p["passage"][a:b] for a, b in s].index(p["answer"]) for p, s in zip(pairs, spans)]
    questions = embedder.encode([p["question"] for p in pairs])
    alone = [embedder.encode([p["passage"][a:b] for a, b in s]) for p, s in zip(pairs, spans)]
    late = late_vectors(embedder, [p["passage"] for p in pairs])
    words = sorted({w for p in pairs for w in words_of(p["passage"])})
    tokens = sorted({t for ids in embedder.token_ids(words) for t in ids})
    stored = WordVectors(np.array(tokens, np.int64), embedder.token_vectors(tokens).astype(np.float16))

    def vectors_of(ws):
        return stored.of(ws, embedder)

    def word_mean(p, s):
        out = []
        for a, b in s:
            v = vectors_of(words_of(p["passage"][a:b])).sum(0)
            out.append(v / (np.linalg.norm(v) or 1.0))
        return np.stack(out)

    means = [word_mean(p, s) for p, s in zip(pairs, spans)]
    shared = [
        np.array([shared_share(content_words(p["question"]), content_words(p["passage"][a:b])) for a, b in s])
        for p, s in zip(pairs, spans)
    ]

    def by_score(scores):
        return lambda i: int(np.argmax(scores(i)))

    methods = {
        "shared words (before)": lambda i: shared_words_before(pairs[i]["question"], pairs[i]["passage"]),
        "sentence vectors": by_score(lambda i: alone[i] @ questions[i]),
        "late chunking": by_score(lambda i: late[i] @ questions[i]),
        "word vectors": by_score(lambda i: means[i] @ questions[i]),
    }
    for lam in LAMBDAS:
        methods[f"sentence vectors + {lam} shared"] = by_score(
            lambda i, lam=lam: alone[i] @ questions[i] + lam * shared[i]
        )
        methods[f"late chunking + {lam} shared"] = by_score(lambda i, lam=lam: late[i] @ questions[i] + lam * shared[i])
        methods[f"word vectors + {lam} shared"] = by_score(lambda i, lam=lam: means[i] @ questions[i] + lam * shared[i])
    methods["default (highlight.best_sentence)"] = lambda i: spans[i].index(
        best_sentence(pairs[i]["question"], pairs[i]["passage"], questions[i], vectors_of)
    )
    print(f"{len(pairs)} pairs ({sum(1 for p in pairs if p['origin'].startswith('corpus/'))} on the shipped corpus)")
    for name, choose in methods.items():
        wrong = [p["id"] for i, p in enumerate(pairs) if choose(i) != labels[i]]
        print(f"{name:36s} {1 - len(wrong) / len(pairs):.3f}  wrong: {' '.join(wrong)}", flush=True)


if __name__ == "__main__":
    main()
