"""The core's answer model -> Discord message payloads: escaping, highlighting, Discord's limits.

Pure functions (no network, no client), so every rule here is unit-tested without Discord. Labels
(byline, date, position, relevance, notices) come from `embeddings.answer`; this module only
decides layout. All corpus and user text goes through `escape()` before display, and lengths are
measured after escaping, in UTF-16 code units (what Discord counts), so a payload built here never
breaks a limit.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import discord

from embeddings.answer import Answer, Article, Result
from embeddings.chunk import sentence_spans
from embeddings.gaps import Gap
from embeddings.index import IndexReport, Progress
from embeddings.terminal import counted, one_line

# Discord's documented limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
CONTENT = 2000
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_AUTHOR = 256
EMBED_FOOTER = 2048
FIELD_NAME = 256
FIELD_VALUE = 1024
EMBED_FIELDS = 25
EMBED_TOTAL = 6000  # title + description + field names/values + footer + author, over all embeds
MESSAGE_EMBEDS = 10
SELECT_LABEL = 100
SELECT_DESCRIPTION = 100
CHOICE_NAME = 100
CHOICE_VALUE = 100

ELLIPSIS = "…"
QUOTE = ">>> "  # Discord block quote: everything after it is quoted
MAX_SHOWN_QUESTION = 300
TITLE_CAP = 120  # titles and bylines are capped so ten results still leave room for the quotes
BYLINE_CAP = 120

COLOR_ANSWER = discord.Colour.blurple()
COLOR_WEAK = discord.Colour.light_grey()
COLOR_OK = discord.Colour.green()
COLOR_FAILED = discord.Colour.red()
COLOR_RUNNING = discord.Colour.gold()


def dlen(text: str) -> int:
    """Length as Discord counts it (UTF-16 code units; astral characters count twice)."""
    return len(text.encode("utf-16-le")) // 2


# ----------------------------------------------------------------------------------- escaping

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use sentinels marking the highlight while escaping
_URL_BODY = r"https?://[^\s<>\[\]*|`\ue000\ue001]+"  # stops at markup characters
_ESCAPE = re.compile(
    rf"(?P<url>{_URL_BODY})"
    # line-start syntax: headings '#'..'###', subtext '-#', lists '-'/'+', ordered lists '1.'; also
    # at the very end, where a cut passage gets ' …' appended
    r"|(?P<pre>^[ \t]*[\ue000\ue001]*)(?:(?P<mark>#{1,3}|-#|[-+])|(?P<num>\d{1,9})\.)(?=[ \t]|\Z)"
    r"|(?P<char>[\\*_~`|\[\]<>])"  # emphasis, code, spoilers, masked links, mentions/emoji/timestamps
    r"|(?P<at>@)(?=everyone|here|[!&]?\d{15,21})",  # @everyone/@here and raw id mentions
    re.MULTILINE,
)
_URL_TRAILING = ".,:;!?\"'’”]*_~|"
_SPECIAL = frozenset("\\*_~`|[]<>")


def _escape_chars(text: str) -> str:
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def _url(url: str) -> tuple[str, str]:
    """Split trailing punctuation off a bare URL the way Discord's autolinker does."""
    rest = ""
    while url and (url[-1] in _URL_TRAILING or (url[-1] == ")" and url.count("(") < url.count(")"))):
        rest = url[-1] + rest
        url = url[:-1]
    return url, rest


def _replace(m: re.Match) -> str:
    if m.group("url"):
        url, rest = _url(m.group("url"))
        if len(url) <= len("https://"):
            return _escape_chars(m.group("url"))
        # <url> shows as the plain link without the brackets and cannot swallow a following '**'.
        return f"<{url}>" + _escape_chars(rest)
    if m.group("char"):
        return "\\" + m.group("char")
    if m.group("at"):
        return "@\u200b"
    pre = m.group("pre")
    if m.group("mark"):
        return pre + "\\" + m.group("mark")
    return pre + m.group("num") + "\\."


def _clean(text: str) -> str:
    return text.replace(_OPEN, "\ufffd").replace(_CLOSE, "\ufffd")


def escape(text: str) -> str:
    """Markdown- and mention-safe text that displays exactly as given (escapes are invisible)."""
    return _ESCAPE.sub(_replace, _clean(text))


def _escape_marked(text: str, bold: tuple[int, int] | None) -> str:
    """escape(text) with text[bold[0]:bold[1]] in **bold**."""
    text = _clean(text)
    if bold and bold[0] < bold[1] and text[bold[0] : bold[1]].strip():
        s, e = bold
        # keep the markers hugging non-space characters: '** x**' does not render as bold
        while text[s].isspace():
            s += 1
        while text[e - 1].isspace():
            e -= 1
        text = text[:s] + _OPEN + text[s:e] + _CLOSE + text[e:]
    return _ESCAPE.sub(_replace, text).replace(_OPEN, "**").replace(_CLOSE, "**")


def plain(text: str, limit: int) -> str:
    """For fields Discord shows as plain text (author name, footer, select labels): no escaping,
    collapsed whitespace, cut at a word with an ellipsis."""
    text = " ".join(text.split())
    if dlen(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    while dlen(cut) > limit - 1:
        cut = cut[:-1]
    head, sep, _ = cut.rpartition(" ")
    if sep and len(head) > len(cut) // 2:
        cut = head
    return cut.rstrip() + ELLIPSIS


def escaped(text: str, limit: int) -> str:
    """escape(text), cut at a word with an ellipsis so that the ESCAPED result fits limit."""
    text = " ".join(text.split())
    out = escape(text)
    if dlen(out) <= limit:
        return out
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix whose escaped form + ellipsis fits
        mid = (lo + hi + 1) // 2
        if dlen(escape(text[:mid].rstrip())) + 1 <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    head, sep, _ = cut.rpartition(" ")
    if sep and len(head) > len(cut) // 2:
        cut = head
    return escape(cut.rstrip()) + ELLIPSIS


# ------------------------------------------------------------------------------------ passages


def passage_markdown(text: str, highlight: tuple[int, int] | None, budget: int) -> str:
    """The passage, escaped, its highlight in bold, fitted to budget (UTF-16 units).

    Too long: whole sentences are kept around the highlighted one, and each cut is marked with an
    ellipsis; a single sentence longer than the budget is cut at a word.
    """
    # Escaping only adds characters, so a raw slice longer than the budget cannot fit: such
    # windows are rejected before rendering, which keeps this fast for huge passages.
    if len(text) <= budget:
        full = _escape_marked(text, highlight)
        if dlen(full) <= budget:
            return full
    spans = sentence_spans(text) or [(0, len(text.rstrip()))]

    def render(a: int, b: int) -> str:
        hl = None
        if highlight and highlight[0] < b and highlight[1] > a:
            hl = (max(highlight[0], a) - a, min(highlight[1], b) - a)
        body = _escape_marked(text[a:b], hl)
        lead = ELLIPSIS + " " if text[:a].strip() else ""
        tail = " " + ELLIPSIS if text[b:].strip() else ""
        return lead + body + tail

    h = 0
    if highlight:
        h = next((i for i, (a, b) in enumerate(spans) if a <= highlight[0] < b), 0)

    def fits(i: int, j: int) -> bool:
        a, b = spans[i][0], spans[j][1]
        return b - a <= budget and dlen(render(a, b)) <= budget

    first = 0 if fits(0, h) else h
    if not fits(first, first):
        return _cut_inside(text, spans[first], render, budget)
    last = _largest(first, len(spans) - 1, lambda j: fits(first, j))
    if last == len(spans) - 1:  # room left after the end of the passage: take earlier sentences too
        first = -_largest(-first, 0, lambda i: fits(-i, last))
    return render(spans[first][0], spans[last][1])


def _largest(lo: int, hi: int, ok) -> int:
    """The largest n in [lo, hi] with ok(n), given ok(lo) and ok monotonic (binary search)."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut_inside(text: str, span: tuple[int, int], render, budget: int) -> str:
    """One sentence longer than the budget: the longest prefix that fits, ending at a word if any."""
    a, b = span
    lo, hi = a, min(b, a + budget)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if dlen(render(a, mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    end = lo
    space = text.rfind(" ", a, end + 1)
    if space > a + (end - a) // 2:
        end = space
    while end > a and dlen(render(a, end)) > budget:  # render() of a word end can differ by an escape
        end -= 1
    return render(a, end) if end > a else ELLIPSIS


# --------------------------------------------------------------------------------- answer pages


def embed_length(embed: discord.Embed) -> int:
    """The characters Discord counts towards EMBED_TOTAL for one embed."""
    d = embed.to_dict()
    n = dlen(d.get("title", "")) + dlen(d.get("description", ""))
    n += dlen(d.get("footer", {}).get("text", "")) + dlen(d.get("author", {}).get("name", ""))
    n += sum(dlen(f["name"]) + dlen(f["value"]) for f in d.get("fields", []))
    return n


def _http_url(url: str | None) -> str | None:
    if url and len(url) <= 2000 and re.fullmatch(r"https?://[^\s<>\"]+\.[^\s<>\"]+", url):
        return url
    return None


def question_line(question: str) -> str:
    return "**Q:** " + escaped(question, MAX_SHOWN_QUESTION)


def answer_content(answer: Answer) -> str:
    lines = [question_line(answer.query)]
    if answer.filters:
        shown = " · ".join(f"{k}: {v}" for k, v in answer.filters.items())
        lines.append("-# filters: " + escaped(shown, 300))
    if answer.results:
        first, last = answer.results[0].rank, answer.results[-1].rank
        more = " (more with the button below)" if answer.has_more else ""
        lines.append(f"-# results {first}–{last}{more}")
    lines += ["⚠️ " + escape(n) for n in answer.notices]
    return "\n".join(lines)[:CONTENT]


def _result_frame(r: Result) -> discord.Embed:
    a = r.article
    embed = discord.Embed(
        title=f"{r.rank}. " + escaped(a.display_title, TITLE_CAP),
        url=_http_url(a.url),
        colour=COLOR_WEAK if r.weak else COLOR_ANSWER,
    )
    embed.set_author(name=plain(a.byline, BYLINE_CAP))
    footer = f"{r.position_label} · relevance {r.relevance_label}"
    if r.also_in_label:
        footer += f" · {r.also_in_label}"
    embed.set_footer(text=plain(footer, EMBED_FOOTER))
    return embed


def answer_embeds(answer: Answer) -> list[discord.Embed]:
    """One embed per result: title (linked when the article has a URL), byline (publication,
    authors, date), the quoted passage with its best sentence in bold, position and relevance."""
    results = answer.results[:MESSAGE_EMBEDS]
    embeds = [_result_frame(r) for r in results]
    room = EMBED_TOTAL - sum(embed_length(e) for e in embeds)
    for i, (r, embed) in enumerate(zip(results, embeds)):
        share = room // (len(results) - i)  # unused room flows to the later results
        budget = min(EMBED_DESCRIPTION, share) - dlen(QUOTE)
        embed.description = QUOTE + passage_markdown(r.text, r.highlight, budget)
        room -= dlen(embed.description)
    return embeds


def context_embeds(passages: Sequence[Result], target: int) -> list[discord.Embed]:
    """The "Context" view: the passage and its neighbours, in article order; the chosen one marked."""
    embeds = []
    for r in passages[:MESSAGE_EMBEDS]:
        chosen = r.passage_id == target
        embed = discord.Embed(colour=COLOR_ANSWER if chosen else COLOR_WEAK)
        if not embeds:
            embed.title = escaped(r.article.display_title, TITLE_CAP)
            embed.url = _http_url(r.article.url)
            embed.set_author(name=plain(r.article.byline, BYLINE_CAP))
        embed.set_footer(text=plain(r.position_label + (" · the quoted passage" if chosen else ""), EMBED_FOOTER))
        embeds.append(embed)
    room = EMBED_TOTAL - sum(embed_length(e) for e in embeds)
    for i, (r, embed) in enumerate(zip(passages, embeds)):
        budget = min(EMBED_DESCRIPTION, room // (len(embeds) - i)) - dlen(QUOTE)
        embed.description = QUOTE + passage_markdown(r.text, None, budget)
        room -= dlen(embed.description)
    return embeds


def context_option(r: Result) -> tuple[str, str]:
    """(label, description) of a result in the "Context" select menu."""
    return (
        plain(f"{r.rank}. {r.article.display_title}", SELECT_LABEL),
        plain(f"{r.position_label} · {r.article.byline}", SELECT_DESCRIPTION),
    )


def choice_name(name: str) -> tuple[str, str]:
    """(name, value) of an autocomplete choice; both at most 100 characters. The value is a prefix
    of the name, which the source filter (a substring match) still finds."""
    value = name[:CHOICE_VALUE]
    while dlen(value) > CHOICE_VALUE:
        value = value[:-1]
    return plain(name, CHOICE_NAME), value


# ------------------------------------------------------------------------------- sources, stats

SOURCES_PER_PAGE = 10


def sources_page(articles: Sequence[Article], page: int) -> discord.Embed:
    pages = max(1, -(-len(articles) // SOURCES_PER_PAGE))
    page = min(max(page, 0), pages - 1)
    chunk = articles[page * SOURCES_PER_PAGE : (page + 1) * SOURCES_PER_PAGE]
    lines = []
    for n, a in enumerate(chunk, start=page * SOURCES_PER_PAGE + 1):
        title = f"{n}. " + escaped(a.display_title, 150)
        url = _http_url(a.url)
        if url:
            title = f"[{title}](<{url}>)"  # our own link, around escaped text
        lines.append(f"**{title}**\n{escaped(a.byline, 150)} · {counted(a.passages, 'passage')}")
    embed = discord.Embed(
        title=f"Indexed articles ({len(articles)})",
        description="\n".join(lines) if lines else "The index has no articles yet.",
        colour=COLOR_ANSWER,
    )
    embed.set_footer(text=f"page {page + 1} of {pages}")
    return embed


def _when(iso: str | None) -> str:
    if not iso:
        return "never"
    try:
        when = dt.datetime.fromisoformat(iso)
    except ValueError:
        return escape(iso)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return discord.utils.format_dt(when, "f") + " (" + discord.utils.format_dt(when, "R") + ")"


def report_counts(report: dict) -> str:
    return ", ".join(f"{len(report.get(k) or [])} {k}" for k in ("added", "changed", "removed", "unchanged", "skipped"))


def _bulleted(items: Sequence[str], limit: int) -> str:
    """'- item' lines (escaped) within limit; the rest summarised as '… and N more'."""
    out: list[str] = []
    used = 0
    for i, item in enumerate(items):
        line = "- " + escaped(item, 300)
        more = f"\n… and {len(items) - i - 1} more" if i < len(items) - 1 else ""
        if used + dlen(line) + 1 + dlen(more) > limit:
            out.append(f"… and {len(items) - i} more")
            break
        out.append(line)
        used += dlen(line) + 1
    return "\n".join(out)


def stats_embed(stats: dict, run: dict | None, *, serving: int | None, job_line: str | None) -> discord.Embed:
    embed = discord.Embed(title="Index statistics", colour=COLOR_ANSWER)
    embed.add_field(name="Articles", value=str(stats["articles"]))
    embed.add_field(name="Passages", value=str(stats["passages"]))
    model = stats.get("model") or "none yet"
    if stats.get("dimension"):
        model += f" ({stats['dimension']} dimensions)"
    embed.add_field(name="Model", value=escaped(model, FIELD_VALUE), inline=False)
    if run:
        r = run["report"]
        value = f"{_when(run.get('finished'))}, took {float(run.get('seconds') or 0):.1f} s\n{report_counts(r)}"
        skipped = [one_line(f"{s['path']}: {s['reason']}") for s in r.get("skipped", [])]
        if skipped:
            value += "\n" + _bulleted(skipped, FIELD_VALUE - dlen(value) - 1)
        embed.add_field(name="Last re-index", value=value[:FIELD_VALUE], inline=False)
    else:
        embed.add_field(
            name="Last re-index", value="never (the index was built before run history was kept)", inline=False
        )
    if job_line:
        embed.add_field(name="Re-index running", value=escaped(job_line, FIELD_VALUE), inline=False)
    if serving is not None and serving != stats["passages"]:
        embed.set_footer(
            text=f"answering from a snapshot of {counted(serving, 'passage')}; the new one loads when the run ends"
        )
    return embed


def progress_embed(progress: Progress | None, *, started_by: str) -> discord.Embed:
    text = progress.describe() if progress else "starting…"
    embed = discord.Embed(title="Re-index running", description=escape(text), colour=COLOR_RUNNING)
    embed.set_footer(text=plain(f"started by {started_by}; /ask keeps answering from the current index", EMBED_FOOTER))
    return embed


def report_embed(report: IndexReport) -> discord.Embed:
    embed = discord.Embed(title="Re-index finished", colour=COLOR_OK)
    head = escape(report.summary())
    parts = [head]
    problems = report.problem_lines()
    if problems:
        parts.append(_bulleted(problems, EMBED_DESCRIPTION - dlen(head) - 2))
    embed.description = "\n".join(parts)
    embed.set_footer(text="/ask now answers from the new index")
    return embed


def failure_embed(reason: str) -> discord.Embed:
    embed = discord.Embed(
        title="Re-index failed", description=escaped(reason, EMBED_DESCRIPTION - 200), colour=COLOR_FAILED
    )
    embed.set_footer(text="the previous index is still serving /ask")
    return embed


# ------------------------------------------------------------------------------------------ gaps


def _stamp(iso: str, style: str) -> str:
    return discord.utils.format_dt(dt.datetime.fromisoformat(iso), style)  # type: ignore[arg-type]


def gaps_embed(gaps: Sequence[Gap], *, questions: int, window: str, everywhere: bool) -> discord.Embed:
    """/gaps: the groups of weak questions, most asked first, as many as fit. Question text is
    anyone's input: escaped, and the reply pings nobody (allowed_mentions)."""
    where = "in any server" if everywhere else "in this server"
    embed = discord.Embed(title="Questions the corpus answered weakly", colour=COLOR_WEAK)
    if not gaps:
        embed.description = (
            f"No weak answers recorded {where} {window}: every question asked with /ask was answered well."
        )
        return embed
    lines: list[str] = []
    used = 0
    for n, g in enumerate(gaps, start=1):
        line = f"{n}. **{g.count}×** {escaped(g.question, 200)}\n"
        line += f"last asked {_stamp(g.last_asked, 'R')}, first {_stamp(g.first_asked, 'd')}"
        if everywhere:
            line += f", {counted(g.servers, 'server')}"
        if len(g.wordings) > 1:
            line += "\nalso asked as: " + escaped("; ".join(w.question for w in g.wordings[1:]), 200)
        more = _more_groups(len(gaps) - n)
        if used + dlen(line) + (1 + dlen(more) if more else 0) > EMBED_DESCRIPTION:
            lines.append(_more_groups(len(gaps) - n + 1))
            break
        lines.append(line)
        used += dlen(line) + 1
    embed.description = "\n".join(lines)
    embed.set_footer(
        text=plain(
            f"{counted(questions, 'weak question')} in {counted(len(gaps), 'group')} {where} {window}", EMBED_FOOTER
        )
    )
    return embed


def _more_groups(n: int) -> str:
    return f"… and {counted(n, 'more group')}: `corpus-bot gaps` lists them all" if n else ""


# ---------------------------------------------------------------------------------------- feeds
# Feed titles, URLs and failure lines come from other people's servers: escaped like corpus text.


def period(seconds: float) -> str:
    """30m, 2h, 1d: a REFRESH_EVERY period as it is written."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def error_line(text: str) -> str:
    """A refusal of a feeds command whose text may quote a URL or a server's answer: one line, inert."""
    return escaped(one_line(text), CONTENT)


def _feed_label(name: str, title: str | None) -> str:
    return f"**{escape(name)}**" + (f" · {escaped(title, 150)}" if title else "")


def feed_added(name: str, title: str | None, url: str, refresh_every: float | None) -> str:
    when = (
        f"its new articles are fetched and indexed at the next scheduled refresh (every {period(refresh_every)})"
        if refresh_every
        else "fetch its articles with `corpus-bot feeds fetch`, then /reindex"
    )
    return f"Added feed {_feed_label(name, title)} ({escaped(url, 300)}): {when}."[:CONTENT]


def feed_removed(name: str, folder: str) -> str:
    return (
        f"Removed feed **{escape(name)}**: it is not fetched any more. Its articles already written stay in "
        f"the corpus folder, under {escaped(folder, 300)} (delete that folder, then /reindex, to drop them)."
    )[:CONTENT]


def feeds_embed(feeds: Sequence[tuple[str, str | None, str, int]]) -> discord.Embed:
    """The feeds as (name, title, url, articles written), as many as fit, then "… and N more"."""
    embed = discord.Embed(title=f"News feeds ({len(feeds)})", colour=COLOR_ANSWER)
    lines: list[str] = []
    used = 0
    for i, (name, title, url, articles) in enumerate(feeds):
        line = f"{_feed_label(name, title)}\n{escaped(url, 300)} · {counted(articles, 'article')}"
        if used + dlen(line) + 1 > EMBED_DESCRIPTION - 40:
            lines.append(f"… and {len(feeds) - i} more")
            break
        lines.append(line)
        used += dlen(line) + 1
    embed.description = "\n".join(lines) if lines else "No feeds yet: add one with /feeds add."
    return embed


def refresh_embed(fetched: str | None, index_line: str | None, problems: Sequence[str], *, failed: bool):
    """The summary of a scheduled refresh: what the fetch did, what became of the index, then one
    line per failure, as many as fit."""
    embed = discord.Embed(title="Scheduled refresh", colour=COLOR_FAILED if failed else COLOR_OK)
    head = "\n".join(escaped(one_line(line), 1000) for line in (fetched, index_line) if line)
    parts = [head] if head else []
    if problems:
        parts.append(_bulleted([one_line(p) for p in problems], EMBED_DESCRIPTION - dlen(head) - 2))
    embed.description = "\n".join(parts) or "Nothing to report."
    return embed
