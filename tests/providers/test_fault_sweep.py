"""What succeeded on Modal is never thrown away or repeated: a first `up` under faults on every RPC.

The first `up` of a small stack shaped like ours (environment, secret, volume, a job proven by an
artifact, an app deployment; tests/providers/sample_modal_app.py) goes through the real provider
server, the real modal client (in the provider and in its runner children) and the control plane.
The fault-free `up` names the RPCs it makes; then, for each of them, a fresh `up` meets two
transient failures (UNAVAILABLE) followed by two rate-limit replies (RESOURCE_EXHAUSTED) of that
RPC, and must succeed with Modal's final state equal to the fault-free one: the job run once, one
deployment version, no ephemeral app left live. A persistent failure fails the `up` with a message
naming the object, and the next `up` converges without running the job again.

Speed: one provider server for the whole sweep, and each case in a Modal environment of its own on
one control plane (the faults are per RPC, so cases run one after another).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

import pytest
from grpclib import Status

from providers.app import AppProvider, ModalAppDeployment
from providers.environment import EnvironmentProvider, ModalEnvironment
from providers.job import JobProvider, ModalJob
from providers.secret import ModalSecret, SecretProvider
from providers.volume import ModalVolume, VolumeProvider
from tests.modal_control_plane import ControlPlane
from tests.modal_control_plane.state import App
from tests.providers.grpc_harness import FAST_RETRY_ENV, desired, engine, urn_of
from tests.providers.test_job import FAST_PROGRESS_ENV, SAMPLE_DIR
from tests.pulumi_engine.provider_server import ProviderServer

VOLUME = "sweep-data"
MARKER = "done/marker.json"
APP = "sweep-web"
# Each fault's replies, in order: what the modal client retries itself, then what only we retry.
FAULTS = ((Status.UNAVAILABLE, "injected outage"), (Status.RESOURCE_EXHAUSTED, "injected rate limit"))
# RPCs a fault cannot reach our code through: the client's heartbeat loop swallows its own failures.
UNREACHABLE = {"AppHeartbeat"}


def stack(env: str) -> list:
    module_env = {"PYTHONPATH": SAMPLE_DIR,
                  "SAMPLE_APP_CONFIG": json.dumps({"volume": VOLUME, "app_name": APP, "marker": MARKER})}  # fmt: skip
    return [
        desired(ModalEnvironment, EnvironmentProvider(), "env", {"name": env}),
        desired(ModalSecret, SecretProvider(), "token", {"name": "sweep-token", "environment": env,
                                                         "values": {"TOKEN": "sweep-token-value-5d1e"}},
                secret_inputs=("values",)),
        desired(ModalVolume, VolumeProvider(), "data", {"name": VOLUME, "environment": env}),
        desired(ModalJob, JobProvider(), "job", {
            "module": "sample_modal_app", "function": "write_artifact", "environment": env,
            "module_env": module_env, "triggers": {"revision": "r1"},
            "artifact": {"volume": VOLUME, "path": MARKER}, "timeout_seconds": 300,
        }),
        desired(ModalAppDeployment, AppProvider(), "web", {
            "module": "sample_modal_app", "app_name": APP, "environment": env, "module_env": module_env,
            "source_digest": "sha256:one",
        }),
    ]  # fmt: skip


def modal_state(cp, env: str) -> dict[str, Any]:
    """What a fault must not change: runs, deployments, live apps and the objects of the environment."""
    environment = cp.state.environments[env]
    apps = [obj for obj in cp.state.by_id.values() if isinstance(obj, App) and obj.environment == env]
    return {
        "runs": sorted((call.tag, call.status) for call in cp.function_calls if call.environment == env),
        "deployments": {name: app.deployment_version for name, app in environment.apps.items()},
        "live_ephemeral_apps": [app.id for app in apps if app.state in ("initializing", "ephemeral")],
        "secrets": sorted(environment.secrets),
        "volume_files": sorted(environment.volumes[VOLUME].files),
    }


@contextmanager
def provider_for(cp):
    cp.script_function("write_artifact", result={"ok": True}, writes={(VOLUME, MARKER): b"{}"})
    with ProviderServer(extra_env={**cp.client_env, **FAST_RETRY_ENV, **FAST_PROGRESS_ENV}) as server:
        yield server


@pytest.fixture
def sweep_server(modal_control_plane):
    with provider_for(modal_control_plane) as server:
        yield modal_control_plane, server


def first_up(cp, server, env: str):
    mark = cp.mark()
    up = engine(server).up(stack(env))
    return up, cp.calls_since(mark)


def faulty_up(cp, server, rpc: str, env: str) -> tuple[dict, int]:
    """A first `up` whose `rpc` meets the faults: what went wrong (empty: nothing), and the faults left."""
    for status, message in FAULTS:
        cp.fail_next(rpc, 2, status, message)
    up, _ = first_up(cp, server, env)
    leftover = cp.pending_failures(rpc)
    cp.faults.clear()
    state = modal_state(cp, env)
    return {"ok": up.ok, "state": state, "errors": up.errors[-1:]}, leftover


def test_every_rpc_of_a_first_up_survives_two_outages_and_two_rate_limits(sweep_server):
    cp, server = sweep_server
    clean, calls = first_up(cp, server, "sweep-clean")
    assert clean.ok, clean.errors
    expected = modal_state(cp, "sweep-clean")
    assert expected["runs"] == [("write_artifact", "succeeded")] and expected["deployments"] == {APP: 1}
    assert expected["live_ephemeral_apps"] == []
    rpcs = sorted({call.rpc for call in calls} - UNREACHABLE)
    # The stack's volume is v1 (providers/volume.py NEW_VOLUME_VERSION): its file RPCs are v1's.
    assert {"FunctionMap", "FunctionGetOutputs", "AppPublish", "VolumePutFiles", "VolumeListFiles"} <= set(rpcs)

    failed, unreached = {}, []
    for index, rpc in enumerate(rpcs):
        outcome, leftover = faulty_up(cp, server, rpc, f"sweep-{index}")
        if leftover == 2 * len(FAULTS):
            unreached.append(rpc)  # made once per content (an image built, a file uploaded): see below
        elif not outcome["ok"] or outcome["state"] != expected:
            failed[rpc] = outcome
    # Those RPCs again, each on a control plane of its own, where the first `up` has to make them.
    for rpc in unreached:
        fresh = ControlPlane().start()
        try:
            with provider_for(fresh) as server_of_fresh:
                outcome, leftover = faulty_up(fresh, server_of_fresh, rpc, "sweep-clean")
        finally:
            fresh.stop()
        if leftover or not outcome["ok"] or outcome["state"] != expected:
            failed[rpc] = {**outcome, "faults left": leftover}
    assert failed == {}, json.dumps(failed, default=str)


@pytest.mark.parametrize(
    ("rpc", "named"),
    [
        ("FunctionGetOutputs", "write_artifact in environment 'sweep-persistent': wait for function call fc-"),
        ("VolumeListFiles", f"look for '{MARKER}' in volume '{VOLUME}'"),  # checking its artifact
    ],
)
def test_a_persistent_failure_names_the_object_and_the_next_up_runs_nothing_again(sweep_server, rpc, named):
    cp, server = sweep_server
    env = "sweep-persistent"
    eng = engine(server)
    cp.fail_next(rpc, 40, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    failed = eng.up(stack(env))
    cp.faults.clear()
    assert not failed.ok
    assert named in failed.errors[-1], failed.errors[-1]
    converged = eng.up(stack(env))
    assert converged.ok, converged.errors
    state = modal_state(cp, env)
    assert state["runs"] == [("write_artifact", "succeeded")] and state["live_ephemeral_apps"] == []
    assert converged.ids[urn_of(ModalJob, "job")] == cp.function_calls[-1].id


# The run record's write, on either volume version (v1: VolumePutFiles, v2: VolumePutFiles2).
RECORD_WRITES = ("VolumePutFiles", "VolumePutFiles2")


def test_a_run_record_that_cannot_be_written_loses_no_run_that_succeeded(sweep_server):
    """The runner records the run right after the spawn; when that write fails for good, a quick job has
    often succeeded already: the call is kept (the provider holds its id), nothing claims a cancel, and
    neither this `up` nor the next runs the job again."""
    cp, server = sweep_server
    env = "sweep-record"
    eng = engine(server)
    for rpc in RECORD_WRITES:
        cp.fail_next(rpc, 1000, Status.RESOURCE_EXHAUSTED, "injected rate limit")
    first = eng.up(stack(env))
    met = sum(1000 - cp.pending_failures(rpc) for rpc in RECORD_WRITES)
    cp.faults.clear()
    assert met > 0  # the fault was reached
    assert first.ok, first.errors[-1:]
    assert not any("cancelled" in line for line in first.stdout_lines)
    again = eng.up(stack(env))
    assert again.ok, again.errors
    state = modal_state(cp, env)
    assert state["runs"] == [("write_artifact", "succeeded")] and state["live_ephemeral_apps"] == []
    assert again.ids[urn_of(ModalJob, "job")] == first.ids[urn_of(ModalJob, "job")] == cp.function_calls[-1].id
