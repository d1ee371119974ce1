"""Bulk embedding throughput of the ways this machine can run the bundled model, on the same texts,
with each one's cosine to the sentence-transformers float32 vectors (the reference).

    .venv/bin/python bench/embedding_speed.py [--texts 1000] [--beir DIR] [--out F]

Prints one JSON document. Texts: the benchmark's synthetic paragraphs (about 40 words), or with
--beir the first passages of DIR, a BEIR-layout folder such as SciFact (its abstracts run to the
256-token limit).
Backends that cannot run here (no bf16 in the CPU, onnxruntime missing) are reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def texts_from(beir: Path | None, n: int) -> list[str]:
    if beir is None:
        from bench.benchmark import TextGen

        gen, out, i = TextGen(1234), [], 0
        while len(out) < n:
            out.extend(gen.article(i)["paragraphs"])
            i += 1
        return out[:n]
    out = []
    with open(beir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def timed(encode, texts: list[str]) -> tuple[np.ndarray, float]:
    encode(texts[:64])  # warm-up: first-call allocations and kernel choice
    started = time.perf_counter()
    vectors = np.asarray(encode(texts), dtype=np.float32)
    return vectors, len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--beir", type=Path, help="take the texts from this BEIR folder's corpus.jsonl")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from embeddings.config import DEFAULT_MODEL
    from embeddings.embedder import SentenceTransformerEmbedder, load_embedder, native_bf16
    from embeddings.query_model import OnnxQueryEmbedder, export_query_model, query_model_dir

    texts = texts_from(args.beir, args.texts)
    st = load_embedder(DEFAULT_MODEL)  # float32: the reference

    results: dict[str, dict] = {}
    reference, rate = timed(st.encode, texts)
    results["sentence-transformers fp32 (torch)"] = {"passages_per_s": round(rate, 1)}

    def record(name: str, encode) -> None:
        try:
            vectors, rate = timed(encode, texts)
        except Exception as exc:  # a backend this machine cannot run
            results[name] = {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}
            return
        cos = np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1)
        results[name] = {
            "passages_per_s": round(rate, 1),
            "cosine_min": round(float(cos.min()), 5),
            "cosine_mean": round(float(cos.mean()), 5),
        }

    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "index.sqlite3"

        def meta() -> dict:
            return json.loads((query_model_dir(index_path) / "meta.json").read_text())

        export_query_model(st, index_path)
        ort = OnnxQueryEmbedder(query_model_dir(index_path), meta(), threads=os.cpu_count() or 1)
        record("onnxruntime fp32, all cores", ort.encode)

        bf16 = SentenceTransformerEmbedder(st.name, st.sentence_transformer, bf16=True)  # forced, whatever the CPU
        record("sentence-transformers, torch bf16 autocast (the index job where the CPU has bf16)", bf16.encode)

        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            source = query_model_dir(index_path) / "model.onnx"
            quantize_dynamic(
                str(source), str(source.with_name("model.int8.onnx")), weight_type=QuantType.QInt8, per_channel=True
            )
            source.rename(source.with_name("model.fp32.onnx"))
            source.with_name("model.int8.onnx").rename(source)
            int8 = OnnxQueryEmbedder(query_model_dir(index_path), meta(), threads=os.cpu_count() or 1)
            record("onnxruntime int8 dynamic, per channel", int8.encode)
        except Exception as exc:
            results["onnxruntime int8 dynamic, per channel"] = {"unavailable": str(exc)[:300]}

    doc = {
        "texts": len(texts),
        "source": str(args.beir or "synthetic paragraphs (bench/benchmark.py)"),
        "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1),
        "cpu_native_bf16": native_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "backends": results,
    }
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
