"""The fast query path: the embedding model exported to ONNX beside the index, run with
onnxruntime and tokenizers, so answering a question never imports torch.

Without torch a cold start is an order of magnitude faster, and the vectors are the same as
sentence-transformers'. The graph is exported with the model's plain ("eager") attention, which
onnxruntime's transformer optimizer fuses into its own attention, layer-norm and GELU kernels:
less time per question (bench/README.md has the figures).
The export is made at index time, again whenever it is missing or does not verify;
only models whose pipeline is Transformer -> mean pooling -> normalize are exported (what the
ONNX graph computes); any other model keeps working through sentence-transformers.

An export is used only once verified (verified_export): made by this version from the model
files the index's vectors came from (model_identity.py), its files the size and hash it wrote
them with, and its vector of the probe text the index's. Otherwise questions go through the full
model, with a warning saying why; a full model that is not the index's is refused.
Passages are not embedded through it: for long batches torch is as fast or faster (and much
faster in bfloat16, see embedder.py); bench/embedding_speed.py compares them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .embedder import Embedder, SentenceTransformerEmbedder, load_embedder, resolve_model_path
from .errors import CorpusBotError, ModelMismatchError
from .model_identity import HASH, decode_probe, encode_probe, file_digest, model_files, probe, probe_mismatch

log = logging.getLogger(__name__)

# 3: meta.json records the model files' hash, each file's size and hash, and the export's probe
# vector, so a load can verify it (older exports cannot be, and are exported again by `index`).
FORMAT = 3
MEAN_POOLING_PIPELINE = ["Transformer", "Pooling", "Normalize"]
FILES = ("model.onnx", "tokenizer.json")


class QueryModelUnusable(Exception):
    """Why the export beside an index cannot answer questions for it (the message says)."""


def query_model_dir(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".query-model")


def exportable(model_name: str) -> str | None:
    """Why the model cannot be exported (None when it can): only mean pooling + normalize is."""
    folder = Path(resolve_model_path(model_name))
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "not a local sentence-transformers folder"
    if kinds != MEAN_POOLING_PIPELINE:
        return f"pipeline {kinds} is not {MEAN_POOLING_PIPELINE}"
    if isinstance(pooling.get("pooling_mode"), str):  # as sentence-transformers 5 and later write it
        modes = [pooling["pooling_mode"]]
    else:
        modes = [
            k.removeprefix("pooling_mode_").removesuffix("_tokens")
            for k, v in pooling.items()
            if k.startswith("pooling_mode") and v
        ]
    if modes != ["mean"]:
        return f"pooling {modes} is not mean pooling"
    return None


def export_query_model(
    embedder: SentenceTransformerEmbedder,
    index_path: Path,
    *,
    model_hash: str | None = None,
    expected_probe: np.ndarray | None = None,
) -> Path | None:
    """Write <index>.query-model/ (model.onnx, tokenizer.json, meta.json); None if not exportable.

    meta.json records what a load verifies: the hash of the model files it was made from
    (`model_hash`, computed here unless given), each file's size and hash, and the export's
    vector of the probe text. The export must reproduce the model's own probe vector, and the
    index's (`expected_probe`) when given; otherwise nothing is written (CorpusBotError)."""
    model_path = resolve_model_path(embedder.name)
    why_not = exportable(embedder.name)
    if why_not:
        log.info("no ONNX query model for %s: %s", embedder.name, why_not)
        return None
    import torch

    class MeanPooledNormalized(torch.nn.Module):
        def __init__(self, transformer) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    target = query_model_dir(index_path)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        transformer = embedder.sentence_transformer[0].auto_model
        module = MeanPooledNormalized(transformer).eval()
        sample = torch.ones((1, 8), dtype=torch.long)
        dynamic = {0: "batch", 1: "tokens"}
        # The TorchScript exporter: the newer dynamo one needs onnxscript as well, for the same graph.
        with embedder.lock, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attention = transformer.config._attn_implementation
            transformer.set_attn_implementation("eager")  # the attention pattern the optimizer recognises
            try:
                torch.onnx.export(
                    module,
                    (sample, sample, torch.zeros_like(sample)),
                    str(tmp / "unfused.onnx"),
                    input_names=["input_ids", "attention_mask", "token_type_ids"],
                    output_names=["embedding"],
                    dynamic_axes={
                        "input_ids": dynamic,
                        "attention_mask": dynamic,
                        "token_type_ids": dynamic,
                        "embedding": {0: "batch"},
                    },
                    opset_version=17,
                    dynamo=False,
                )
            finally:
                transformer.set_attn_implementation(attention)  # passages are embedded faster with it
        _fuse(tmp / "unfused.onnx", tmp / "model.onnx", transformer.config)
        shutil.copy(Path(model_path) / "tokenizer.json", tmp / "tokenizer.json")
        if model_hash is None:
            files = model_files(embedder.name)
            model_hash = files.digest if files else None
        meta = {
            "format": FORMAT,
            "model": embedder.name,
            "dimension": embedder.dimension,
            "max_tokens": embedder.max_tokens,
            "model_hash": model_hash,
            "files": {name: {"size": (tmp / name).stat().st_size, HASH: file_digest(tmp / name)} for name in FILES},
        }
        exported = probe(OnnxQueryEmbedder(tmp, meta, threads=1))
        problem = probe_mismatch(exported, probe(embedder))
        if problem:
            raise CorpusBotError(f"the ONNX export does not reproduce {embedder.name!r}: {problem}")
        if expected_probe is not None and (problem := probe_mismatch(exported, expected_probe)):
            raise ModelMismatchError(f"{embedder.name!r} is not the model this index was built with: {problem}")
        meta["probe_vector"] = encode_probe(exported)
        (tmp / "meta.json").write_text(json.dumps(meta))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap folders: a reader sees the old export or the new one, and verifies it either way.
    old = target.with_name(target.name + f".old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def refresh(index_path: Path, model_name: str, embedder: Embedder | None = None) -> str:
    """Export the query model beside the index at index_path when it is missing or is not this
    index's (export_problem); remove an export when the model cannot be exported. Says what was
    done: "current", "exported", "exported again (why)", "not exportable (why)", "no index to
    export for". An export that fails raises, and the previous one stays (unverified: unused)."""
    from . import store
    from .model_identity import decode_probe

    folder = query_model_dir(index_path)
    why_not = exportable(model_name)
    if why_not:
        shutil.rmtree(folder, ignore_errors=True)  # a stale export for a previous model
        return f"not exportable ({why_not})"
    with store.reading(index_path) as conn:
        index_meta = store.read_meta(conn)
    if not index_meta.get("probe_vector"):  # an empty index: nothing to answer, nor to verify an export against
        return "no index to export for"
    problem = export_problem(folder, model_name, index_meta)
    if problem is None:
        return "current"
    embedder = embedder or load_embedder(model_name)
    if not isinstance(embedder, SentenceTransformerEmbedder):
        return f"not exportable ({type(embedder).__name__} is not a sentence-transformers model)"
    existed = (folder / "meta.json").exists()
    export_query_model(
        embedder,
        index_path,
        model_hash=index_meta.get("model_hash"),
        expected_probe=decode_probe(index_meta["probe_vector"]),
    )
    return f"exported again ({problem})" if existed else "exported"


def read_export_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise QueryModelUnusable("it is missing") from None
    except (OSError, ValueError) as exc:
        raise QueryModelUnusable(f"its meta.json is unreadable ({exc})") from None
    if not isinstance(meta, dict):
        raise QueryModelUnusable("its meta.json is not an object")
    return meta


def _meta_problem(meta: dict, model_name: str, index_meta: dict) -> str | None:
    """Why an export's meta.json does not describe the model this index was embedded with."""
    if meta.get("format") != FORMAT:
        return f"it is of format {meta.get('format')}, not {FORMAT} (made by an older version)"
    if meta.get("model") != model_name:
        return f"it was made for {meta.get('model')!r}, not {model_name!r}"
    if not index_meta.get("model_hash"):
        return "the index records no hash of its model's files (built by an older version)"
    if meta.get("model_hash") != index_meta["model_hash"]:
        return "it was made from other model files than the index's vectors"
    if str(meta.get("dimension")) != str(index_meta.get("dimension")):
        return f"it makes {meta.get('dimension')}-dimensional vectors, the index holds {index_meta.get('dimension')}"
    files = meta.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        return "its meta.json lists no files to verify"
    return None


def _files_problem(folder: Path, meta: dict, *, hashes: bool = True) -> str | None:
    """Why the export's files are not those it recorded (size, then hash unless `hashes` is False)."""
    for name, recorded in meta["files"].items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != recorded.get("size"):
            return f"{name} holds {size} bytes, not the {recorded.get('size')} it was written with"
        if not hashes:
            continue
        try:
            digest = file_digest(path)
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror or exc})"
        if digest != recorded.get(HASH):
            return f"{name} is damaged (its {HASH} differs from the one it was written with)"
    return None


def export_problem(folder: Path, model_name: str, index_meta: dict) -> str | None:
    """Why the export in folder is not the query model of the index whose index_meta is given,
    from its files alone (the index job's check: no model is loaded); None when it is."""
    try:
        meta = read_export_meta(folder)
    except QueryModelUnusable as exc:
        return str(exc)
    problem = _meta_problem(meta, model_name, index_meta) or _files_problem(folder, meta)
    if problem:
        return problem
    recorded = decode_probe(meta.get("probe_vector"))
    if recorded is None:
        return "its meta.json records no probe vector"
    return probe_mismatch(recorded, decode_probe(index_meta.get("probe_vector")))


def _fuse(unfused: Path, target: Path, config) -> None:
    """onnxruntime's BERT optimizer: attention, layer norms and GELU as fused kernels (the same
    vectors: cosine 0.999999). A graph it cannot fuse is kept as it is, only slower."""
    try:
        known = set(logging.root.manager.loggerDict)
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions

        for name in set(logging.root.manager.loggerDict) - known:  # its notes on each fusion are not the user's
            logging.getLogger(name).setLevel(logging.ERROR)

        options = FusionOptions("bert")
        options.enable_shape_inference = False  # the same fusions in half the time
        fused = optimizer.optimize_model(
            str(unfused),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
            optimization_options=options,
        )
        fused.save_model_to_file(str(target))
        unfused.unlink()
    except Exception as exc:  # the optimizer's patterns are tied to how each model is written
        log.warning("ONNX query model left unfused: %s", exc)
        unfused.rename(target)


# Two threads without spinning: faster than one whether the machine is idle or busy, and more
# would compete with the bot's other work on small hosts.
QUERY_THREADS = min(2, os.cpu_count() or 1)


class OnnxQueryEmbedder:
    """Embeds questions with the exported graph; same interface as the sentence-transformers one."""

    def __init__(self, folder: Path, meta: dict, *, threads: int = QUERY_THREADS) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.name = meta["model"]
        self.dimension = int(meta["dimension"])
        self.max_tokens = int(meta["max_tokens"])
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # The bundled tokenizer.json pads and truncates at 128; sentence-transformers uses no
        # padding and truncates at the model's 256: anything else changes the vectors.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Spinning threads wait hot for work: fastest on an idle machine, but on a shared host
        # they fight the other load and make a question slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()

    def _run(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
        return self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]

    def encode(self, texts, *, on_batch=None):
        out = np.zeros((len(texts), self.dimension), np.float32)
        # Batches of similar length waste nothing on padding (what sentence-transformers does too).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), 32):
            rows = order[start : start + 32]
            out[rows] = self._run([texts[i] for i in rows])
            if on_batch:
                on_batch(len(rows))
        return out

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self._tokenizer.encode(text).ids)

    def token_ids(self, texts):
        with self._lock:
            return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def load_query_embedder(index_path: Path, model_name: str, index_meta: dict | None = None) -> Embedder:
    """The model that embeds questions for the index at index_path (whose index_meta may be given):
    the ONNX export beside it when it verifies (verified_export), else the full model, with one
    warning saying why. Either way its vector of the probe text must be the index's: a model
    whose files changed since the index was built is refused (ModelMismatchError), never used."""
    if index_meta is None:
        index_meta = _index_meta(index_path)
    folder = query_model_dir(index_path)
    if index_meta:  # else there is nothing to answer from, nor to verify an export against
        try:
            return verified_export(folder, model_name, index_meta)
        except QueryModelUnusable as exc:
            if folder.exists() or exportable(model_name) is None:
                log.warning(
                    "questions go through the full model %s, slower to start: the ONNX query model in %s "
                    "is not used (%s); `corpus-bot index` exports it again",
                    model_name,
                    folder,
                    exc,
                )
    embedder = load_embedder(model_name)
    check_query_embedder(embedder, index_meta)
    return embedder


def verified_export(folder: Path, model_name: str, index_meta: dict) -> OnnxQueryEmbedder:
    """The export in folder, loaded, once it is shown to be the query model of this index: made by
    this version for this model's files (meta.json), its files as written (size and hash), and
    its vector of the probe text the index's. QueryModelUnusable says why not."""
    meta = read_export_meta(folder)
    problem = _meta_problem(meta, model_name, index_meta) or _files_problem(folder, meta, hashes=False)
    if problem:
        raise QueryModelUnusable(problem)
    # The files are hashed while onnxruntime builds its session from them (hashlib releases the
    # GIL): the check adds little to the start-up time (docs/reliability.md).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="query-model-check") as pool:
        files = pool.submit(_files_problem, folder, meta)
        try:
            embedder = OnnxQueryEmbedder(folder, meta)
        except Exception as exc:  # onnxruntime's and tokenizers' errors on a damaged file
            raise QueryModelUnusable(
                files.result() or f"it cannot be loaded ({str(exc).splitlines()[0][:200]})"
            ) from None
        problem = files.result()
    if problem:
        raise QueryModelUnusable(problem)
    problem = probe_mismatch(probe(embedder), decode_probe(index_meta.get("probe_vector")))
    if problem:
        raise QueryModelUnusable(problem)
    return embedder


def check_query_embedder(embedder: Embedder, index_meta: dict) -> None:
    """Refuse an embedder that is not the model the index's vectors were made with (its dimension,
    its vector of the probe text). Indexes from before the probe was recorded are taken on trust."""
    dimension = int(index_meta.get("dimension") or 0)
    if dimension and embedder.dimension != dimension:
        raise ModelMismatchError(
            f"the index holds {dimension}-dimensional vectors but {embedder.name!r} makes {embedder.dimension}; "
            "run `corpus-bot index --rebuild`"
        )
    expected = decode_probe(index_meta.get("probe_vector"))
    if expected is not None and (problem := probe_mismatch(probe(embedder), expected)):
        raise ModelMismatchError(
            f"{embedder.name!r} is not the model this index was built with ({problem}): its files changed since; "
            "run `corpus-bot index --rebuild` to re-embed everything with it"
        )


def _index_meta(index_path: Path) -> dict:
    """index_meta of the index at index_path; empty when there is none to read (the search's load
    reports why)."""
    from . import store

    try:
        with store.reading(index_path) as conn:
            return store.read_meta(conn)
    except (CorpusBotError, sqlite3.Error):
        return {}
