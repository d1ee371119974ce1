"""`corpus-bot` commands that need no Discord: index, ask, sources, stats, eval, feedback, gaps.

The console script lives in bot/cli.py, which adds `run` to this group.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import sys
import textwrap
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

# Only what defining the commands needs is imported here, so `--help` and a bad option answer at
# once; each command imports the search, the index and the models (numpy, torch) when it runs.
from .config import Settings
from .errors import CorpusBotError, IndexMissingError, QueryError
from .search_options import DEFAULT_K, DEFAULT_MODE, MAX_K, MODES, check_question_text
from .terminal import counted, json_line, one_line, text_block

if TYPE_CHECKING:
    from .answer import Answer
    from .index import Progress


@contextmanager
def user_errors():
    """Known failures become one clear line (click prints 'Error: ...', exit 1), never a traceback."""
    try:
        yield
    except CorpusBotError as exc:
        raise click.ClickException(one_line(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(one_line(f"the index file cannot be used: {exc}")) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; the index is unchanged", err=True)
        sys.exit(130)


def settings_from(ctx: click.Context, **overrides) -> Settings:
    """The settings, with the command's options; an --index that is a postgresql:// URL selects
    the index in PostgreSQL, as INDEX_URL does, and a path the index file."""
    with user_errors():
        settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    changes = {k: v for k, v in overrides.items() if v is not None}
    location = changes.get("index_path")
    if isinstance(location, str):  # --index of a command that takes a URL too
        is_url = location.startswith(("postgresql://", "postgres://"))
        changes["index_path"], changes["index_url"] = (
            (settings.index_path, location) if is_url else (Path(location), "")
        )
    return replace(settings, **changes)


index_or_url_option = click.option(
    "--index",
    "index_path",
    help="Index file [INDEX_PATH; relative to the working directory], or a postgresql:// "
    "URL [INDEX_URL] for the index in PostgreSQL with pgvector.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (documented shape).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="corpus-bot")
def cli() -> None:
    """Answer questions about a news corpus by quoting its passages.

    Settings come from the environment, then from a `.env` file in the working directory (a
    variable set in the environment wins). Relative paths are relative to the working directory.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- index


class ProgressReporter:
    """A progress bar on a terminal; a plain line every few seconds otherwise (logs, CI, cron)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.interval = interval
        self.last = 0.0
        self.stage = ""

    def __call__(self, p: Progress) -> None:
        if p.stage == "embedding" and self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=p.passages_total, unit="passage", desc="embedding", file=sys.stderr)
            self.bar.n = p.passages_embedded
            self.bar.refresh()
            return
        if self.bar is not None and p.stage != "embedding":
            self.bar.close()
            self.bar = None
        now = time.monotonic()
        if p.stage != self.stage or now - self.last >= self.interval:  # every new stage shows at once
            self.last, self.stage = now, p.stage
            if not (self.tty and p.stage == "scanning"):
                click.echo(one_line(p.describe()), err=True)


@cli.command("index")
@click.option(
    "--corpus",
    "corpus_dir",
    type=click.Path(path_type=Path),
    help="Corpus folder [CORPUS_DIR; relative to the working directory].",
)
@index_or_url_option
@click.option("--rebuild", is_flag=True, help="Re-embed everything (needed after changing EMBEDDING_MODEL).")
@click.option(
    "--allow-removals",
    is_flag=True,
    help="Confirm a run that removes more than half of the indexed articles (refused otherwise: "
    "most often CORPUS_DIR points at the wrong folder).",
)
@click.option(
    "--from",
    "copy_from",
    help="Copy this index file (such as data/index.sqlite3) into the PostgreSQL index of --index "
    "or INDEX_URL, without embedding anything; into an index that is empty unless --rebuild.",
)
@json_option
@click.pass_context
def index_command(ctx, corpus_dir, index_path, rebuild, allow_removals, copy_from, as_json):
    """Index the corpus folder: only new or changed articles are embedded."""
    from .stores import index_store

    settings = settings_from(ctx, corpus_dir=corpus_dir, index_path=index_path)
    with user_errors():
        if copy_from is not None:
            from .postgres.copy import copy_index, open_source

            if not settings.index_url:
                open_source(copy_from).close()  # a bad --from is named first
                raise click.ClickException(
                    "--from copies an index file into a PostgreSQL index: give --index postgresql://... "
                    "(or set INDEX_URL)"
                )
            report = copy_index(
                settings,
                copy_from,
                settings.index_url,
                rebuild=rebuild,
                on_progress=None if as_json else ProgressReporter(),
            )
        else:
            report = index_store(settings).run_index(
                settings,
                rebuild=rebuild,
                allow_removals=allow_removals,
                on_progress=None if as_json else ProgressReporter(),
            )
    if as_json:
        click.echo(json_line(report.to_json()))
    else:
        for line in report.lines():
            click.echo(line)


# ---------------------------------------------------------------- ask


def render_answer(answer: Answer, *, color: bool) -> str:
    """The answer for a terminal. Corpus text and metadata may hold escape sequences: every field
    goes through embeddings.terminal, so they are shown, never obeyed."""
    lines = [f"Q: {one_line(answer.query)}"]
    lines += [f"! {one_line(notice)}" for notice in answer.notices]
    for r in answer.results:
        a = r.article
        lines.append("")
        lines.append(one_line(f"{r.rank}. [{r.relevance_label}] {a.display_title}"))
        lines.append(one_line(f"   {a.byline} · {r.position_label} · {a.key}"))
        if r.also_in_label:
            lines.append(one_line(f"   {r.also_in_label}"))
        text = text_block(r.text)
        if r.highlight and color:
            s, e = r.highlight
            text = text_block(r.text[:s]) + click.style(text_block(r.text[s:e]), bold=True) + text_block(r.text[e:])
        for para in text.split("\n"):
            wrapped = textwrap.wrap(para, width=96, break_long_words=False, break_on_hyphens=False) or [""]
            lines += ["   > " + w for w in wrapped]
    if answer.has_more:
        lines += ["", f"(more: --offset {answer.offset + len(answer.results)})"]
    return "\n".join(lines)


def _looks_like_question_words(arg: str) -> bool:
    """A word starting with '-' that is no option: a number (-4, -40°C) or a quoted phrase."""
    return bool(re.match(r"-[0-9.]", arg)) or any(c.isspace() for c in arg)


class QuestionCommand(click.Command):
    """A command whose argument is the words of a question, quoted or not, among the options.

    A word like `-4` or `"-4 degrees in Kabul"` is part of the question, not an unknown option;
    anything else starting with '-' is read as an option (a typo gets click's error), and every
    word after `--` belongs to the question.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    takes_value[name] = not (param.is_flag or param.count)
        options, words = [], []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                words += args[i + 1 :]
                break
            name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
            if arg.startswith("-") and arg != "-" and (name in takes_value or not _looks_like_question_words(arg)):
                options.append(arg)
                value_attached = "=" in arg if arg.startswith("--") else len(arg) > 2
                if takes_value.get(name) and not value_attached and i + 1 < len(args):
                    i += 1
                    options.append(args[i])
            else:
                words.append(arg)
            i += 1
        try:
            return super().parse_args(ctx, options + (["--", *words] if words else []))
        except click.NoSuchOption as exc:
            # click names the first unknown letter of '-Taliban' ('-T'): quote the word as typed.
            word = next((o for o in options if o.startswith(exc.option_name)), exc.option_name)
            exc.message += (
                f" If it is part of the question, put -- before the question, after any options: "
                f"{ctx.command_path} -k 3 -- {word} ..."
            )
            raise


def results_option(help: str, default: int, hi: int):
    """-k/--results: how many results, one spelling for every command."""
    return click.option(
        "-k", "--results", "k", type=click.IntRange(1, hi), default=default, show_default=True, help=help
    )


@cli.command("ask", cls=QuestionCommand)
@click.argument("question", nargs=-1, required=True)
@results_option("How many passages to show.", DEFAULT_K, MAX_K)
@click.option(
    "--offset", type=click.IntRange(0), default=0, help="Skip the first N passages (the next page: --offset 5)."
)
@click.option("--source", help="Only articles whose publication or title contains this text.")
@click.option("--since", help="Only articles published on or after this date (YYYY-MM-DD).")
@click.option("--until", help="Only articles published on or before this date (YYYY-MM-DD).")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=DEFAULT_MODE,
    show_default=True,
    help="vector (meaning), keyword (exact words, BM25) or hybrid (both, fused).",
)
@index_or_url_option
@json_option
@click.pass_context
def ask_command(ctx, question, k, offset, source, since, until, mode, index_path, as_json):
    """Answer QUESTION with quoted passages.

    The question needs no quotes: `corpus-bot ask what happened in kunduz`. Words after `--` are
    all question, even one starting with '-' (`corpus-bot ask -- -x`). '-' reads one question per
    line from standard input and writes one answer per line (with --json, one JSON line each; a
    blank or refused line gets an error line).
    """
    from .embedder import load_reranker
    from .search import Filters, parse_iso_date
    from .stores import index_store

    question = " ".join(question)
    from_stdin = question == "-"
    settings = settings_from(ctx, index_path=index_path)
    with user_errors():
        filters = Filters(
            source=source.strip() or None if source else None,
            since=parse_iso_date(since, "--since") if since else None,
            until=parse_iso_date(until, "--until") if until else None,
        )
        if not from_stdin:
            check_question_text(question)  # before loading anything
        stored = index_store(settings)
        index = stored.load(settings)
        if index.passage_count == 0:
            raise IndexMissingError(
                f"the index at {stored.shown(settings)} is empty: add articles to the corpus folder and run "
                "`corpus-bot index`"
            )
        embedder = stored.query_embedder(settings, index.meta)
        reranker = load_reranker(settings.rerank_model) if settings.rerank_model else None
        questions = (line.strip() for line in sys.stdin) if from_stdin else iter([question])
        color = sys.stdout.isatty()
        first = True
        for q in questions:
            try:
                check_question_text(q)
                answer = index.search(q, embedder, k=k, offset=offset, filters=filters, mode=mode, reranker=reranker)
            except QueryError as exc:
                if not from_stdin:
                    raise
                # One output per input line, so answers can be paired with questions by position.
                shown = q.encode("utf-8", "replace").decode("utf-8")
                if as_json:
                    click.echo(json_line({"query": shown, "error": str(exc)}))
                else:
                    click.echo(("" if first else "\n") + f"Q: {one_line(shown)}\n! {one_line(exc)}")
                first = False
                continue
            if as_json:
                click.echo(json_line(answer.to_json()))
            else:
                click.echo(("" if first else "\n") + render_answer(answer, color=color))
            first = False


# ---------------------------------------------------------------- sources / stats


@cli.command("sources")
@index_or_url_option
@json_option
@click.pass_context
def sources_command(ctx, index_path, as_json):
    """List the indexed articles with their metadata."""
    from .stores import index_store

    settings = settings_from(ctx, index_path=index_path)
    with user_errors():
        stored = index_store(settings)
        articles = stored.articles(settings)
        where = stored.shown(settings)
    if as_json:
        click.echo(json_line({"articles": [a.to_json() for a in articles]}))
        return
    if not articles:
        click.echo(one_line(f"the index at {where} has no articles: run `corpus-bot index`"))
    for a in articles:
        click.echo(one_line(a.display_title))
        click.echo(one_line(f"   {a.byline} · {counted(a.passages, 'passage')} · {a.key}"))
        if a.url:
            click.echo(one_line(f"   {a.url}"))


@cli.command("stats")
@index_or_url_option
@json_option
@click.pass_context
def stats_command(ctx, index_path, as_json):
    """Show the corpus folder, the index in use, its size and model, and the last index run."""
    from .stores import index_store

    settings = settings_from(ctx, index_path=index_path)
    with user_errors():
        stats = index_store(settings).stats(settings)
    damaged, run = stats["damaged_vectors"], stats["last_run"]
    # Absolute: relative settings are read from the working directory, which the reader may not know.
    stats["corpus_dir"] = str(settings.corpus_dir.absolute())
    for key in ("index_path", "last_run"):  # the order the fields have always had
        stats[key] = stats.pop(key)
    if as_json:
        click.echo(json_line(stats))
        return
    click.echo(f"articles:  {stats['articles']}\npassages:  {stats['passages']}")
    click.echo(one_line(f"model:     {stats['model']} ({stats['dimension']} dimensions)"))
    click.echo(one_line(f"corpus:    {stats['corpus_dir']}"))
    click.echo(one_line(f"index:     {stats['index_path']} ({stats['size_bytes'] / 1e6:.1f} MB)"))
    click.echo(one_line(f"built:     {stats['built']}"))
    click.echo(one_line(f"keywords:  {stats['keyword_search']}"))
    click.echo(one_line(f"vectors:   {stats['vectors_from']}"))
    if damaged:
        articles = counted(len(damaged), "article's", "articles'")
        click.echo(
            one_line(
                f"damaged:   {articles} vectors, left out of search until `corpus-bot index` embeds them "
                "again: " + "; ".join(f"{d['path']} ({d['reason']})" for d in stats["damaged_vectors"])
            )
        )
    if run:
        r = run["report"]
        click.echo(
            f"last run:  {run['finished']} in {run['seconds']:.1f}s: {len(r['added'])} added, {len(r['changed'])} changed, "
            f"{len(r['removed'])} removed, {len(r['unchanged'])} unchanged, {len(r['skipped'])} skipped"
        )


# ---------------------------------------------------------------- eval


@cli.command("eval")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=DEFAULT_MODE,
    show_default=True,
    help="Search method to measure (the default is the product's default).",
)
@results_option("Cut-off: score the first N results (nDCG@N, recall@N, MRR@N).", 10, 100)
@click.option("--k", "old_k", type=click.IntRange(1, 100), hidden=True)  # the former spelling of -k
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(path_type=Path),
    help="Where evaluation indexes are cached [default: eval-cache/ beside INDEX_PATH].",
)
@json_option
@click.pass_context
def eval_command(ctx, folder, mode, k, old_k, cache_dir, as_json):
    """Measure retrieval on a BEIR-layout FOLDER (corpus.jsonl, queries.jsonl, qrels)."""
    from .evaluate import cached_index, load_beir, run_eval
    from .query_model import load_query_embedder
    from .search import SearchIndex

    k = old_k or k
    # The evaluation index is its own cached SQLite file, whatever index INDEX_URL names.
    settings = settings_from(ctx)
    with user_errors():
        data = load_beir(folder)
        path = cached_index(
            data,
            settings.embedding_model,
            cache_dir or settings.index_path.parent / "eval-cache",
            on_progress=None if as_json else ProgressReporter(),
        )
        embedder = load_query_embedder(path, settings.embedding_model)
        index = SearchIndex.load(path, model_name=embedder.name, weak_score=settings.weak_score)
        result = run_eval(data, index, embedder, mode=mode, k=k)
        index.close()
    if as_json:
        click.echo(json_line(result))
        return
    click.echo(one_line(f"{result['dataset']} · {mode} · {result['queries']} queries · {embedder.name}"))
    for name, value in result.items():
        if "@" in name:
            click.echo(f"  {name:<11} {value:.4f}")
    click.echo(f"  latency     p50 {result['latency_ms']['p50']:.1f} ms, p95 {result['latency_ms']['p95']:.1f} ms")


# ---------------------------------------------------------------- feedback


@cli.group("feedback")
def feedback_group() -> None:
    """Votes users gave answers in Discord."""


@feedback_group.command("export")
@click.argument("out_dir", type=click.Path(path_type=Path))
@index_or_url_option
@click.pass_context
def feedback_export_command(ctx, out_dir, index_path):
    """Write the votes as a BEIR-layout evaluation set in a new or empty folder OUT_DIR (for
    `corpus-bot eval OUT_DIR`)."""
    from .stores import index_store

    settings = settings_from(ctx, index_path=index_path)
    with user_errors():
        counts = index_store(settings).export_feedback(settings, out_dir)
    click.echo(
        one_line(
            f"wrote {out_dir}: {counted(counts['questions'], 'question')} from {counted(counts['votes'], 'vote')} "
            f"({counts['with_relevant']} with a passage judged relevant), {counted(counts['passages'], 'passage')}"
            + (
                f"; {counted(counts['stale_judgments'], 'judgment')} dropped (passage changed since the vote)"
                if counts["stale_judgments"]
                else ""
            )
        )
    )
    if counts["with_relevant"] == 0:
        click.echo("note: no 👍 votes yet, so `corpus-bot eval` has nothing to score", err=True)


# ---------------------------------------------------------------- feeds


@cli.group("feeds")
def feeds_group() -> None:
    """News feeds (RSS, Atom, JSON Feed) whose new articles are written to CORPUS_DIR/feeds/."""


@feeds_group.command("add")
@click.argument("url")
@click.option("--name", help="The feed's name (lowercase letters, digits, '-'); by default from its host.")
@click.pass_context
def feeds_add_command(ctx, url, name):
    """Add the feed at URL (fetched once to check that it is a feed)."""
    from .feeds import add_feed

    settings = settings_from(ctx)
    with user_errors():
        feed = add_feed(settings, url, name)
    click.echo(one_line(f"added feed {feed.name}: {feed.title or '(untitled)'} ({feed.url})"))
    click.echo(one_line(f"run `corpus-bot feeds fetch {feed.name}`, then `corpus-bot index`"))


@feeds_group.command("list")
@json_option
@click.pass_context
def feeds_list_command(ctx, as_json):
    """List the feeds."""
    from .feeds import list_feeds

    settings = settings_from(ctx)
    with user_errors():
        feeds = list_feeds(settings)
    if as_json:
        click.echo(json_line({"feeds": [{**f.as_dict(), "articles": n} for f, n in feeds]}))
        return
    if not feeds:
        click.echo("no feeds: add one with `corpus-bot feeds add URL`")
    for f, n in feeds:
        click.echo(one_line(f"{f.name}  {f.title or '(untitled)'}  {f.url}  ({counted(n, 'article')})"))


@feeds_group.command("remove")
@click.argument("name")
@click.pass_context
def feeds_remove_command(ctx, name):
    """Stop fetching the feed NAME; the articles already written stay in the corpus."""
    from .feeds import remove_feed
    from .feeds.fetch import FEEDS_FOLDER

    settings = settings_from(ctx)
    with user_errors():
        feed = remove_feed(settings, name)
    folder = settings.corpus_dir / FEEDS_FOLDER / feed.name
    click.echo(
        one_line(f"removed feed {feed.name}; its articles already written stay in {folder} (delete it to drop them)")
    )


@feeds_group.command("fetch")
@click.argument("name", required=False)
@json_option
@click.pass_context
def feeds_fetch_command(ctx, name, as_json):
    """Write the new articles of every feed (or of NAME) to CORPUS_DIR/feeds/; `corpus-bot index` indexes them."""
    from .feeds import fetch_feeds

    settings = settings_from(ctx)
    with user_errors():
        report = fetch_feeds(settings, name, progress=lambda line: click.echo(one_line(line), err=True))
    if as_json:
        click.echo(json_line(report.as_dict()))
    elif not report.feeds:
        click.echo("no feeds: add one with `corpus-bot feeds add URL`")
    else:
        for line in report.failures:
            click.echo(one_line(f"failed: {line}"))
        for line in report.notes:
            click.echo(one_line(f"note: {line}"))
        click.echo(one_line(report.summary()))
        if report.written:
            click.echo("run `corpus-bot index` to index them")
    if report.feeds and report.failed_feeds == report.feeds:
        ctx.exit(1)  # nothing could be fetched at all


# ---------------------------------------------------------------- gaps


def _when_utc(iso: str) -> str:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


def _question_embedder(settings: Settings, meta: dict):
    """The index's question model for grouping, or None (with one warning) when it cannot load:
    the list is still worth having, grouped by equal wordings only."""
    try:
        from .stores import index_store

        return index_store(settings).query_embedder(settings, meta)
    except Exception as exc:
        click.echo(
            one_line(f"warning: the question model could not be loaded ({exc}); only equal wordings are grouped"),
            err=True,
        )
        return None


@cli.command("gaps")
@click.option("--since", help="Only questions asked on or after this date (YYYY-MM-DD, UTC).")
@index_or_url_option
@json_option
@click.pass_context
def gaps_command(ctx, since, index_path, as_json):
    """List the questions asked in Discord that the corpus answered weakly, similar questions
    grouped, most asked first (kept for GAPS_KEEP_DAYS days)."""
    from .gaps import group_weak_questions, read_weak_questions
    from .search import parse_iso_date

    settings = settings_from(ctx, index_path=index_path)
    with user_errors():
        since_date = parse_iso_date(since, "--since") if since else None
        asked, meta = read_weak_questions(settings, since=since_date)
        embedder = _question_embedder(settings, meta) if len(asked) > 1 else None
        gaps = group_weak_questions(asked, embedder.encode if embedder is not None else None)
    if as_json:
        click.echo(
            json_line(
                {
                    "groups": [g.to_json() for g in gaps],
                    "grouped_by": "meaning" if embedder is not None else "wording",
                    "since": since_date.isoformat() if since_date else None,
                    "keep_days": settings.gaps_keep_days,
                }
            )
        )
        return
    window = f"since {since_date}" if since_date else f"in the last {counted(settings.gaps_keep_days, 'day')}"
    if not gaps:
        click.echo(f"No weak answers recorded {window}: every question asked in Discord was answered well.")
        return
    how = "by meaning" if embedder is not None else "by wording only"
    click.echo(f"Weak answers {window}: {counted(len(asked), 'question')} in {counted(len(gaps), 'group')} ({how})")
    for g in gaps:
        click.echo("")
        click.echo(one_line(f"{g.count:>4}×  {g.question}"))
        servers = f", {counted(g.servers, 'server')}" if g.servers else ""
        click.echo(f"       first {_when_utc(g.first_asked)}, last {_when_utc(g.last_asked)}{servers}")
        others = [f"{w.question} ({w.count}×)" for w in g.wordings[1:]]
        if others:
            click.echo(one_line("       also asked as: " + "; ".join(others)))


def index_main() -> None:
    """`python -m embeddings`: the offline index job."""
    index_command.main(prog_name="python -m embeddings")
