"""Redact secret values from text, and forward a subprocess's output line by line through that filter.

SGLang 0.5.23 logs its whole configuration at startup (`server_args={... 'api_key': '<key>' ...}`),
and error paths can echo a request's headers. Everything SGLang prints reaches the Modal log, so
every line passes through a `Redactor` before it is written anywhere.

Spellings. A secret reaches a log escaped, and how is derived rather than listed: each escaping
layer a log can apply (`LAYERS`: a Python str or bytes repr; JSON as the encoders write it, `\\/`
and HTML-safe `\\u003c` included, either hex case; URL quoting with every choice of which of the
secret's reserved characters stay literal, either hex case, `+` or `%20` for a space; HTML
entities; shell and doubled quotes) is applied on top of itself up to ESCAPE_DEPTH times, to the raw
value and to its base64 forms (HTTP Basic auth). `secret_spellings` lists them.

Pieces. A log can also carry part of a spelling: a line wrapped by a logger, a key cut by a
truncation, a spelling this module does not know with long stretches of one it does. So the
redactor hides, besides every whole spelling:
- any stretch of at least MIN_HIDDEN_PIECE characters that is a piece of a spelling, anywhere in a
  line, also across a line break and the indentation after it (a wrapped text redacted whole);
- in each line on its own (the forwarder sees one line at a time), pieces down to
  MIN_EDGE_FRAGMENT characters where a wrapped secret leaves them: a line that starts with the end
  of a spelling, ends with its start, or is wholly a piece of one (the middle of a wrap over three
  or more lines), indentation and trailing blanks aside.
Each run of hidden characters becomes one REDACTED.

Why MIN_HIDDEN_PIECE is 8. The trade-off is text redacted by chance against key left in the log.
Eight characters of a random key are 32 bits (hex) to 48 bits (base64): a window of ordinary log
text (numbers, hex request ids, words) matches one of a spelling's few hundred 8-character pieces
about once in 10^7 lines or less, while 4 to 6 characters would hit hex ids and numbers routinely.
What stays visible is at most 7 characters of a piece no layer here knows (e.g. between two
escapes of an unknown kind); a stack's API key has at least 32 characters, so that leaves 25 or
more unknown (100 bits even for hex). At a line's edge the context already says a secret may
continue on the next line, so there pieces count from 4 characters (MIN_EDGE_FRAGMENT); shorter
ones say too little to matter.

Over-redaction, precisely: text changes only where a rule above matches, i.e. where it holds 8
characters that are also a piece of one of the secret's spellings (a key made of words, a run such
as `sk-test-` or `%2F%2F%2F`), or a line starts with the last, ends with the first, or consists of
4 to 7 characters of a spelling. Text that shares no such piece with a spelling comes back as it was.

Not hidden: a piece shorter than 8 characters inside a line, shorter than 4 at a line's edge, and
a wrap that drops a character of the secret (a wrapper breaking a key at a space inside it).
"""

from __future__ import annotations

import base64
import bisect
import collections
import functools
import html
import itertools
import json
import re
import string
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

# What a secret is replaced with. Says what happened without hinting at the value or its length.
REDACTED = "[REDACTED]"

# How many times escaping is applied on top of itself when listing a secret's spellings: a key inside
# a dict that is logged with repr() and then embedded in another repr (or JSON) is escaped twice.
ESCAPE_DEPTH = 2

# Lines of (redacted) output kept for failure messages: enough to show a Python traceback.
DEFAULT_TAIL_LINES = 60

# The shortest piece of a spelling hidden anywhere in a line (see the module docstring: why 8).
MIN_HIDDEN_PIECE = 8

# The shortest piece of a spelling hidden where a wrapped secret leaves one: at a line's start or
# end, or as a whole line. Shorter pieces say too little to matter and would turn common text into
# REDACTED.
MIN_EDGE_FRAGMENT = 4

# Where a secret split across lines may break: a newline, with the indentation a wrapper adds.
_LINE_BREAK_RE = re.compile(r"\r?\n[ \t]*")

# Blanks a line may carry around a piece of a wrapped secret.
_BLANKS = " \t"

# --- escaping layers -------------------------------------------------------------------------------

# Characters no URL quoting changes (RFC 3986's unreserved ones, as urllib.parse.quote keeps them).
_URL_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")

# What URL quoting functions keep literal besides the unreserved characters, for secrets with more
# reserved characters than URL_EXHAUSTIVE_CHOICES.
URL_KEPT_BY_ENCODERS = {
    "urllib.parse.quote(safe=''), quote_plus, urlencode, Go's QueryEscape": "",
    "urllib.parse.quote (its default safe='/'), quote_plus(safe='/'), urlencode(safe='/')": "/",
    "JavaScript's encodeURIComponent": "!'()*",
    "JavaScript's encodeURI, yarl's URL()": "!#$&'()*+,/:;=?@",
    "requests (requote_uri: prepared URLs)": "!#$%&'()*+,/:;=?@[]",
    "urllib3 (parse_url: query and path)": "!$&'()*+,/:;=?@",
    "yarl's with_query": "!$'()*,/:?@",
    "Go's PathEscape": "$&+,/:;=@",
}

# A secret with at most this many distinct reserved characters is listed with every choice of which
# of them stay literal (2**3 quotings: every base64, URL-safe base64 and hex key), whoever quotes it.
URL_EXHAUSTIVE_CHOICES = 3

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_UNICODE_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


def _percent_lowercase(text: str) -> str:
    return _PERCENT_ESCAPE.sub(lambda match: match[0].lower(), text)


def _unquote_unreserved(text: str) -> str:
    """What requests and yarl make of `%41` in a URL they normalise: the unreserved character."""

    def decoded(match: re.Match[str]) -> str:
        char = chr(int(match[0][1:], 16))
        return char if char in _URL_UNRESERVED else match[0]

    return _PERCENT_ESCAPE.sub(decoded, text)


def _url_quotings(text: str) -> set[str]:
    reserved = sorted(set(text) - _URL_UNRESERVED)
    if len(reserved) <= URL_EXHAUSTIVE_CHOICES:
        kept_sets = {
            "".join(kept) for size in range(len(reserved) + 1) for kept in itertools.combinations(reserved, size)
        }
    else:
        kept_sets = {"".join(sorted(set(kept) & set(reserved))) for kept in URL_KEPT_BY_ENCODERS.values()}
    quoted = {
        quote(source, safe=kept)
        for source in {text, _unquote_unreserved(text)}
        for kept in kept_sets
        for quote in (urllib.parse.quote, urllib.parse.quote_plus)
    }
    return quoted | {_percent_lowercase(spelling) for spelling in quoted}


def _json_strings(text: str) -> set[str]:
    """JSON strings as encoders write them: Python's json (ASCII or not; orjson and msgspec write
    the non-ASCII form), PHP's `\\/`, Go's and Rails' HTML-safe `\\u003c`, uppercase `\\u00E9`."""
    spellings = set()
    for ensure_ascii in (True, False):
        plain = json.dumps(text, ensure_ascii=ensure_ascii)[1:-1]
        html_safe = plain.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        for escaped in (plain, html_safe, html_safe.replace("'", "\\u0027")):
            for slashes in (escaped, escaped.replace("/", "\\/")):
                spellings |= {
                    slashes,
                    _UNICODE_ESCAPE.sub(lambda match: "\\u" + match[0][2:].upper(), slashes),
                }
    return spellings


def _python_literals(text: str) -> set[str]:
    data = text.encode("utf-8")
    return {
        repr(text)[1:-1],
        ascii(text)[1:-1],
        # Inside a longer string that holds both quote characters, repr escapes every "'" instead.
        repr(text + '"')[1:-2],
        ascii(text + '"')[1:-2],
        # A bytes repr: what `print(data)` shows of an encoded header or body.
        repr(data)[2:-1],
        repr(data + b'"')[2:-2],
    }


def _html_texts(text: str) -> set[str]:
    """html.escape with and without quotes, and markupsafe's (Jinja's) `&#34;` and `&#39;`."""
    markupsafe = html.escape(text, quote=False).replace('"', "&#34;").replace("'", "&#39;")
    return {html.escape(text), html.escape(text, quote=False), markupsafe}


def _quoted_texts(text: str) -> set[str]:
    """Inside shlex.quote's single quotes, and with the quote doubled (YAML, SQL, CSV)."""
    return {text.replace("'", "'\"'\"'"), text.replace("'", "''"), text.replace('"', '""')}


# Each escaping layer a log can apply to a string: a function from a spelling to the spellings one
# more layer gives it.
LAYERS: tuple[Callable[[str], set[str]], ...] = (
    _python_literals,
    _json_strings,
    _url_quotings,
    _html_texts,
    _quoted_texts,
)


def _escaped_once(text: str) -> set[str]:
    """The spellings `text` takes inside one more escaping layer."""
    return set().union(*(layer(text) for layer in LAYERS))


def _base64_spellings(secret: str) -> set[str]:
    """The secret as it shows inside base64 text (e.g. HTTP Basic auth of `user:<secret>`).

    Base64 turns 3 bytes into 4 characters, so the characters a secret becomes depend on where it
    starts within a 3-byte group: one spelling per offset, trimmed to the characters that depend on
    the secret's bytes alone."""
    data = secret.encode("utf-8")
    spellings = set()
    for offset in range(3):
        total_bits = 8 * (offset + len(data))
        first, last = -(-8 * offset // 6), total_bits // 6  # fully inside the secret's bits
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(bytes(offset) + data).decode("ascii")
            spellings.add(encoded[first:last])
    return {spelling for spelling in spellings if len(spelling) >= MIN_EDGE_FRAGMENT}


def secret_spellings(secret: str) -> set[str]:
    """Every spelling of `secret` the redactor looks for: the raw value and its base64 forms, each
    under up to ESCAPE_DEPTH escaping layers."""
    return set(_spellings(secret))


@functools.lru_cache(maxsize=32)
def _spellings(secret: str) -> frozenset[str]:
    spellings = {secret} | _base64_spellings(secret)
    for _ in range(ESCAPE_DEPTH):
        spellings |= {escaped for spelling in spellings for escaped in _escaped_once(spelling)}
    return frozenset(spelling for spelling in spellings if spelling)


# --- finding spellings and pieces ------------------------------------------------------------------


@dataclass(frozen=True)
class _Pieces:
    """What the redactor looks up, for one secret or the union of several."""

    # Every MIN_HIDDEN_PIECE-long piece of every spelling.
    long: frozenset[str] = frozenset()
    # Spellings too short to hold such a piece, matched whole.
    short_spellings: frozenset[str] = frozenset()
    # Pieces of MIN_EDGE_FRAGMENT to MIN_HIDDEN_PIECE - 1 characters: any, starts, ends.
    inner: frozenset[str] = frozenset()
    starts: frozenset[str] = frozenset()
    ends: frozenset[str] = frozenset()

    def __or__(self, other: _Pieces) -> _Pieces:
        return _Pieces(
            self.long | other.long,
            self.short_spellings | other.short_spellings,
            self.inner | other.inner,
            self.starts | other.starts,
            self.ends | other.ends,
        )


@functools.lru_cache(maxsize=32)
def _pieces_of(secret: str) -> _Pieces:
    """Costs more than redacting a line; cached for callers that build a Redactor per use (warmup)."""
    spellings = _spellings(secret)
    size = MIN_HIDDEN_PIECE
    short_sizes = range(MIN_EDGE_FRAGMENT, MIN_HIDDEN_PIECE)
    return _Pieces(
        long=frozenset(s[i : i + size] for s in spellings for i in range(len(s) - size + 1)),
        short_spellings=frozenset(s for s in spellings if len(s) < size),
        inner=frozenset(s[i : i + n] for s in spellings for n in short_sizes for i in range(len(s) - n + 1)),
        starts=frozenset(s[:n] for s in spellings for n in short_sizes if n < len(s)),
        ends=frozenset(s[-n:] for s in spellings for n in short_sizes if n < len(s)),
    )


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans that overlap or touch, joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Redactor:
    """Replaces every spelling of the given secret values, and every piece of one that the module
    docstring's rules name, with REDACTED: also when a line break (and indentation) splits one, and
    line by line where a wrapped secret leaves its pieces at a line's edges or as a whole line.

    Empty values are ignored (an unset optional secret must not turn every line into REDACTED).
    """

    def __init__(self, secrets: Iterable[str], replacement: str = REDACTED):
        self._replacement = replacement
        each = [_pieces_of(secret) for secret in set(secrets) if secret]
        self._pieces = each[0] if len(each) == 1 else functools.reduce(_Pieces.__or__, each, _Pieces())
        short = sorted(self._pieces.short_spellings, key=len, reverse=True)
        self._short_pattern = re.compile("|".join(map(re.escape, short))) if short else None

    def __call__(self, text: str) -> str:
        if not self._pieces.long and self._short_pattern is None:
            return text
        spans = self._pieces_across_breaks(text) + self._pieces_at_edges(text)
        if not spans:
            return text
        pieces, done = [], 0
        for start, end in _merged(spans):
            pieces += [text[done:start], self._replacement]
            done = end
        return "".join(pieces) + text[done:]

    def _pieces_across_breaks(self, text: str) -> list[tuple[int, int]]:
        """Long pieces and short spellings, found in the text with its line breaks (and the
        indentation after them) taken out, as spans of the text as it is, breaks and all."""
        segments = [0]  # start in `text` of each stretch between breaks
        kept = []
        position = 0
        for match in _LINE_BREAK_RE.finditer(text):
            kept.append(text[position : match.start()])
            position = match.end()
            segments.append(position)
        kept.append(text[position:])
        joined = "".join(kept)
        starts_in_joined = list(itertools.accumulate((len(part) for part in kept[:-1]), initial=0))

        def in_text(index: int) -> int:
            segment = bisect.bisect_right(starts_in_joined, index) - 1
            return segments[segment] + index - starts_in_joined[segment]

        found = []
        size, long = MIN_HIDDEN_PIECE, self._pieces.long
        if long:
            found = [(i, i + size) for i in range(len(joined) - size + 1) if joined[i : i + size] in long]
        if self._short_pattern is not None:
            found += [match.span() for match in self._short_pattern.finditer(joined)]
        if len(kept) == 1:
            return found
        return [(in_text(start), in_text(end - 1) + 1) for start, end in _merged(found)]

    def _pieces_at_edges(self, text: str) -> list[tuple[int, int]]:
        """Per line (as a log has them: split at "\\n" only; str.splitlines would also split at
        \\x1e, \\x85, ..., which a secret may hold): a whole line that is a short piece of a
        spelling, else the longest short piece its start ends a spelling with and the longest its
        end starts one with."""
        pieces = self._pieces
        found = []
        line_start = 0
        for line in text.split("\n"):
            body = line.removesuffix("\r").rstrip(_BLANKS)
            stripped = body.lstrip(_BLANKS)
            start, end = line_start + len(body) - len(stripped), line_start + len(body)
            line_start += len(line) + 1
            if len(stripped) < MIN_EDGE_FRAGMENT:
                continue
            if stripped in pieces.inner:
                found.append((start, end))
                continue
            longest = min(len(stripped), MIN_HIDDEN_PIECE - 1)
            for size in range(longest, MIN_EDGE_FRAGMENT - 1, -1):
                if stripped[:size] in pieces.ends:
                    found.append((start, start + size))
                    break
            for size in range(longest, MIN_EDGE_FRAGMENT - 1, -1):
                if stripped[-size:] in pieces.starts:
                    found.append((end - size, end))
                    break
        return found


# Where a line of log goes: our own progress lines and the lines forwarded from a subprocess.
LineSink = Callable[[str], None]


def print_line(line: str) -> None:
    """The one way our processes log a line: to stdout, which Modal streams to the app's logs, at
    once. A line may come with its newline (as read from a subprocess) or without. sys.stdout is
    looked up per call, so a replaced one (pytest's capture, Modal's log capture) is honoured."""
    sys.stdout.write(line.removesuffix("\n") + "\n")
    sys.stdout.flush()


class LogForwarder(threading.Thread):
    """Reads a text stream until EOF and hands each redacted line to `sink`, keeping a short tail.

    It keeps reading even when the sink fails: a subprocess whose pipe is not drained blocks on its
    next write, so a broken log sink would otherwise freeze SGLang.
    """

    def __init__(
        self,
        stream: TextIO,
        redact: Callable[[str], str],
        sink: LineSink = print_line,
        tail_lines: int = DEFAULT_TAIL_LINES,
    ):
        super().__init__(name="sglang-log-forwarder", daemon=True)
        self._stream = stream
        self._redact = redact
        self._sink = sink
        self._tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._tail_lock = threading.Lock()

    def run(self) -> None:
        # Iterating a universal-newlines text stream yields lines ended by \n, \r\n or \r, so progress
        # bars that redraw with \r are forwarded as they advance instead of when they finish.
        for raw_line in self._stream:
            line = self._redact(raw_line.rstrip("\r\n"))
            with self._tail_lock:
                self._tail.append(line)
            try:
                self._sink(line)
            except Exception:
                pass  # see the class docstring: never stop draining the pipe
        self._stream.close()

    def tail(self) -> list[str]:
        """The last lines forwarded so far (already redacted)."""
        with self._tail_lock:
            return list(self._tail)
