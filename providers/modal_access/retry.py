"""The one retry policy of the providers, and the one way they describe a failure.

Two kinds of work go through it: a Modal call made in the provider process (`modal_call`), and a
run of a module in a runner child (runs/supervisor.py `run_with_retries`, whose failures arrive as
RunnerFailure and are worded by runs/module_runs.py). Both retry with the same bounded backoff,
announce each retry with the same progress line, and end in a ProviderError.

The modal client already retries every unary RPC itself (modal/_grpc_client.py, Retry() in
modal/_utils/grpc_utils.py): 3 retries (4 attempts, 0.1/0.2/0.4 s apart) on DEADLINE_EXCEEDED,
UNAVAILABLE, CANCELLED, INTERNAL and UNKNOWN, and it honours a server-sent retry-after on any status.
What reaches us as ServiceError/InternalError/ConnectionError from a unary call has therefore been
retried already; retrying it again would multiply attempts (4 x 4) for an outage we should report
instead. So on top of the client we retry only what it never retries:
  - RESOURCE_EXHAUSTED (ResourceExhaustedError): rate limits and quota throttling, which clear with time;
  - ABORTED (a ConflictError whose status is ABORTED): a concurrent change won, try again;
and, for streaming RPCs (e.g. Volume.listdir), which the client does not retry at all, the
transport-level ones too (ServiceError, InternalError, ConnectionError, OSError), with the client's
3 retries added to ours (a stream meeting two outages and then two rate limits still gets through).
Measured against the local control plane in tests/providers/test_base.py (call counts per attempt).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpclib
import tenacity
from modal import exception as modal_errors

from providers.modal_internals import grpc_status
from providers.shared import ProviderError, progress

# Attempts of one Modal call or run, ours: the first try plus 3 retries.
MAX_ATTEMPTS = 4
# What the modal client retries a unary call itself (3 retries); a stream gets them from us instead.
CLIENT_RETRIES = 3

# Backoff between our attempts: base * 2**n seconds, capped (2, 4, 8 s: at most 14 s of waiting).
# Rate limits need seconds, not the client's tenths. Tests shrink the base through the environment
# variable, which the provider subprocess inherits (a module constant could not reach that process).
RETRY_BASE_SECONDS_ENV = "PROVIDERS_RETRY_BASE_SECONDS"
DEFAULT_RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 30.0

# What the modal client retries on unary calls, and what escapes it from a stream.
_TRANSPORT_ERRORS = (
    modal_errors.ServiceError
    | modal_errors.InternalError
    | modal_errors.ConnectionError
    | OSError
    | asyncio.TimeoutError
)


class VerdictError(Exception):
    """An error that carries its own verdict on a retry: a run's failure as a runner child reports it
    (runs/module_runs.py RunnerFailure), reached with `is_transient` on the modal error it met."""

    transient: bool = False


def is_transient(error: BaseException, *, client_retried: bool = True) -> bool:
    """Whether OUR layer should retry `error` (see the policy above)."""
    if isinstance(error, VerdictError):
        return error.transient
    if isinstance(error, modal_errors.ResourceExhaustedError):
        return True
    if isinstance(error, modal_errors.ConflictError) and grpc_status(error) == grpclib.Status.ABORTED:
        return True
    if client_retried:
        return False
    return isinstance(error, _TRANSPORT_ERRORS)


def retry_settings() -> tuple[int, float, float]:
    """(attempts, base seconds, max seconds) of our backoff, read at call time from the environment."""
    raw = os.environ.get(RETRY_BASE_SECONDS_ENV, "")
    try:
        base = float(raw) if raw else DEFAULT_RETRY_BASE_SECONDS
    except ValueError:
        base = DEFAULT_RETRY_BASE_SECONDS
    return MAX_ATTEMPTS, max(base, 0.0), RETRY_MAX_SECONDS


def retry_policy(
    label: str,
    retry_if: Callable[[BaseException], bool],
    *,
    sleep: Callable[[float], None] = time.sleep,
    extra_attempts: int = 0,
) -> tenacity.Retrying:
    """Our bounded backoff around one piece of work: retries what `retry_if` accepts, announces each
    retry as "<label>: transient ..., retry n/3 in 2.0s", and re-raises the last error."""
    attempts, base, cap = retry_settings()
    attempts += extra_attempts

    def announce(retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        progress(f"{label}: transient {_name(error)}, retry {retry_state.attempt_number}/{attempts - 1} in {wait:.1f}s")

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=base, min=base, max=cap),
        retry=tenacity.retry_if_exception(retry_if),
        before_sleep=announce,
        sleep=sleep,
        reraise=True,
    )


def _name(error: BaseException | None) -> str:
    # A modal error is named by its class; a failed run by what the child reported.
    return f"failure ({error})" if isinstance(error, VerdictError) else type(error).__name__


# ---------------------------------------------------------------------------------------------
# What to do about a failure that is not retried (or no longer): by modal exception class, checked
# in order (a failed run: by the phase it failed in, runs/module_runs.py).
# ---------------------------------------------------------------------------------------------

_ADVICE_BY_ERROR: list[tuple[type[BaseException], str]] = [
    (
        modal_errors.AuthError,
        "Modal rejected the credentials: set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET (or run `modal token new`, "
        "or `pulumi config set --secret modal:tokenSecret ...`) and run `pulumi up` again.",
    ),
    (
        modal_errors.PermissionDeniedError,
        "The Modal token lacks permission for this: use a token of the right workspace/environment role.",
    ),
    (
        modal_errors.NotFoundError,
        "Modal does not know it: check the names, and that the environment exists (declare a ModalEnvironment "
        "and depend on it).",
    ),
    (modal_errors.AlreadyExistsError, "An object of that name already exists and could not be adopted."),
    (
        modal_errors.ResourceExhaustedError,
        "Modal kept throttling (rate limit or quota) after our retries: wait a minute and run `pulumi up` again.",
    ),
    (modal_errors.ConflictError, "Modal refused because of the object's current state: check it and retry."),
    (modal_errors.InvalidError, "Modal rejected the request as invalid: fix the resource's inputs."),
    (
        _TRANSPORT_ERRORS,
        "Modal stayed unreachable or failing after retries: check connectivity/status.modal.com and run "
        "`pulumi up` again (operations are idempotent: a re-run converges).",
    ),
]

def describe_failure(what: str, error: BaseException, attempts: int) -> str:
    """What failed, how, and what to do, in one line (a run's failure: runs/module_runs.py
    `describe_run_failure`). ProviderError redacts it."""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    detail = str(error).strip() or repr(error)
    advice = next((text for kind, text in _ADVICE_BY_ERROR if isinstance(error, kind)), "See the Modal error above.")
    return f"{what} failed{tries}: {type(error).__name__}: {detail}. {advice}"


# ---------------------------------------------------------------------------------------------
# A Modal call in the provider process.
# ---------------------------------------------------------------------------------------------

# The errors modal_call turns into ProviderError: Modal's own, and transport errors that escape it.
_MODAL_FAILURES = (modal_errors.Error, grpclib.GRPCError, OSError, asyncio.TimeoutError)

T = TypeVar("T")


def modal_call(fn: Callable[..., T], *args: Any, what: str, client_retries: bool = True, **kwargs: Any) -> T:
    """Run one modal client call with our bounded retry policy; permanent failures become ProviderError.

    `what` says what is being done ("create volume 'weights' in 'main'") for progress and errors.
    `client_retries=False` marks a call the modal client does not retry itself (streaming RPCs such
    as Volume.listdir), so transport errors are retried here instead."""
    # A stream gets the client's share of retries too (it gives streams none): its transport failures
    # and its throttling each get their bounded retries, as on a unary call.
    extra = 0 if client_retries else CLIENT_RETRIES
    policy = retry_policy(what, lambda error: is_transient(error, client_retried=client_retries), extra_attempts=extra)
    try:
        return policy(fn, *args, **kwargs)
    except _MODAL_FAILURES as error:
        # `from None`: the engine prints the whole chain; ours already says everything, redacted.
        raise ProviderError(describe_failure(what, error, policy.statistics["attempt_number"])) from None
