"""Secret redaction for everything the providers print or raise: a process-wide set of values that
must never appear, filled by whoever handles secret inputs (base.check_inputs does it for the fields
an input model names in `secret_fields`), and hidden in every spelling serving/log_redaction.py knows."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable

from pulumi.runtime.rpc import UNKNOWN

from serving.log_redaction import Redactor

# Replaces a secret value wherever it would appear in text we emit.
REDACTED = "[secret]"

_secret_values: set[str] = set()
_secret_lock = threading.Lock()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values so `redact` (and so every ProviderError and progress line) hides them."""
    with _secret_lock:
        _secret_values.update(v for v in values if isinstance(v, str) and v and v != UNKNOWN)


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every registered (and `extra`) secret value hidden in every spelling it can be
    printed in (escaped, URL-encoded, base64, wrapped over lines: serving/log_redaction.py)."""
    with _secret_lock:
        values = set(_secret_values)
    values.update(v for v in extra if isinstance(v, str) and v)
    return _redactor(frozenset(values))(text)


@functools.lru_cache(maxsize=8)
def _redactor(values: frozenset[str]) -> Redactor:
    # Listing a secret's spellings costs more than one redaction; the set of values rarely changes.
    return Redactor(values, replacement=REDACTED)
