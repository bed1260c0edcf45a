"""An `up` interrupted while a job runs, and two `up`s of one stack at once, through the real CLI.

A job's run is detached from whoever waits for it (providers/runs/job_runs.py), so interrupting the
waiting side never costs the run. What the real engine leaves behind, and the recovery the README
documents:
- SIGINT of `pulumi` (one Ctrl-C): the CLI stops starting new steps but waits for the ones in flight,
  so the running job finishes and is recorded; the `up` exits non-zero ("update canceled"), leaves
  no lock and no pending operation, and the next `pulumi up` carries on from there.
- SIGKILL of `pulumi` (a CI runner's time limit), or SIGINT/SIGKILL of the provider process: the
  job stays in state as a pending "creating" operation (and, when `pulumi` itself died, the lock
  stays). The run goes on on Modal. Recovery: `pulumi cancel`, `pulumi refresh
  --clear-pending-creates`, then `pulumi up`, which finds the run through its record: re-attaches
  to it while it runs, or records it without running when it already succeeded. Each job runs once.
- A second `up` while one runs is refused by the backend's lock before it runs anything.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.waiting import WAIT_SECONDS, wait_until

from .cli import resource_name
from .conftest import Rig, rig
from .harness import JOB_FUNCTIONS, StackHarness, StackRun

# How long the rest of an `up` may take once its job is let go (tests.waiting's bound covers single events).
UP_SECONDS = 300


@dataclass
class Gate:
    """Holds every call of one Modal function until opened, and says when one has started."""

    started: threading.Event
    opened: threading.Event

    def open(self) -> None:
        self.opened.set()


# Every gate a test made; opened when the test ends, so a test that failed with a run held leaves no
# `up` behind, blocked on its gate, whose CLI the next test could take for its own.
GATES: list[Gate] = []


@pytest.fixture(autouse=True)
def gates_opened_at_the_end() -> Iterator[None]:
    yield
    while GATES:
        GATES.pop().open()


def gate_function(running: Rig, function: str) -> Gate:
    gate = Gate(threading.Event(), threading.Event())
    GATES.append(gate)
    real = running.cp.runner.outcomes[function]

    def held(args: tuple, kwargs: dict, volumes: object) -> object:
        gate.started.set()
        if not gate.opened.wait(UP_SECONDS):  # a recovery runs meanwhile: CLI commands, then an `up`
            raise RuntimeError(f"{function}: the test never opened its gate")
        return real(args, kwargs, volumes)

    running.cp.on_function(function, held)
    return gate


@contextmanager
def up_in_background(harness: StackHarness, **options: object) -> Iterator[dict[str, StackRun]]:
    result: dict[str, StackRun] = {}
    thread = threading.Thread(target=lambda: result.setdefault("up", harness.up(**options)), daemon=True)
    thread.start()
    yield result  # a failing test raises here: it is not kept waiting for the `up` (its gate opens at the end)
    thread.join(UP_SECONDS)
    assert not thread.is_alive(), "the interrupted `pulumi up` did not end"


def pulumi_process(project: Path) -> psutil.Process:
    """The `pulumi` the Automation API started for the running `up`: a child of this process that runs
    in this test's project copy (an `up` another test left behind would be a child too)."""

    def running_cli() -> psutil.Process | None:
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.Error):
                if child.name() == "pulumi" and child.cwd().startswith(str(project)):
                    return child
        return None

    return wait_until(running_cli, "the `up`'s pulumi process runs")


def processes_in(project: Path) -> list[psutil.Process]:
    """Processes running in the project copy: the provider plugin and its job runners."""
    found = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info.get("cwd") or ""
        if cwd.startswith(str(project)):
            found.append(process)
    return found


def statuses(running: Rig, function: str) -> list[str]:
    return [call.status for call in running.cp.function_calls if call.tag == function]


def runs_by_function(running: Rig) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in running.cp.function_calls:
        counts[call.tag] = counts.get(call.tag, 0) + 1
    return counts


def test_sigint_lets_the_running_job_finish_and_the_next_up_carries_on() -> None:
    with rig() as running:
        harness = running.harness("staging")
        gate = gate_function(running, "download_model")
        said: list[str] = []
        with up_in_background(harness, on_output=said.append) as result:
            assert gate.started.wait(WAIT_SECONDS)
            cli = pulumi_process(running.world.project)
            cli.send_signal(signal.SIGINT)
            # The CLI says so when it takes the signal, and cancels right after saying it.
            wait_until(lambda: any("received; cancelling" in line for line in said), "the CLI has taken the SIGINT")
            # It waits for the step in flight: the job is still running, nobody cancelled it.
            assert cli.is_running() and statuses(running, "download_model") == ["running"]
            gate.open()
        interrupted = result["up"]
        recorded = set(harness.resources())
        pending = harness.export()["deployment"].get("pending_operations")
        resumed = harness.up()
        settled = harness.up(expect_no_changes=True)

    assert interrupted.outcome.exit_code != 0 and "update canceled" in interrupted.text
    assert "download-weights" in recorded and "compile-kernels" not in recorded
    assert not pending
    assert resumed.ok, resumed.text
    assert resumed.changed() == {"compile-kernels": "create", "verify-setup": "create", "app": "create",
                                 "smoke-test": "create"}  # fmt: skip
    assert runs_by_function(running) == dict.fromkeys(JOB_FUNCTIONS.values(), 1)
    assert settled.ok and settled.mutating_modal_calls == []


def provider_running(project: Path) -> bool:
    return running_provider(project) is not None


def running_provider(project: Path) -> psutil.Process | None:
    """The engine's dynamic-provider process (`python -m pulumi.dynamic`, started from the project)."""
    for process in processes_in(project):
        with contextlib.suppress(psutil.Error):
            if "pulumi.dynamic" in process.cmdline():
                return process
    return None


def provider_process(project: Path) -> psutil.Process:
    return wait_until(lambda: running_provider(project), "the provider process runs")


def waiting_for(running: Rig, call_id: str, since: int) -> bool:
    """Whether somebody polls the call's result (a provider waits for it) since the mark."""
    return any(call.rpc == "FunctionGetOutputs" and call.args.get("function_call_id") == call_id
               for call in running.cp.calls_since(since))  # fmt: skip


# Which process is interrupted, with which signal. Every case runs the README's recovery; the
# SIGKILL cases re-attach while the run still goes, the SIGINT-of-the-provider cases find it finished.
CASES = [
    pytest.param(target, sig, function, id=f"{target}-{sig.name}-{function}")
    for target, sig in [("pulumi", signal.SIGKILL), ("provider", signal.SIGKILL), ("provider", signal.SIGINT)]
    for function in ("download_model", "compile_deepgemm")
]


@pytest.mark.parametrize(("target", "sig", "function"), CASES)
def test_an_interrupted_waiting_side_leaves_the_run_going_and_recovery_converges(
    target: str, sig: signal.Signals, function: str
) -> None:
    with rig() as running:
        harness = running.harness("staging")
        gate = gate_function(running, function)
        with up_in_background(harness) as result:
            assert gate.started.wait(WAIT_SECONDS)
            project = running.world.project
            victim = pulumi_process(project) if target == "pulumi" else provider_process(project)
            victim.send_signal(sig)
        wait_until(lambda: not victim.is_running(), "the interrupted process is gone")
        wait_until(lambda: not provider_running(running.world.project), "the provider process is gone")
        [call] = [call for call in running.cp.function_calls if call.tag == function]
        pending = [(op["type"], resource_name(op["resource"]["urn"]))
                   for op in harness.export()["deployment"].get("pending_operations") or []]  # fmt: skip
        # Once the provider's runners are gone too, no process is left that could cancel the run, and
        # whatever one sent has been answered (a runner's cancel waits for its answer).
        wait_until(lambda: processes_in(running.world.project) == [], "the provider's runners are gone")
        still_running = call.status
        reattach = sig == signal.SIGKILL
        if not reattach:
            gate.open()
            wait_until(lambda: call.status == "succeeded", "the detached run finishes unseen")
        mark = running.cp.mark()
        cancel = harness.cli("cancel", "--yes")
        cleared = harness.cli("refresh", "--yes", "--clear-pending-creates")
        with up_in_background(harness) as recovery:
            if reattach:
                wait_until(lambda: waiting_for(running, call.id, mark), "the recovering `up` waits for the run")
                assert statuses(running, function) == ["running"]  # waits for it; starts no other
                gate.open()
        recovered = recovery["up"]
        settled = harness.up(expect_no_changes=True)

    assert result["up"].outcome.exit_code != 0
    # Only a `pulumi` that died leaves its step pending; a dead provider fails the step in the engine,
    # which records nothing pending (what the README's "An interrupted `up`" says).
    job = next(name for name, tag in JOB_FUNCTIONS.items() if tag == function)
    assert pending == ([("creating", job)] if target == "pulumi" else [])
    assert still_running == "running"  # the interruption cancelled nothing
    assert cancel.ok, cancel.text
    assert cleared.ok and cleared.mutating_modal_calls == [], cleared.text
    assert recovered.ok, recovered.text
    said = "re-attached to its run" if reattach else "already succeeded; recording it without running anything"
    assert f"{function}: " in recovered.text and said in recovered.text, recovered.text
    assert runs_by_function(running) == dict.fromkeys(JOB_FUNCTIONS.values(), 1)
    assert statuses(running, function) == ["succeeded"]
    assert settled.ok and settled.mutating_modal_calls == [] and settled.function_runs == 0


def test_sigkill_leaves_the_lock_and_a_pending_create_that_the_documented_recovery_clears() -> None:
    with rig() as running:
        harness = running.harness("staging")
        gate = gate_function(running, "download_model")
        with up_in_background(harness):
            assert gate.started.wait(WAIT_SECONDS)
            pulumi_process(running.world.project).send_signal(signal.SIGKILL)
        wait_until(lambda: processes_in(running.world.project) == [], "the provider and its runners are gone")
        pending = harness.export()["deployment"].get("pending_operations") or []
        locked = harness.up()
        gate.open()
        cancel = harness.cli("cancel", "--yes")
        cleared = harness.cli("refresh", "--yes", "--clear-pending-creates")
        recovered = harness.up()
        after = harness.export()["deployment"]

    assert [(op["type"], resource_name(op["resource"]["urn"])) for op in pending] == [("creating", "download-weights")]
    # The lock of the killed process stays until `pulumi cancel` removes it.
    assert not locked.ok and "locked" in locked.text and "pulumi cancel" in locked.text
    assert locked.modal_calls == []
    assert cancel.ok and cleared.ok and recovered.ok, recovered.text
    assert not after.get("pending_operations")
    assert runs_by_function(running) == dict.fromkeys(JOB_FUNCTIONS.values(), 1)


def test_a_second_up_while_one_runs_is_refused_by_the_lock_and_nothing_runs_twice() -> None:
    with rig() as running:
        first_stack = running.harness("staging")
        gate = gate_function(running, "download_model")
        with up_in_background(first_stack) as result:
            assert gate.started.wait(WAIT_SECONDS)
            # The first `up`'s runner has recorded the run and left it (its last write until the download ends).
            wait_until(lambda: "AppClientDisconnect" in running.cp.rpcs_called(), "the run is recorded")
            second = first_stack.up()
            gate.open()
        first = result["up"]

    assert not second.ok
    assert "the stack is currently locked" in second.text and "pulumi cancel" in second.text
    # Meanwhile the first `up`'s runner only polls its call's outputs: no write, no run, no deploy.
    assert second.mutating_modal_calls == [] and second.ops() == {}
    assert first.ok, first.text
    assert runs_by_function(running) == dict.fromkeys(JOB_FUNCTIONS.values(), 1)
    assert first.deploys == 1
