"""What running a Modal app module means, shared by the job and app providers and by both ends of the
runner: the inputs that name the module, and what the runner child reports back.

The inputs: `module` (ModulePath) and `module_env` (ModuleEnv), the environment variables the module
reads at import. The child process (`python -m providers.runs.runner`, runner.py) imports the module with
them; the provider process (supervisor.py) starts that child and waits for it.

What the child reports: human progress lines, then, as its last stdout line, RESULT_PREFIX + one JSON
object: {"ok": true, ...details} on success, or a RunnerFailure's `result()` on failure. A failure
names the phase it happened in, whether the modal client called it transient, and whether a function
call had started (then a second run could run the job twice at once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import pydantic

from providers.modal_access.retry import VerdictError, describe_failure
from serving.modal_rules import check_env_var_name

# ---------------------------------------------------------------------------------------------
# Inputs: the module and its settings.
# ---------------------------------------------------------------------------------------------

# A dotted Python module path, e.g. "serving.app".
_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# module_env must not steer the modal client itself: credentials and the server come from the usual
# Modal sources (and must never be stored in state), the environment from the resource's input.
_RESERVED_ENV_PREFIX = "MODAL_"


def _check_module_path(value: str) -> str:
    if not _MODULE_PATH.match(value):
        raise ValueError("must be a dotted Python module path, e.g. 'serving.app'")
    return value


def _check_module_env_name(name: str) -> str:
    check_env_var_name(name)
    if name.upper().startswith(_RESERVED_ENV_PREFIX):
        raise ValueError(
            "Modal credentials and settings come from the usual Modal sources (env vars, ~/.modal.toml, stack "
            "config modal:tokenId/modal:tokenSecret), never from state: remove it from module_env"
        )
    return name


ModulePath = Annotated[str, pydantic.AfterValidator(_check_module_path)]
# Environment variables the module reads at import (e.g. its serialized config). Checked key by key,
# so a failure names "module_env.<KEY>": the engine prints the program's value of a failing top-level
# property, and module_env may be secret as a whole when one of its values is a secret Output.
ModuleEnv = dict[Annotated[str, pydantic.AfterValidator(_check_module_env_name)], str]

# ---------------------------------------------------------------------------------------------
# What the runner child reports.
# ---------------------------------------------------------------------------------------------

# The marker of the child's machine-readable last line; everything else it prints is for humans.
RESULT_PREFIX = "@@providers.runs.runner.result "

# Phases of the child, in order; a failure names the phase it happened in.
PHASE_IMPORT = "import"  # importing the module: its config was rejected, or a dependency is missing
PHASE_SETUP = "setup"  # creating the app and its objects on Modal; no function has started yet
PHASE_RUNNING = "running"  # the function call exists on Modal
PHASE_DEPLOY = "deploy"  # deploying (idempotent: a retry just deploys again)
PHASE_LOOKUP = "lookup"  # deployed; looking the deployment up (never worth deploying again)


class RunnerFailure(VerdictError):
    """A failed run with its phase; `started` tells whether a function call may be running.

    The child raises it and reports it as its result line (`result`); the provider process rebuilds
    it from that line (`from_result`), with the last lines of the child's stderr, to retry or describe
    it (providers/modal_access/retry.py)."""

    def __init__(
        self,
        message: str,
        *,
        phase: str,
        transient: bool = False,
        started: bool = False,
        app_id: str | None = None,
        stderr_tail: Iterable[str] = (),
    ):
        super().__init__(message)
        self.phase = phase
        self.transient = transient
        self.started = started
        self.app_id = app_id
        self.stderr_tail = list(stderr_tail)

    def result(self) -> dict[str, Any]:
        return {
            "ok": False,
            "error": str(self),
            "phase": self.phase,
            "transient": self.transient,
            "started": self.started,
            "app_id": self.app_id,
        }

    @classmethod
    def from_result(cls, details: Mapping[str, Any], stderr_tail: Iterable[str] = ()) -> RunnerFailure:
        return cls(
            str(details.get("error", "")),
            phase=str(details.get("phase", PHASE_SETUP)),
            transient=bool(details.get("transient")),
            started=bool(details.get("started")),
            app_id=details.get("app_id"),
            stderr_tail=stderr_tail,
        )


_ADVICE_BY_PHASE = {
    PHASE_IMPORT: "Nothing ran on Modal. Fix the module or its module_env and run `pulumi up` again.",
    PHASE_SETUP: "Nothing started on Modal. Check the error, then run `pulumi up` again.",
    PHASE_RUNNING: "Its function call had started (app {app_id}) and no run record names it; what became of the "
    "call is said above. Nothing was recorded as done: run `pulumi up` again.",
    PHASE_DEPLOY: "Run `pulumi up` again once the cause is fixed: a deploy of the same app is idempotent.",
    PHASE_LOOKUP: "The app WAS deployed; only looking the deployment up failed, after retries. Run `pulumi up` "
    "again once Modal answers: it deploys the same app again (idempotent) and records it.",
}


def describe_run_failure(what: str, error: BaseException, attempts: int) -> str:
    """`describe_failure` for a run in a runner child: its phase says what happened on Modal and so
    what to do (plus, for a module that failed to import, the end of the runner's stderr)."""
    if not isinstance(error, RunnerFailure):
        return describe_failure(what, error, attempts)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    advice = _ADVICE_BY_PHASE.get(error.phase, "").format(app_id=error.app_id or "<app id>")
    text = f"{what} failed{tries} ({error.phase}): {error}. {advice}"
    if error.phase == PHASE_IMPORT and error.stderr_tail:
        text += "\nrunner stderr (last lines):\n" + "\n".join(error.stderr_tail)
    return text
