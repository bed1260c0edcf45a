"""Progress lines: what `pulumi up` shows while a provider works."""

from __future__ import annotations

import sys

from .redaction import redact

# Every progress line starts with this, so a reader of `pulumi up` sees which tool is talking.
PROGRESS_PREFIX = "[modal] "


def progress(message: str, *, prefix: str = PROGRESS_PREFIX) -> None:
    """One info line in `pulumi up` (the engine shows each stdout line of the provider process)."""
    lines = redact(message).splitlines() or [""]
    # One write per message, so lines from concurrent calls (the server runs 4 at once) do not mix.
    sys.stdout.write("".join(f"{prefix}{line}\n" for line in lines))
    sys.stdout.flush()
