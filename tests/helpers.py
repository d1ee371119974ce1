"""What tests share besides fixtures: the repository's paths, a deterministic fake embedder for fast
unit tests, a way to make the core load it, and a local HTTP server for feeds."""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class Server:
    """A local HTTP server whose answers the test sets per path: a (status, headers, body) tuple or
    a function of the request handler returning one. It keeps every request (path, headers, time)."""

    def __init__(self) -> None:
        self.routes: dict[str, object] = {}
        self.requests: list[tuple[str, dict[str, str], float]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, dict(self.headers), time.monotonic()))
                route = server.routes.get(self.path, (404, {}, b"not here"))
                status, headers, body = route(self) if callable(route) else route
                if status is None:  # the route answered on its own
                    return
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [p for p, _h, _t in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
