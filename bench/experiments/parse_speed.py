"""Index-time cost of parsing article files (embeddings/parse.py), per file, on three corpora:

- the shipped corpus (5 scraped news articles, .txt);
- N news-site style .txt articles made here: a title, a byline and one or two date lines in the
  forms news sites write ("Published 3:14 PM EST, Tue March 5, 2024", "12. März 2024", "Publié le
  4 mars 2024", "Posted: 03/05/2024", ...), in English, German, French or Spanish, then 6-12
  paragraphs of the benchmark's synthetic text: every file goes through the date reader;
- N of the benchmark's .md articles (front matter with an ISO date: the common fast path).

    python -m bench.experiments.parse_speed [--articles 2000] [--repeat 3]

Prints one JSON document: per corpus, CPU ms per file (median, mean, p95; each file's best of
--repeat runs) and the one-time wall-clock cost of the first files of the process (imports,
dateparser's language data). CPU time, not wall-clock time, so that other work on a shared
machine does not count.
Nothing is downloaded; the files are made in memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time

import numpy as np

from .common import ROOT

MONTHS = {
    "en": "January February March April May June July August September October November December".split(),
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
    "es": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
}
WEEKDAYS = "Mon Tue Wed Thu Fri Sat Sun".split()


def header(form: int, author: str, d: dt.date) -> str:
    """A byline and date lines as news sites write them; every article's date differs, so the date
    reader's cache of texts it has read does not hide its cost."""
    month = {lang: names[d.month - 1] for lang, names in MONTHS.items()}
    later = d + dt.timedelta(days=1)
    return (
        f"By {author}, CNN\nUpdated 10:02 AM ET, {WEEKDAYS[later.weekday()]} {MONTHS['en'][later.month - 1]}"
        f" {later.day}, {later.year}\n\nPublished 3:14 PM EST, {WEEKDAYS[d.weekday()]} {month['en']} {d.day}, {d.year}",
        f"By {author} | Reuters\n\n{month['en'][:3]}. {d.day}, {d.year}",
        f"Von {author}\n\n{d.day}. {month['de']} {d.year}",
        f"Par {author}\n\nPublié le {d.day} {month['fr']} {d.year} à 14h30",
        f"Por {author}\n\nPublicado el {d.day} de {month['es']} de {d.year}",
        f"By {author}\n\nPosted: {d.month:02d}/{d.day:02d}/{d.year}",
        f"Von {author}\n\n{d.day:02d}.{d.month:02d}.{d.year}, 14:30 Uhr",
        f"By {author}\n\n{d.isoformat()}",
    )[form]


FORMS = 8


def news_site_files(n: int) -> list[tuple[str, bytes]]:
    from bench.benchmark import TextGen

    gen, rng, files = TextGen(4321), np.random.default_rng(7), []
    for i in range(n):
        art = gen.article(i, passages=int(rng.integers(6, 13)))
        head = header(i % FORMS, art["authors"][0], art["published"])
        text = f"{art['title']}\n\n{head}\n\n" + "\n\n".join(art["paragraphs"]) + "\n"
        files.append((f"{i:06d}.txt", text.encode()))
    return files


def benchmark_md_files(n: int) -> list[tuple[str, bytes]]:
    from bench.benchmark import TextGen, article_file

    gen = TextGen(1234)
    return [(f"{i:06d}.md", article_file(gen.article(i))) for i in range(n)]


def shipped_files() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted((ROOT / "corpus").glob("*.txt"))]


def per_file_ms(files: list[tuple[str, bytes]], repeat: int) -> dict:
    from embeddings.parse import parse_file

    best: list[float] | None = None
    for _ in range(repeat):
        clear = getattr(sys.modules.get("embeddings.dates"), "read_date", None)
        if clear is not None and hasattr(clear, "cache_clear"):
            clear.cache_clear()  # each run reads its dates afresh
        times = []
        for key, data in files:
            started = time.thread_time()  # CPU time: other processes on a shared machine do not count
            parse_file(key, data)
            times.append((time.thread_time() - started) * 1000)
        best = times if best is None else [min(a, b) for a, b in zip(best, times)]
    return {
        "files": len(files),
        "median_ms": round(statistics.median(best), 3),
        "mean_ms": round(statistics.fmean(best), 3),
        "p95_ms": round(float(np.percentile(best, 95)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    corpora = {
        "shipped": shipped_files(),
        "news_site_txt": news_site_files(args.articles),
        "benchmark_md": benchmark_md_files(args.articles),
    }
    from embeddings.parse import parse_file

    started = time.perf_counter()
    for key, data in corpora["news_site_txt"][:FORMS]:  # one of each header: every language loaded
        parse_file(key, data)
    first_ms = (time.perf_counter() - started) * 1000
    result = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "first_files_ms": round(first_ms, 1),
        "corpora": {name: per_file_ms(files, args.repeat) for name, files in corpora.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
