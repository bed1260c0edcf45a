"""An `up` interrupted while a job runs, and two `up`s of one stack at once, through the real CLI.

What the real engine leaves behind, and the recovery the README documents:
- SIGINT (one Ctrl-C): the CLI stops starting new steps but waits for the ones in flight, so the
  running job finishes and is recorded; the `up` exits non-zero ("update canceled"), leaves no lock
  and no pending operation, and the next `pulumi up` carries on from there.
- SIGKILL (a CI runner's time limit): the lock stays in the backend and the job stays in state as a
  pending "creating" operation. Our provider process notices that its engine is gone and exits; the
  job's runner, orphaned, cancels its function call, so nothing keeps running on Modal. Recovery:
  `pulumi cancel` (removes the stale lock), `pulumi refresh --clear-pending-creates` (forgets the
  create that never finished), then `pulumi up`, which runs that job again; jobs that had finished
  are not run again.
- A second `up` while one runs is refused by the backend's lock before it runs anything.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from .cli import resource_name
from .conftest import Rig, rig
from .harness import JOB_FUNCTIONS, StackHarness, StackRun

# Bounds of the waits below: generous, and never reached when things work.
WAIT_SECONDS = 60


@dataclass
class Gate:
    """Holds every call of one Modal function until opened, and says when one has started."""

    started: threading.Event
    opened: threading.Event

    def open(self) -> None:
        self.opened.set()


def gate_function(running: Rig, function: str) -> Gate:
    gate = Gate(threading.Event(), threading.Event())
    real = running.cp.runner.outcomes[function]

    def held(args: tuple, kwargs: dict, volumes: object) -> object:
        gate.started.set()
        if not gate.opened.wait(WAIT_SECONDS):
            raise RuntimeError(f"{function}: the test never opened its gate")
        return real(args, kwargs, volumes)

    running.cp.on_function(function, held)
    return gate


@contextmanager
def up_in_background(harness: StackHarness) -> Iterator[dict[str, StackRun]]:
    result: dict[str, StackRun] = {}
    thread = threading.Thread(target=lambda: result.setdefault("up", harness.up()), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "the interrupted `pulumi up` did not end"


def pulumi_process() -> psutil.Process:
    """The `pulumi` the Automation API started for the running `up` (a child of this process)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = [p for p in psutil.Process().children() if p.name() == "pulumi"]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no pulumi process")


def processes_in(project: Path) -> list[psutil.Process]:
    """Processes running in the project copy: the provider plugin and its job runners."""
    found = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info.get("cwd") or ""
        if cwd.startswith(str(project)):
            found.append(process)
    return found


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.1)


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
        with up_in_background(harness) as result:
            assert gate.started.wait(WAIT_SECONDS)
            cli = pulumi_process()
            cli.send_signal(signal.SIGINT)
            time.sleep(2)
            # The CLI waits for the step in flight: the job is still running, nobody cancelled it.
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


@pytest.mark.parametrize("function", ["download_model", "compile_deepgemm"])
def test_sigkill_cancels_the_orphaned_run_and_cancel_then_up_converges(function: str) -> None:
    with rig() as running:
        harness = running.harness("staging")
        gate = gate_function(running, function)
        with up_in_background(harness) as result:
            assert gate.started.wait(WAIT_SECONDS)
            pulumi_process().send_signal(signal.SIGKILL)
        # Nobody will record this run: the provider exits, the runner cancels the call.
        wait_until(lambda: statuses(running, function) == ["cancelled"], f"{function}'s call is cancelled")
        wait_until(lambda: processes_in(running.world.project) == [], "the provider and its runners are gone")
        gate.open()
        before_recovery = runs_by_function(running)
        pending = harness.export()["deployment"].get("pending_operations") or []
        locked = harness.up()
        cancel = harness.cli("cancel", "--yes")
        cleared = harness.cli("refresh", "--yes", "--clear-pending-creates")
        recovered = harness.up()
        after = harness.export()["deployment"]
        settled = harness.up(expect_no_changes=True)

    assert result["up"].outcome.exit_code != 0
    job = next(name for name, tag in JOB_FUNCTIONS.items() if tag == function)
    assert [(op["type"], resource_name(op["resource"]["urn"])) for op in pending] == [("creating", job)]
    # The lock of the killed process stays until `pulumi cancel` removes it.
    assert not locked.ok and "locked" in locked.text and "pulumi cancel" in locked.text
    assert locked.modal_calls == []
    assert cancel.ok, cancel.text
    # The refresh reads what exists and forgets the create that never finished; it changes nothing.
    assert cleared.ok and cleared.mutating_modal_calls == [], cleared.text
    assert recovered.ok, recovered.text
    assert not after.get("pending_operations")
    # The interrupted job ran again (its first run was cancelled); the ones that had finished did not.
    finished_before = {tag for tag, count in before_recovery.items() if tag != function}
    assert all(runs_by_function(running)[tag] == 1 for tag in finished_before)
    assert runs_by_function(running)[function] == 2
    assert settled.ok and settled.mutating_modal_calls == [] and settled.function_runs == 0


def test_a_second_up_while_one_runs_is_refused_by_the_lock_and_nothing_runs_twice() -> None:
    with rig() as running:
        first_stack = running.harness("staging")
        gate = gate_function(running, "download_model")
        with up_in_background(first_stack) as result:
            assert gate.started.wait(WAIT_SECONDS)
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
