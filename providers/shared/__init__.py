"""The bottom layer of providers/: what every layer above uses and that knows nothing of them.

Errors for people (errors.py), progress lines (progress.py), secret redaction (redaction.py), and the
provider process's watch on its engine (engine_watch.py). Imports nothing else of providers/."""

from .errors import ProviderError
from .progress import PROGRESS_PREFIX, progress
from .redaction import REDACTED, redact, register_secrets

__all__ = ["PROGRESS_PREFIX", "REDACTED", "ProviderError", "progress", "redact", "register_secrets"]
