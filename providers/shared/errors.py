"""The one error the providers raise for a person to read."""

from __future__ import annotations

from .redaction import redact


class ProviderError(Exception):
    """A failure explained for the person running `pulumi`: what failed and what to do.

    The text is redacted of every secret value this process has seen."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
