"""What the integrity checks cost: the load-time checks every search start pays, and the index
job's full checks, on synthetic unit vectors (nothing is downloaded; the query model is the one the
index job exported beside INDEX_FILE, when given).

    python -m bench.experiments.integrity_cost [--rows 1000000] [--query-model-index INDEX_FILE]

Prints one JSON document: CPU and wall milliseconds of each check (the best of --repeat runs).
Writes a temporary SQLite file of --rows vectors (768 MB at 1M) under --work, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from embeddings import derived, store
from embeddings.model_identity import file_digest
from embeddings.vectors import checked_scale, off_unit, scale_of

DIM = 384


def timed(fn, repeat: int) -> dict:
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        best_cpu, best_wall = min(best_cpu, time.process_time() - cpu), min(best_wall, time.perf_counter() - wall)
    return {"cpu_ms": round(best_cpu * 1000, 1), "wall_ms": round(best_wall * 1000, 1)}


def unit_vectors(rows: int, seed: int = 0) -> np.ndarray:
    out = np.empty((rows, DIM), np.float16)
    rng = np.random.default_rng(seed)
    for lo in range(0, rows, 65536):
        block = rng.standard_normal((min(65536, rows - lo), DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo : lo + len(block)] = block
    return out


def vector_store(path: Path, vectors: np.ndarray, per_article: int = 20) -> None:
    """The two tables store.damaged_vectors reads, as the index job writes them."""
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE index_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE articles (id INTEGER PRIMARY KEY, key TEXT NOT NULL, passage_count INTEGER NOT NULL);
        CREATE TABLE article_vectors (article_id INTEGER PRIMARY KEY, vectors BLOB NOT NULL);
    """)
    conn.execute("INSERT INTO index_meta VALUES ('dimension', ?)", (str(DIM),))
    for n, lo in enumerate(range(0, len(vectors), per_article), 1):
        block = vectors[lo : lo + per_article]
        conn.execute("INSERT INTO articles VALUES (?, ?, ?)", (n, f"a{n}", len(block)))
        conn.execute("INSERT INTO article_vectors VALUES (?, ?)", (n, block.tobytes()))
    conn.commit()
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--query-model-index", type=Path, help="an index whose exported query model to load")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="integrity-", dir=args.work))
    out: dict = {"rows": args.rows, "dimension": DIM, "cpu": _cpu(), "load_average": os.getloadavg()}
    try:
        vectors = unit_vectors(args.rows)
        # At load, from SQLite: the check rides on the pass that computes the codes' scale.
        out["scale_of (before the checks)"] = timed(lambda: scale_of(vectors), args.repeat)
        out["checked_scale (load from SQLite)"] = timed(lambda: checked_scale(vectors), args.repeat)
        # At load, from the vector file: its small files hashed (ids, owners; 8 bytes a passage each).
        np.save(work / "ids.npy", np.arange(args.rows, dtype=np.int64))
        out["hash ids.npy (load from the vector file)"] = timed(lambda: file_digest(work / "ids.npy"), args.repeat)
        # Per question: the rows rescored are checked as they are read.
        rows = np.random.default_rng(1).choice(args.rows, 400, replace=False)
        out["off_unit of 400 rows (per question)"] = timed(lambda: off_unit(vectors[rows]), max(args.repeat, 20))
        # The index job: every stored vector, read from SQLite and checked.
        vector_store(work / "index.sqlite3", vectors)
        vectors = None  # the memory back before SQLite reads it all again
        conn = sqlite3.connect(work / "index.sqlite3")
        out["damaged_vectors (each index run)"] = timed(lambda: store.damaged_vectors(conn), args.repeat)
        conn.close()
        # The index job: every file of a derived copy hashed (here the SQLite file stands for one).
        copy = work / "copy"
        copy.mkdir()
        os.link(work / "index.sqlite3", copy / "data")
        derived.write_checksums(copy)
        size = (copy / "data").stat().st_size
        out["derived.verify"] = {**timed(lambda: derived.verify(copy), args.repeat), "bytes": size}
        if args.query_model_index:
            out["query model"] = query_model_costs(args.query_model_index, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))


def query_model_costs(index_path: Path, repeat: int) -> dict:
    """Loading the export as before (no checks) against loading it verified."""
    from embeddings.query_model import OnnxQueryEmbedder, query_model_dir, read_export_meta, verified_export

    folder = query_model_dir(index_path)
    meta = read_export_meta(folder)
    with store.reading(index_path) as conn:
        index_meta = store.read_meta(conn)
    OnnxQueryEmbedder(folder, meta)  # onnxruntime imported, files in the page cache
    return {
        "load without checks": timed(lambda: OnnxQueryEmbedder(folder, meta), repeat),
        "load verified (hash + probe)": timed(lambda: verified_export(folder, meta["model"], index_meta), repeat),
        "hash model.onnx alone": timed(lambda: file_digest(folder / "model.onnx"), repeat),
    }


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
