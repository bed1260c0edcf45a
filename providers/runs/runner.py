"""The runner child: starts or deploys a Modal app module in a process of its own.

Why a child process: a Modal app module does its work at import (it reads its configuration from
the environment, declares images, volumes and functions), and modal's objects remember the app
they were loaded into. Importing it inside the long-lived Pulumi provider process would mix one
stack's config with the next resource's and could never be re-imported with other values. A fresh
`python -m providers.runs.runner` per job or deployment gets exactly the environment it is given.

    python -m providers.runs.runner run    --module M --function F --environment E
                                      --record-volume V --identity-digest D --timeout-seconds T
    python -m providers.runs.runner deploy --module M --app-name N --environment E [--tag T] [--strategy S]

- The module's own settings (`module_env`, e.g. {"APP_CONFIG": "<json>"}) arrive in the
  child's ENVIRONMENT, not in argv: they can be large, argv is visible to every user of the machine
  in `ps`, and a program may put a secret value there (module_env is then a secret as a whole). The
  runner never prints them. Modal credentials are not among them: the child inherits the provider
  process's (MODAL_TOKEN_ID/SECRET, ~/.modal.toml, or the stack config that `configure` exported).
- M must be importable by the child: installed in the venv the engine runs the provider with (as
  `serving` is, editable), or found through a PYTHONPATH in module_env. The child's working
  directory is the provider's, i.e. the program directory.
- It imports M, finds its `modal.App` (the attribute `app`, or the only App in the module), then
  - `run`: starts the smallest App of M that holds F (F's own, if M gives it one) ephemerally and
    DETACHED (`with app.run(environment_name=E, detach=True)`), spawns F with no arguments, writes
    the job's run record into volume V (run_records.py: the call,
    digest D, the deadline T seconds on), and exits. The run goes on without it; the provider waits
    for the call by its id (job_runs.py), and so can the next `up` if this one dies. Nothing needs to
    be deployed first.
  - `deploy`: `app.deploy(name=N, environment_name=E, tag=T, strategy=S)`, then looks the deployment
    up by name for its app id, deployment version and the URLs of its web endpoints, and says
    whether Modal answered the deploy as a no-op (the version live before is still live).
- It prints human progress lines (`say`), then its result line (module_runs.py): {"ok": true, ...}
  with exit status 0, or a RunnerFailure with exit status 1.
- A call it spawned but could not record (the write failed, or SIGTERM, the provider's timeout,
  came first) is looked at: kept when it already ended, else stopped for good (function_calls.stop_run:
  its containers and app end). Nothing else stops a run: when the provider process dies, this
  child finishes starting the run and recording it, and the run goes on.

The provider's side, which starts this process, follows it and retries it, is supervisor.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.modal_access.deployments import deployment_info
from providers.modal_access.function_calls import STOP_CONFIRM_SECONDS, look, stop_run
from providers.modal_access.retry import is_transient, retry_policy
from providers.modal_internals import resolve_environment
from providers.runs.module_runs import (
    PHASE_DEPLOY,
    PHASE_IMPORT,
    PHASE_LOOKUP,
    PHASE_RUNNING,
    PHASE_SETUP,
    RESULT_PREFIX,
    RunnerFailure,
)
from providers.runs.run_records import RunRecord, write_record


def say(message: str) -> None:
    """One human progress line on stdout (the parent forwards it to `pulumi up`)."""
    _print(message)


def emit_result(payload: Mapping[str, Any]) -> None:
    _print(RESULT_PREFIX + json.dumps(payload, sort_keys=True, default=str))


def _print(line: str) -> None:
    # The provider that reads us may be gone (killed with `pulumi`): then nobody reads this line, and
    # its BrokenPipeError must not stop what this process does next (record a run that goes on).
    try:
        print(line, flush=True)
    except OSError:
        with contextlib.suppress(OSError):
            # Nothing more reaches the pipe; say so once to the interpreter's exit flush too.
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def find_app(module: Any, module_name: str) -> Any:
    """The module's `modal.App`: the attribute `app` if it is one, else the only App it holds."""
    import modal

    candidate = getattr(module, "app", None)
    if isinstance(candidate, modal.App):
        return candidate
    apps = [value for value in vars(module).values() if isinstance(value, modal.App)]
    if len(apps) == 1:
        return apps[0]
    found = "no modal.App" if not apps else f"{len(apps)} modal.App objects and none named `app`"
    raise RunnerFailure(f"module {module_name!r} has {found}", phase=PHASE_IMPORT)


def app_of_function(module: Any, module_name: str, function: Any) -> Any:
    """The smallest of the module's Apps that holds `function`: a module may give a function an App
    of its own (and `App.include` it into its main one), so that a run of that function brings up
    nothing else of the module (no web endpoint, no class). Else the module's app (`find_app`)."""
    import modal

    from providers.modal_internals import app_objects

    sizes = {}
    for value in vars(module).values():
        if isinstance(value, modal.App):
            functions, classes = app_objects(value)
            if any(held is function for held in functions.values()):
                sizes[id(value)] = (len(functions) + len(classes), value)
    if not sizes:
        return find_app(module, module_name)
    return min(sizes.values(), key=lambda size_and_app: size_and_app[0])[1]


def module_functions(module: Any) -> dict[str, Any]:
    """The module's Modal functions by their name in it (a class's methods are not among them)."""
    import modal

    return {name: value for name, value in vars(module).items() if isinstance(value, modal.Function)}


def import_app(module_name: str) -> Any:
    import importlib

    say(f"importing {module_name}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        # The traceback goes to stderr (the parent quotes its tail); the message names the cause.
        import traceback

        traceback.print_exc(file=sys.stderr)
        raise RunnerFailure(
            f"importing module {module_name!r} failed: {type(error).__name__}: {error}", phase=PHASE_IMPORT
        ) from None
    return find_app(module, module_name)


@dataclass(frozen=True)
class RecordPlace:
    """Where the run record goes and what it says the run is for (run_records.py)."""

    volume: str
    identity_digest: str
    timeout_seconds: float


class _Interrupted(BaseException):
    """SIGTERM from the parent (the timeout). A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way (ours or modal's) mistakes it for an ordinary failure."""


def _raise_interrupted(_signum: int, _frame: Any) -> None:
    raise _Interrupted()


def start_function(module_name: str, function_name: str, environment: str, record: RecordPlace) -> dict[str, Any]:
    """Start `function_name` of the module's app in a DETACHED ephemeral app, record the run, and return.

    Detached: the app outlives this process, so the run does not depend on anyone waiting for it
    (the provider waits, job_runs.py). Right after the spawn the run record names the call, so that
    whatever happens to this process or the provider next, the next `up` finds the run. When the
    record cannot be written, the call is looked at first: one that already ended (a quick job that
    succeeded) is kept and reported by its id, which the provider then holds; one still running is
    stopped for good (a run nobody can find must not go on), and the failure says what became of it."""
    import_app(module_name)
    functions = module_functions(sys.modules[module_name])
    function = functions.get(function_name)
    if function is None:
        known = ", ".join(sorted(functions)) or "none"
        raise RunnerFailure(
            f"module {module_name!r} has no Modal function {function_name!r} (functions: {known})",
            phase=PHASE_IMPORT,
        )
    app = app_of_function(sys.modules[module_name], module_name, function)
    state: dict[str, Any] = {"phase": PHASE_SETUP, "call": None, "app_id": None, "recorded": False}
    try:
        # Before any app exists: a failed look-up inside `app.run()` would leave its app behind on Modal.
        retry_policy(f"look up environment {environment!r}", is_transient)(resolve_environment, environment)
        say(f"starting a detached ephemeral run of app {app.name or module_name!r} in environment {environment!r}")
        with app.run(environment_name=environment, detach=True):
            state["app_id"] = app.app_id
            started_at = time.time()
            call = function.spawn()
            state["call"], state["phase"] = call, PHASE_RUNNING
            job = f"{module_name}.{function_name}"
            _write_run_record(environment, record, job, call, app.app_id, started_at)  # first: then it is found
            state["recorded"] = True
            say(f"started function call {call.object_id} in app {app.app_id}")
    except _Interrupted:
        settled = _settle_unrecorded(state, confirm_seconds=INTERRUPTED_STOP_CONFIRM_SECONDS)
        raise RunnerFailure(
            "stopped by the provider (timeout)" + (f"; {settled.text}" if settled else ""),
            phase=state["phase"],
            started=state["recorded"] or settled is not None,
            app_id=state["app_id"],
        ) from None
    except Exception as error:
        # A failure once the record exists (e.g. the disconnect) leaves a run going that the record
        # names: the provider finds it there and waits for it.
        settled = _settle_unrecorded(state)
        if settled is not None and settled.kept:
            return {"app_id": state["app_id"], "function_call_id": state["call"].object_id,
                    "started_at": started_at, "recorded": False}  # fmt: skip
        text = f"{type(error).__name__}: {error}"
        raise RunnerFailure(
            f"its run record could not be written ({text}); {settled.text}" if settled else text,
            phase=state["phase"],
            transient=is_transient(error),
            started=state["recorded"] or settled is not None,
            app_id=state["app_id"],
        ) from None
    call = state["call"]
    return {"app_id": state["app_id"], "function_call_id": call.object_id, "started_at": started_at}


def _write_run_record(
    environment: str, record: RecordPlace, job: str, call: Any, app_id: str, started_at: float
) -> None:
    """Write the run record naming `call` (retried by modal_call inside write_record)."""
    run = RunRecord(
        job=job,
        identity_digest=record.identity_digest,
        function_call_id=call.object_id,
        app_id=app_id,
        started_at=started_at,
        deadline_at=started_at + record.timeout_seconds,
    )
    write_record(environment, record.volume, run)


# After SIGTERM the parent waits supervisor.TERMINATE_GRACE_SECONDS (15 s) before it kills us.
INTERRUPTED_STOP_CONFIRM_SECONDS = 10.0


@dataclass(frozen=True)
class _Settled:
    """What became of a call no run record names."""

    kept: bool  # it had ended: reported by its id, for the provider to take
    text: str  # what happened to it, for the failure message ("" when kept)


def _settle_unrecorded(state: dict[str, Any], *, confirm_seconds: float = STOP_CONFIRM_SECONDS) -> _Settled | None:
    """A call no run record names (its write failed, or our timeout came first): look at it before
    giving up on it. One that has ended is kept; one still running is stopped for good. None: there
    is no such call."""
    call, app_id = state["call"], state["app_id"]
    if call is None or state["recorded"]:
        return None
    call_id = call.object_id
    policy = retry_policy(f"function call {call_id}", is_transient)
    try:
        seen = policy(look, call_id)
        stop = None if seen.state != "running" else policy(stop_run, call_id, app_id, confirm_seconds=confirm_seconds)
    except Exception as error:
        text = (f"function call {call_id} could not be looked at or stopped ({type(error).__name__}: {error}): it may "
                f"still run; stop it with `modal app stop {app_id}` before the next `pulumi up`")  # fmt: skip
        say(text)
        return _Settled(kept=False, text=text)
    if stop is None or not stop.cancelled:
        ended = seen if stop is None else stop.look
        say(f"function call {call_id} had already ended ({ended.state}) when its run record could not be written: "
            "keeping it, the provider takes it by its id")  # fmt: skip
        return _Settled(kept=True, text="")
    if stop.confirmed:
        text = (f"function call {call_id} was stopped before it finished (its containers and app {app_id} ended): "
                "no run record could name it")  # fmt: skip
    else:
        text = (f"function call {call_id} was asked to stop, but Modal has not confirmed that app {app_id} "
                f"stopped: stop it with `modal app stop {app_id}` before the next `pulumi up`")  # fmt: skip
    say(text)
    return _Settled(kept=False, text=text)


def deploy_app(module_name: str, app_name: str, environment: str, tag: str, strategy: str) -> dict[str, Any]:
    """Deploy, then say what Modal made of it: `noop` when Modal answered that nothing changed
    (modal 1.6.4 prints "Deployment skipped: no changes detected!", makes no version and skips the
    recreate strategy's container stop), read as the live version being the one before the deploy."""
    app = import_app(module_name)
    started_at = time.monotonic()
    policy = retry_policy(f"look up deployed app {app_name!r}", is_transient)
    try:
        before = policy(deployment_info, app_name, environment)
    except _Interrupted:
        raise RunnerFailure("stopped by the provider (timeout)", phase=PHASE_SETUP) from None
    except Exception as error:  # nothing deployed yet
        message = f"{type(error).__name__}: {error}"
        raise RunnerFailure(message, phase=PHASE_SETUP, transient=is_transient(error)) from None
    say(f"deploying app {app_name!r} to environment {environment!r}")
    try:
        app.deploy(name=app_name, environment_name=environment, tag=tag, strategy=strategy)
    except _Interrupted:
        raise RunnerFailure("stopped by the provider (timeout)", phase=PHASE_DEPLOY) from None
    except Exception as error:
        raise RunnerFailure(
            f"{type(error).__name__}: {error}", phase=PHASE_DEPLOY, transient=is_transient(error)
        ) from None
    # Deployed: from here on, a failure must not make the provider deploy again, so the lookup
    # retries on its own and its failure is reported as not worth a re-run.
    try:
        info = policy(deployment_info, app_name, environment)
    except _Interrupted:
        raise RunnerFailure("stopped by the provider (timeout)", phase=PHASE_LOOKUP) from None
    except Exception as error:
        raise RunnerFailure(f"{type(error).__name__}: {error}", phase=PHASE_LOOKUP) from None
    if info is None:
        raise RunnerFailure(f"app {app_name!r} is not deployed after deploying it", phase=PHASE_DEPLOY)
    noop = before is not None and before["app_id"] == info["app_id"] and before["deployment_version"] == info[
        "deployment_version"
    ]
    if noop:
        say(f"Modal found no change to deploy: version {info['deployment_version']} of {app_name!r} stays live")
    else:
        say(f"deployed app {app_name!r}: {info['app_id']} version {info['deployment_version']}")
    return {**info, "noop": noop, "duration_seconds": round(time.monotonic() - started_at, 3)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m providers.runs.runner", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="start one function of the module's app in a detached ephemeral app")
    run.add_argument("--module", required=True)
    run.add_argument("--function", required=True)
    run.add_argument("--environment", required=True)
    run.add_argument("--record-volume", required=True, help="the volume that holds the job's run record")
    run.add_argument("--identity-digest", required=True, help="what the run is for (run_records.py)")
    run.add_argument("--timeout-seconds", required=True, type=float, help="when a waiter cancels the run")
    deploy = verbs.add_parser("deploy", help="deploy the module's app")
    deploy.add_argument("--module", required=True)
    deploy.add_argument("--app-name", required=True)
    deploy.add_argument("--environment", required=True)
    deploy.add_argument("--tag", default="")
    deploy.add_argument("--strategy", default="rolling", choices=("rolling", "recreate"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    # The module may read its settings from anywhere, but it must find modal's environment here too.
    os.environ["MODAL_ENVIRONMENT"] = args.environment
    try:
        if args.verb == "run":
            place = RecordPlace(args.record_volume, args.identity_digest, args.timeout_seconds)
            details = start_function(args.module, args.function, args.environment, place)
        else:
            details = deploy_app(args.module, args.app_name, args.environment, args.tag, args.strategy)
    except RunnerFailure as failure:
        emit_result(failure.result())
        return 1
    except _Interrupted:
        emit_result(RunnerFailure("stopped by the provider (timeout)", phase=PHASE_SETUP).result())
        return 1
    emit_result({"ok": True, **details})
    return 0


if __name__ == "__main__":
    sys.exit(main())
