"""The runner protocol on its own: `python -m providers.runs.runner run|deploy` as a child process with the
real modal client and the local control plane, and `invoke` (supervisor.py), the parent side the providers use."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from grpclib import Status

from providers.runs.module_runs import RESULT_PREFIX
from providers.runs.run_records import read_record
from providers.runs.supervisor import PROGRESS_SECONDS_ENV, child_argv, format_elapsed, invoke

ENV = "main"
VOLUME = "runner-data"
# Where sample_modal_app.py lives: put on PYTHONPATH through module_env (see that module).
SAMPLE_DIR = str(Path(__file__).resolve().parent)
# A value that must travel in the child's environment and never in its argv.
CANARY = "module-env-canary-4f1c"


# What `run` needs besides the function: where its run record goes and what the run is for.
RECORD = {"record_volume": VOLUME, "identity_digest": "0123456789abcdef", "timeout_seconds": "600"}


def module_env() -> dict[str, str]:
    return {"PYTHONPATH": SAMPLE_DIR, "SAMPLE_APP_CONFIG": json.dumps({"volume": VOLUME, "canary": CANARY})}


def run_child(cp, verb: str, **options: str) -> tuple[int, list[str], dict]:
    """Runs the child; returns its exit status, its human lines and its parsed result line."""
    status, lines, result, _ = run_child_with_stderr(cp, verb, **options)
    return status, lines, result


def run_child_with_stderr(cp, verb: str, **options: str) -> tuple[int, list[str], dict, str]:
    argv = child_argv(verb, **options)
    done = subprocess.run(
        argv, env={**cp.subprocess_env(), **module_env()}, capture_output=True, text=True, timeout=120, check=False
    )
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith(RESULT_PREFIX), done.stdout + done.stderr
    assert not any(line.startswith(RESULT_PREFIX) for line in lines[:-1])  # exactly one, the last
    return done.returncode, lines[:-1], json.loads(lines[-1][len(RESULT_PREFIX):]), done.stderr


def test_run_starts_a_detached_call_records_it_and_exits(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", seconds=3.0, result={"ok": True}, writes={(VOLUME, "marker"): b"1"})
    status, lines, result, stderr = run_child_with_stderr(
        cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD
    )
    [call] = cp.function_calls
    assert status == 0
    assert stderr == ""  # no warnings either
    started_at = result["started_at"]
    assert result == {"ok": True, "app_id": call.app_id, "function_call_id": call.id, "started_at": started_at}
    assert lines[0] == "importing sample_modal_app"
    assert f"started function call {call.id} in app {call.app_id}" in lines
    # The child is gone, the run is not: its detached app runs until the call ends, then stops.
    assert call.status == "running" and cp.state.by_id[call.app_id].state == "ephemeral"
    record = read_record(ENV, VOLUME, "sample_modal_app.write_artifact")
    assert record is not None and record.function_call_id == call.id and record.app_id == call.app_id
    assert record.identity_digest == RECORD["identity_digest"] and record.outcome is None
    assert record.deadline_at == record.started_at + 600
    wait_for(lambda: call.status == "succeeded", "the detached call to finish")
    wait_for(lambda: cp.state.by_id[call.app_id].state == "stopped", "its app to stop")
    assert cp.state.environments[ENV].apps == {}  # nothing was deployed


def test_a_runner_whose_stdout_reader_died_still_records_its_run_and_the_run_goes_on(modal_control_plane):
    """The provider that reads the child's stdout is gone (killed with `pulumi`) before the child
    prints: its lines meet a closed pipe, and the run is recorded and goes on all the same."""
    cp = modal_control_plane
    cp.script_function("write_artifact", seconds=2.0, result={"ok": True}, writes={(VOLUME, "marker"): b"1"})
    argv = child_argv("run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD)
    child = subprocess.Popen(argv, env={**cp.subprocess_env(), **module_env()}, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    child.stdout.close()  # the reader dies before the first line
    child.wait(timeout=120)

    [call] = cp.function_calls
    record = read_record(ENV, VOLUME, "sample_modal_app.write_artifact")
    assert record is not None and record.function_call_id == call.id
    wait_for(lambda: call.status == "succeeded", "the recorded run to finish")


def test_deploy_reports_id_version_and_web_urls(modal_control_plane):
    cp = modal_control_plane
    status, lines, result = run_child(
        cp, "deploy", module="sample_modal_app", app_name="runner-app", environment=ENV
    )
    assert status == 0
    deployed = cp.app("runner-app")
    assert result == {
        "ok": True,
        "app_id": deployed.id,
        "deployment_version": 1,
        "deployed_at": datetime.fromtimestamp(deployed.deployed_at, UTC).isoformat(timespec="seconds"),
        "web_urls": {"Web.serve": "https://control-plane-test--runner-app-web-serve.modal.run"},
        "noop": False,
        "duration_seconds": result["duration_seconds"],
    }
    assert lines[-1] == f"deployed app 'runner-app': {deployed.id} version 1"

    # The same definitions again: Modal's no-op, reported as one.
    status, lines, result = run_child(cp, "deploy", module="sample_modal_app", app_name="runner-app", environment=ENV)
    assert status == 0 and result["noop"] is True and result["deployment_version"] == 1
    assert lines[-1] == "Modal found no change to deploy: version 1 of 'runner-app' stays live"


def test_module_env_travels_in_the_environment_never_in_argv(modal_control_plane):
    cp = modal_control_plane
    seen: dict[str, bool] = {}

    def inspect_runner(_args, _kwargs, _volumes):
        # Runs while the child is still starting the run: look at the child as `ps` would.
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "providers.runs.runner" not in cmdline:
                continue
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            # Only the child of this test: other runners (other tests, other checkouts) may be alive.
            if cp.url.encode() in environ:
                seen["argv has canary"] = CANARY in cmdline
                seen["env has canary"] = CANARY.encode() in environ
        return {"ok": True}

    cp.on_function("write_artifact", inspect_runner)
    for rpc in ("VolumePutFiles", "VolumePutFiles2"):  # the record's write on either volume version
        cp.add_latency(rpc, 1.0)  # the child records the run after the spawn: keep it alive meanwhile
    status, _, result = run_child(
        cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD
    )
    assert status == 0, result
    wait_for(lambda: "argv has canary" in seen, "the function to look at the runner")
    assert seen == {"argv has canary": False, "env has canary": True}


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"module": "json", "function": "dumps"}, "module 'json' has no modal.App"),
        ({"module": "no_such_module_here", "function": "f"}, "ModuleNotFoundError"),
        ({"module": "sample_modal_app", "function": "missing"}, "functions: write_artifact"),
    ],
)
def test_import_problems_fail_in_the_import_phase(modal_control_plane, options, error):
    cp = modal_control_plane
    status, _, result = run_child(cp, "run", environment=ENV, **options, **RECORD)
    assert status == 1
    assert result["ok"] is False and result["phase"] == "import" and result["started"] is False
    assert error in result["error"]
    assert cp.mutating_calls() == []  # nothing was created on Modal


def test_invoke_forwards_lines_and_reports_progress(modal_control_plane, monkeypatch):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True})
    cp.add_latency("AppCreate", 1.0)  # a slow start, long enough for a progress line
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0.2")
    reported: list[str] = []
    outcome = invoke(
        "run",
        {"module": "sample_modal_app", "function": "write_artifact", "environment": ENV, **RECORD},
        module_env(),
        label="write_artifact",
        timeout_seconds=120,
        report=reported.append,
    )
    assert outcome.ok and not outcome.timed_out and outcome.exit_code == 0
    assert outcome.details["function_call_id"] == cp.function_calls[0].id
    assert "write_artifact: importing sample_modal_app" in reported
    assert any(line.startswith("write_artifact: running ") for line in reported)
    assert not any(RESULT_PREFIX in line for line in reported)  # the result is parsed, not shown


def test_a_runner_whose_provider_died_still_records_its_run_and_the_run_goes_on(modal_control_plane):
    """If the engine kills the provider mid-`up`, the run must not be lost: the next `up` re-attaches."""
    cp = modal_control_plane
    cp.script_function("write_artifact", seconds=3, result={"ok": True})
    cp.add_latency("FunctionMap", 1.0)  # the provider dies while its child is still starting the run
    argv = child_argv("run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD)
    # A stand-in for the provider process: starts the runner, then dies without a word.
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(300)", *argv],
        env={**cp.subprocess_env(), **module_env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: "FunctionMap" in cp.rpcs_called(), "the runner to start its function call")
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(lambda: read_record(ENV, VOLUME, "sample_modal_app.write_artifact") is not None, "the run's record")
    [call] = cp.function_calls
    assert call.status == "running"
    wait_for(lambda: call.status == "succeeded", "the orphaned run to finish")
    assert "FunctionCallCancel" not in cp.rpcs_called()


def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    """Polls `condition` (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_format_elapsed():
    assert format_elapsed(0) == "0s"
    assert format_elapsed(45.4) == "45s"
    assert format_elapsed(750) == "12m30s"
    assert format_elapsed(3725) == "1h02m05s"


def test_child_argv_carries_only_names():
    argv = child_argv("deploy", module="serving.app", app_name="glm", environment="main")
    assert argv[:2] == [sys.executable, "-u"]
    assert argv[2:5] == ["-m", "providers.runs.runner", "deploy"]
    assert argv[5:] == ["--module", "serving.app", "--app-name", "glm", "--environment", "main"]


# Both volume versions' write RPCs (a v1 record volume writes with VolumePutFiles, a v2 one with
# VolumePutFiles2): failing both fails the record write whatever the volume's version.
RECORD_WRITES = ("VolumePutFiles", "VolumePutFiles2")


def test_a_call_that_ended_before_its_record_failed_is_kept_by_its_id(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True})
    for rpc in RECORD_WRITES:
        cp.fail_next(rpc, 1000, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    status, lines, result = run_child(
        cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD
    )
    [call] = cp.function_calls
    assert status == 0, result
    assert result["recorded"] is False and result["function_call_id"] == call.id and call.status == "succeeded"
    assert "FunctionCallCancel" not in cp.rpcs_called()
    assert any(f"function call {call.id} had already ended (succeeded)" in line for line in lines), lines
    assert not any("cancelled" in line or "stopped" in line for line in lines)


def test_a_running_call_whose_record_failed_is_stopped_for_good_and_not_retried(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", seconds=120, result={"ok": True}, writes={(VOLUME, "late"): b"1"})
    for rpc in RECORD_WRITES:
        cp.fail_next(rpc, 1000, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    status, _, result = run_child(
        cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD
    )
    [call] = cp.function_calls
    assert status == 1
    assert result["started"] is True  # the provider must not run the child again: one call per attempt
    assert f"function call {call.id} was stopped before it finished" in result["error"]
    assert call.status == "cancelled" and cp.state.by_id[call.app_id].state == "stopped"
    [cancel] = [record for record in cp.calls if record.rpc == "FunctionCallCancel"]
    assert cancel.args["terminate_containers"] is True


def test_a_failed_environment_look_up_leaves_no_app_behind(modal_control_plane):
    """modal 1.6.4's `app.run()` creates the app while it looks its environment up; when the look-up
    fails, that app stays on Modal, unpublished and never stopped. The runner looks it up first."""
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True})
    cp.fail_next("EnvironmentGetOrCreate", 2, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    status, _, result = run_child(
        cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV, **RECORD
    )
    assert status == 0, result
    assert cp.pending_failures("EnvironmentGetOrCreate") == 0
    [call] = cp.function_calls
    wait_for(lambda: cp.state.by_id[call.app_id].state == "stopped", "the run's app to stop")
    assert [app.id for app in cp.state.ephemeral_apps] == [call.app_id]  # one app, the run's
