"""The fast query path: the embedding model exported to ONNX beside the index, run with
onnxruntime and tokenizers, so answering a question never imports torch.

Measured here: import + load + one question 0.6 s cold (10 s with torch), 5-7 ms warm, and the
same vectors (cosine 1.0000 to sentence-transformers'). The graph is exported with the model's
plain ("eager") attention, which onnxruntime's transformer optimizer fuses into its own attention,
layer-norm and GELU kernels: 12% less time per question (8.55 -> 7.51 ms p50 on the AMD VM).
The export is made once at index time;
only models whose pipeline is Transformer -> mean pooling -> normalize are exported (what the
ONNX graph computes); any other model keeps working through sentence-transformers.
Passages are not embedded through it: for long batches torch is as fast or faster (and much
faster in bfloat16, see embedder.py); bench/embedding_speed.py compares them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path

import numpy as np

from .embedder import Embedder, SentenceTransformerEmbedder, load_embedder, resolve_model_path

log = logging.getLogger(__name__)

FORMAT = 2  # 2: fused (see above); 1 (unfused) still loads, and the next index run replaces it
LOADABLE_FORMATS = (1, 2)
MEAN_POOLING_PIPELINE = ["Transformer", "Pooling", "Normalize"]


def query_model_dir(index_path: Path) -> Path:
    return index_path.with_name(index_path.name + ".query-model")


def _exportable(model_path: str) -> str | None:
    """Why the model cannot be exported (None when it can): only mean pooling + normalize is."""
    folder = Path(model_path)
    try:
        modules = json.loads((folder / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError):
        return "not a local sentence-transformers folder"
    if kinds != MEAN_POOLING_PIPELINE:
        return f"pipeline {kinds} is not {MEAN_POOLING_PIPELINE}"
    # sentence-transformers 6 saves {"pooling_mode": "mean"}; older versions a flag per mode
    modes = pooling.get("pooling_mode", [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v])
    if modes not in ("mean", ["mean"], ["pooling_mode_mean_tokens"]):
        return f"pooling {modes} is not mean pooling"
    return None


def export_query_model(embedder: SentenceTransformerEmbedder, index_path: Path) -> Path | None:
    """Write <index>.query-model/ (model.onnx, tokenizer.json, meta.json); None if not exportable."""
    model_path = resolve_model_path(embedder.name)
    why_not = _exportable(model_path)
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
                    module, (sample, sample, torch.zeros_like(sample)), str(tmp / "unfused.onnx"),
                    input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["embedding"],
                    dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "token_type_ids": dynamic,
                                  "embedding": {0: "batch"}},
                    opset_version=17, dynamo=False,
                )
            finally:
                transformer.set_attn_implementation(attention)  # passages are embedded faster with it
        _fuse(tmp / "unfused.onnx", tmp / "model.onnx", transformer.config)
        shutil.copy(Path(model_path) / "tokenizer.json", tmp / "tokenizer.json")
        meta = {"format": FORMAT, "model": embedder.name, "dimension": embedder.dimension,
                "max_tokens": embedder.max_tokens}
        (tmp / "meta.json").write_text(json.dumps(meta))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Swap folders: a reader sees the old export or the new one, and checks meta.json either way.
    old = target.with_name(target.name + f".old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


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
        options.enable_shape_inference = False  # the same fusions in 3.5 s instead of 7
        fused = optimizer.optimize_model(str(unfused), model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size, optimization_options=options)
        fused.save_model_to_file(str(target))
        unfused.unlink()
    except Exception as exc:  # the optimizer's patterns are tied to how each model is written
        log.warning("ONNX query model left unfused: %s", exc)
        unfused.rename(target)


# Two threads without spinning, measured on a 2-core VM (median ms per question, 1 vs 2 threads):
# idle 10.4 vs 7.4, beside one busy process 10.0 vs 9.6, beside two 14.6 vs 11.4.
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
        # they fight the other load (a question took 16 ms instead of 10 beside one busy core).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
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


def load_query_embedder(index_path: Path, model_name: str) -> Embedder:
    """The ONNX query model exported for this index when it matches model_name, else the full model."""
    folder = query_model_dir(index_path)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        meta = None
    if meta and meta.get("format") in LOADABLE_FORMATS and meta.get("model") == model_name:
        try:
            return OnnxQueryEmbedder(folder, meta)
        except Exception as exc:  # a damaged export must not stop questions being answered
            log.warning("ONNX query model in %s unusable (%s); using %s through sentence-transformers", folder, exc, model_name)
    return load_embedder(model_name)
