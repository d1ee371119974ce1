"""Text bound for a terminal, a log or a one-line report: control characters shown, never obeyed.

Corpus text, metadata and file names are untrusted. An ANSI or OSC sequence in a passage (clear
the screen, set the window title, a hidden hyperlink, concealed text) would drive the reader's
terminal, and a newline in a file name would fake a line of the index report. Every text output of
the CLI goes through one of these functions; JSON keeps the characters themselves, JSON-escaped.

Escapes are visible and short: `\\n`, `\\r`, `\\t`, `\\x1b`, `\\x9b`; a byte of a file name that is
not UTF-8 (which Python holds as a lone surrogate) is shown as the byte, `\\xe9`, and any other
lone surrogate as `\\udc00`.
"""

from __future__ import annotations

import json
import re

# C0 controls, DEL, C1 controls (U+009B is a one-character CSI to some terminals), the Unicode
# line and paragraph separators, and lone surrogates (unprintable, and not UTF-8).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL_IN_BLOCK = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # keeps \t and \n
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")  # json.dumps escapes C0 already


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: the undecodable byte itself
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def one_line(text: object) -> str:
    """text on one line with every control character escaped: for names, titles, bylines, report
    lines and error messages. Printable text (any script, emoji) is unchanged."""
    return _CONTROL.sub(_escape, str(text))


def text_block(text: str) -> str:
    """A quoted passage for a terminal: its line breaks (the quote's structure) and tabs kept,
    every other control character escaped."""
    return _CONTROL_IN_BLOCK.sub(_escape, text)


def json_line(data: object) -> str:
    """One JSON document on one line, characters kept (ensure_ascii=False) except those a terminal
    could act on or cannot print, which are \\u-escaped: the parsed value is unchanged."""
    text = json.dumps(data, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 passage', '2 passages': a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
