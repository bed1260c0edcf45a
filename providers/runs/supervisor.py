"""The provider's side of a job or deployment: start the runner child, follow it, retry it.

`invoke` runs one child (`python -m providers.runs.runner`, see runner.py) in four phases:
- start: the child gets the provider process's environment plus `module_env`, in its own process
  group;
- pump output: two threads read its stdout lines (forwarded as progress, each line on the
  provider's stdout is shown by `pulumi up`) and keep the last lines of its stderr;
- follow: wait for its lines, add a "<label>: running 12m30s" line every `PROGRESS_SECONDS_ENV`
  seconds (default 30), and at the timeout stop it (SIGTERM, then SIGKILL after a grace period);
- collect: its exit status and its parsed result line (module_runs.py).

`run_with_retries`, what the job and app providers call, runs `invoke` again on a transient failure
with the providers' one retry policy (retry.py), when running again is safe.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.modal_access.retry import is_transient, retry_policy
from providers.runs.module_runs import PHASE_SETUP, RESULT_PREFIX, RunnerFailure, describe_run_failure
from providers.shared import ProviderError, progress

# How often the parent prints "<label>: running 12m30s" while it waits. `pulumi up` shows each
# line, and a 60-minute download is silent otherwise. Tests shrink it through the environment,
# which reaches the provider process (a module constant could not).
PROGRESS_SECONDS_ENV = "PROVIDERS_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0

# After SIGTERM at the timeout, how long the child gets to cancel a call it could not record yet and
# say goodbye to Modal before it is killed.
TERMINATE_GRACE_SECONDS = 15.0

# How many lines of the child's stderr an error message quotes (modal warnings, an import traceback).
STDERR_TAIL_LINES = 15


@dataclass(frozen=True)
class RunnerOutcome:
    ok: bool
    details: dict[str, Any]  # the child's JSON result (without "ok")
    timed_out: bool
    exit_code: int | None
    stderr_tail: list[str]

    def failure(self) -> RunnerFailure:
        """The failure the child reported (for an outcome that is neither ok nor timed out)."""
        return RunnerFailure.from_result(self.details, self.stderr_tail)


def progress_interval() -> float:
    raw = os.environ.get(PROGRESS_SECONDS_ENV, "")
    try:
        return max(float(raw), 0.05) if raw else DEFAULT_PROGRESS_SECONDS
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS


def format_elapsed(seconds: float) -> str:
    """12m30s, 1h02m05s, 45s: how `pulumi up` readers count."""
    total = int(seconds + 0.5)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def child_argv(verb: str, **options: str) -> list[str]:
    argv = [sys.executable, "-u", "-m", "providers.runs.runner", verb]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return argv


# ---------------------------------------------------------------------------------------------
# One child, from start to result.
# ---------------------------------------------------------------------------------------------


@dataclass
class _Child:
    """A started child: its stdout lines in order (None once the pipe closes), the last lines of its
    stderr, and its result once the result line arrived."""

    process: subprocess.Popen
    label: str
    report: Callable[[str], None]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))
    readers: list[threading.Thread] = field(default_factory=list)
    result: dict[str, Any] | None = None
    stdout_open: bool = True


def invoke(
    verb: str,
    options: Mapping[str, str],
    module_env: Mapping[str, str],
    *,
    label: str,
    timeout_seconds: float,
    report: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> RunnerOutcome:
    """Run the child to completion or to the timeout, reporting its progress through `report`."""
    child = _start(verb, options, module_env, label, report)
    _pump_output(child)
    timed_out = _follow(child, timeout_seconds, clock)
    _drain(child)
    return _collect(child, timed_out)


def _start(
    verb: str, options: Mapping[str, str], module_env: Mapping[str, str], label: str, report: Callable[[str], None]
) -> _Child:
    process = subprocess.Popen(
        child_argv(verb, **options),
        env={**os.environ, **module_env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        # Its own process group: the timeout kills the child and anything it started, and a Ctrl-C
        # meant for the engine does not reach it first.
        start_new_session=True,
    )
    return _Child(process, label, report)


def _pump_output(child: _Child) -> None:
    """Read both pipes on daemon threads, so a full stderr never blocks the child."""

    def pump_stdout() -> None:
        assert child.process.stdout is not None
        for line in child.process.stdout:
            child.lines.put(line.rstrip("\n"))
        child.lines.put(None)

    def pump_stderr() -> None:
        assert child.process.stderr is not None
        for line in child.process.stderr:
            if line.strip():
                child.stderr_tail.append(line.rstrip("\n"))

    child.readers = [threading.Thread(target=pump, daemon=True) for pump in (pump_stdout, pump_stderr)]
    for reader in child.readers:
        reader.start()


def _follow(child: _Child, timeout_seconds: float, clock: Callable[[], float]) -> bool:
    """Take the child's lines until its stdout closes, with a progress line every interval; at the
    timeout, stop it. Whether it timed out."""
    interval = progress_interval()
    started = clock()
    deadline = started + timeout_seconds
    next_progress = started + interval
    while child.stdout_open:
        now = clock()
        if now >= deadline:
            child.report(f"{child.label}: timed out after {format_elapsed(now - started)}; stopping it")
            _terminate(child.process)
            return True
        if now >= next_progress:
            child.report(f"{child.label}: running {format_elapsed(now - started)}")
            next_progress = now + interval
        try:
            line = child.lines.get(timeout=max(0.01, min(next_progress, deadline) - now))
        except queue.Empty:
            continue
        _take(child, line)
    return False


def _drain(child: _Child) -> None:
    """Take what a stopped child printed meanwhile (its cancel message, its result)."""
    while child.stdout_open:
        try:
            line = child.lines.get(timeout=TERMINATE_GRACE_SECONDS)
        except queue.Empty:
            return
        _take(child, line)


def _take(child: _Child, line: str | None) -> None:
    if line is None:
        child.stdout_open = False
    elif line.startswith(RESULT_PREFIX):
        with contextlib.suppress(ValueError):
            child.result = json.loads(line[len(RESULT_PREFIX):])
    elif line.strip():
        child.report(f"{child.label}: {line}")


def _collect(child: _Child, timed_out: bool) -> RunnerOutcome:
    exit_code = _wait_exit(child.process)
    for reader in child.readers:
        reader.join(timeout=5)
    details = dict(child.result or {})
    ok = bool(details.pop("ok", False)) and exit_code == 0 and not timed_out
    if child.result is None and not timed_out:
        details = {
            "error": f"the runner exited with status {exit_code} without a result",
            "phase": PHASE_SETUP,
            "transient": False,
            "started": True,  # unknown: assume the worst, never re-run blindly
        }
    return RunnerOutcome(ok, details, timed_out, exit_code, list(child.stderr_tail))


def _terminate(process: subprocess.Popen) -> None:
    """SIGTERM (the child cancels a call it has not recorded yet), then SIGKILL of the whole group after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever the child itself started


def _wait_exit(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _terminate(process)
        return process.poll()


# ---------------------------------------------------------------------------------------------
# Runs with retries: what the job and app providers call.
# ---------------------------------------------------------------------------------------------


def run_with_retries(
    verb: str,
    options: Mapping[str, str],
    module_env: Mapping[str, str],
    *,
    label: str,
    what: str,
    timeout_seconds: float,
    retry_started: bool,
) -> dict[str, Any]:
    """`invoke` until it succeeds; the child's result details, or ProviderError with what to do.

    The modal client already retries the statuses it considers transient inside the child; what
    comes out of it as transient (`retry.is_transient`: throttling, aborted) is retried here by
    running the child again, with our bounded backoff, and only when that is safe: before a
    function call started (`retry_started=False`, a job must not run twice at once) or always for an
    idempotent deploy (`retry_started=True`). The timeout covers all attempts together."""
    deadline = time.monotonic() + timeout_seconds

    def attempt() -> RunnerOutcome:
        remaining = deadline - time.monotonic()
        outcome = invoke(verb, options, module_env, label=label, timeout_seconds=remaining, report=progress)
        if not outcome.ok and not outcome.timed_out:
            raise outcome.failure()
        return outcome

    def retriable(error: BaseException) -> bool:
        return isinstance(error, RunnerFailure) and is_transient(error) and (retry_started or not error.started)

    def sleep_until_deadline(seconds: float) -> None:
        time.sleep(min(seconds, max(0.0, deadline - time.monotonic())))

    policy = retry_policy(label, retriable, sleep=sleep_until_deadline)
    try:
        outcome = policy(attempt)
    except RunnerFailure as failure:
        raise ProviderError(describe_run_failure(what, failure, policy.statistics["attempt_number"])) from None
    if outcome.timed_out:
        attempts = policy.statistics["attempt_number"]
        over = "" if attempts == 1 else f" (over {attempts} attempts)"
        raise ProviderError(
            f"{what} timed out after {format_elapsed(timeout_seconds)}{over} while starting, and was stopped (a "
            "function call it started but did not record is stopped, unless it already ended). Raise "
            "timeout_seconds if it needs longer, then run `pulumi up` again."
        )
    return outcome.details
