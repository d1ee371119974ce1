"""What choosing the bold sentence costs per answer, in process: the default
(embeddings.highlight.best_sentence) against the shared-words rule it replaced, on the same
answers, interleaved question by question.

    python -m bench.experiments.highlight_cost INDEX QUESTIONS_JSON [--rounds 3]

INDEX: an index with its exported query model (e.g. the benchmark's bench/out/work/100000/
index.sqlite3); QUESTIONS_JSON: a JSON list of questions (the benchmark's bench/out/work/
questions.json). Each question is searched once (k 5); then each rule highlights the five passages,
rounds times in alternation. Prints the p50 / p95 ms per answer of each rule, for the first
round (word vectors not yet cached) and the later ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from embeddings.config import DEFAULT_MODEL
from embeddings.highlight import best_sentence
from embeddings.query_model import load_query_embedder
from embeddings.search import SearchIndex

from .highlight import shared_words_before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("index", type=Path)
    parser.add_argument("questions", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    embedder = load_query_embedder(args.index, DEFAULT_MODEL)
    index = SearchIndex.load(args.index, model_name=DEFAULT_MODEL, weak_score=0.3)
    answers = []
    for q in json.loads(args.questions.read_text()):
        answer = index.search(q, embedder)
        answers.append((q, embedder.encode([q])[0], [r.text for r in answer.results]))

    def vectors_of(words):
        return index.word_vectors.of(words, embedder)

    rules = {
        "shared words (before)": lambda q, v, t: shared_words_before(q, t),
        "default": lambda q, v, t: best_sentence(q, t, v, vectors_of),
    }
    times = {(name, r): [] for name in rules for r in range(args.rounds)}
    for r in range(args.rounds):
        for q, v, texts in answers:
            for name, rule in rules.items():
                started = time.perf_counter()
                for text in texts:
                    rule(q, v, text)
                times[name, r].append((time.perf_counter() - started) * 1000)
    for name in rules:
        first = np.array(times[name, 0])
        later = np.concatenate([times[name, r] for r in range(1, args.rounds)]) if args.rounds > 1 else first
        print(
            f"{name:24s} first round p50 {np.median(first):.3f} p95 {np.percentile(first, 95):.3f} ms; "
            f"later p50 {np.median(later):.3f} p95 {np.percentile(later, 95):.3f} ms per answer"
        )
    index.close()


if __name__ == "__main__":
    main()
