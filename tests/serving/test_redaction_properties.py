"""Property-based: an API key of any characters never survives redaction, in any form it can be printed.

The forms: as is, JSON-escaped (ASCII or not), URL-encoded (either hex case, `+` for spaces or not),
base64 (HTTP Basic auth of `user:<key>`, at any offset, standard or URL-safe alphabet), a bytes repr,
a str repr, and wrapped over two lines (with or without the indentation a log wrapper adds).
Checked for the log forwarder (serving.log_redaction, SGLang's output line by line) and for the
providers' `redact` (every provider error and progress line).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import urllib.parse
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from providers.shared import redact
from serving.log_redaction import LogForwarder, Redactor

# Any character a stack secret can hold: every Unicode code point but lone surrogates (no UTF-8). A
# key that holds the replacement text itself cannot be told from its redaction, so it is left out.
keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=8, max_size=32).filter(
    lambda key: "[secret]" not in key and "[REDACTED]" not in key
)
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
