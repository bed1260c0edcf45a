"""Redact secret values from text, and forward a subprocess's output line by line through that filter.

SGLang 0.5.23 logs its whole configuration at startup (`server_args={... 'api_key': '<key>' ...}`),
and error paths can echo a request's headers. Everything SGLang prints reaches the Modal log, so
every line passes through a `Redactor` before it is written anywhere.

A secret can show up escaped: inside a Python repr (`'it\\'s'`), a JSON string, a URL, or a repr
of a repr. The redactor replaces each of those spellings, wherever it sits in a longer string.
"""

from __future__ import annotations

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


def _escaped_once(text: str) -> set[str]:
    """The spellings `text` takes inside one layer of repr, JSON or URL quoting."""
    return {
        repr(text)[1:-1],
        ascii(text)[1:-1],
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        urllib.parse.quote(text, safe=""),
        urllib.parse.quote_plus(text, safe=""),
    }


def secret_spellings(secret: str) -> set[str]:
    """Every spelling of `secret` the redactor looks for: the raw value and its escaped forms."""
    spellings = {secret}
    for _ in range(ESCAPE_DEPTH):
        spellings |= {escaped for spelling in spellings for escaped in _escaped_once(spelling)}
    return {spelling for spelling in spellings if spelling}


class Redactor:
    """Replaces every known spelling of the given secret values with REDACTED.

    Empty values are ignored (an unset optional secret must not turn every line into REDACTED).
    """

    def __init__(self, secrets: Iterable[str]):
        spellings = {spelling for secret in secrets if secret for spelling in secret_spellings(secret)}
        # Longest first, so a long spelling is replaced whole rather than around a shorter one inside it.
        ordered = sorted(spellings, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)


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
