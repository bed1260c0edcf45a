"""A job's detached run and its record, through the real provider server and the control plane: a run
that a dead provider started is re-attached to, or taken when it already succeeded; a run for other
triggers is waited for; a success whose later step failed is not run again; an operator's stop.

The dead provider is stood in for by its runner child alone (`python -m providers.runner run`), which
is exactly what a provider killed mid-`up` leaves behind: a detached run and its record."""

from __future__ import annotations

import subprocess
import sys
import threading

from grpclib import Status

from providers.base import strip_internal
from providers.job import JobInputs
from providers.run_records import identity_digest, read_record
from providers.supervisor import child_argv
from tests.providers.grpc_harness import engine
from tests.providers.test_job import ENV, MARKER, URN, VOLUME, finished_calls, job, last_error_line, serve
from tests.providers.test_runner import wait_for

JOB = "sample_modal_app.write_artifact"


def start_detached(cp, triggers: dict | None = None) -> None:
    """What a provider killed mid-`up` leaves behind: its runner child started the run and recorded it."""
    inputs = JobInputs.model_validate(strip_internal(job(triggers).inputs))
    argv = child_argv("run", module=inputs.module, function=inputs.function, environment=ENV,
                      record_volume=inputs.run_record_volume, identity_digest=identity_digest(inputs.identity()),
                      timeout_seconds=str(inputs.timeout_seconds))  # fmt: skip
    done = subprocess.run(argv, env={**cp.subprocess_env(), **inputs.module_env}, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


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
        cp.fail_next("VolumeListFiles", 7, Status.UNAVAILABLE, "volume service down")  # the sample app's volume is v1
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
        [sys.executable, "-m", "providers.run_records", "stop", "--env", ENV, "--volume", VOLUME, JOB],
        env=cp.subprocess_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert f"cancelled function call {call.id}" in stopped.stdout
    assert call.status == "cancelled"
    assert read_record(ENV, VOLUME, JOB).outcome == "cancelled"
    release.set()
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    with serve(cp) as server:
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert [c.status for c in finished_calls(cp)] == ["cancelled", "succeeded"]
