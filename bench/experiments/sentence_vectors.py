"""Sentence vectors beside the passage's own: does a passage's best sentence rank it better?

    python -m bench.experiments.sentence_vectors SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase [--kind alone|late]

SCIFACT: a BEIR-layout folder such as SciFact.

Each passage's sentences (chunk.sentence_spans) get a vector: `alone`, each sentence embedded on
its own by the model; `late`, the mean of the model's output token vectors over the sentence's
tokens with the whole passage as input ("late chunking": no extra model pass, each sentence read
in its passage's context). A passage of one sentence keeps its own vector. Each question is ranked
by the default hybrid (`SearchIndex.rank`, its candidates: the fused pool); the candidates' cosine
is then replaced by a mix of the passage's and its best sentence's cosine, the rest of the score
(keyword coverage and feedback) kept, and documents ranked by their best passage (nDCG@10; "a 0"
reproduces `corpus-bot eval`'s figure within about 0.001: near-copies are not collapsed here).
Sentence vectors are cached under bench/out/sentence-vectors/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from embeddings.chunk import sentence_spans
from embeddings.embedder import load_embedder

from .common import OUT, SETS_HELP, documents_by_score, eval_sets, judged_questions, ndcg, passage_texts

MIXES = [("a", a) for a in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)] + [("max", None)]


def alone_vectors(embedder, texts: list[str]) -> list[np.ndarray]:
    spans = [sentence_spans(t) for t in texts]
    flat = [t[a:b] for t, s in zip(texts, spans) for a, b in s if len(s) > 1]
    vectors = embedder.encode(flat) if flat else np.zeros((0, embedder.dimension), np.float32)
    out, at = [], 0
    for s in spans:
        n = len(s) if len(s) > 1 else 0
        out.append(vectors[at : at + n])
        at += n
    return out


def late_vectors(embedder, texts: list[str]) -> list[np.ndarray]:
    """Mean of the passage's output token vectors over each sentence's tokens (normalised)."""
    import torch

    model = embedder.sentence_transformer
    tokenizer, transformer = model.tokenizer, model[0].auto_model
    out: list[np.ndarray] = [np.zeros((0, embedder.dimension), np.float32)] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), 32):
        batch = order[start : start + 32]
        enc = tokenizer(
            [texts[i] for i in batch],
            return_offsets_mapping=True,
            padding=True,
            truncation=True,
            max_length=embedder.max_tokens,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping").numpy()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=embedder.bf16):
            states = transformer(**enc).last_hidden_state.float().numpy()
        for row, i in enumerate(batch):
            spans = sentence_spans(texts[i])
            if len(spans) < 2:
                continue
            start_, end_ = offsets[row, :, 0], offsets[row, :, 1]
            real = end_ > start_
            vs = []
            for a, b in spans:
                tokens = real & (start_ >= a) & (end_ <= b)
                v = states[row][tokens].mean(0) if tokens.any() else np.zeros(embedder.dimension, np.float32)
                vs.append(v / (np.linalg.norm(v) or 1.0))
            out[i] = np.stack(vs).astype(np.float32)
    return out


def sentence_vectors(index, path: Path, kind: str, embedder) -> list[np.ndarray]:
    cache = OUT / "sentence-vectors" / f"{path.stem}-{kind}.npz"
    if cache.exists():
        stored = np.load(cache)
        return [stored[str(i)] for i in range(index.passage_count)]
    ids = [int(i) for i in index.passage_ids]
    texts = passage_texts(path, index, range(index.passage_count))
    texts = [texts[i] for i in ids]
    vectors = (late_vectors if kind == "late" else alone_vectors)(embedder, texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{str(i): v for i, v in enumerate(vectors)})
    return vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    parser.add_argument("--kind", choices=("alone", "late"), default="alone")
    parser.add_argument("--mode", default="hybrid")
    args = parser.parse_args()
    bulk = load_embedder(bulk=True)
    for query_embedder, data, path, index in eval_sets(args.folders, embedder=bulk):
        sentences = sentence_vectors(index, path, args.kind, bulk)
        runs = {name: {} for name in MIXES}
        for qid in judged_questions(data):
            question = data.queries[qid]
            candidates = index.rank(question, query_embedder, n=100, per_article=1, mode=args.mode).candidates
            q = query_embedder.encode([question])[0]
            best = np.array(
                [
                    float((sentences[r] @ q).max()) if len(sentences[r]) else c
                    for r, c in zip(candidates.rows, candidates.cosine)
                ]
            )
            rest = candidates.scores - candidates.cosine
            for name in MIXES:
                kind, a = name
                if kind == "max":
                    cosine = np.maximum(candidates.cosine, best)
                else:
                    cosine = (1 - a) * candidates.cosine + a * best
                runs[name][qid] = documents_by_score(index, candidates.rows, rest + cosine)
        print(
            data.name,
            args.kind,
            args.mode,
            " ".join(f"{k}{'' if a is None else ' ' + str(a)}={ndcg(r, data)}" for (k, a), r in runs.items()),
            flush=True,
        )
        index.close()


if __name__ == "__main__":
    main()
