"""Runs or deploys a Modal app module in a child process: both ends of that protocol.

Why a child process: a Modal app module does its work at import (it reads its configuration from
the environment, declares images, volumes and functions), and modal's objects remember the app
they were loaded into. Importing it inside the long-lived Pulumi provider process would mix one
stack's config with the next resource's and could never be re-imported with other values. A fresh
`python -m providers.runner` per job or deployment gets exactly the environment it is given, and
can be killed when a job outlives its timeout.

The child (`main`):

    python -m providers.runner run    --module M --function F --environment E
    python -m providers.runner deploy --module M --app-name N --environment E

- The module's own settings (`module_env`, e.g. {"APP_CONFIG": "<json>"}) arrive in the
  child's ENVIRONMENT, not in argv: they can be large, argv is visible to every user of the machine
  in `ps`, and a program may put a secret value there (module_env is then a secret as a whole). The
  runner never prints them. Modal credentials are not among them: the child inherits the provider
  process's (MODAL_TOKEN_ID/SECRET, ~/.modal.toml, or the stack config that `configure` exported).
- M must be importable by the child: installed in the venv the engine runs the provider with (as
  `serving` is, editable), or found through a PYTHONPATH in module_env. The child's working
  directory is the provider's, i.e. the program directory.
- It imports M, finds its `modal.App` (the attribute `app`, or the only App in the module), then
  - `run`: starts the app ephemerally (`with app.run(environment_name=E)`), spawns F with no
    arguments, and waits for its result. Nothing needs to be deployed first.
  - `deploy`: `app.deploy(name=N, environment_name=E)`, then looks the deployment up by name for its
    app id, deployment version and the URLs of its web endpoints.
- It prints human progress lines, then, as its last stdout line, RESULT_PREFIX + one JSON object:
  {"ok": true, ...details} or {"ok": false, "error": "...", "phase": "...", "transient": bool,
  "started": bool}. Exit status 0 on success, 1 on failure.
- On SIGTERM (our timeout), a running function call is cancelled before the child exits, so a
  timed-out job does not keep burning GPUs on Modal. The same happens when the provider process
  that started it dies (the engine was killed mid-`up`): nobody would record the run.

The parent (`invoke`), used by the job and app providers: starts the child with the provider
process's environment plus `module_env`, forwards its lines as progress (each line on the
provider's stdout is shown by `pulumi up`), adds a "<label>: running 12m30s" line every
`PROGRESS_SECONDS_ENV` seconds (default 30), enforces the timeout (SIGTERM, then SIGKILL after a
grace period), and returns the parsed result.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import pydantic

from providers.base import ENV_VAR_NAME, ProviderError, is_transient, progress, retry_settings

# The marker of the child's machine-readable last line; everything else it prints is for humans.
RESULT_PREFIX = "@@providers.runner.result "

# How often the parent prints "<label>: running 12m30s" while it waits. `pulumi up` shows each
# line, and a 60-minute download is silent otherwise. Tests shrink it through the environment,
# which reaches the provider process (a module constant could not).
PROGRESS_SECONDS_ENV = "PROVIDERS_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0

# After SIGTERM at the timeout, how long the child gets to cancel its function call and say goodbye
# to Modal before it is killed.
TERMINATE_GRACE_SECONDS = 15.0

# How often the child checks that the provider process that started it is still alive.
ORPHAN_POLL_SECONDS = 1.0

# How many lines of the child's stderr an error message quotes (modal warnings, an import traceback).
STDERR_TAIL_LINES = 15

# Results larger than this (JSON characters) are reported as a truncated preview only: the result
# travels through a pipe and may end up in an error message.
MAX_RESULT_CHARS = 16_000

# Phases of the child, in order; a failure names the phase it happened in.
PHASE_IMPORT = "import"  # importing the module: its config was rejected, or a dependency is missing
PHASE_SETUP = "setup"  # creating the app and its objects on Modal; no function has started yet
PHASE_RUNNING = "running"  # the function call exists on Modal
PHASE_DEPLOY = "deploy"  # deploying (idempotent: a retry just deploys again)


# =============================================================================================
# The child: `python -m providers.runner ...`
# =============================================================================================


class RunnerFailure(Exception):
    """A failure of the child with its phase; `started` tells whether a function call may be running."""

    def __init__(
        self, message: str, *, phase: str, transient: bool = False, started: bool = False, app_id: str | None = None
    ):
        super().__init__(message)
        self.phase = phase
        self.transient = transient
        self.started = started
        self.app_id = app_id


def say(message: str) -> None:
    """One human progress line on stdout (the parent forwards it to `pulumi up`)."""
    print(message, flush=True)


def emit_result(payload: Mapping[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(payload, sort_keys=True, default=str), flush=True)


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


def registered_functions(app: Any) -> dict[str, Any]:
    """The app's plain functions by name (not the "Cls.*" service functions of its classes).

    `App.registered_functions` is modal 1.6.4's way to list them; it warns that it goes away in 1.7
    (we pin 1.6.4), and the warning would only clutter `pulumi up`."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        functions = dict(app.registered_functions)
    return {tag: function for tag, function in functions.items() if "." not in tag}


class _Interrupted(BaseException):
    """SIGTERM from the parent (the timeout). A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way (ours or modal's) mistakes it for an ordinary failure."""


def _raise_interrupted(_signum: int, _frame: Any) -> None:
    raise _Interrupted()


def run_function(module_name: str, function_name: str, environment: str) -> dict[str, Any]:
    """Run `function_name` of the module's app once, ephemerally, and wait for its result."""
    app = import_app(module_name)
    functions = registered_functions(app)
    function = functions.get(function_name)
    if function is None:
        known = ", ".join(sorted(functions)) or "none"
        raise RunnerFailure(
            f"module {module_name!r} has no Modal function {function_name!r} (functions: {known})",
            phase=PHASE_IMPORT,
        )
    started_at = time.monotonic()
    state: dict[str, Any] = {"phase": PHASE_SETUP, "call": None, "app_id": None}
    try:
        say(f"starting an ephemeral run of app {app.name or module_name!r} in environment {environment!r}")
        with app.run(environment_name=environment):
            state["app_id"] = app.app_id
            call = function.spawn()
            state["call"], state["phase"] = call, PHASE_RUNNING
            say(f"started function call {call.object_id} in app {app.app_id}")
            try:
                result = call.get()
            except _Interrupted:
                # Cancel while the app is still up: leaving the `with` disconnects it.
                with contextlib.suppress(Exception):
                    call.cancel()
                    say(f"cancelled function call {call.object_id}")
                raise
    except _Interrupted:
        raise RunnerFailure(
            "stopped by the provider (timeout)",
            phase=state["phase"],
            started=state["call"] is not None,
            app_id=state["app_id"],
        ) from None
    except Exception as error:
        raise RunnerFailure(
            f"{type(error).__name__}: {error}",
            phase=state["phase"],
            transient=is_transient(error),
            started=state["call"] is not None,
            app_id=state["app_id"],
        ) from None
    call = state["call"]
    return {
        "app_id": state["app_id"],
        "function_call_id": call.object_id,
        "duration_seconds": round(time.monotonic() - started_at, 3),
        "result": json_safe(result),
    }


# ---- deployments: the app id, version and web URLs, by name ---------------------------------------


async def _deployment_info(name: str, environment: str) -> dict[str, Any] | None:
    from modal.client import _Client
    from modal_proto import api_pb2

    client = await _Client.from_env()
    found = await client._stub.AppGetByDeploymentName(
        api_pb2.AppGetByDeploymentNameRequest(name=name, environment_name=environment)
    )
    if not found.app_id:
        return None
    layout = await client._stub.AppGetLayout(api_pb2.AppGetLayoutRequest(app_id=found.app_id))
    tags = {object_id: tag for tag, object_id in layout.app_layout.function_ids.items()}
    web_urls: dict[str, str] = {}
    for obj in layout.app_layout.objects:
        if not obj.HasField("function_handle_metadata"):
            continue
        metadata = obj.function_handle_metadata
        tag = tags.get(obj.object_id, metadata.function_name)
        class_name = tag.removesuffix(".*")
        methods = {m: meta.web_url for m, meta in metadata.method_handle_metadata.items() if meta.web_url}
        for method_name, url in methods.items():
            web_urls[f"{class_name}.{method_name}"] = url
        if metadata.web_url and not methods:
            web_urls[class_name] = metadata.web_url  # a web function, or an `app.server` class
    return {
        "app_id": found.app_id,
        "deployment_version": int(found.lifecycle.version),
        "web_urls": dict(sorted(web_urls.items())),
    }


def deployment_info(name: str, environment: str) -> dict[str, Any] | None:
    """{app_id, deployment_version, web_urls} of the app deployed as `name`, or None when none is.

    modal 1.6.4 has no public call for a deployment's version (App.lookup's info leaves it to the
    server) or for the web URLs of a deployed class's methods, so this asks the control plane
    directly (AppGetByDeploymentName, AppGetLayout) with the client's own retrying stub."""
    from modal._utils.async_utils import synchronizer

    return synchronizer.create_blocking(_deployment_info)(name, environment)


def deploy_app(module_name: str, app_name: str, environment: str) -> dict[str, Any]:
    app = import_app(module_name)
    started_at = time.monotonic()
    say(f"deploying app {app_name!r} to environment {environment!r}")
    try:
        app.deploy(name=app_name, environment_name=environment)
        info = deployment_info(app_name, environment)
    except _Interrupted:
        raise RunnerFailure("stopped by the provider (timeout)", phase=PHASE_DEPLOY) from None
    except Exception as error:
        raise RunnerFailure(
            f"{type(error).__name__}: {error}", phase=PHASE_DEPLOY, transient=is_transient(error)
        ) from None
    if info is None:
        raise RunnerFailure(f"app {app_name!r} is not deployed after deploying it", phase=PHASE_DEPLOY)
    say(f"deployed app {app_name!r}: {info['app_id']} version {info['deployment_version']}")
    return {**info, "duration_seconds": round(time.monotonic() - started_at, 3)}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m providers.runner", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="run one function of the module's app ephemerally")
    run.add_argument("--module", required=True)
    run.add_argument("--function", required=True)
    run.add_argument("--environment", required=True)
    deploy = verbs.add_parser("deploy", help="deploy the module's app")
    deploy.add_argument("--module", required=True)
    deploy.add_argument("--app-name", required=True)
    deploy.add_argument("--environment", required=True)
    return parser.parse_args(argv)


def stop_when_orphaned(poll_seconds: float = ORPHAN_POLL_SECONDS) -> None:
    """If the provider process dies (the engine exits or is killed mid-`up`), nobody will record this
    run: stop it as the timeout would, cancelling its function call, instead of running on unseen."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    stop_when_orphaned()
    # The module may read its settings from anywhere, but it must find modal's environment here too.
    os.environ["MODAL_ENVIRONMENT"] = args.environment
    try:
        if args.verb == "run":
            details = run_function(args.module, args.function, args.environment)
        else:
            details = deploy_app(args.module, args.app_name, args.environment)
    except RunnerFailure as failure:
        emit_result(
            {
                "ok": False,
                "error": str(failure),
                "phase": failure.phase,
                "transient": failure.transient,
                "started": failure.started,
                "app_id": failure.app_id,
            }
        )
        return 1
    except _Interrupted:
        emit_result({"ok": False, "error": "stopped by the provider (timeout)", "phase": PHASE_SETUP,
                     "transient": False, "started": False})  # fmt: skip
        return 1
    emit_result({"ok": True, **details})
    return 0


# =============================================================================================
# The parent: start the child, stream its progress, enforce the timeout.
# =============================================================================================


@dataclass(frozen=True)
class RunnerOutcome:
    ok: bool
    details: dict[str, Any]  # the child's JSON result (without "ok")
    timed_out: bool
    exit_code: int | None
    stderr_tail: list[str]

    @property
    def error(self) -> str:
        return str(self.details.get("error", ""))


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
    argv = [sys.executable, "-u", "-m", "providers.runner", verb]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", value]
    return argv


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
    env = {**os.environ, **module_env}
    process = subprocess.Popen(
        child_argv(verb, **options),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        # Its own process group: the timeout kills the child and anything it started, and a Ctrl-C
        # meant for the engine does not reach it first.
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def pump_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def pump_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if line.strip():
                stderr_tail.append(line.rstrip("\n"))

    readers = [threading.Thread(target=pump, daemon=True) for pump in (pump_stdout, pump_stderr)]
    for reader in readers:
        reader.start()

    result: dict[str, Any] | None = None

    def take(line: str) -> None:
        nonlocal result
        if line.startswith(RESULT_PREFIX):
            with contextlib.suppress(ValueError):
                result = json.loads(line[len(RESULT_PREFIX):])
        elif line.strip():
            report(f"{label}: {line}")

    interval = progress_interval()
    started = clock()
    deadline = started + timeout_seconds
    next_progress = started + interval
    timed_out = False
    stdout_open = True
    while stdout_open:
        now = clock()
        if now >= deadline:
            timed_out = True
            report(f"{label}: timed out after {format_elapsed(now - started)}; stopping it")
            _terminate(process)
            break
        if now >= next_progress:
            report(f"{label}: running {format_elapsed(now - started)}")
            next_progress = now + interval
        try:
            line = lines.get(timeout=max(0.01, min(next_progress, deadline) - now))
        except queue.Empty:
            continue
        if line is None:
            stdout_open = False
        else:
            take(line)
    # Drain what the child printed while it was being stopped (its cancel message, its result).
    while stdout_open:
        try:
            line = lines.get(timeout=TERMINATE_GRACE_SECONDS)
        except queue.Empty:
            break
        if line is None:
            break
        take(line)
    exit_code = _wait(process)
    for reader in readers:
        reader.join(timeout=5)
    details = dict(result or {})
    ok = bool(details.pop("ok", False)) and exit_code == 0 and not timed_out
    if result is None and not timed_out:
        details = {
            "error": f"the runner exited with status {exit_code} without a result",
            "phase": PHASE_SETUP,
            "transient": False,
            "started": True,  # unknown: assume the worst, never re-run blindly
        }
    return RunnerOutcome(ok, details, timed_out, exit_code, list(stderr_tail))


def _terminate(process: subprocess.Popen) -> None:
    """SIGTERM (the child cancels its function call), then SIGKILL of the whole group after the grace."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever the child itself started


def _wait(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=TERMINATE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _terminate(process)
        return process.poll()


# =============================================================================================
# What the job and app providers share: the inputs that describe a module, and runs with retries.
# =============================================================================================

# A dotted Python module path, e.g. "serving.app".
_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# module_env must not steer the modal client itself: credentials and the server come from the usual
# Modal sources (and must never be stored in state), the environment from the resource's input.
_RESERVED_ENV_PREFIX = "MODAL_"


def _check_module_path(value: str) -> str:
    if not _MODULE_PATH.match(value):
        raise ValueError("must be a dotted Python module path, e.g. 'serving.app'")
    return value


def _check_env_var_name(name: str) -> str:
    if not ENV_VAR_NAME.match(name):
        raise ValueError("must be an environment variable name (letters, digits, '_')")
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
ModuleEnv = dict[Annotated[str, pydantic.AfterValidator(_check_env_var_name)], str]

# What to tell the user about a failure, by the phase it happened in.
_ADVICE = {
    PHASE_IMPORT: "Nothing ran on Modal. Fix the module or its module_env and run `pulumi up` again.",
    PHASE_SETUP: "Nothing started on Modal. Check the error, then run `pulumi up` again.",
    PHASE_RUNNING: "It ran on Modal and failed: see `modal app logs {app_id}`. Nothing was recorded as done, "
    "so the next `pulumi up` runs it again.",
    PHASE_DEPLOY: "Run `pulumi up` again once the cause is fixed: a deploy of the same app is idempotent.",
}


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
    comes out of it as transient (`providers.base.is_transient`: throttling, aborted) is retried
    here by running the child again, with our bounded backoff, and only when that is safe: before a
    function call started (`retry_started=False`, a job must not run twice at once) or always for an
    idempotent deploy (`retry_started=True`). The timeout covers all attempts together."""
    attempts, base, cap = retry_settings()
    deadline = time.monotonic() + timeout_seconds
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        outcome = invoke(verb, options, module_env, label=label, timeout_seconds=remaining, report=progress)
        if outcome.ok:
            return outcome.details
        if outcome.timed_out:
            started = "" if attempt == 1 else f" (over {attempt} attempts)"
            raise ProviderError(
                f"{what} timed out after {format_elapsed(timeout_seconds)}{started} and was stopped (a running "
                "function call is cancelled). Raise timeout_seconds if it needs longer, then run `pulumi up` again."
            )
        details = outcome.details
        retriable = bool(details.get("transient")) and (retry_started or not details.get("started"))
        if not retriable or attempt == attempts:
            raise ProviderError(describe_failure(what, outcome, attempt))
        wait = min(cap, base * 2 ** (attempt - 1))
        progress(f"{label}: transient failure ({outcome.error}), retry {attempt}/{attempts - 1} in {wait:.1f}s")
        time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
    raise AssertionError("unreachable")  # the loop returns or raises


def describe_failure(what: str, outcome: RunnerOutcome, attempts: int) -> str:
    details = outcome.details
    phase = str(details.get("phase", PHASE_SETUP))
    advice = _ADVICE.get(phase, "").format(app_id=details.get("app_id") or "<app id>")
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    text = f"{what} failed{tries} ({phase}): {outcome.error}. {advice}"
    if phase == PHASE_IMPORT and outcome.stderr_tail:
        text += "\nrunner stderr (last lines):\n" + "\n".join(outcome.stderr_tail)
    return text


if __name__ == "__main__":
    sys.exit(main())
