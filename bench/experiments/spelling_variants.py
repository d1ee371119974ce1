"""UK/US spelling variants on the keyword side: a question word that no passage uses, whose other
spelling some passage does ("neighbouring" / "neighboring"), asked in the corpus's spelling.

    python -m bench.experiments.spelling_variants MAPPING tests/fixtures/news_shipped \
        bench/out/news_lee bench/out/news_lee_paraphrase SCIFACT

SCIFACT: a BEIR-layout folder such as SciFact. MAPPING: a text file of `british->american` lines,
e.g. codespell's `codespell_lib/data/dictionary_en-GB_to_en-US.txt` (535 pairs), or breame's
`BRITISH_ENGLISH_SPELLINGS` written out that way (1,730 pairs). Each direction is used. The question
is rewritten in the corpus's spelling before the default hybrid ranks it, so the keyword side
matches the word (FTS5 counts, `SearchIndex.term_count`); the vector side sees the other spelling
too, which moves a question's cosine by a few thousandths. Prints nDCG@10 as asked and rewritten,
and the words rewritten.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from embeddings.search import SearchIndex

from .common import SETS_HELP, documents_by_score, eval_sets, judged_questions, ndcg

WORD = re.compile(r"\w+")


def read_mapping(path: Path) -> dict[str, str]:
    pairs = [line.strip().split("->") for line in path.read_text().splitlines() if "->" in line]
    both = {gb.casefold(): us.casefold() for gb, us in pairs}
    both.update({us: gb for gb, us in list(both.items())})
    return both


def in_corpus_spelling(index: SearchIndex, question: str, variants: dict[str, str]) -> tuple[str, list[str]]:
    changed = []

    def swap(match: re.Match) -> str:
        word = match.group()
        other = variants.get(word.casefold())
        if other and not index.term_count(word.casefold()) and index.term_count(other):
            changed.append(f"{word}->{other}")
            return other
        return word

    return WORD.sub(swap, question), changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mapping", type=Path, help="a text file of british->american lines")
    parser.add_argument("folders", nargs="+", help=SETS_HELP)
    args = parser.parse_args()
    variants = read_mapping(args.mapping)
    for embedder, data, _, index in eval_sets(args.folders):
        asked, rewritten, words = {}, {}, []
        for qid in judged_questions(data):
            question = data.queries[qid]
            other, changed = in_corpus_spelling(index, question, variants)
            words += changed
            for runs, text in ((asked, question), (rewritten, other)):
                c = index.rank(text, embedder, n=100, per_article=1).candidates
                runs[qid] = documents_by_score(index, c.rows, c.scores)
        print(
            f"{data.name}: as asked {ndcg(asked, data)}, in the corpus's spelling {ndcg(rewritten, data)}; "
            f"{len(words)} words: {' '.join(words)}",
            flush=True,
        )
        index.close()


if __name__ == "__main__":
    main()
