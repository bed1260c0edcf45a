"""A job's function call on Modal: what Modal says about it, and how to stop it for good.

What the modal 1.6.4 client tells about a spawned call (`FunctionCall.get`, `_process_result` in
modal/_utils/function_utils.py), and what each means here (`look`):
- a result: it succeeded;
- the builtin TimeoutError: no output yet, it runs;
- OutputExpiredError (no output and no unfinished input: Modal keeps a result 7 days after
  completion) or NotFoundError: Modal no longer has its result ("gone"); how it ended is unknown;
- RemoteError: it ended without an exception of the function's own. That is what a cancel looks
  like (the container reports GENERIC_STATUS_TERMINATED with no text), but also an exception Modal
  could not carry back, and whatever text Modal puts in it is not ours to interpret: a cancel is
  known from who made it (a deadline, an operator: the run record says so), never from the words;
- any other exception: the function's own, re-raised by the client: it failed (FunctionTimeoutError
  and InternalFailure are Modal's words for a failed input too).

Stopping (`stop_run`): `FunctionCall.cancel()` by default only raises InputCancellation in the
function's main thread, and work in other threads (a download in huggingface_hub's thread pool)
goes on writing into the job's volumes. So a stop cancels with `terminate_containers=True` (Modal
kills the containers running it) and stops the run's app, which is the run's own detached ephemeral
app (`App.stop`: "terminates all of its running containers"), and waits until Modal says the app
stopped: only then can nothing of the run write any more. A call is looked at before it is stopped
and after: one that ended (above all one that succeeded) is reported as it ended, never as stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import grpclib
import modal
import modal.experimental
from modal import exception as modal_errors

# Results larger than this (JSON characters) are kept as a truncated preview only: a result is
# stored in the run record and may end up in an error message.
MAX_RESULT_CHARS = 16_000

# How long a stop waits for Modal to confirm it: the run's app stopped, the call's output there.
STOP_CONFIRM_SECONDS = 60.0
APP_POLL_SECONDS = 0.25

# Errors that say nothing about the call itself: Modal or the way to it is in trouble.
POLL_TROUBLE = (
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

CallState = Literal["running", "succeeded", "failed", "ended", "gone"]


@dataclass(frozen=True)
class Look:
    """What Modal says about a call now: "running", or how it ended (see the module docstring)."""

    state: CallState
    result: Any = None
    error: str | None = None


def look(call_id: str, *, timeout: float = 0.0) -> Look:
    """One wait of up to `timeout` seconds for the call's output. POLL_TROUBLE propagates (retry it)."""
    call = modal.FunctionCall.from_id(call_id)
    try:
        return Look("succeeded", json_safe(call.get(timeout=max(timeout, 0.0))))
    except TimeoutError:
        return Look("running")  # the builtin TimeoutError: modal's own are subclasses of modal's Error
    except (modal_errors.OutputExpiredError, modal_errors.NotFoundError) as gone:
        return Look("gone", error=f"Modal no longer has its result ({type(gone).__name__})")
    except POLL_TROUBLE:
        raise
    except modal_errors.RemoteError as error:
        return Look("ended", error=_describe(error))
    except Exception as error:  # the function's own exception, re-raised by the client
        return Look("failed", error=_describe(error))


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else f"{type(error).__name__} (no message)"


@dataclass(frozen=True)
class Stop:
    """How a stop went: what the call is now, whether we cancelled it, whether its app has stopped."""

    look: Look
    cancelled: bool  # we sent the cancel (the call had not ended when we looked)
    app_stopped: bool  # Modal says the run's app stopped: nothing of the run can write any more

    @property
    def confirmed(self) -> bool:
        return self.app_stopped and self.look.state != "running"


def stop_run(call_id: str, app_id: str | None, *, confirm_seconds: float = STOP_CONFIRM_SECONDS) -> Stop:
    """Stop a run for good unless it already ended (see the module docstring). Idempotent, so a caller
    may retry all of it."""
    before = look(call_id)
    if before.state != "running":
        return Stop(before, cancelled=False, app_stopped=app_id is None or app_has_stopped(app_id))
    modal.FunctionCall.from_id(call_id).cancel(terminate_containers=True)
    stopped = app_id is None or stop_app(app_id, confirm_seconds=confirm_seconds)
    # Its output: terminated, or what it became before the cancel reached it (a success is kept).
    after = look(call_id, timeout=confirm_seconds if stopped else 0.0)
    return Stop(after, cancelled=after.state != "succeeded", app_stopped=stopped)


def app_has_stopped(app_id: str) -> bool:
    """Whether Modal says the app stopped (an app Modal no longer knows runs nothing either)."""
    try:
        return modal.experimental.get_app_lifecycle(app_id).stopped_at is not None
    except modal_errors.NotFoundError:
        return True


def stop_app(app_id: str, *, confirm_seconds: float = STOP_CONFIRM_SECONDS) -> bool:
    """Stop the app (its containers end with it) and wait until Modal says it stopped; whether it did."""
    if app_has_stopped(app_id):
        return True
    modal.App.lookup(app_id).stop()
    deadline = time.monotonic() + confirm_seconds
    while not app_has_stopped(app_id):
        if time.monotonic() >= deadline:
            return False
        time.sleep(APP_POLL_SECONDS)
    return True


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
