"""What tests share besides fixtures: the repository's paths, a deterministic fake embedder for fast
unit tests, and a way to make the core load it."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CORPUS = ROOT / "corpus"
# SciFact (BEIR) is not in the repository: SCIFACT_DIR names a BEIR-layout folder holding it.
SCIFACT = Path(os.environ["SCIFACT_DIR"]) if os.environ.get("SCIFACT_DIR") else None


class FakeEmbedder:
    """Bag-of-words hashed into 256 signed buckets: texts sharing words are similar, deterministic,
    instant. Good enough to test ranking plumbing; meaning is tested with the real model."""

    name = "fake-hash-embedder"
    dimension = 256
    max_tokens = 64

    def __init__(self) -> None:
        self.calls = 0
        self.texts_embedded = 0
        self._token_words: dict[int, str] = {}

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, np.float32)
        for word in re.findall(r"\w+", text.casefold()):
            h = hashlib.blake2b(word.encode(), digest_size=8).digest()
            v[h[0]] += 1.0 if h[1] & 1 else -1.0
        n = np.linalg.norm(v)
        # A text without words gets a unit vector too, as from any real model (a zero vector is
        # what the index's checks take for damage: vectors.off_unit).
        return v / n if n else np.full(self.dimension, self.dimension**-0.5, np.float32)

    def encode(self, texts, *, on_batch=None):
        self.calls += 1
        self.texts_embedded += len(texts)
        out = np.stack([self._vector(t) for t in texts]) if len(texts) else np.zeros((0, self.dimension), np.float32)
        if on_batch and len(texts):
            on_batch(len(texts))
        return out.astype(np.float32)

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 2

    def token_ids(self, texts):
        out = []
        for text in texts:
            words = re.findall(r"\w+", text.casefold())
            ids = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big") >> 1 for w in words]
            self._token_words.update(zip(ids, words))
            out.append(ids)
        return out

    def token_vectors(self, tokens):
        """A word's token is the word itself: its vector is the word's own."""
        return np.stack([self._vector(self._token_words[t]) for t in tokens]).astype(np.float32)


def use_embedder(monkeypatch, embedder) -> None:
    """Make every `load_embedder()` call in the core return embedder (each module imported the name)."""
    import embeddings.evaluate
    import embeddings.index
    import embeddings.query_model

    for module in (embeddings.index, embeddings.evaluate, embeddings.query_model):
        monkeypatch.setattr(module, "load_embedder", lambda name, **_: embedder)
