"""ModalEnvironment through the real dynamic-provider gRPC server, the real modal client and the local
control plane: lifecycle, adoption, drift, the refusal to delete a non-empty environment, retries."""

from __future__ import annotations

import pytest
from grpclib import Status

from providers.environment import EnvironmentProvider, ModalEnvironment
from tests.modal_control_plane.state import App
from tests.providers.grpc_harness import (
    IMPORT_READ_HAS_NO_PROVIDER,
    PROVIDER_MUTATIONS,
    desired,
    engine,
    import_read,
    mutating_rpcs,
    serve,
    urn_of,
)

URN = urn_of(ModalEnvironment, "env")


def environment(name: str = "staging", **inputs: object):
    return desired(ModalEnvironment, EnvironmentProvider(), "env", {"name": name, **inputs})


def test_lifecycle_preview_up_noop_update_replace_destroy(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.preview([environment()]).ok
        assert cp.calls == []

        up = eng.up([environment()])
        assert up.ok, up.errors
        assert up.ids[URN] == "staging"
        assert up.outputs[URN]["environment_id"] == cp.state.environments["staging"].id
        assert up.outputs[URN]["force_delete"] is False
        assert mutating_rpcs(cp, 0) == ["EnvironmentCreate"]

        mark = cp.mark()
        again = eng.up([environment()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == [] and again.calls_of(*PROVIDER_MUTATIONS) == []

        mark = cp.mark()
        forced = eng.up([environment(force_delete=True)])
        assert forced.ok and forced.counts["update"] == 1
        assert cp.calls_since(mark) == []  # force_delete lives in our state only

        renamed = eng.up([environment(name="staging-2")])
        assert renamed.ok and renamed.counts["replace"] == 1
        assert "staging" not in cp.state.environments and "staging-2" in cp.state.environments

        assert eng.destroy().ok
        assert set(cp.state.environments) == {"main"}


def test_diff_is_precise_and_never_calls_modal(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment()]).ok
        state = eng.state.resources[URN]
        mark = cp.mark()
        assert server.diff(state.id, URN, state.outputs, state.inputs, state.inputs).changes == "none"
        in_place = server.diff(state.id, URN, state.outputs, {**state.inputs, "force_delete": True}, state.inputs)
        assert (in_place.changes, in_place.replaces) == ("some", [])
        renamed = server.diff(state.id, URN, state.outputs, {**state.inputs, "name": "prod"}, state.inputs)
        assert renamed.replaces == ["name"]
        assert cp.calls_since(mark) == []


def test_create_adopts_an_existing_environment(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment("staging")
    existing = cp.state.environments["staging"].id
    with serve(cp) as server:
        up = engine(server).up([environment()])
        assert up.ok, up.errors
        server.wait_for_stdout(lambda line: line == "[modal] environment 'staging' already exists: adopting it")
    assert up.outputs[URN]["environment_id"] == existing


def test_refresh_sees_a_deleted_environment(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment()]).ok
        unchanged = eng.refresh()
        assert unchanged.ok and unchanged.steps[0].keys == ()
        with cp.state.lock:
            cp.state.remove_environment("staging")  # deleted by hand
        gone = eng.refresh()
        assert gone.steps[0].detail == "deleted" and eng.state.resources == {}


@IMPORT_READ_HAS_NO_PROVIDER
def test_import_reads_an_existing_environment_by_its_name(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        cp.create_environment("prod")
        read = import_read(server, "prod", URN)
        assert read.id == "prod"
        assert read.properties["environment_id"] == cp.state.environments["prod"].id
        assert {k: v for k, v in read.inputs.items() if k != "__provider"} == {"name": "prod", "force_delete": False}
        assert import_read(server, "missing", URN).id == ""  # not there: the import fails, nothing is adopted
    assert mutating_rpcs(cp, 0) == []


def test_a_delete_keeps_an_environment_that_holds_objects_on_modal_and_says_so(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment()]).ok
        cp.create_secret("hf", {"K": "v"}, environment="staging")
        cp.create_volume("weights", environment="staging")
        with cp.state.lock:  # one deployed app, and a stopped one that deleting would not lose
            for name, state in (("server", "deployed"), ("old", "stopped")):
                app = App(cp.state.new_id("ap"), name, "staging", cp.now(), state=state)
                cp.state.environments["staging"].apps[name] = app
                cp.state.by_id[app.id] = app

        mark = cp.mark()
        kept = eng.destroy()
        # Done, not failed (a refusal would fail again on every later `up`), and nothing deleted.
        assert kept.ok, kept.errors
        said = server.wait_for_stdout(lambda line: "environment 'staging' still holds" in line)
        assert "still holds secrets: hf; volumes: weights; apps: server: kept on Modal" in said
        assert "modal environment delete staging" in said
        assert "EnvironmentDelete" not in cp.rpcs_called(mark)
        assert "staging" in cp.state.environments and not eng.state.resources

        assert eng.up([environment(force_delete=True)]).ok  # adopts it again
        assert eng.destroy().ok
        assert "staging" not in cp.state.environments


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED])
def test_every_mutating_call_survives_two_transient_failures(modal_control_plane, status):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("EnvironmentCreate", 2, status)
        mark = cp.mark()
        assert eng.up([environment()]).ok
        assert cp.rpcs_called(mark).count("EnvironmentCreate") == 3

        cp.fail_next("EnvironmentDelete", 2, status)
        cp.fail_next("AppList", 2, status)  # the emptiness check must not turn a blip into a failure
        mark = cp.mark()
        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.rpcs_called(mark).count("EnvironmentDelete") == 3
        assert "staging" not in cp.state.environments


def test_a_permanent_failure_is_explained_and_a_rerun_converges(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("EnvironmentCreate", 1, Status.UNAUTHENTICATED, "bad token")
        failed = eng.up([environment()])
        assert not failed.ok
        assert "create environment 'staging' failed: AuthError: bad token" in failed.errors[0]
        assert "MODAL_TOKEN_ID" in failed.errors[0]
        assert eng.state.resources == {} and "staging" not in cp.state.environments

        assert eng.up([environment()]).ok
        assert "staging" in cp.state.environments


def test_check_rejects_bad_inputs_property_by_property(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        bad = desired(ModalEnvironment, EnvironmentProvider(), "env", {"name": "-bad", "force_delete": [1]})
        failures = {f.property: f.reason for f in server.check(bad.urn, bad.inputs).failures}
        assert set(failures) == {"name", "force_delete"}
        checked = server.check(environment().urn, environment().inputs)
        assert checked.failures == [] and checked.inputs["force_delete"] is False  # defaults recorded
    assert cp.calls == []
