"""Redact secret values from text, and forward a subprocess's output line by line through that filter.

SGLang 0.5.23 logs its whole configuration at startup (`server_args={... 'api_key': '<key>' ...}`),
and error paths can echo a request's headers. Everything SGLang prints reaches the Modal log, so
every line passes through a `Redactor` before it is written anywhere.

A secret can show up escaped: inside a Python repr (`'it\\'s'`), a bytes repr, a JSON string, a URL
(either hex case), base64 (HTTP Basic auth), a repr of a repr, or wrapped over two lines. The
redactor replaces each of those spellings, wherever it sits in a longer string.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import TextIO

# What a secret is replaced with. Says what happened without hinting at the value or its length.
REDACTED = "[REDACTED]"

# How many times escaping is applied on top of itself when listing a secret's spellings: a key inside
# a dict that is logged with repr() and then embedded in another repr (or JSON) is escaped twice.
ESCAPE_DEPTH = 2

# Lines of (redacted) output kept for failure messages: enough to show a Python traceback.
DEFAULT_TAIL_LINES = 60

# The shortest piece of a spelling hidden at a line's edge when a secret is split across two lines.
# Shorter pieces say too little to matter and would turn common text into REDACTED.
MIN_EDGE_FRAGMENT = 4

# Pieces at line edges are looked up in a set of every prefix and suffix of each spelling, which grows
# with the square of its length: spellings longer than this (escapes of escapes of non-ASCII text)
# are matched whole only.
MAX_WRAPPED_SPELLING = 256

# Where a secret split across lines may break: a newline, with the indentation a wrapper adds.
_LINE_BREAK_RE = re.compile(r"\r?\n[ \t]*")


def _percent_lowercase(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda match: match[0].lower(), text)


def _escaped_once(text: str) -> set[str]:
    """The spellings `text` takes inside one layer of repr, JSON or URL quoting."""
    quoted = {urllib.parse.quote(text, safe=""), urllib.parse.quote_plus(text, safe="")}
    return {
        repr(text)[1:-1],
        ascii(text)[1:-1],
        # Inside a longer string that holds both quote characters, repr escapes every "'" instead.
        repr(text + '"')[1:-2],
        ascii(text + '"')[1:-2],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        # A bytes repr: what `print(data)` shows of an encoded header or body.
        repr(text.encode("utf-8"))[2:-1],
        *quoted,
        *(_percent_lowercase(spelling) for spelling in quoted),
    }


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
    """Every spelling of `secret` the redactor looks for: the raw value, its escaped forms, and its
    base64 forms."""
    spellings = {secret}
    for _ in range(ESCAPE_DEPTH):
        spellings |= {escaped for spelling in spellings for escaped in _escaped_once(spelling)}
    spellings |= _base64_spellings(secret)
    return {spelling for spelling in spellings if spelling}


class Redactor:
    """Replaces every known spelling of the given secret values with REDACTED, also when a line
    break (and indentation) splits one, and hides the piece of a spelling a line ends or starts with
    when the secret continues on the neighbouring line (a wrapped log line).

    Empty values are ignored (an unset optional secret must not turn every line into REDACTED).
    """

    def __init__(self, secrets: Iterable[str], replacement: str = REDACTED):
        self._replacement = replacement
        spellings = {spelling for secret in secrets if secret for spelling in secret_spellings(secret)}
        # Longest first, so a long spelling is replaced whole rather than around a shorter one inside it.
        self._spellings = sorted(spellings, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, self._spellings))) if self._spellings else None

        wrappable = [spelling for spelling in self._spellings if len(spelling) <= MAX_WRAPPED_SPELLING]
        self._edge_fragments = {
            spelling[:cut] for spelling in wrappable for cut in range(MIN_EDGE_FRAGMENT, len(spelling))
        } | {spelling[cut:] for spelling in wrappable for cut in range(1, len(spelling) - MIN_EDGE_FRAGMENT + 1)}
        self._longest_fragment = max(map(len, self._edge_fragments), default=0)

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        hidden = self._pattern.sub(self._replacement, text)
        if "\n" in hidden:
            hidden = self._hide_wrapped(hidden)
        # Lines as a log has them: split at "\n" only (str.splitlines would also split at \x1e, \x85,
        # ..., which a secret may hold).
        return "\n".join(self._hide_edges(line) for line in hidden.split("\n"))

    def _hide_wrapped(self, text: str) -> str:
        """Spellings that a line break (and indentation) splits: found in the text with its breaks
        taken out, then replaced in the text as it is, breaks and all."""
        assert self._pattern is not None
        kept: list[str] = []
        origin: list[int] = []  # index in `text` of each character of `kept`
        position = 0
        for match in _LINE_BREAK_RE.finditer(text):
            kept.append(text[position : match.start()])
            origin.extend(range(position, match.start()))
            position = match.end()
        kept.append(text[position:])
        origin.extend(range(position, len(text)))
        pieces, done = [], 0
        for match in self._pattern.finditer("".join(kept)):
            start, end = origin[match.start()], origin[match.end() - 1] + 1
            pieces += [text[done:start], self._replacement]
            done = end
        return "".join(pieces) + text[done:]

    def _hide_edges(self, line: str) -> str:
        """A line that ends with the start of a spelling, or starts with its end (longest piece)."""
        body = line.removesuffix("\r")
        ending = line[len(body) :]
        stripped = body.lstrip(" \t")
        indent = body[: len(body) - len(stripped)]
        for size in range(min(len(stripped), self._longest_fragment), MIN_EDGE_FRAGMENT - 1, -1):
            if stripped[:size] in self._edge_fragments:
                stripped = self._replacement + stripped[size:]
                break
        for size in range(min(len(stripped), self._longest_fragment), MIN_EDGE_FRAGMENT - 1, -1):
            if stripped[-size:] in self._edge_fragments:
                stripped = stripped[:-size] + self._replacement
                break
        return indent + stripped + ending


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
