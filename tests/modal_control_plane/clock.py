"""A clock the tests move: the control plane's time (`ControlPlane(clock=...)`) jumps ahead on demand,
so a test can see what Modal does with a call days after it finished (its result expires after 7),
without waiting."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .fixtures import connect_in_process
from .server import ControlPlane


class MovableClock:
    """The real time plus an offset that only `advance` changes: time still flows (long polls, timeouts)."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@contextlib.contextmanager
def plane_with_clock(monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[tuple[ControlPlane, MovableClock]]:
    """Like the `modal_control_plane` fixture, on a control plane whose clock the test moves;
    `options` are ControlPlane's other keyword arguments."""
    clock = MovableClock()
    cp = ControlPlane(clock=clock, **options).start()
    try:
        with connect_in_process(cp, monkeypatch):
            yield cp, clock
    finally:
        cp.stop()
    if cp.server_errors:
        pytest.fail("modal control plane crashed while handling calls:\n" + "\n".join(cp.server_errors))
