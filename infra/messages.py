"""No message of the Pulumi program repeats a secret of its stack: one redaction for all of them.

The mechanism is the providers' (providers/shared/redaction.py): `redact`, which hides secret values
in every spelling and every piece serving/log_redaction.py knows. Here it gets the program's
secrets and sits where the program's messages leave:

- `use_stack_secrets`: infra/settings.py `load` calls it first, before any message is built, with
  every value the stack keeps secret (`secret_strings` of each). They replace those of a stack
  loaded before in the same process, rather than add to the providers' process-wide set: the stack
  tests run the program inline, one stack after another, and each must hide its own secrets, not
  turn the last stack's (a whole deployment, once it was made secret) into `[secret]` everywhere.
- `redact`: what InvalidStackConfig does to each problem it lists (a rejected value is quoted whole,
  e.g. a `model.served_name` of ` --api-key <the key>`).
- `redact_program_log`: infra/__main__.py calls it first. Every message the program shows goes
  through pulumi.log on its way to the engine: our warnings and cost lines (infra/edge.py,
  infra/revision_pin.py, infra/cost_preview.py), the SDK's, and the language host's report of a
  failed program (`pulumi.RunError` text, or an unhandled exception with its traceback), which it
  logs with `pulumi.log.error`. The functions of pulumi.log are wrapped so each message is redacted
  on the way out, whichever module logs it.

What is not covered: text the program writes to stdout or stderr itself (nothing in infra/ does),
and the engine's own displays (diffs, outputs), where Pulumi masks what it knows to be secret.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any

import pulumi

from providers.shared import redact as _redact

# The pulumi.log functions that send a message to the engine.
LOG_FUNCTIONS = ("debug", "info", "warn", "error")

# The secret strings of the stack the program runs, as its last `load` found them.
_stack_secrets: frozenset[str] = frozenset()


def secret_strings(value: Any) -> list[str]:
    """The strings a secret config value holds: the value as the program gets it (a string; an
    object or list arrives as its JSON text), and every string inside one. Pulumi marks a whole key
    secret when any part of it is (`pulumi config set --secret --path`), so each part is secret.
    Numbers and booleans inside are left out: they are not credentials, and hiding every `true` or
    `8` would make the messages unreadable."""
    if not isinstance(value, str) or not value:
        return []
    found = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        return found
    pending = [parsed] if isinstance(parsed, dict | list) else []
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += item.values()
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str) and item:
            found.append(item)
    return found


def use_stack_secrets(values: Iterable[Any]) -> None:
    """The stack's secret config values: every message hides them from now on."""
    global _stack_secrets
    _stack_secrets = frozenset(text for value in values for text in secret_strings(value))


def redact(text: str) -> str:
    """`text` with the stack's secrets (and any the process registered) hidden, as `[secret]`."""
    return _redact(text, extra=_stack_secrets)


def _redacting(log_function: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(log_function)
    def logged(msg: str, *args: Any, **kwargs: Any) -> None:
        log_function(redact(str(msg)), *args, **kwargs)

    logged.redacts = True  # type: ignore[attr-defined]
    return logged


def redact_program_log() -> None:
    """Wrap pulumi.log's functions, and the same ones pulumi exports by name (`pulumi.warn`), so
    every message is redacted before it is sent (idempotent)."""
    for name in LOG_FUNCTIONS:
        function = getattr(pulumi.log, name)
        if not getattr(function, "redacts", False):
            function = _redacting(function)
            setattr(pulumi.log, name, function)
        setattr(pulumi, name, function)
