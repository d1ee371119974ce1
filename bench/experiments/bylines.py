"""Do authors in the keyword context crowd out better answers? Evaluation sets asked with bylines.

    python -m bench.experiments.bylines SCIFACT tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase

SCIFACT: a BEIR-layout folder such as SciFact (any BEIR-layout folders may be given).

BEIR-layout sets carry no authors, so `corpus-bot eval` cannot see what authors in the keyword
context (migration 6) do to ranking. This copies each set's cached evaluation index (built by
`corpus-bot eval` first), gives its documents bylines, rebuilds the keyword index's context as the
index job would, and evaluates the default search on each copy (nDCG@10):

- none: the copy unchanged (the number `corpus-bot eval` prints);
- real: news_shipped only, the shipped articles' own bylines (Sharif Hassan; Thomas Gibbons-Neff and
  Najim Rahim; Jason Ditz of Antiwar.com) on their passages;
- reporters: every document by one of 40 made-up reporters (a name and a surname each);
- from the questions: the worst case, every document by a "reporter" whose names are words the
  set's own questions write with a capital (names of people and places), so a question naming
  someone also names the author of unrelated documents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

from embeddings import store
from embeddings.config import Settings
from embeddings.evaluate import cached_index, load_beir, run_eval
from embeddings.query_model import load_query_embedder
from embeddings.search import SearchIndex

from .common import OUT, ROOT, SETS_HELP

REPORTERS = [
    "Anna Keller",
    "Ben Okafor",
    "Clara Novak",
    "Daniel Reyes",
    "Elena Petrova",
    "Farid Haddad",
    "Grace Liu",
    "Hugo Lambert",
    "Ines Moreau",
    "Jonas Berg",
    "Kara Whitfield",
    "Leo Marchetti",
    "Maya Sato",
    "Nils Andersen",
    "Olivia Grant",
    "Pavel Dvorak",
    "Quinn Harper",
    "Rosa Delgado",
    "Samir Patel",
    "Tessa Brooks",
    "Umar Siddiqui",
    "Vera Lindholm",
    "Will Ashford",
    "Xena Papadakis",
    "Yusuf Demir",
    "Zoe Fairbanks",
    "Adam Kowalski",
    "Bianca Rossi",
    "Caleb Dunn",
    "Dina Haraldsen",
    "Emil Varga",
    "Fiona Gallagher",
    "Gabriel Costa",
    "Hana Takahashi",
    "Isaac Morrow",
    "Julia Brennan",
    "Karim Nasser",
    "Lena Hoffmann",
    "Marco Bellini",
    "Nora Quinlan",
]
SHIPPED_BYLINES = {
    "000": (["Sharif Hassan"], None),
    "001": (["Thomas Gibbons-Neff", "Najim Rahim"], None),
    "004": (["Jason Ditz"], "Antiwar.com"),
}


def pick(key: str, names: list[str]) -> str:
    return names[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(names)]


def question_names(queries: dict[str, str]) -> list[str]:
    """Words the questions write with a capital after their first word, paired into names."""
    words = sorted({w for q in queries.values() for w in re.findall(r"\w+", q)[1:] if w[:1].isupper() and len(w) > 2})
    return [f"{a} {b}" for a, b in zip(words[::2], words[1::2])] or REPORTERS


def with_bylines(source: Path, copy: Path, byline) -> None:
    """A copy of the index whose articles have byline(key) = (authors, publication), the keyword
    context rebuilt from them as migration 6 builds it."""
    shutil.copyfile(source, copy)
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("BEGIN")
    for (key,) in conn.execute("SELECT key FROM articles").fetchall():
        authors, publication = byline(key)
        conn.execute(
            "UPDATE articles SET authors = ?, source = ? WHERE key = ?", (json.dumps(authors), publication, key)
        )
    conn.execute("DELETE FROM passage_fts")
    conn.execute(
        f"INSERT INTO passage_fts(rowid, text, context) SELECT p.id, p.text, {store.PASSAGE_CONTEXT} "
        "FROM passages p JOIN articles a ON a.id = p.article_id"
    )
    conn.execute("COMMIT")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    parser.add_argument("--cache", type=Path, default=ROOT / "data" / "eval-cache")
    args = parser.parse_args()
    settings = Settings.from_env()
    work = OUT / "bylines"
    work.mkdir(parents=True, exist_ok=True)
    for folder in args.folders:
        data = load_beir(Path(folder))
        path = cached_index(data, settings.embedding_model, args.cache)
        embedder = load_query_embedder(path, settings.embedding_model)
        names = question_names(data.queries)
        variants = {"none": lambda key: ([], None)}
        if data.name == "news_shipped":
            variants["real"] = lambda key: SHIPPED_BYLINES.get(key[:3], ([], None))
        variants["reporters"] = lambda key: ([pick(key, REPORTERS)], None)
        variants["from the questions"] = lambda key: ([pick(key, names)], None)
        for name, byline in variants.items():
            copy = work / f"{data.name}.sqlite3"
            with_bylines(path, copy, byline)
            index = SearchIndex.load(copy, model_name=settings.embedding_model, weak_score=settings.weak_score)
            result = run_eval(data, index, embedder)
            index.close()
            print(f"{data.name:20} {name:20} nDCG@10 {result['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
