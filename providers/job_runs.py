"""A job's run on Modal, from the provider's side: find the job's last run, re-attach to it or start
one, and wait for it.

A run is DETACHED: the runner child (runner.py) starts it in a detached ephemeral app, records it
(run_records.py) and exits; this module waits for the function call by its id. So when the waiting
side dies (SIGKILL of `pulumi`, of the provider, a CI time limit), the run goes on, and the next
create or replace of the job finds it through its record:

- the last run is still going and is for the same job and triggers (same identity digest):
  re-attach and wait for it, with the "<label>: running 12m30s" lines counted from its start;
- it finished successfully, and its proof still holds (the artifact is there): take it, run nothing;
- it is still going but for OTHER triggers: wait until it ends (never two runs of one job at once:
  they would share a volume), then start a new run;
- otherwise (failed, cancelled, timed out, ended unseen and unknown to Modal, or never ran):
  start a new run.

Only the deadline stops a run: whoever waits cancels it at `deadline_at` (its start plus the
timeout it was started with), because a job that took too long is not worth more GPU time. An
interruption of the waiting side leaves it running; run_records.py has the command that stops one
on purpose.

Once a run exists, every later step retries on its own and never starts another: polls of the call
are retried with the providers' policy (retry.py), a poll that still fails says the run goes on and
the next `up` re-attaches, and a start whose child failed after the record was written is found
through the record and waited for.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpclib
import modal
from modal import exception as modal_errors

from .base import ProviderError, progress
from .retry import describe_failure, is_transient, retry_policy
from .run_records import Outcome, RunRecord, read_record, write_record
from .supervisor import format_elapsed, progress_interval, run_with_retries

# Results larger than this (JSON characters) are kept as a truncated preview only: a result is
# stored in the run record and may end up in an error message.
MAX_RESULT_CHARS = 16_000

# Errors of a poll that say nothing about the run itself: Modal or the way to it is in trouble.
_POLL_TROUBLE = (
    modal_errors.ServiceError,
    modal_errors.InternalError,
    modal_errors.ConnectionError,
    modal_errors.ResourceExhaustedError,
    modal_errors.ConflictError,
    modal_errors.AuthError,
    modal_errors.PermissionDeniedError,
    grpclib.GRPCError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class JobRun:
    """What to run, where its record lives, and how to judge it."""

    module: str
    function: str
    environment: str
    module_env: Mapping[str, str]
    record_volume: str
    identity_digest: str
    timeout_seconds: float
    what: str  # "job serving.app.download_model in environment 'x'", for messages
    # Whether the proof of a finished run still holds (the artifact is there); None: nothing to check.
    proof_holds: Callable[[], bool] | None = None
    # Raises ProviderError when a result does not count as success (require_ok); None: any result does.
    judge: Callable[[Any], None] | None = None

    @property
    def job(self) -> str:
        return f"{self.module}.{self.function}"

    @property
    def label(self) -> str:
        return self.function


@dataclass(frozen=True)
class FinishedRun:
    record: RunRecord
    result: Any
    reattached: bool  # found through the record rather than started by this `up`

    @property
    def duration_seconds(self) -> float | None:
        if self.record.finished_at is None:
            return None
        return round(self.record.finished_at - self.record.started_at, 3)


@dataclass(frozen=True)
class _State:
    """What Modal says about a recorded run: "running", or how it ended."""

    outcome: Outcome | None  # None: still running
    result: Any = None
    error: str | None = None


def run_job(job: JobRun) -> FinishedRun:
    """The job's successful run for its identity: an earlier one found through the record, or a new one."""
    while True:
        record = read_record(job.environment, job.record_volume, job.job)
        state = _state_of(job, record) if record is not None else None
        if record is not None and state is not None and state.outcome is None:
            if record.identity_digest == job.identity_digest:
                progress(f"{job.label}: re-attached to its run {record.function_call_id} (app {record.app_id}), "
                         f"started {format_elapsed(time.time() - record.started_at)} ago")  # fmt: skip
                return _finish(job, record, _wait(job, record), reattached=True)
            progress(f"{job.label}: its run {record.function_call_id} for other triggers is still going; waiting "
                     "for it to end before starting this one (one run of a job at a time)")  # fmt: skip
            _wait(job, record)
            continue
        if record is not None and state is not None and _reusable(job, record, state):
            progress(f"{job.label}: its run {record.function_call_id} for these triggers already succeeded; "
                     "recording it without running anything")  # fmt: skip
            return FinishedRun(record, state.result, reattached=True)
        started = _start(job, record)
        return _finish(job, started, _wait(job, started), reattached=False)


def _reusable(job: JobRun, record: RunRecord, state: _State) -> bool:
    if record.identity_digest != job.identity_digest or state.outcome != "succeeded":
        return False
    if job.judge is not None:
        try:
            job.judge(state.result)
        except ProviderError:
            return False
    return job.proof_holds is None or job.proof_holds()


def _state_of(job: JobRun, record: RunRecord) -> _State:
    """The recorded outcome, or (when nobody saw the run end) what Modal says now."""
    if record.outcome is not None:
        return _State(record.outcome, record.result, record.error)
    state = _poll(job, record, timeout=0)
    if state.outcome is not None:
        _record_outcome(job, record, state)
    return state


def _start(job: JobRun, previous: RunRecord | None) -> RunRecord:
    """A new run through the runner child; its record, as the child wrote it."""
    options = {
        "module": job.module,
        "function": job.function,
        "environment": job.environment,
        "record_volume": job.record_volume,
        "identity_digest": job.identity_digest,
        "timeout_seconds": str(job.timeout_seconds),
    }
    try:
        run_with_retries("run", options, job.module_env, label=job.label, what=job.what,
                         timeout_seconds=job.timeout_seconds, retry_started=False)  # fmt: skip
    except ProviderError as failure:
        # The child may have failed after its run began and was recorded (e.g. while disconnecting):
        # then that run goes on, and it is ours to wait for.
        record = read_record(job.environment, job.record_volume, job.job)
        if not _is_new_run(job, record, previous):
            raise
        progress(f"{job.label}: its run {record.function_call_id} started before this failure: {failure}; "
                 "waiting for the run")  # fmt: skip
        return record
    record = read_record(job.environment, job.record_volume, job.job)
    if not _is_new_run(job, record, previous):
        raise ProviderError(f"{job.what}: the runner reported a start, but the run record in volume "
                            f"'{job.record_volume}' does not name it. Run `pulumi up` again.")  # fmt: skip
    return record


def _is_new_run(job: JobRun, record: RunRecord | None, previous: RunRecord | None) -> bool:
    if record is None or record.identity_digest != job.identity_digest or record.outcome is not None:
        return False
    return previous is None or record.function_call_id != previous.function_call_id


def _finish(job: JobRun, record: RunRecord, state: _State, *, reattached: bool) -> FinishedRun:
    """The run ended: a success, or a ProviderError saying truthfully how it ended."""
    finished = record.finished(state.outcome or "succeeded", result=state.result, error=state.error)
    if state.outcome == "succeeded" and job.judge is not None:
        try:
            job.judge(state.result)
        except ProviderError as refused:
            _record_outcome(job, record, _State("failed", state.result, str(refused)))
            raise
    if state.outcome != "succeeded":
        raise ProviderError(_ended_without_success(job, record, state))
    return FinishedRun(finished, state.result, reattached)


def _ended_without_success(job: JobRun, record: RunRecord, state: _State) -> str:
    what = f"{job.what}: its run {record.function_call_id}"
    if state.outcome == "timed_out":
        timeout = format_elapsed(record.deadline_at - record.started_at)
        return (f"{job.what} timed out after {timeout} and was stopped (its function call {record.function_call_id} "
                "is cancelled). Raise timeout_seconds if it needs longer, then run `pulumi up` again.")  # fmt: skip
    if state.outcome == "failed":
        return (f"{what} ran on Modal and failed: {state.error}. See `modal app logs {record.app_id}`. Nothing "
                "was recorded as done, so the next `pulumi up` runs it again.")  # fmt: skip
    return (f"{what} ended without a result ({state.outcome}: {state.error}). Nothing was recorded as done, so "
            "the next `pulumi up` runs it again.")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Waiting for a call.
# ---------------------------------------------------------------------------------------------


def _wait(job: JobRun, record: RunRecord) -> _State:
    """Poll the call until it ends or its deadline passes (then cancel it); record how it ended."""
    interval = progress_interval()
    while True:
        remaining = record.deadline_at - time.time()
        state = (
            _cancel_at_deadline(job, record) if remaining <= 0 else _poll(job, record, timeout=min(interval, remaining))
        )
        if state.outcome is not None:
            _record_outcome(job, record, state)
            return state
        progress(f"{job.label}: running {format_elapsed(time.time() - record.started_at)}")


def _cancel_at_deadline(job: JobRun, record: RunRecord) -> _State:
    timeout = format_elapsed(record.deadline_at - record.started_at)
    progress(f"{job.label}: its run {record.function_call_id} timed out after {timeout}; stopping it")
    call = modal.FunctionCall.from_id(record.function_call_id)
    _retried(job, record, call.cancel, f"cancel function call {record.function_call_id}")
    return _State("timed_out", error=f"cancelled at its timeout of {timeout}")


def _poll(job: JobRun, record: RunRecord, *, timeout: float) -> _State:
    """One wait of up to `timeout` seconds for the call's result (retried on throttling)."""
    call = modal.FunctionCall.from_id(record.function_call_id)

    def get() -> _State:
        try:
            return _State("succeeded", json_safe(call.get(timeout=max(timeout, 0.0))))
        except TimeoutError:
            return _State(None)  # still running (the builtin TimeoutError: modal's is a subclass of Error)
        except (modal_errors.OutputExpiredError, modal_errors.NotFoundError) as gone:
            return _State("cancelled", error=f"Modal no longer has its result ({type(gone).__name__})")
        except _POLL_TROUBLE:
            raise
        except Exception as error:  # the function's own exception, re-raised by the client
            outcome = "cancelled" if _was_cancelled(error) else "failed"
            return _State(outcome, error=f"{type(error).__name__}: {error}")

    return _retried(job, record, get, f"wait for function call {record.function_call_id}")


def _was_cancelled(error: BaseException) -> bool:
    return isinstance(error, modal_errors.RemoteError) and "cancel" in str(error).lower()


def _retried(job: JobRun, record: RunRecord, fn: Callable[[], Any], what: str) -> Any:
    """A Modal call about a running run: retried on throttling; a failure says the run goes on."""
    policy = retry_policy(f"{job.label}: {what}", is_transient)
    try:
        return policy(fn)
    except _POLL_TROUBLE as error:
        message = describe_failure(f"{job.what}: {what}", error, policy.statistics["attempt_number"])
        raise ProviderError(
            f"{message} The run itself goes on on Modal: the next `pulumi up` re-attaches to it (or takes its "
            f"result), it does not start another one."
        ) from None


def _record_outcome(job: JobRun, record: RunRecord, state: _State) -> None:
    """Write how the run ended; a failure to write is not fatal (the next `up` asks Modal instead)."""
    try:
        write_record(
            job.environment,
            job.record_volume,
            record.finished(state.outcome or "succeeded", result=state.result, error=state.error),
        )
    except ProviderError as error:
        progress(f"{job.label}: could not record how its run ended ({error}); the next `pulumi up` asks Modal")


def json_safe(value: Any) -> Any:
    """The function's return value as JSON, or a truncated preview of it when it is large or odd."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= MAX_RESULT_CHARS:
        return value
    preview = repr(value) if text is None else text
    return {"truncated_preview": preview[:MAX_RESULT_CHARS]}
