"""Property-based: an API key of any characters never survives redaction, in any form it can be printed.

The forms: as is, JSON-escaped (ASCII or not), URL-encoded (either hex case, `+` for spaces or not),
base64 (HTTP Basic auth of `user:<key>`, at any offset, standard or URL-safe alphabet), a bytes repr,
a str repr, and wrapped over two lines (with or without the indentation a log wrapper adds).
Checked for the log forwarder (serving.log_redaction, SGLang's output line by line) and for the
providers' `redact` (every provider error and progress line).

Then the principle behind them (serving/log_redaction.py's docstring), for keys as stacks generate
them (base64, URL-safe base64, hex, printable ASCII): each spelling a real encoder or a composition
of encoders prints, and each spelling the module derives, anywhere in random text, whole or wrapped
at any width over any number of lines, with or without indentation, leaves no piece of
MIN_HIDDEN_PIECE characters of the key or of the spelling, in the text redacted whole or line by
line; and text that shares no piece with a spelling (as the docstring defines it) is unchanged.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import re
import shlex
import string
import urllib.parse
from collections.abc import Callable

import orjson
import requests
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from providers.shared import REDACTED as PROVIDER_REDACTED
from providers.shared import redact
from serving.log_redaction import (
    MIN_EDGE_FRAGMENT,
    MIN_HIDDEN_PIECE,
    REDACTED,
    LogForwarder,
    Redactor,
    secret_spellings,
)


def unlike_the_replacements(key: str) -> bool:
    """A key that shares a piece with the replacement texts cannot be told from its redaction (a key
    'REDACTED' is in every redacted output), so one with 3 characters of either is left out."""
    return not any(key[i : i + 3] in text for text in (REDACTED, PROVIDER_REDACTED) for i in range(len(key) - 2))


# Any character a stack secret can hold: every Unicode code point but lone surrogates (no UTF-8).
keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=8, max_size=32).filter(unlike_the_replacements)
# Derandomized: the same examples on every run, so CI never fails on an example it drew by chance.
EXAMPLES = settings(max_examples=500, deadline=None, derandomize=True, database=None)


def basic_auth(key: str, user: str) -> str:
    return base64.b64encode(f"{user}:{key}".encode()).decode("ascii")


def percent_lower(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda match: match[0].lower(), text)


ENCODINGS: dict[str, Callable[[str, str], str]] = {
    "raw": lambda key, _: key,
    "json": lambda key, _: json.dumps({"api_key": key}),
    "json-unicode": lambda key, _: json.dumps({"api_key": key}, ensure_ascii=False),
    "url": lambda key, _: "https://host/v1?key=" + urllib.parse.quote(key, safe=""),
    "url-lowercase-hex": lambda key, _: "https://host/v1?key=" + percent_lower(urllib.parse.quote(key, safe="")),
    "url-form": lambda key, _: "key=" + urllib.parse.quote_plus(key),
    "basic-auth": lambda key, user: "Authorization: Basic " + basic_auth(key, user),
    "base64-urlsafe": lambda key, user: base64.urlsafe_b64encode(f"{user}{key}".encode()).decode("ascii"),
    "bytes-repr": lambda key, _: repr(key.encode("utf-8")),
    "str-repr": lambda key, _: repr({"api_key": key}),
    "repr-of-json": lambda key, _: repr(json.dumps(key)),
}


def decoded_base64_tokens(text: str) -> list[bytes]:
    """Everything in `text` that decodes as base64 (either alphabet), as an attacker would try it."""
    found = []
    for token in re.findall(r"[A-Za-z0-9+/_-]{4,}={0,2}", text):
        for alphabet in (None, b"-_"):
            for start in range(4):
                chunk = token[start:]
                chunk = chunk[: len(chunk) - len(chunk) % 4] if not chunk.endswith("=") else chunk
                try:
                    found.append(base64.b64decode(chunk, altchars=alphabet, validate=alphabet is None))
                except (binascii.Error, ValueError):
                    continue
    return found


def assert_hidden(key: str, printed: str, output: str) -> None:
    assert printed not in output
    assert key not in output and key not in output.replace("\n", "")
    secret = key.encode("utf-8")
    assert not any(secret in decoded for decoded in decoded_base64_tokens(output))


@EXAMPLES
@given(key=keys, name=st.sampled_from(sorted(ENCODINGS)), user=st.text("abcxyz", max_size=5))
def test_the_redactor_hides_every_encoding_of_any_key(key: str, name: str, user: str) -> None:
    printed = ENCODINGS[name](key, user)
    output = Redactor([key])(f"INFO request {printed} done")
    assert_hidden(key, printed, output)


@EXAMPLES
@given(key=keys, name=st.sampled_from(sorted(ENCODINGS)), user=st.text("abcxyz", max_size=5))
def test_the_providers_redact_hides_every_encoding_of_any_key(key: str, name: str, user: str) -> None:
    printed = ENCODINGS[name](key, user)
    output = redact(f"creating secret failed: {printed}", extra=[key])
    assert_hidden(key, printed, output)


# The stack refuses an API key with a control character (infra/settings.py: an HTTP header cannot
# carry one), so a key that wraps is one without line breaks of its own.
one_line_keys = keys.filter(lambda key: "\n" not in key and "\r" not in key)


@EXAMPLES
@given(key=one_line_keys, cut=st.integers(1, 31), indent=st.sampled_from(["", "    ", "\t"]))
def test_a_key_wrapped_over_two_lines_is_hidden_in_text_and_in_forwarded_lines(key: str, cut: int, indent: str) -> None:
    cut = min(cut, len(key) - 1)
    text = f"header: Bearer {key[:cut]}\n{indent}{key[cut:]} trailer"
    redactor = Redactor([key])
    assert_hidden(key, text, redactor(text))

    lines: list[str] = []
    forwarder = LogForwarder(io.StringIO(text + "\n"), redactor, sink=lines.append)
    forwarder.run()
    joined = "\n".join(lines)
    # Each line is redacted alone: what remains of the key on either side is too short to matter.
    assert key not in joined.replace("\n" + indent, "") and key not in joined
    assert all(len(remaining) < 4 for remaining in _key_pieces_left(key, lines))


@EXAMPLES
@given(key=keys, name=st.sampled_from(sorted(ENCODINGS)), user=st.text("abcxyz", max_size=5))
def test_the_log_forwarder_hides_every_encoding_line_by_line(key: str, name: str, user: str) -> None:
    printed = ENCODINGS[name](key, user)
    lines: list[str] = []
    forwarder = LogForwarder(io.StringIO(f"start\n{printed}\nend\n"), Redactor([key]), sink=lines.append)
    forwarder.run()
    assert_hidden(key, printed, "\n".join(lines))
    assert lines[0] == "start" and lines[-1] == "end"


def _key_pieces_left(key: str, lines: list[str]) -> list[str]:
    """The longest piece of the key each line still ends or starts with."""
    pieces = []
    for line in lines:
        body = line.strip()
        pieces.append(max((key[:n] for n in range(1, len(key)) if body.endswith(key[:n])), key=len, default=""))
        pieces.append(max((key[-n:] for n in range(1, len(key)) if body.startswith(key[-n:])), key=len, default=""))
    return pieces


def test_common_log_lines_are_left_alone() -> None:
    redactor = Redactor(["0123456789abcdef0123456789abcdef"])
    line = "[2026-11-29 12:00:00] Decode batch. #running-req: 3, #token: 4096, gen throughput (token/s): 812.5"
    assert redactor(line) == line


# -- the principle: every spelling, every piece ------------------------------------------------------

# Keys as stacks generate them: `openssl rand -base64 32`, Python's secrets.token_urlsafe,
# `openssl rand -hex 16`, and a password generator's printable ASCII (no blanks: a wrap at a blank
# inside a key is not followed, see the module docstring).
ALPHABETS = {
    "base64": string.ascii_letters + string.digits + "+/=",
    "urlsafe": string.ascii_letters + string.digits + "-_",
    "hex": string.hexdigits[:16],
    "printable": "".join(map(chr, range(33, 127))),
}
stack_keys = (
    st.sampled_from(sorted(ALPHABETS))
    .flatmap(lambda name: st.text(ALPHABETS[name], min_size=16, max_size=48))
    .filter(unlike_the_replacements)
)
# What a log line holds around a secret: words, numbers, punctuation, the key's own kind of characters.
surroundings = st.text(string.ascii_letters + string.digits + " =:,.'\"{}[]()/+%-_\\", max_size=24)

PROPERTY_EXAMPLES = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def _query_value(url: str) -> str:
    return url.split("k=", 1)[1]


# How real encoders (and compositions of them) print a key, each as the key's spelling alone.
SPELLINGS: dict[str, Callable[[str], str]] = {
    "raw": lambda key: key,
    "str-repr": lambda key: repr(key)[1:-1],
    "bytes-repr": lambda key: repr(key.encode())[2:-1],
    "json": lambda key: json.dumps(key)[1:-1],
    "json-escaped-slash (PHP)": lambda key: json.dumps(key).replace("/", "\\/")[1:-1],
    "json-html-safe (Go)": lambda key: (
        json.dumps(key).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")[1:-1]
    ),
    "orjson": lambda key: orjson.dumps(key).decode()[1:-1],
    "url-quote (safe='/')": lambda key: urllib.parse.quote(key),
    "url-quote (safe='')": lambda key: urllib.parse.quote(key, safe=""),
    "url-quote lowercase hex": lambda key: percent_lower(urllib.parse.quote(key)),
    "url-quote_plus (safe='/')": lambda key: urllib.parse.quote_plus(key, safe="/"),
    "urlencode": lambda key: _query_value(urllib.parse.urlencode({"k": key})),
    "requests params": lambda key: _query_value(
        requests.Request("GET", "http://h/p", params={"k": key}).prepare().url or ""
    ),
    "requests requote_uri": lambda key: requests.utils.requote_uri(key),
    "urllib3 parse_url": lambda key: _query_value(parse_url("http://h/p?k=" + key).url),
    "yarl with_query": lambda key: _query_value(str(yarl.URL("http://h/p").with_query({"k": key}))),
    "html.escape": lambda key: html.escape(key),
    "shlex.quote": lambda key: shlex.quote(key),
    "url of url": lambda key: urllib.parse.quote(urllib.parse.quote(key, safe=""), safe=""),
    "json of url (PHP logging a URL)": lambda key: json.dumps(urllib.parse.quote(key)).replace("/", "\\/")[1:-1],
    "url of json": lambda key: urllib.parse.quote(json.dumps(key)),
    "repr of json": lambda key: repr(json.dumps(key))[1:-1],
}


@st.composite
def spelled(draw: st.DrawFn) -> tuple[str, str]:
    """A key and one spelling of it: a real encoder's (SPELLINGS) or one the module derives."""
    key = draw(stack_keys)
    if draw(st.booleans()):
        return key, SPELLINGS[draw(st.sampled_from(sorted(SPELLINGS)))](key)
    return key, draw(st.sampled_from(sorted(secret_spellings(key))))


def long_pieces(text: str) -> set[str]:
    return {text[i : i + MIN_HIDDEN_PIECE] for i in range(len(text) - MIN_HIDDEN_PIECE + 1)}


def assert_no_long_piece(key: str, spelling: str, output: str) -> None:
    """Neither the key nor its spelling has a piece of MIN_HIDDEN_PIECE characters in `output`."""
    left = sorted(piece for piece in long_pieces(key) | long_pieces(spelling) if piece in output)
    assert not left, f"pieces left: {left}"


@PROPERTY_EXAMPLES
@given(spelled(), surroundings, surroundings)
def test_every_spelling_of_a_key_is_hidden_wherever_it_sits(pair: tuple[str, str], before: str, after: str) -> None:
    key, spelling = pair
    output = Redactor([key])(before + spelling + after)
    assert_no_long_piece(key, spelling, output)
    assert_no_long_piece(key, spelling, redact(before + spelling + after, extra=[key]))


@PROPERTY_EXAMPLES
@given(
    pair=spelled(),
    first=st.integers(1, 60),
    width=st.integers(MIN_EDGE_FRAGMENT, 24),
    indent=st.sampled_from(["", "  ", "    ", "\t"]),
    before=surroundings,
    after=surroundings,
)
def test_a_spelling_wrapped_at_any_width_leaves_no_piece(
    pair: tuple[str, str], first: int, width: int, indent: str, before: str, after: str
) -> None:
    key, spelling = pair
    # A wrap as a logger makes it: the line holding the start, then lines of `width` characters
    # (wholly inside the spelling when it is long enough: three lines or more), indented.
    first = min(first, len(spelling) - 1)
    chunks = [spelling[:first]] + [spelling[i : i + width] for i in range(first, len(spelling), width)]
    text = before + f"\n{indent}".join(chunks) + after
    unwrapped = lambda output: output.replace(f"\n{indent}", "")  # noqa: E731

    whole = Redactor([key])(text)
    assert_no_long_piece(key, spelling, unwrapped(whole))
    assert REDACTED in whole

    lines: list[str] = []
    LogForwarder(io.StringIO(text + "\n"), Redactor([key]), sink=lines.append).run()
    assert len(lines) == len(chunks)
    # Line by line, only a piece under MIN_EDGE_FRAGMENT may stay at each edge of the secret (the
    # first line's end, the last line's start), and a middle line shorter than that.
    assert_no_long_piece(key, spelling, unwrapped("\n".join(lines)))
    for line, chunk in zip(lines[1:-1], chunks[1:-1], strict=True):
        assert line == indent + REDACTED or len(chunk.strip(" \t")) < MIN_EDGE_FRAGMENT


def shares_a_piece(text: str, key: str) -> bool:
    """Where the module docstring says text may change: it holds MIN_HIDDEN_PIECE characters of a
    spelling (or a whole shorter spelling), read across line breaks and the indentation after them;
    or a line, blanks aside, starts with the end, ends with the start, or is wholly a piece of
    MIN_EDGE_FRAGMENT or more characters of one. Brute force: every spelling searched as text."""
    spellings = secret_spellings(key)
    joined = re.sub(r"\r?\n[ \t]*", "", text)
    if any(piece in spelling for piece in long_pieces(joined) for spelling in spellings):
        return True
    if any(spelling in joined for spelling in spellings if len(spelling) < MIN_HIDDEN_PIECE):
        return True
    for line in text.split("\n"):
        body = line.removesuffix("\r").strip(" \t")
        for size in range(MIN_EDGE_FRAGMENT, MIN_HIDDEN_PIECE):
            if len(body) < size:
                break
            for spelling in spellings:
                if len(spelling) > size and (spelling.endswith(body[:size]) or spelling.startswith(body[-size:])):
                    return True
                if len(body) == size and body in spelling:
                    return True
    return False


@PROPERTY_EXAMPLES
@given(key=stack_keys, data=st.data())
def test_text_without_a_piece_of_a_spelling_is_unchanged(key: str, data: st.DataObject) -> None:
    # Text made of the key's own characters (and blanks and line breaks), where near misses happen,
    # around a piece of a spelling of any length up to past MIN_HIDDEN_PIECE.
    alphabet = "".join(sorted(set(key))) + " \t\n" + string.ascii_lowercase[:6]
    spelling = data.draw(st.sampled_from(sorted(secret_spellings(key))))
    start = data.draw(st.integers(0, len(spelling)))
    piece = spelling[start : start + data.draw(st.integers(0, MIN_HIDDEN_PIECE + 4))]
    text = data.draw(st.text(alphabet, max_size=60)) + piece + data.draw(st.text(alphabet, max_size=60))
    output = Redactor([key])(text)
    if shares_a_piece(text, key):
        assert output != text
    else:
        assert output == text


def test_common_log_lines_are_left_alone_by_keys_of_every_kind() -> None:
    lines = [
        "[2026-11-29 12:00:00] Decode batch. #running-req: 3, #token: 4096, gen throughput (token/s): 812.5",
        'INFO:     127.0.0.1:53422 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        "[2026-11-29 12:00:01] Prefill batch. #new-seq: 1, #new-token: 8192, #cached-token: 0, token usage: 0.01",
        "rid=5f0c1e2a9b8d4c3e8f7a6b5c4d3e2f1a finished in 2.41 s",
        '  File "/sgl-workspace/sglang/python/sglang/srt/managers/scheduler.py", line 1024, in event_loop',
        "    }",
    ]
    for key in (
        "0123456789abcdef0123456789abcdef",
        "q3Zr8/Kc+1vW0pX9yT2mLb7Gh4Nf6Js5Ae0Dk3Ro1Uw=",
        "Xk2_-hV9qLm4Nw7PcR1sT8yZb0Fd3Gj6",
        "p@ss/W0rd+'\"\\Zq9!x#y&z",
    ):
        redactor = Redactor([key])
        for line in lines:
            assert redactor(line) == line
