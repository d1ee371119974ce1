"""Context in what is embedded: the article's title, or the sentence before the passage, embedded
with the passage's text (the quoted text stays the passage's own).

    python -m bench.experiments.passage_context VARIANT [VARIANT ...] -- FOLDER [FOLDER ...]

Variants (each "where there is one": a passage without a title or a previous passage is embedded
as it is):
  title-period      "Title. text" (what was measured once before)
  title-newline     "Title\\n\\ntext"
  title-label       "title: Title\\n\\ntext"
  previous          the last sentence of the article's previous passage, then the text
  title-previous    "Title\\n\\n" + the previous passage's last sentence + the text

Each variant's evaluation index is built with the bulk model wrapped so that it embeds, for each
passage text, its text with the variant's context (passages cut exactly as the index job cuts them);
everything else is `corpus-bot eval`'s: keyword index, token vectors, the default hybrid, nDCG@10
(`run_eval`). Questions are embedded by the full model (the wrapper has no ONNX export; same
vectors). The indexes are cached under bench/out/context-<variant>/. In BEIR-layout sets every
document is one article: only multi-passage documents (SciFact's abstracts) have a previous passage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embeddings.chunk import make_passages, split_sentences
from embeddings.config import DEFAULT_MODEL
from embeddings.embedder import load_embedder
from embeddings.evaluate import cached_index, load_beir, run_eval
from embeddings.search import SearchIndex

from .common import OUT, SETS_HELP


def with_context(variant: str, title: str | None, previous: str | None, text: str) -> str:
    before = split_sentences(previous)[-1] + " " if previous and variant.endswith("previous") else ""
    if variant == "previous" or not title:
        return before + text
    if variant == "title-period":
        return f"{title.rstrip('.')}. {text}"
    if variant == "title-label":
        return f"title: {title}\n\n{text}"
    return f"{title}\n\n{before}{text}"  # title-newline, title-previous


class ContextEmbedder:
    """The bulk model, embedding each known passage text with its context."""

    def __init__(self, inner, contexts: dict[str, str], variant: str) -> None:
        self.inner, self.contexts = inner, contexts
        self.name, self.dimension, self.max_tokens = inner.name, inner.dimension, inner.max_tokens
        self.variant = variant

    def encode(self, texts, *, on_batch=None):
        return self.inner.encode([self.contexts.get(t, t) for t in texts], on_batch=on_batch)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def token_ids(self, texts):
        return self.inner.token_ids(texts)

    def token_vectors(self, tokens):
        return self.inner.token_vectors(tokens)


def contexts_of(data, embedder, variant: str) -> dict[str, str]:
    out = {}
    for doc in data.docs:
        passages = make_passages(doc.paragraphs, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens)
        for i, text in enumerate(passages):
            out.setdefault(text, with_context(variant, doc.title, passages[i - 1] if i else None, text))
    return out


def main() -> None:
    argv = sys.argv[1:]
    at = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s VARIANT [VARIANT ...] -- FOLDER [FOLDER ...]",
        epilog=f"FOLDER: {SETS_HELP}",
    )
    parser.add_argument(
        "variants",
        nargs="+",
        metavar="VARIANT",
        help="title-period, title-newline, title-label, previous or title-previous",
    )
    variants, folders = parser.parse_args(argv[:at]).variants, argv[at + 1 :]
    if not folders:
        parser.error("give the evaluation sets after --")
    bulk = load_embedder(bulk=True)
    for folder in folders:
        data = load_beir(Path(folder))
        for variant in variants:
            wrapped = ContextEmbedder(bulk, contexts_of(data, bulk, variant), variant)
            path = cached_index(data, DEFAULT_MODEL, OUT / f"context-{variant}", embedder=wrapped)
            index = SearchIndex.load(path, model_name=DEFAULT_MODEL, weak_score=0.3)
            result = run_eval(data, index, bulk)
            print(f"{data.name} {variant}: nDCG@10 {result['ndcg@10']}", flush=True)
            index.close()


if __name__ == "__main__":
    main()
