"""Waiting in tests: for the event a test asserts on, never for a length of time.

A test that needs something to have happened (a log line forwarded, a process gone, a call
recorded) polls for exactly that with `wait_until`, so it goes on the moment the event comes, on
an idle laptop or on a loaded two-core CI machine running the suite on both cores. The bound only
turns a hang into a failure that names what never happened: it is never a timed assertion, so it is
set far above what any event here needs under load (WAIT_SECONDS). A test that asserts on
promptness passes its own, tighter bound and says why.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Every event waited for in the suite comes within a few seconds on a busy 2-core machine; a minute
# means it is not coming.
WAIT_SECONDS = 60.0
# How often the condition is read: cheap conditions, and a small fraction of any event's latency.
POLL_SECONDS = 0.02


def wait_until(condition: Callable[[], T], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Poll `condition` until it returns something truthy, and return that. Fails the test naming
    `what` (the event, as "until <what>" reads) if it has not happened within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(POLL_SECONDS)
