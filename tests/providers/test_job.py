"""ModalJob through the real dynamic-provider gRPC server, the real modal client (in the provider's
runner subprocess) and the local control plane: a run per distinct triggers, proof by artifact,
drift, failures, the timeout, retries, progress lines, and what check/diff may (not) do."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import modal
import pytest
from grpclib import Status

from providers.base import strip_internal
from providers.job import RESULT_PREVIEW_CHARS, JobInputs, JobProvider, ModalJob, _require_ok
from providers.modal_access.function_calls import Look, stop_run
from providers.runs.module_runs import RESULT_PREFIX
from providers.runs.run_records import identity_digest, read_record
from providers.runs.supervisor import PROGRESS_SECONDS_ENV, child_argv
from providers.shared import ProviderError, register_secrets
from tests.modal_control_plane.functions import DETACHED_APP_STOP_MODES, ContainerTerminated
from tests.providers.grpc_harness import FAST_RETRY_ENV, PROVIDER_MUTATIONS, desired, engine, urn_of
from tests.pulumi_engine.provider_server import ProviderCallError, ProviderServer

ENV = "main"
VOLUME = "job-artifacts"
MARKER = "done/marker.json"
URN = urn_of(ModalJob, "write")
# Where sample_modal_app.py lives: put on PYTHONPATH through module_env (see that module).
SAMPLE_DIR = str(Path(__file__).resolve().parent)
# Progress every 0.2 s instead of 30 s, so a one-second job prints some.
FAST_PROGRESS_ENV = {PROGRESS_SECONDS_ENV: "0.2"}
JOB_NAME = "sample_modal_app.write_artifact"
# The file RPCs of both volume versions (modal/volume.py): a test that fails one fails both, so it
# holds whichever version the volume has.
LISTINGS = ("VolumeListFiles", "VolumeListFiles2")
RECORD_WRITES = ("VolumePutFiles", "VolumePutFiles2")


@contextmanager
def serve(cp) -> Iterator[ProviderServer]:
    with ProviderServer(extra_env={**cp.client_env, **FAST_RETRY_ENV, **FAST_PROGRESS_ENV}) as server:
        yield server


def module_env(**config: object) -> dict[str, str]:
    return {"PYTHONPATH": SAMPLE_DIR, "SAMPLE_APP_CONFIG": json.dumps({"volume": VOLUME, **config})}


def job(triggers: dict | None = None, **inputs: object):
    props = {
        "module": "sample_modal_app",
        "function": "write_artifact",
        "environment": ENV,
        "module_env": module_env(),
        "triggers": triggers if triggers is not None else {"revision": "r1"},
        "artifact": {"volume": VOLUME, "path": MARKER},
        "timeout_seconds": 120,
        **inputs,
    }
    return desired(ModalJob, JobProvider(), "write", props)


def script_success(cp, seconds: float = 0.0) -> None:
    cp.script_function("write_artifact", seconds=seconds, result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})


def finished_calls(cp) -> list:
    return [call for call in cp.function_calls if call.tag == "write_artifact"]


def start_detached(cp, triggers: dict | None = None, **inputs: object) -> dict:
    """What a provider killed mid-`up` leaves behind: its runner child started the run and recorded it.
    Returns the child's result (function_call_id, app_id, started_at)."""
    parsed = JobInputs.model_validate(strip_internal(job(triggers, **inputs).inputs))
    argv = child_argv("run", module=parsed.module, function=parsed.function, environment=ENV,
                      record_volume=parsed.run_record_volume, identity_digest=identity_digest(parsed.identity()),
                      timeout_seconds=str(parsed.timeout_seconds))  # fmt: skip
    done = subprocess.run(argv, env={**cp.subprocess_env(), **parsed.module_env}, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].removeprefix(RESULT_PREFIX))


def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    """Polls `condition` (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def last_error_line(errors: list[str]) -> str:
    """The provider's own message: the gRPC details end with it, after the server's traceback."""
    return errors[-1].strip().splitlines()[-1]


def test_lifecycle_runs_once_per_triggers(modal_control_plane):
    cp = modal_control_plane
    script_success(cp, seconds=1.0)
    with serve(cp) as server:
        eng = engine(server)

        preview = eng.preview([job()])
        assert preview.ok, preview.errors
        assert cp.calls == []  # a preview never reaches Modal

        up = eng.up([job()])
        assert up.ok, up.errors
        [call] = finished_calls(cp)
        assert call.status == "succeeded"
        outputs = up.outputs[URN]
        assert outputs["artifact_present"] is True
        assert outputs["function_call_id"] == call.id == up.ids[URN]
        assert outputs["run_app_id"] == call.app_id
        assert outputs["triggers"] == {"revision": "r1"}
        # The run was ephemeral: nothing was deployed, and the run's app is over.
        run_app = cp.state.by_id[call.app_id]
        assert run_app.state == "stopped"
        assert cp.state.environments[ENV].apps == {}
        # Progress reached the provider's stdout (what `pulumi up` shows): the runner's lines and ours.
        assert any(line == f"[modal] write_artifact: started function call {call.id} in app {call.app_id}"
                   for line in up.stdout_lines), up.stdout_lines  # fmt: skip
        assert any(line.startswith("[modal] write_artifact: running ") for line in up.stdout_lines)

        mark = cp.mark()
        again = eng.up([job()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == []  # no Modal call at all, so no run
        assert again.calls_of(*PROVIDER_MUTATIONS) == []
        assert len(finished_calls(cp)) == 1

        mark = cp.mark()
        tuned = eng.up([job(module_env=module_env(note="unrelated"), timeout_seconds=300)])
        assert tuned.ok and tuned.counts["update"] == 1
        assert cp.calls_since(mark) == []  # module_env/timeout apply to the next run; nothing re-runs
        assert tuned.outputs[URN]["function_call_id"] == call.id

        rerun = eng.up([job(triggers={"revision": "r2"})])
        assert rerun.ok, rerun.errors
        assert rerun.counts["replace"] == 1
        assert rerun.step(URN).keys == ("triggers",)
        assert len(finished_calls(cp)) == 2
        assert rerun.ids[URN] == finished_calls(cp)[1].id != call.id

        mark = cp.mark()
        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.mutating_calls(mark) == []  # forgetting a run changes nothing on Modal
        assert MARKER in cp.volume_files(VOLUME)  # the artifact is data: it stays


def test_removed_artifact_is_drift_and_next_up_reruns(modal_control_plane):
    cp = modal_control_plane
    script_success(cp)
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([job()]).ok

        mark = cp.mark()
        refreshed = eng.refresh()
        assert refreshed.ok, refreshed.errors
        assert refreshed.step(URN).keys == ()  # still there: no drift
        assert cp.mutating_calls(mark) == []

        cp.remove_file(VOLUME, MARKER)
        drifted = eng.refresh()
        assert drifted.ok, drifted.errors
        assert drifted.outputs[URN]["artifact_present"] is False
        assert drifted.step(URN).keys == ("artifact",)
        assert any("is gone from volume" in line for line in drifted.stdout_lines)

        preview = eng.preview([job()])
        assert preview.step(URN).op == "replace"  # `pulumi preview` already says it will re-run

        rerun = eng.up([job()])
        assert rerun.ok, rerun.errors
        assert rerun.counts["replace"] == 1
        assert len(finished_calls(cp)) == 2
        assert rerun.outputs[URN]["artifact_present"] is True
        assert MARKER in cp.volume_files(VOLUME)


def test_failed_run_records_nothing_and_a_rerun_converges(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", error="repository not found: org/model")
    with serve(cp) as server:
        eng = engine(server)
        failed = eng.up([job()])
        assert not failed.ok
        message = last_error_line(failed.errors)
        assert "write_artifact in environment 'main': its run fc-1 ran on Modal and failed" in message
        assert "RuntimeError: repository not found: org/model" in message
        assert "modal app logs ap-" in message and "runs it again" in message
        assert eng.state.get(URN) is None  # nothing recorded as done

        script_success(cp)
        retried = eng.up([job()])
        assert retried.ok, retried.errors
        assert retried.counts["create"] == 1
        assert [call.status for call in finished_calls(cp)] == ["failed", "succeeded"]


def test_success_without_the_artifact_is_a_failure(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True})  # returns, but writes nothing
    with serve(cp) as server:
        eng = engine(server)
        failed = eng.up([job()])
        assert not failed.ok
        assert f"its artifact '{MARKER}' is not in volume '{VOLUME}'" in last_error_line(failed.errors)
        assert eng.state.get(URN) is None


def test_require_ok_fails_on_a_result_that_is_not_ok(modal_control_plane):
    cp = modal_control_plane
    cp.script_function(
        "write_artifact", result={"ok": False, "failures": ["kernels: no marker"]}, writes={(VOLUME, MARKER): b"{}"}
    )
    with serve(cp) as server:
        eng = engine(server)
        failed = eng.up([job(require_ok=True)])
        assert not failed.ok
        message = last_error_line(failed.errors)
        assert "did not report success" in message and "kernels: no marker" in message
        assert eng.state.get(URN) is None


def writer_past_the_cancel(cp) -> tuple[threading.Event, list]:
    """The job's work goes on in a thread a cancel's InputCancellation does not reach (a download in a
    thread pool) until the test releases it, then writes LATE; returns (release, what it met)."""
    release, seen = threading.Event(), []

    def run(_args, _kwargs, volumes):
        assert release.wait(60), "the test never released the function"
        try:
            volumes.write(VOLUME, LATE, b"written after the stop")
        except BaseException as error:
            seen.append(error)
            raise
        return {"ok": True}

    cp.on_function("write_artifact", run)
    return release, seen


LATE = "partial/shard.bin"


def test_timeout_stops_the_run_for_good(modal_control_plane):
    """Bug: the deadline cancelled with Modal's default (InputCancellation in the main thread only), so
    the work went on writing into the volume after `up` said the run was stopped."""
    cp = modal_control_plane
    release, seen = writer_past_the_cancel(cp)
    with serve(cp) as server:
        eng = engine(server)
        started = time.monotonic()
        failed = eng.up([job(timeout_seconds=2)])
        elapsed = time.monotonic() - started
        assert not failed.ok
        assert "timed out after 2s and was stopped" in last_error_line(failed.errors)
        assert elapsed < 60  # a bound on a hang, far from 2 s
        [call] = finished_calls(cp)
        assert call.status == "cancelled" and call.containers_running == 0  # no GPU keeps burning
        [cancel] = [record for record in cp.calls if record.rpc == "FunctionCallCancel"]
        assert cancel.args["terminate_containers"] is True
        assert cp.state.by_id[call.app_id].state == "stopped"
        server.wait_for_stdout(lambda line: f"write_artifact: its run {call.id} timed out after 2s" in line)
        assert eng.state.get(URN) is None
    release.set()
    wait_for(lambda: seen, "the stopped work to try its write")
    assert LATE not in cp.volume_files(VOLUME)


@pytest.mark.parametrize("text", ["", "Function call was cancelled", "Container exited"])
def test_an_operator_stop_while_an_up_waits_is_reported_as_a_stop_whatever_modal_says(modal_control_plane, text):
    """Bug: a stop was recognised by the word "cancel" in Modal's answer. Modal's container says
    nothing at all (RemoteError("")), and what Modal says for a killed one is not documented."""
    cp = modal_control_plane
    cp.runner.terminated_message = text
    release, _ = writer_past_the_cancel(cp)
    with serve(cp) as server:
        results = {}
        thread = threading.Thread(target=lambda: results.setdefault("up", engine(server).up([job()])))
        thread.start()
        wait_for(lambda: read_record(ENV, VOLUME, JOB_NAME) is not None, "the run to be recorded")
        stopped = subprocess.run(
            [sys.executable, "-m", "providers.runs.run_records", "stop", "--env", ENV, "--volume", VOLUME, JOB_NAME],
            env=cp.subprocess_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        thread.join(120)
    release.set()
    assert stopped.returncode == 0, stopped.stderr
    up = results["up"]
    assert not up.ok
    message = last_error_line(up.errors)
    assert "was stopped by an operator" in message, (message, stopped.stdout, stopped.stderr)
    assert "failed" not in message


def test_a_quick_run_whose_record_cannot_be_written_is_kept_not_cancelled(modal_control_plane):
    """Bug: with the run-record write failing for good, the runner cancelled a call that had already
    succeeded (a no-op), said it was cancelled, and the next `up` ran the job again. Both file RPC
    families fail: a v1 record volume writes with VolumePutFiles, a v2 one with VolumePutFiles2."""
    cp = modal_control_plane
    script_success(cp)
    for rpc in RECORD_WRITES:
        cp.fail_next(rpc, 1000, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([job()])
        assert up.ok, up.errors
        [call] = finished_calls(cp)
        assert up.ids[URN] == call.id and call.status == "succeeded"  # the provider holds its id
        assert "FunctionCallCancel" not in cp.rpcs_called()
        assert not any("cancelled" in line or "stopped" in line for line in up.stdout_lines), up.stdout_lines
        assert any(f"function call {call.id} had already ended" in line for line in up.stdout_lines)
        assert sum(1000 - cp.pending_failures(rpc) for rpc in RECORD_WRITES) > 0  # the fault was met
        again = eng.up([job()])
    cp.faults.clear()
    assert again.ok and again.counts["same"] == 1
    assert len(finished_calls(cp)) == 1  # what succeeded on Modal is not repeated


def test_a_long_run_whose_record_cannot_be_written_is_stopped_and_says_so(modal_control_plane):
    cp = modal_control_plane
    release, seen = writer_past_the_cancel(cp)
    for rpc in RECORD_WRITES:
        cp.fail_next(rpc, 1000, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    with serve(cp) as server:
        failed = engine(server).up([job()])
    cp.faults.clear()
    release.set()
    assert not failed.ok
    [call] = finished_calls(cp)
    message = last_error_line(failed.errors)
    assert f"function call {call.id} was stopped before it finished" in message, message
    assert "its run record could not be written" in message
    assert call.status == "cancelled" and cp.state.by_id[call.app_id].state == "stopped"
    wait_for(lambda: seen, "the stopped work to try its write")
    assert LATE not in cp.volume_files(VOLUME)
    assert len(finished_calls(cp)) == 1  # not retried: one stopped call, not one per attempt


def test_a_stop_looks_at_the_call_first_and_keeps_one_that_succeeded(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True})
    run = start_detached(cp)
    wait_for(lambda: finished_calls(cp)[0].status == "succeeded", "the run to succeed")
    mark = cp.mark()

    stop = stop_run(run["function_call_id"], run["app_id"])

    assert stop.look == Look("succeeded", {"ok": True}) and not stop.cancelled and stop.confirmed
    assert "FunctionCallCancel" not in cp.rpcs_called(mark)


@pytest.mark.parametrize("mode", DETACHED_APP_STOP_MODES)
def test_no_new_run_starts_while_a_run_cancelled_elsewhere_still_writes(modal_control_plane, mode):
    """Bug: a run cancelled with Modal's default (the dashboard, a script) keeps its other threads
    writing; the next `up` started a new run into the same volume at once."""
    cp = modal_control_plane
    cp.runner.detached_app_stop = mode
    release, seen = threading.Event(), []

    def run(_args, _kwargs, volumes):
        if not seen:  # the first run: its work outlives the cancel
            seen.append("first")
            assert release.wait(60), "the test never released the function"
            try:
                volumes.write(VOLUME, LATE, b"written after the cancel")
            except BaseException as error:
                seen.append(error)
                raise
            return {"ok": True}
        volumes.write(VOLUME, MARKER, b"{}")
        return {"ok": True}

    cp.on_function("write_artifact", run)
    first = start_detached(cp)
    modal.FunctionCall.from_id(first["function_call_id"]).cancel()  # Modal's default, from elsewhere
    with serve(cp) as server:
        up = engine(server).up([job()])
    assert up.ok, up.errors
    assert cp.state.by_id[first["app_id"]].state == "stopped"
    release.set()
    wait_for(lambda: len(seen) == 2, "the first run's work to try its write")
    assert isinstance(seen[1], ContainerTerminated)  # its container was gone before the new run began
    assert LATE not in cp.volume_files(VOLUME)
    assert [call.status for call in finished_calls(cp)] == ["cancelled", "succeeded"]


@pytest.mark.parametrize("rpc", ["AppCreate", "FunctionCreate", "FunctionMap"])
def test_survives_two_transient_failures_of_each_setup_rpc(modal_control_plane, rpc):
    """UNAVAILABLE is retried by the modal client itself; RESOURCE_EXHAUSTED (throttling) it does not
    retry, so our layer runs the child again -- safe, since no function call had started."""
    cp = modal_control_plane
    script_success(cp)
    cp.fail_next(rpc, 2, Status.UNAVAILABLE)
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([job()])
        assert up.ok, up.errors
        assert cp.pending_failures(rpc) == 0
        assert len(finished_calls(cp)) == 1

        cp.fail_next(rpc, 2, Status.RESOURCE_EXHAUSTED, "rate limited")
        rerun = eng.up([job(triggers={"revision": "r2"})])
        assert rerun.ok, rerun.errors
        assert cp.pending_failures(rpc) == 0
        assert len(finished_calls(cp)) == 2  # the retried runs started no extra call
        retries = [line for line in rerun.stdout_lines if "transient failure" in line]
        # One retry per failed child; a child creating two functions at once meets both failures.
        assert 1 <= len(retries) <= 2 and "ResourceExhaustedError: rate limited" in retries[0]


def test_artifact_check_survives_two_transient_failures(modal_control_plane):
    cp = modal_control_plane
    script_success(cp)
    # Volume listings stream, and the modal client does not retry streams: our layer does.
    for rpc in LISTINGS:
        cp.fail_next(rpc, 2, Status.UNAVAILABLE)
    with serve(cp) as server:
        up = engine(server).up([job()])
        assert up.ok, up.errors
        [used] = [rpc for rpc in LISTINGS if cp.pending_failures(rpc) == 0]
        assert cp.rpcs_called().count(used) == 3


def test_the_artifact_volume_lookup_is_not_retried_on_top_of_the_client(modal_control_plane):
    """The volume lookup is a unary call the modal client already retries (4 attempts): only the
    listing, a stream, gets our retries. Retrying the lookup too would make 16 attempts of an outage."""
    cp = modal_control_plane
    script_success(cp)
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([job()]).ok
        cp.fail_next("VolumeGetOrCreate", 5, Status.UNAVAILABLE, "load balancer says no")
        mark = cp.mark()
        refreshed = eng.refresh()
        assert not refreshed.ok
        assert cp.rpcs_called(mark) == ["VolumeGetOrCreate"] * 4
        assert "ServiceError: load balancer says no" in refreshed.errors[0]


def test_throttled_polls_after_the_function_started_are_retried_never_rerun(modal_control_plane):
    """Once a call exists, a fresh run could start a second copy of a 1-hour job: the poll is retried."""
    cp = modal_control_plane
    script_success(cp, seconds=0.5)
    cp.fail_next("FunctionGetOutputs", 2, Status.RESOURCE_EXHAUSTED, "rate limited")
    with serve(cp) as server:
        up = engine(server).up([job()])
        assert up.ok, up.errors
        assert cp.pending_failures("FunctionGetOutputs") == 0
        assert len(finished_calls(cp)) == 1
        assert any("transient ResourceExhaustedError" in line for line in up.stdout_lines), up.stdout_lines


def test_import_failure_names_the_cause(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        env_without_config = {"PYTHONPATH": SAMPLE_DIR}
        failed = engine(server).up([job(module_env=env_without_config)])
        assert not failed.ok
        text = failed.errors[-1]
        assert "failed (import): importing module 'sample_modal_app' failed: KeyError: 'SAMPLE_APP_CONFIG'" in text
        assert "Nothing ran on Modal" in text
        assert cp.mutating_calls() == []


def test_the_first_run_note_is_printed_when_the_job_is_new_only(modal_control_plane):
    cp = modal_control_plane
    note = "old kernels prove nothing about this release"
    with serve(cp) as server:
        inputs = job(first_run_note=note).inputs
        assert server.check(URN, inputs).failures == []  # a create: the engine hands no old inputs
        server.wait_for_stdout(lambda line: line.endswith(f"write_artifact, first run: {note}"))
        before = len(server.stdout_lines)
        server.check(URN, inputs, olds=inputs)  # an existing job: nothing to say
        wait_for(server.output_read, "all the provider printed while checking has been read")
        assert not any(note in line for line in server.stdout_lines[before:])
    assert cp.calls == []


def test_check_rejects_bad_inputs_per_property(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        good = job().inputs

        def failures(**changes: object) -> dict[str, str]:
            result = server.check(URN, {**good, **changes})
            return {failure.property: failure.reason for failure in result.failures}

        assert failures() == {}
        assert set(failures(module="serving..app")) == {"module"}
        assert set(failures(function="write-artifact")) == {"function"}
        assert set(failures(environment="en-123")) == {"environment"}
        reserved = failures(module_env={"MODAL_TOKEN_SECRET": "x"})
        assert set(reserved) == {"module_env.MODAL_TOKEN_SECRET"}
        assert "never from state" in reserved["module_env.MODAL_TOKEN_SECRET"]
        assert set(failures(module_env={"NOT A NAME": "x"})) == {"module_env.NOT A NAME"}
        assert set(failures(module_env={"A": 1.0})) == {"module_env.A"}
        assert set(failures(artifact={"volume": VOLUME, "path": "../escape"})) == {"artifact.path"}
        assert set(failures(artifact={"volume": "bad name!", "path": MARKER})) == {"artifact.volume"}
        assert set(failures(artifact={"volume": VOLUME, "path": MARKER, "size": 1.0})) == {"artifact.size"}
        assert set(failures(timeout_seconds=0.0)) == {"timeout_seconds"}
        assert set(failures(triggers="r1")) == {"triggers"}
        assert set(failures(surprise=True)) == {"surprise"}
        missing = {k: v for k, v in good.items() if k != "function"}
        assert {f.property for f in server.check(URN, missing).failures} == {"function"}
    assert cp.calls == []  # check never calls Modal


def test_diff_is_precise_and_never_calls_modal(modal_control_plane):
    cp = modal_control_plane
    script_success(cp)
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([job()]).ok
        state = eng.state.resources[URN]
        mark = cp.mark()

        def diff(outputs: dict | None = None, **changes: object):
            news = server.check(URN, {**job().inputs, **changes}).inputs
            return server.diff(state.id, URN, outputs or state.outputs, news, state.inputs)

        assert diff().changes == "none"
        for replacing, value in [
            ("triggers", {"revision": "r2"}),
            ("module", "other_module"),
            ("function", "other_function"),
            ("environment", "staging"),
            ("artifact", {"volume": VOLUME, "path": "other"}),
        ]:
            result = diff(**{replacing: value})
            assert (result.changes, result.replaces) == ("some", [replacing]), replacing
        for in_place, value in [("module_env", module_env(extra="x")), ("timeout_seconds", 60.0), ("require_ok", True)]:
            result = diff(**{in_place: value})
            assert (result.changes, result.replaces) == ("some", []), in_place
        gone = diff({**state.outputs, "artifact_present": False})
        assert (gone.changes, gone.replaces) == ("some", ["artifact"])
        assert cp.calls_since(mark) == []


def test_a_job_cannot_be_imported(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        with pytest.raises(ProviderCallError) as error:
            server.read("fc-1", URN, {"__provider": job().inputs["__provider"]})
        assert "cannot be imported" in error.value.details
    assert cp.calls == []


def test_runs_the_serving_apps_verify_setup(modal_control_plane):
    """The real serving module through the job provider: `verify_setup` of serving/app.py, whose
    body the control plane runs with serving.jobs.verify against the volumes' files, proven by the
    compile marker and required to report ok. The provider itself knows nothing about GLM."""
    from serving import jobs
    from serving.config import CONFIG_ENV_VAR, WEIGHT_SENTINEL, DeploymentConfig

    cp = modal_control_plane
    cfg = DeploymentConfig.model_validate({"app_name": "glm-job-test", "model": {"weights": "dummy"}})
    storage = cfg.storage
    for secret in (cfg.secrets.hf_token, cfg.secrets.api_key):
        cp.create_secret(secret, {"PLACEHOLDER": "x"})  # the app's functions reference both

    def verify_in_volumes(_args, _kwargs, volumes):
        # What the container would do, with the volumes where the config says they are mounted.
        with volumes.local_dir(storage.weights_volume) as weights, volumes.local_dir(storage.kernels_volume) as kernels:
            mounted = storage.model_copy(update={"weights_mount": str(weights), "kernels_mount": str(kernels)})
            return jobs.verify(cfg.model_copy(update={"storage": mounted}))

    cp.on_function("verify_setup", verify_in_volumes)
    directory = cfg.model.directory
    cp.put_file(storage.weights_volume, f"{directory}/{WEIGHT_SENTINEL}", b"{}")
    cp.put_file(storage.weights_volume, f"{directory}/{jobs.DOWNLOAD_RECORD}",
                json.dumps({"weights": cfg.weights_inputs()}).encode())  # fmt: skip

    verify = desired(ModalJob, JobProvider(), "verify", {
        "module": "serving.app",
        "function": "verify_setup",
        "environment": ENV,
        "module_env": {CONFIG_ENV_VAR: cfg.to_json()},
        "triggers": {"kernels": cfg.kernel_fingerprint()},
        "artifact": {"volume": storage.kernels_volume, "path": cfg.compile_marker_name},
        "require_ok": True,
        "timeout_seconds": 300,
    })  # fmt: skip
    urn = urn_of(ModalJob, "verify")
    with serve(cp) as server:
        eng = engine(server)
        incomplete = eng.up([verify])
        assert not incomplete.ok
        assert "kernels: no DeepGEMM compile marker" in last_error_line(incomplete.errors)
        assert eng.state.get(urn) is None

        marker = jobs.compile_marker(cfg, ["python3", "-m", "sglang.compile_deep_gemm"], datetime.now(UTC))
        cp.put_file(storage.kernels_volume, cfg.compile_marker_name, json.dumps(marker).encode())
        ready = eng.up([verify])
        assert ready.ok, ready.errors
        assert ready.outputs[urn]["artifact_present"] is True
        assert [call.status for call in cp.function_calls] == ["succeeded", "succeeded"]
        assert cp.state.environments[ENV].apps == {}  # ran ephemerally: nothing deployed



@pytest.mark.parametrize(
    ("secret", "result_of"),
    [
        # Straddling the point where the quoted result is cut: a fragment would survive redaction.
        ("canary-secret-77e1a0", lambda secret: {"log": "e" * (RESULT_PREVIEW_CHARS - len('{"log": "') - 8) + secret}),
        # Not plain ASCII: json.dumps would escape it into a spelling redaction does not know.
        ("sécret-canary-0b4d2e", lambda secret: {"log": secret}),
    ],
    ids=["cut-through", "non-ascii"],
)
def test_a_failed_result_quoted_in_the_error_carries_no_secret(secret, result_of):
    register_secrets([secret])
    inputs = JobInputs(module="m", function="f", environment=ENV, record_volume=VOLUME)

    with pytest.raises(ProviderError) as raised:
        _require_ok(inputs, result_of(secret))

    message = str(raised.value)
    assert "did not report success" in message
    assert secret[:8] not in message and secret[-8:] not in message
