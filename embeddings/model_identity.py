"""What ties an index to the model that embedded it beyond the model's name: a hash of the model's
files and the model's vector of a fixed probe text, both recorded in index_meta by the index job.

A name says nothing about weights that changed under it (a new version of the model's package, a
folder trained again in place). With these:
- `index` refuses to add vectors from a model whose files hash otherwise than the index's (as it
  refuses another EMBEDDING_MODEL: `--rebuild` re-embeds everything), and exports the ONNX query
  model again when the export was made from other files;
- a question is embedded only by a model whose probe vector equals the index's within
  PROBE_TOLERANCE (the ONNX export, or the full model it falls back to), so questions and
  passages are always embedded by the same model.

The files are hashed again only when their sizes or modification times differ from those
recorded with the hash (docs/reliability.md has what the checks cost).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .embedder import Embedder, SentenceTransformerEmbedder, resolve_model_path

# Words, a name, digits and punctuation: most of what the model reads passes through it.
PROBE_TEXT = "Who led the resistance to the Taliban in Kunduz province on Aug. 9, 2021, and why?"
# Largest difference in any dimension between two models' probe vectors that still counts as the
# same model: float32 runtimes differ by about 1e-6; another model's weights by far more than this.
PROBE_TOLERANCE = 1e-3
HASH = "sha256"
# Copies of the weights for other runtimes, which sentence-transformers does not read.
OTHER_RUNTIMES = ("onnx", "openvino")


@dataclass(frozen=True)
class ModelFiles:
    digest: str  # HASH of the files' names and contents
    signature: str  # JSON [[name, size, mtime_ns], ...]: while it holds, so does the digest


def model_folder(name: str) -> Path | None:
    """The local folder the model is loaded from; None for a name only a model hub's cache knows."""
    folder = Path(resolve_model_path(name))
    return folder if folder.is_dir() else None


def _files(folder: Path) -> list[Path]:
    """The files that define the model: weights, configuration, tokenizer (not its README or
    the copies for other runtimes)."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if any(p.startswith(".") for p in parts) or parts[0] in OTHER_RUNTIMES or path.suffix.lower() == ".md":
            continue
        if path.is_file():
            found.append(path)
    return found


def model_files(name: str, known: dict[str, str] | None = None) -> ModelFiles | None:
    """The hash of model `name`'s files (None when it is no local folder). `known` (index_meta)
    holds a previous one: reused, without reading the files, while their signature is unchanged."""
    folder = model_folder(name)
    if folder is None:
        return None
    files = _files(folder)
    signature = json.dumps([[p.relative_to(folder).as_posix(), (s := p.stat()).st_size, s.st_mtime_ns] for p in files])
    if known and known.get("model_files") == signature and known.get("model_hash"):
        return ModelFiles(known["model_hash"], signature)
    digest = hashlib.new(HASH)
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_digest(path).encode() + b"\0")
    return ModelFiles(f"{HASH}:{digest.hexdigest()}", signature)


def file_digest(path: Path) -> str:
    """HASH of one file's bytes, read in large blocks (hashlib releases the GIL while it hashes
    them, so files hash in parallel threads)."""
    digest = hashlib.new(HASH)
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def probe(embedder: Embedder) -> np.ndarray:
    """The embedder's float32 vector of PROBE_TEXT (questions are embedded in float32, so the
    index job's bfloat16 passage embedder is asked in float32 here)."""
    if isinstance(embedder, SentenceTransformerEmbedder) and embedder.bf16:
        embedder = SentenceTransformerEmbedder(embedder.name, embedder.sentence_transformer, bf16=False)
    return np.asarray(embedder.encode([PROBE_TEXT])[0], np.float32)


def encode_probe(vector: np.ndarray) -> str:
    """For index_meta: the float32 values, little-endian, in base64."""
    return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()


def decode_probe(text: str | None) -> np.ndarray | None:
    try:
        return np.frombuffer(base64.b64decode(text or "", validate=True), "<f4").astype(np.float32) if text else None
    except ValueError:
        return None


def probe_mismatch(vector: np.ndarray, expected: np.ndarray | None) -> str | None:
    """Why `vector` is not the probe vector `expected` (None when it is, within PROBE_TOLERANCE)."""
    if expected is None:
        return "the index records no probe vector (it was built by an older version: run `corpus-bot index`)"
    vector = np.asarray(vector, np.float32).ravel()
    if vector.shape != expected.shape:
        return f"it makes {vector.size}-dimensional vectors, the index holds {expected.size}"
    difference = float(np.max(np.abs(vector - expected))) if vector.size else 0.0
    if not difference <= PROBE_TOLERANCE:  # NaN fails too
        return (
            f"its vector of the probe text differs from the index's by {difference:.3g} (at most {PROBE_TOLERANCE:g})"
        )
    return None
