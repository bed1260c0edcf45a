"""A job's detached run and its record, through the real provider server and the control plane: a run
that a dead provider started is re-attached to, or taken when it already succeeded; a run for other
triggers is waited for; a success whose later step failed is not run again; an operator's stop; a
run whose result Modal no longer keeps (7 days after completion) is taken when its artifact proves it.

The dead provider is stood in for by its runner child alone (`python -m providers.runs.runner run`), which
is exactly what a provider killed mid-`up` leaves behind: a detached run and its record."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from grpclib import Status

from providers.runs.run_records import read_record
from tests.modal_control_plane.clock import plane_with_clock
from tests.modal_control_plane.functions import RESULT_TTL_SECONDS
from tests.providers.grpc_harness import engine
from tests.providers.test_job import (
    ENV,
    LISTINGS,
    MARKER,
    URN,
    VOLUME,
    finished_calls,
    job,
    last_error_line,
    serve,
    start_detached,
)
from tests.providers.test_runner import wait_for

JOB = "sample_modal_app.write_artifact"


def script_gated(cp):
    """The function runs until the test says so; returns the event that says so."""
    release = threading.Event()

    def run(_args, _kwargs, volumes):
        assert release.wait(60), "the test never released the function"
        volumes.write(VOLUME, MARKER, b"{}")
        return {"ok": True}

    cp.on_function("write_artifact", run)
    return release


def test_a_running_detached_run_is_reattached_and_its_progress_continues(modal_control_plane):
    cp = modal_control_plane
    release = script_gated(cp)
    start_detached(cp)
    [call] = finished_calls(cp)
    with serve(cp) as server:
        eng = engine(server)
        results = {}
        thread = threading.Thread(target=lambda: results.setdefault("up", eng.up([job()])))
        thread.start()
        server.wait_for_stdout(lambda line: f"re-attached to its run {call.id}" in line)
        server.wait_for_stdout(lambda line: "write_artifact: running " in line)
        release.set()
        thread.join(60)
    up = results["up"]
    assert up.ok, up.errors
    assert up.ids[URN] == call.id and up.outputs[URN]["artifact_present"] is True
    assert [c.status for c in finished_calls(cp)] == ["succeeded"]
    assert read_record(ENV, VOLUME, JOB).outcome == "succeeded"


def test_a_run_that_succeeded_unseen_is_recorded_without_running(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    start_detached(cp)
    [call] = finished_calls(cp)
    wait_for(lambda: call.status == "succeeded", "the detached run to finish")
    with serve(cp) as server:
        mark = cp.mark()
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert up.ids[URN] == call.id
    assert "FunctionMap" not in cp.rpcs_called(mark) and len(finished_calls(cp)) == 1
    assert any("already succeeded; recording it without running anything" in line for line in up.stdout_lines)


def test_a_run_for_other_triggers_is_waited_for_never_run_alongside(modal_control_plane):
    cp = modal_control_plane
    release = script_gated(cp)
    start_detached(cp, {"revision": "r0"})
    [old] = finished_calls(cp)
    with serve(cp) as server:
        results = {}
        thread = threading.Thread(target=lambda: results.setdefault("up", engine(server).up([job()])))
        thread.start()
        server.wait_for_stdout(lambda line: f"its run {old.id} for other triggers is still going" in line)
        assert len(finished_calls(cp)) == 1  # not started alongside
        release.set()
        thread.join(60)
    up = results["up"]
    assert up.ok, up.errors
    assert [c.status for c in finished_calls(cp)] == ["succeeded", "succeeded"]
    assert up.ids[URN] == finished_calls(cp)[1].id


def test_a_success_whose_artifact_check_failed_is_not_run_again(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    with serve(cp) as server:
        eng = engine(server)
        for rpc in LISTINGS:  # whichever the volume's version uses (the sample app's is v1)
            cp.fail_next(rpc, 7, Status.UNAVAILABLE, "volume service down")
        failed = eng.up([job()])
        assert not failed.ok
        assert f"look for '{MARKER}' in volume '{VOLUME}'" in last_error_line(failed.errors)
        again = eng.up([job()])
    assert again.ok, again.errors
    [call] = finished_calls(cp)
    assert again.ids[URN] == call.id
    assert any("already succeeded" in line for line in again.stdout_lines)


def test_an_operator_stops_a_detached_run_and_the_next_up_starts_anew(modal_control_plane):
    cp = modal_control_plane
    release = script_gated(cp)
    start_detached(cp)
    [call] = finished_calls(cp)
    stopped = subprocess.run(
        [sys.executable, "-m", "providers.runs.run_records", "stop", "--env", ENV, "--volume", VOLUME, JOB],
        env=cp.subprocess_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped function call {call.id} (its containers and app {call.app_id} ended)" in stopped.stdout
    assert call.status == "cancelled" and cp.state.by_id[call.app_id].state == "stopped"
    assert read_record(ENV, VOLUME, JOB).outcome == "cancelled"
    release.set()
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    with serve(cp) as server:
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert [c.status for c in finished_calls(cp)] == ["cancelled", "succeeded"]


# ---------------------------------------------------------------------------------------------
# Results expire: Modal keeps a call's result 7 days after completion.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def aged(monkeypatch):
    """A control plane whose clock the test moves, connected like `modal_control_plane`."""
    with plane_with_clock(monkeypatch) as plane_and_clock:
        yield plane_and_clock


def succeeded_unseen_then_expired(cp, clock, *, writes_artifact: bool = True, **inputs: object) -> str:
    """A run that a dead provider started, that succeeded with nobody watching, and whose result Modal
    then stopped keeping. Returns its call id."""
    writes = {(VOLUME, MARKER): b"{}"} if writes_artifact else {}
    cp.script_function("write_artifact", result={"ok": True}, writes=writes)
    run = start_detached(cp, **inputs)
    [call] = finished_calls(cp)
    wait_for(lambda: call.status == "succeeded", "the detached run to finish")
    clock.advance(RESULT_TTL_SECONDS + 3600)
    return run["function_call_id"]


def test_a_run_whose_result_expired_is_recorded_by_its_artifact_without_running(aged):
    """Bug: an expired result was taken for a cancel, and the job ran again although its artifact,
    written by that very run, was in place."""
    cp, clock = aged
    call_id = succeeded_unseen_then_expired(cp, clock)
    with serve(cp) as server:
        mark = cp.mark()
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert up.ids[URN] == call_id and up.outputs[URN]["artifact_present"] is True
    assert "FunctionMap" not in cp.rpcs_called(mark) and len(finished_calls(cp)) == 1
    assert any("Modal no longer has the result" in line and "recording it as succeeded" in line
               for line in up.stdout_lines), up.stdout_lines  # fmt: skip
    assert read_record(ENV, VOLUME, JOB).outcome == "succeeded"


def test_a_run_whose_result_expired_without_its_artifact_runs_again(aged):
    cp, clock = aged
    call_id = succeeded_unseen_then_expired(cp, clock, writes_artifact=False)
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    with serve(cp) as server:
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert [call.status for call in finished_calls(cp)] == ["succeeded", "succeeded"]
    assert up.ids[URN] == finished_calls(cp)[1].id != call_id


def test_an_artifact_older_than_the_expired_run_proves_nothing(aged):
    """The artifact of an earlier run (left in place, e.g. by a run for other triggers) does not prove
    the run whose result expired: only one written after that run started does."""
    cp, clock = aged
    succeeded_unseen_then_expired(cp, clock, writes_artifact=False)
    started_at = read_record(ENV, VOLUME, JOB).started_at
    cp.put_file(VOLUME, MARKER, b"{}")
    with cp.state.lock:  # as if an earlier run had written it ten minutes before this one started
        cp.state.environments[ENV].volumes[VOLUME].mtimes[MARKER] = started_at - 600
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    with serve(cp) as server:
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert len(finished_calls(cp)) == 2
    assert any("no artifact written after it started proves it" in line for line in up.stdout_lines)


def test_a_run_judged_by_its_result_runs_again_once_the_result_expired(aged):
    cp, clock = aged
    succeeded_unseen_then_expired(cp, clock, require_ok=True)
    with serve(cp) as server:
        up = engine(server).up([job(require_ok=True)])
    assert up.ok, up.errors
    assert len(finished_calls(cp)) == 2
    assert any("its result is needed to judge it (require_ok)" in line for line in up.stdout_lines)
