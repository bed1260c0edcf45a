"""The runner protocol on its own: `python -m providers.runner run|deploy` as a child process with the
real modal client and the local control plane, and `invoke` (supervisor.py), the parent side the providers use."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers.module_runs import RESULT_PREFIX
from providers.supervisor import PROGRESS_SECONDS_ENV, child_argv, format_elapsed, invoke

ENV = "main"
VOLUME = "runner-data"
# Where sample_modal_app.py lives: put on PYTHONPATH through module_env (see that module).
SAMPLE_DIR = str(Path(__file__).resolve().parent)
# A value that must travel in the child's environment and never in its argv.
CANARY = "module-env-canary-4f1c"


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


def test_run_prints_progress_then_one_result_line(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", result={"ok": True, "files": 3}, writes={(VOLUME, "marker"): b"1"})
    status, lines, result, stderr = run_child_with_stderr(
        cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV
    )
    [call] = cp.function_calls
    assert status == 0
    assert stderr == ""  # no warnings either
    assert result == {
        "ok": True,
        "app_id": call.app_id,
        "function_call_id": call.id,
        "duration_seconds": result["duration_seconds"],
        "result": {"ok": True, "files": 3},
    }
    assert lines[0] == "importing sample_modal_app"
    assert f"started function call {call.id} in app {call.app_id}" in lines
    assert cp.state.by_id[call.app_id].state == "stopped"  # ephemeral: over when the run is
    assert cp.state.environments[ENV].apps == {}  # nothing was deployed


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
        "duration_seconds": result["duration_seconds"],
    }
    assert lines[-1] == f"deployed app 'runner-app': {deployed.id} version 1"


def test_module_env_travels_in_the_environment_never_in_argv(modal_control_plane):
    cp = modal_control_plane
    seen: dict[str, bool] = {}

    def inspect_runner(_args, _kwargs, _volumes):
        # Runs while the child waits for this call: look at the child as `ps` would.
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "providers.runner" not in cmdline:
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
    status, _, result = run_child(cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV)
    assert status == 0, result
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
    status, _, result = run_child(cp, "run", environment=ENV, **options)
    assert status == 1
    assert result["ok"] is False and result["phase"] == "import" and result["started"] is False
    assert error in result["error"]
    assert cp.mutating_calls() == []  # nothing was created on Modal


def test_remote_failure_is_reported_as_started(modal_control_plane):
    cp = modal_control_plane
    cp.script_function("write_artifact", error="disk full")
    status, _, result = run_child(cp, "run", module="sample_modal_app", function="write_artifact", environment=ENV)
    assert status == 1
    assert result["error"] == "RuntimeError: disk full"
    assert (result["phase"], result["started"], result["transient"]) == ("running", True, False)
    assert result["app_id"] == cp.function_calls[0].app_id


def test_invoke_forwards_lines_and_reports_progress(modal_control_plane, monkeypatch):
    cp = modal_control_plane
    cp.script_function("write_artifact", seconds=1.0, result={"ok": True})
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0.2")
    reported: list[str] = []
    outcome = invoke(
        "run",
        {"module": "sample_modal_app", "function": "write_artifact", "environment": ENV},
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


def test_a_runner_whose_provider_died_cancels_its_call(modal_control_plane):
    """If the engine kills the provider mid-`up`, the orphaned runner must not keep a job running."""
    cp = modal_control_plane
    cp.script_function("write_artifact", seconds=120, result={"ok": True})
    argv = child_argv("run", module="sample_modal_app", function="write_artifact", environment=ENV)
    # A stand-in for the provider process: starts the runner, then dies without a word.
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(300)", *argv],
        env={**cp.subprocess_env(), **module_env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: len(cp.function_calls) == 1, "the runner to start its function call")
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(lambda: cp.function_calls[0].status == "cancelled", "the orphaned runner to cancel its call")


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
    assert argv[2:5] == ["-m", "providers.runner", "deploy"]
    assert argv[5:] == ["--module", "serving.app", "--app-name", "glm", "--environment", "main"]
