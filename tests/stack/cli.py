"""The real Pulumi CLI, run the way an operator runs it, offline and repeatable.

Where the CLI comes from: `./scripts/setup` reuses a `pulumi` of the pinned version (scripts/pulumi-cli/
go.mod's, newer than the Python SDK's: tests/pulumi_release.py) found on PATH, or builds that release
from the Go module proxy into `.tools/bin/` (scripts/pulumi-cli). `pulumi_binary()` finds it the same
way, and refuses any other version.

Every run gets its own world (`CliWorld`): a temporary `PULUMI_HOME`, a local backend
(`file://<tmp>/state`, or any backend URL a test passes), a passphrase for the secrets provider,
update checks and plugin downloads off, and the Modal settings of the test's control plane. The
project is a temporary copy of Pulumi.yaml and the stack files (`pulumi stack init` and
`pulumi config set --secret` write into them, so the committed files stay untouched), with the
`.venv` links `./scripts/setup` makes in the repository.

How the program runs: `pulumi preview`/`up` start the Python language host, `pulumi-language-python`,
which ships with the official CLI but is a separate, untagged Go module that the module proxy does
not serve. So preview and up go through the Automation API (`pulumi.automation`) with the program
as an inline function: the Automation API starts the same CLI binary (`pulumi preview/up --client`),
which runs the real engine, the real state backend and locks, and starts our dynamic provider as its
own child process; only the program itself runs inside the test process, as the language host would
run it (RunError printed alone, anything else with its traceback), and never outlives its run
(`InlineProgram`: after a failed step the CLI exits without waiting for it). Every other command (stack init,
config set, refresh, destroy, cancel, stack export/output) is the plain CLI, exactly as the README
spells it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pulumi import automation as auto
from pulumi.automation._server import LanguageServer

from tests.pulumi_release import cli_release
from tests.waiting import WAIT_SECONDS, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml")

# The CLI release this repository pins (scripts/pulumi-cli/go.mod), newer than the SDK it installs.
PULUMI_VERSION = "v" + cli_release()

PASSPHRASE = "glm-modal-test-passphrase"  # noqa: S105 - a throwaway key for throwaway test stacks


def _version_of(binary: Path) -> str | None:
    try:
        done = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"})  # fmt: skip
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def pulumi_binary() -> Path:
    """The pinned `pulumi`: the one ./scripts/setup built into .tools/bin, else one on PATH (looked
    for once per test process: every CLI world would otherwise run `pulumi version` again)."""
    candidates = [TOOLS_BIN / "pulumi"]
    on_path = shutil.which("pulumi")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.exists() and _version_of(candidate) == PULUMI_VERSION:
            return candidate
    raise RuntimeError(f"no pulumi {PULUMI_VERSION} in {TOOLS_BIN} or on PATH: run ./scripts/setup")


class InlineProgram:
    """A program as the Automation API runs it inline, watched so that it never outlives its run.

    The inline program runs in this process on the SDK's language server (pulumi/automation/_server.py
    `LanguageServer.Run`: a new event loop per run). When a step fails, the engine returns without
    waiting for the program (pulumi/pulumi pkg/resource/deploy/deployment_executor.go `Execute`: the
    source is cancelled and awaited only `if err == nil`; on an error v3.260.0 skips it and v3.277.0
    cancels it with an already-cancelled context), and the CLI exits. The program goes on with its
    engine gone: its next RPC is refused, the server's exception handler stops the loop on that
    `grpc.RpcError` ("Event loop stopped before Future completed"), and its `finally` block, whose
    first statement is `log.debug(f"Cancelling {len(pending)} tasks.")`, an engine RPC too (SDK
    3.260.0 and 3.272.0), raises before it cancels the pending tasks and closes the loop. Left so,
    a few hundred tasks and coroutines of the dead program (about 200 for an up killed mid-job)
    stay pending until some later garbage collection finalizes them, in whatever thread runs then,
    possibly inside the next program's loop, where their `finally` blocks (the stack's
    `register_outputs`, `_shutdown_callbacks`) act with that program's runtime settings.

    `settle` waits for the program's server call to end, then finishes the cleanup the SDK could
    not: cancels what is still pending on the program's loop and closes it, here, between runs."""

    def __init__(self, program: Callable[[], None]):
        self.program = program
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def __call__(self) -> None:
        # Called by the SDK's run_in_stack, on the language server's thread, inside the run's loop.
        self.loop = asyncio.get_running_loop()
        self.thread = threading.current_thread()
        self.program()

    def settle(self) -> bool:
        """Once the CLI has exited: wait until the server call that ran the program has returned,
        then cancel and close what it left on its loop. True if it had left its loop open (the
        program outlived its engine)."""
        if self.loop is None or self.thread is None:
            return False  # the CLI never ran the program (a refused lock, an unreadable stack file)
        wait_until(lambda: not _serves_a_run(self.thread), "the inline program's server call has returned")
        if self.loop.is_closed():
            return False
        loop = self.loop
        loop.set_exception_handler(lambda _loop, _context: None)  # the engine is gone: every RPC fails
        # The SDK's handler may have stopped the loop after its last run (a failed task collected
        # later); a stop before run_forever makes one pass and is then cleared (asyncio docs).
        loop.stop()
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:  # each ends at its next await; a bound, in case one never does
            loop.run_until_complete(asyncio.wait(pending, timeout=WAIT_SECONDS))
        loop.close()
        return True


def _serves_a_run(thread: threading.Thread) -> bool:
    """Whether `thread` is inside the SDK's LanguageServer.Run (a grpc worker thread stays alive,
    idle, after the call; so its stack, not its liveness, says when the call has returned)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code is _RUN_CODE:
            return True
        frame = frame.f_back
    return False


_RUN_CODE = LanguageServer.Run.__code__


def _engine_refused_before_anything(outcome: Outcome) -> bool:
    """A run whose program found its engine's address refusing connections before the engine reported
    a single step, so that nothing was planned or done. Seen once in a fresh-clone run of the suite
    (2193 tests; CLI v3.277.0, SDK 3.272.0), in a preview of an invalid config: the program's first
    engine RPC (`log.debug` in `wait_for_rpcs`) was refused, the SDK's Run raised, and the CLI printed
    that as the program's error. The cause is not known (the CLI was alive to print it); such a run
    says nothing about the program, and running it again repeats nothing."""
    text = outcome.stdout + outcome.stderr
    return (not outcome.ok and not outcome.steps and not outcome.planned
            and "Exception calling application" in text and "Connection refused" in text)  # fmt: skip


def inline_program() -> None:
    """infra/ as the language host runs it: `main: infra/` is the working directory, "." the program."""
    with contextlib.chdir(INFRA_DIR):
        runpy.run_path(".", run_name="__main__")


@dataclass
class Outcome:
    """What one CLI operation did: its exit, its output, and each resource's step by logical name."""

    command: str
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    steps: dict[str, set[str]] = field(default_factory=dict)  # resource name -> ops the engine reported
    planned: dict[str, auto.events.StepEventStateMetadata] = field(default_factory=dict)  # name -> new state
    outputs: dict[str, object] = field(default_factory=dict)

    def inputs(self, name: str) -> dict[str, object]:
        """A resource's inputs as the engine reported them in its step (secrets as "[secret]")."""
        return dict(self.planned[name].inputs or {})

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def text(self) -> str:
        return self.stdout + self.stderr

    def op(self, name: str) -> str:
        """The logical step of one resource: create, same, update, replace, delete, refresh, ..."""
        ops = self.steps.get(name, set())
        if len(ops) > 1:  # `--refresh`: the refresh step comes before the plan's own step
            ops = ops - {"refresh"}
        if ops & {"replace", "create-replacement", "delete-replaced"}:
            return "replace"
        if len(ops) != 1:
            raise AssertionError(f"{self.command}: resource {name!r} had steps {sorted(ops)}")
        return next(iter(ops))

    def ops(self) -> dict[str, str]:
        return {name: self.op(name) for name in self.steps}

    def changed(self) -> dict[str, str]:
        return {name: op for name, op in self.ops().items() if op != "same"}


def resource_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


class CliWorld:
    """A PULUMI_HOME, a backend and a copy of the project, and the environment every command gets."""

    def __init__(self, modal_env: Mapping[str, str], extra_env: Mapping[str, str] | None = None,
                 backend_url: str | None = None):  # fmt: skip
        self.binary = pulumi_binary()
        self.root = Path(tempfile.mkdtemp(prefix="pulumi-cli-"))
        self.project = self.root / "project"
        self.project.mkdir()
        for name in PROJECT_FILES:
            shutil.copy(REPO_ROOT / name, self.project / name)
        # As ./scripts/setup links them in the repository: the program resolves `virtualenv: .venv`
        # from the project root, the provider process from the program directory (infra/).
        (self.project / ".venv").symlink_to(REPO_ROOT / ".venv")
        (self.project / "infra").mkdir()
        (self.project / "infra" / ".venv").symlink_to(REPO_ROOT / ".venv")
        if backend_url is None:
            (self.root / "state").mkdir()
            backend_url = f"file://{self.root / 'state'}"
        self.backend_url = backend_url
        base = {key: value for key, value in os.environ.items() if not key.startswith(("MODAL_", "PULUMI_"))}
        self.env = {
            **base,
            **modal_env,
            "HOME": os.environ.get("HOME", str(self.root)),
            "PATH": os.pathsep.join([str(self.binary.parent), str(REPO_ROOT / ".venv" / "bin"), base.get("PATH", "")]),
            "PULUMI_HOME": str(self.root / "home"),
            "PULUMI_BACKEND_URL": backend_url,
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            **(extra_env or {}),
        }
        self._workspace: auto.LocalWorkspace | None = None

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- plain CLI commands ----------------------------------------------------------------------

    def run(self, *args: str, input: str | None = None, timeout: float = 600) -> Outcome:  # noqa: A002
        started = time.perf_counter()
        done = subprocess.run([str(self.binary), *args, "--non-interactive"], cwd=self.project, env=self.env,
                              input=input, capture_output=True, text=True, timeout=timeout)  # fmt: skip
        return Outcome("pulumi " + " ".join(args), done.returncode, done.stdout, done.stderr,
                       time.perf_counter() - started)  # fmt: skip

    def check(self, *args: str, input: str | None = None) -> Outcome:  # noqa: A002
        outcome = self.run(*args, input=input)
        if not outcome.ok:
            raise AssertionError(f"{outcome.command} exited {outcome.exit_code}:\n{outcome.text}")
        return outcome

    def stack_file(self, stack: str) -> Path:
        return self.project / f"Pulumi.{stack}.yaml"

    # ---- preview and up, through the Automation API ----------------------------------------------

    @property
    def workspace(self) -> auto.LocalWorkspace:
        if self._workspace is None:
            command = auto.PulumiCommand(root=str(self.binary.parent.parent), version=None)
            self._workspace = auto.LocalWorkspace(work_dir=str(self.project), program=inline_program,
                                                  env_vars=self.env, pulumi_command=command)  # fmt: skip
        return self._workspace

    def program_run(self, operation: str, stack: str, program: Callable[[], None] = inline_program,
                    on_output: Callable[[str], None] | None = None, **options: object) -> Outcome:  # fmt: skip
        """`pulumi preview|up --stack <stack>` with the given Automation API options (diff,
        expect_no_changes, refresh, ...): what the CLI did is the outcome. Run again only in the one
        case `_engine_refused_before_anything` describes, where nothing happened.

        It returns only once the inline program has ended too (`InlineProgram.settle`): when a step
        fails, the CLI exits without waiting for the program, which then finds its engine gone."""
        outcome = self._run_program_once(operation, stack, program, on_output, options)
        if _engine_refused_before_anything(outcome):
            print(f"{outcome.command}: the program's engine refused its first RPCs before any step; running it "
                  "again (tests/stack/cli.py `_engine_refused_before_anything`)")
            outcome = self._run_program_once(operation, stack, program, on_output, options)
        return outcome

    def _run_program_once(self, operation: str, stack: str, program: Callable[[], None],
                          on_output: Callable[[str], None] | None, options: dict[str, object]) -> Outcome:  # fmt: skip
        watched = InlineProgram(program)
        try:
            outcome = self._run_program(operation, stack, watched, on_output, options)
        finally:
            outlived = watched.settle()
        if outlived:
            # The SDK's inline server logs the refused RPCs that follow as an ERROR with a traceback
            # ("Event loop stopped before Future completed", then the Log RPC refused): say what it is.
            print(f"{outcome.command}: the CLI exited while the inline program was still running (a step failed, "
                  "see the outcome); the program's refused engine RPCs logged below are that aftermath")
        return outcome

    def _run_program(self, operation: str, stack: str, program: Callable[[], None],
                          on_output: Callable[[str], None] | None, options: dict[str, object]) -> Outcome:  # fmt: skip
        self.workspace.program = program
        selected = auto.Stack.select(stack, self.workspace)
        steps: dict[str, set[str]] = {}
        planned: dict[str, auto.events.StepEventStateMetadata] = {}
        lines: list[str] = []
        # The stack's outputs as the program registered them: a preview's result has none, its events do.
        stack_outputs: dict[str, object] = {}

        def on_event(event: auto.EngineEvent) -> None:
            done = event.res_outputs_event
            if done is not None and done.metadata.type == "pulumi:pulumi:Stack" and done.metadata.new is not None:
                stack_outputs.update(done.metadata.new.outputs or {})
            pre = event.resource_pre_event
            # The stack itself and the default provider (which the engine updates whenever the
            # stack's config changes: it is configured with the whole config) are not ours to count.
            if pre is not None and not pre.metadata.type.startswith(("pulumi:pulumi:", "pulumi:providers:")):
                steps.setdefault(resource_name(pre.metadata.urn), set()).add(pre.metadata.op.value)
                if pre.metadata.new is not None:
                    planned[resource_name(pre.metadata.urn)] = pre.metadata.new

        def on_line(line: str) -> None:
            lines.append(line)
            if on_output is not None:
                on_output(line)

        started = time.perf_counter()
        method = {"preview": selected.preview, "up": selected.up}[operation]
        flags = " ".join(f"--{key.replace('_', '-')}" for key, value in options.items() if value is True)
        command = f"pulumi {operation} --stack {stack} {flags}".strip()
        try:
            result = method(on_output=on_line, on_event=on_event, color="never", **options)
        except auto.errors.CommandError as error:
            stderr = getattr(error, "stderr", "") or str(error)
            return Outcome(command, _exit_code(error), "\n".join(lines), stderr, time.perf_counter() - started,
                           steps, planned)  # fmt: skip
        outputs = {key: value.value for key, value in getattr(result, "outputs", {}).items()} or stack_outputs
        return Outcome(command, 0, "\n".join(lines), result.stderr if hasattr(result, "stderr") else "",
                       time.perf_counter() - started, steps, planned, outputs)  # fmt: skip


def _exit_code(error: auto.errors.CommandError) -> int:
    match = re.search(r"code: (-?\d+)", str(error))
    return int(match.group(1)) if match else 1
