"""A job's run on Modal, from the provider's side: find the job's last run, re-attach to it or start
one, and wait for it. The situations a last run can be in are `Situation`, what each leads to is
`run_job`; waiting (`_wait`) ends in how the run ended, a stop at its deadline, or an operator's stop.

A run is DETACHED: the runner child (runner.py) starts it in a detached ephemeral app, records it
(run_records.py) and exits; this module waits for the function call by its id. So when the waiting
side dies (SIGKILL of `pulumi`, of the provider, a CI time limit), the run goes on, and the next
create or replace of the job finds it through its record:

- the last run is still going and is for the same job and triggers (same identity digest):
  re-attach and wait for it, with the "<label>: running 12m30s" lines counted from its start;
- it finished successfully, and its proof still holds (the artifact is there): take it, run nothing;
- Modal no longer has its result (a result expires 7 days after completion), but its artifact was
  written after the run started and nothing else judges it (no `require_ok`): take it, run nothing;
- it is still going but for OTHER triggers: wait until it ends (never two runs of one job at once:
  they would share a volume), then start a new run;
- otherwise (failed, stopped, timed out, ended unseen and unknown to Modal, or never ran): start a
  new run, but only once the earlier run's app has stopped: a run cancelled without its containers
  (`FunctionCall.cancel()`'s default) may still be writing into the same volume, so that app is
  stopped first (modal_access/function_calls.py), and a new run is refused while Modal does not say it stopped.

Only the deadline stops a run: whoever waits stops it at `deadline_at` (its start plus the timeout
it was started with), because a job that took too long is not worth more GPU time; a stop kills its
containers and its app (function_calls.stop_run), and a run that succeeded just before is kept. An
interruption of the waiting side leaves it running; run_records.py has the command that stops one
on purpose. How a run ended is said from what we know (our deadline, an operator's stop recorded in
the run record), never read from the words of Modal's answer.

Once a run exists, every later step retries on its own and never starts another: polls of the call
are retried with the providers' policy (retry.py), a poll that still fails says the run goes on and
the next `up` re-attaches, a start whose child failed after the record was written is found through
the record and waited for, and a run the child could not record but kept (it had already ended) is
taken by the id the child reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from providers.modal_access.function_calls import POLL_TROUBLE, Look, app_has_stopped, look, stop_app, stop_run
from providers.modal_access.retry import describe_failure, is_transient, retry_policy
from providers.runs.run_records import OPERATOR_STOP, Outcome, RunRecord, read_record, write_record
from providers.runs.supervisor import format_elapsed, progress_interval, run_with_retries
from providers.shared import ProviderError, progress

# Modal's FileEntry.mtime is whole seconds: an artifact written in the second the run started may
# read as up to a second earlier. (A clock of ours that is ahead only makes a run count as unproven.)
MTIME_RESOLUTION_SECONDS = 1.0


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
    # When the proof of a finished run was written (the artifact's mtime, Unix seconds), None when it
    # is not there; no callable: nothing proves a run.
    proof_written_at: Callable[[], float | None] | None = None
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
    """What is known about a recorded run: None while it runs, how it ended, or "expired": Modal no
    longer has its result (never recorded: it says nothing about how the run ended)."""

    outcome: Outcome | Literal["expired"] | None
    result: Any = None
    error: str | None = None


class Situation(Enum):
    """What the job's last recorded run means for this `up`: the states of a job's run, in one place.
    `situation_of` decides which one holds; `run_job` says what each leads to."""

    NONE_RECORDED = "no run recorded"  # -> start one
    OURS_RUNNING = "our run is still going"  # same triggers -> re-attach and wait for it
    OTHERS_RUNNING = "a run for other triggers is still going"  # -> wait for it to end, then look again
    OURS_SUCCEEDED = "our run succeeded and its proof holds"  # -> take it, run nothing
    OURS_EXPIRED = "our run's result expired on Modal"  # -> take it if its artifact proves it, else start
    OVER = "the last run is over without a result for us"  # failed, stopped, other triggers -> start


def situation_of(job: JobRun, record: RunRecord | None, state: _State | None) -> Situation:
    if record is None or state is None:
        return Situation.NONE_RECORDED
    ours = record.identity_digest == job.identity_digest
    if state.outcome is None:
        return Situation.OURS_RUNNING if ours else Situation.OTHERS_RUNNING
    if _reusable(job, record, state):
        return Situation.OURS_SUCCEEDED
    if ours and state.outcome == "expired":
        return Situation.OURS_EXPIRED
    return Situation.OVER


def run_job(job: JobRun) -> FinishedRun:
    """The job's successful run for its identity: an earlier one found through the record, or a new one."""
    while True:
        record = read_record(job.environment, job.record_volume, job.job)
        state = _state_of(job, record) if record is not None else None
        situation = situation_of(job, record, state)
        if situation is Situation.OURS_RUNNING:
            progress(f"{job.label}: re-attached to its run {record.function_call_id} (app {record.app_id}), "
                     f"started {format_elapsed(time.time() - record.started_at)} ago")  # fmt: skip
            return _finish(job, record, _wait(job, record), reattached=True)
        if situation is Situation.OTHERS_RUNNING:
            progress(f"{job.label}: its run {record.function_call_id} for other triggers is still going; waiting "
                     "for it to end before starting this one (one run of a job at a time)")  # fmt: skip
            _wait(job, record)
            continue
        if situation is Situation.OURS_SUCCEEDED:
            progress(f"{job.label}: its run {record.function_call_id} for these triggers already succeeded; "
                     "recording it without running anything")  # fmt: skip
            return FinishedRun(record, state.result, reattached=True)
        if situation is Situation.OURS_EXPIRED and (proven := _proven_despite_expiry(job, record)) is not None:
            return proven
        if record is not None:  # OVER, or an expiry nothing proves: nothing of the last run may still write
            _ensure_over(job, record)
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
    return job.proof_written_at is None or job.proof_written_at() is not None


def _proven_despite_expiry(job: JobRun, record: RunRecord) -> FinishedRun | None:
    """A run of these triggers whose end nobody saw and whose result Modal no longer keeps: it counts as
    succeeded when its artifact was written after the run started (then nothing but the run wrote it:
    one run of a job at a time) and nothing else judges it. None: not proven, run it again."""
    if record.identity_digest != job.identity_digest:
        return None
    written = job.proof_written_at() if job.proof_written_at is not None and job.judge is None else None
    if written is None or written < record.started_at - MTIME_RESOLUTION_SECONDS:
        why = ("its result is needed to judge it (require_ok)" if job.judge is not None
               else "no artifact written after it started proves it")  # fmt: skip
        progress(f"{job.label}: Modal no longer has the result of its run {record.function_call_id} (results "
                 f"expire 7 days after completion) and {why}: running it again")  # fmt: skip
        return None
    progress(f"{job.label}: Modal no longer has the result of its run {record.function_call_id} (results expire "
             "7 days after completion), but its artifact was written after that run started: recording it as "
             "succeeded without running anything")  # fmt: skip
    finished = record.model_copy(update={"outcome": "succeeded", "finished_at": written, "result": None,
                                         "error": "result expired on Modal; proven by its artifact"})  # fmt: skip
    _write_outcome(job, finished)
    return FinishedRun(finished, None, reattached=True)


def _ensure_over(job: JobRun, record: RunRecord) -> None:
    """Before a new run: the last one's app must have stopped, so that nothing of it writes any more (a
    run cancelled without its containers may). Stops that app when it still runs: the run is over."""
    if record.app_id is None:
        return
    app_id = record.app_id

    def stopped() -> bool:
        if app_has_stopped(app_id):
            return True
        progress(f"{job.label}: its last run {record.function_call_id} is over, but its app {app_id} still runs "
                 "(a container of it could still write into the job's volumes); stopping that app before a new "
                 "run starts")  # fmt: skip
        return stop_app(app_id)

    what = f"make sure app {app_id} of its last run has stopped"
    if not _retried(job, record, stopped, what, after=_NOTHING_STARTED):
        raise ProviderError(
            f"{job.what}: its last run {record.function_call_id} is over, but its app {app_id} has not stopped "
            "although it was asked to (a container of it could still write into the job's volumes), so no new "
            f"run was started. Stop it with `modal app stop {app_id}`, then run `pulumi up` again."
        )


def _state_of(job: JobRun, record: RunRecord) -> _State:
    """The recorded outcome, or (when nobody saw the run end) what Modal says now."""
    if record.outcome is not None:
        return _State(record.outcome, record.result, record.error)
    state = _poll(job, record, timeout=0)
    if state.outcome not in (None, "expired"):
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
        details = run_with_retries("run", options, job.module_env, label=job.label, what=job.what,
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
    if details.get("recorded") is False:
        # The child could not write the record but kept the call (it had already ended): ours by its id.
        started_at = float(details["started_at"])
        return RunRecord(job=job.job, identity_digest=job.identity_digest,
                         function_call_id=str(details["function_call_id"]), app_id=details.get("app_id"),
                         started_at=started_at, deadline_at=started_at + job.timeout_seconds)  # fmt: skip
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
    if state.outcome == "expired":
        raise ProviderError(f"{job.what}: Modal no longer has the result of its run {record.function_call_id} "
                            f"({state.error}), so nothing says it succeeded. Run `pulumi up` again: it takes the run "
                            "when its artifact proves it, else runs the job anew.")  # fmt: skip
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
        return (f"{job.what} timed out after {timeout} and {state.error} (function call {record.function_call_id}). "
                "Raise timeout_seconds if it needs longer, then run `pulumi up` again.")  # fmt: skip
    if state.outcome == "failed":
        return (f"{what} ran on Modal and failed: {state.error}. See `modal app logs {record.app_id}`. Nothing "
                "was recorded as done, so the next `pulumi up` runs it again.")  # fmt: skip
    if state.error == OPERATOR_STOP:
        return (f"{what} was stopped by an operator (python -m providers.runs.run_records stop). Nothing was recorded "
                "as done, so the next `pulumi up` runs it again.")  # fmt: skip
    return (f"{what} ended on Modal without a result of its own ({state.error}): it was cancelled outside this "
            "stack, or Modal could not bring back what it raised. Nothing was recorded as done, so the next "
            "`pulumi up` runs it again.")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Waiting for a call.
# ---------------------------------------------------------------------------------------------


def _wait(job: JobRun, record: RunRecord) -> _State:
    """Poll the call until it ends or its deadline passes (then stop it); record how it ended."""
    interval = progress_interval()
    while True:
        remaining = record.deadline_at - time.time()
        if remaining <= 0:
            state = _stop_at_deadline(job, record)
        else:
            state = _poll(job, record, timeout=min(interval, remaining))
        if state.outcome == "cancelled":
            state = _recorded_stop(job, record) or state
        if state.outcome is not None:
            _record_outcome(job, record, state)
            return state
        progress(f"{job.label}: running {format_elapsed(time.time() - record.started_at)}")


def _stop_at_deadline(job: JobRun, record: RunRecord) -> _State:
    timeout = format_elapsed(record.deadline_at - record.started_at)
    progress(f"{job.label}: its run {record.function_call_id} timed out after {timeout}; stopping it")
    stop = _retried(job, record, lambda: stop_run(record.function_call_id, record.app_id),
                    f"stop function call {record.function_call_id}")  # fmt: skip
    if stop.look.state == "succeeded":
        progress(f"{job.label}: its run {record.function_call_id} succeeded just before its timeout; keeping it")
        return _State("succeeded", stop.look.result)
    if not stop.cancelled:
        return _from_look(stop.look)  # it ended by itself before the stop: say how
    if stop.confirmed:
        return _State("timed_out", error=f"was stopped: its containers and app {record.app_id} ended")
    return _State("timed_out", error=f"was asked to stop, but Modal has not confirmed that its app {record.app_id} "
                                     f"stopped (stop it with `modal app stop {record.app_id}`)")  # fmt: skip


def _recorded_stop(job: JobRun, record: RunRecord) -> _State | None:
    """An end without a result of its own: if an operator stopped it, the run record says so."""
    try:
        current = read_record(job.environment, job.record_volume, job.job)
    except ProviderError:
        return None
    if current is None or current.function_call_id != record.function_call_id or current.outcome is None:
        return None
    return _State(current.outcome, current.result, current.error)


def _poll(job: JobRun, record: RunRecord, *, timeout: float) -> _State:
    """One wait of up to `timeout` seconds for the call's result (retried on throttling)."""
    seen = _retried(job, record, lambda: look(record.function_call_id, timeout=timeout),
                    f"wait for function call {record.function_call_id}")  # fmt: skip
    return _from_look(seen)


def _from_look(seen: Look) -> _State:
    outcome = {"running": None, "succeeded": "succeeded", "failed": "failed", "ended": "cancelled",
               "gone": "expired"}[seen.state]  # fmt: skip
    return _State(outcome, seen.result, seen.error)


# What a failed Modal call about a run leaves behind, said after the failure.
_RUN_GOES_ON = ("The run itself goes on on Modal: the next `pulumi up` re-attaches to it (or takes its result), it "
                "does not start another one.")  # fmt: skip
_NOTHING_STARTED = "No new run was started: run `pulumi up` again once Modal answers."


def _retried(job: JobRun, record: RunRecord, fn: Callable[[], Any], what: str, *, after: str = _RUN_GOES_ON) -> Any:
    """A Modal call about a run: retried on throttling; a failure says what it leaves behind (`after`)."""
    policy = retry_policy(f"{job.label}: {what}", is_transient)
    try:
        return policy(fn)
    except POLL_TROUBLE as error:
        message = describe_failure(f"{job.what}: {what}", error, policy.statistics["attempt_number"])
        raise ProviderError(f"{message} {after}") from None


def _record_outcome(job: JobRun, record: RunRecord, state: _State) -> None:
    """Write how the run ended; a failure to write is not fatal (the next `up` asks Modal instead)."""
    if state.outcome is None or state.outcome == "expired":
        return  # still running, or nothing is known about how it ended
    _write_outcome(job, record.finished(state.outcome, result=state.result, error=state.error))


def _write_outcome(job: JobRun, finished: RunRecord) -> None:
    try:
        write_record(job.environment, job.record_volume, finished)
    except ProviderError as error:
        progress(f"{job.label}: could not record how its run ended ({error}); the next `pulumi up` asks Modal")
