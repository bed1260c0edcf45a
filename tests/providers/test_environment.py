"""ModalEnvironment through the real dynamic-provider gRPC server, the real modal client and the local
control plane: lifecycle, look-up before create (under every answer Modal may give a create of an
existing name, and both statuses it may give a missing one), adoption that destroy never deletes (the
default environment whatever its name), drift, the refusal to delete a non-empty environment, retries."""

from __future__ import annotations

import pytest
from grpclib import Status

from providers.environment import EnvironmentProvider, ModalEnvironment
from tests.modal_control_plane import ControlPlane
from tests.modal_control_plane.fixtures import connect_in_process
from tests.modal_control_plane.rpc_objects import EXISTING_CREATE_ANSWERS, MISSING_ENVIRONMENT_STATUSES
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
ADOPTED = "[modal] environment '{}' already exists: adopting it (destroy will keep it)"


def environment(name: str = "staging", **inputs: object):
    return desired(ModalEnvironment, EnvironmentProvider(), "env", {"name": name, **inputs})


@pytest.fixture(params=EXISTING_CREATE_ANSWERS)
def create_existing(request, modal_control_plane):
    """Every answer Modal may give a create of an existing environment name (the plane's switch)."""
    modal_control_plane.environment_answers.create_existing = request.param
    return request.param


@pytest.fixture(params=MISSING_ENVIRONMENT_STATUSES, ids=lambda status: status.name)
def missing_status(request, modal_control_plane):
    """Both statuses Modal may give an environment that does not exist (the plane's switch)."""
    modal_control_plane.environment_answers.missing_status = request.param
    return request.param


def test_lifecycle_preview_up_noop_update_replace_destroy(modal_control_plane, create_existing):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.preview([environment()]).ok
        assert cp.calls == []

        up = eng.up([environment()])
        assert up.ok, up.errors
        assert up.ids[URN] == "staging"
        assert up.outputs[URN]["environment_id"] == cp.state.environments["staging"].id
        assert up.outputs[URN]["force_delete"] is False and up.outputs[URN]["created"] is True
        assert mutating_rpcs(cp, 0) == ["EnvironmentCreate"]
        server.wait_for_stdout(lambda line: line == "[modal] environment 'staging' created")

        mark = cp.mark()
        again = eng.up([environment()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == [] and again.calls_of(*PROVIDER_MUTATIONS) == []

        mark = cp.mark()
        forced = eng.up([environment(force_delete=True)])
        assert forced.ok and forced.counts["update"] == 1
        assert cp.calls_since(mark) == []  # force_delete lives in our state only
        assert forced.outputs[URN]["created"] is True

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


def test_an_existing_environment_is_looked_up_and_adopted_without_a_create(modal_control_plane, create_existing):
    cp = modal_control_plane
    cp.create_environment("staging")
    existing = cp.state.environments["staging"].id
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([environment()])
        assert up.ok, up.errors
        server.wait_for_stdout(lambda line: line == ADOPTED.format("staging"))
        assert up.outputs[URN]["environment_id"] == existing and up.outputs[URN]["created"] is False
        assert mutating_rpcs(cp, 0) == []  # whatever a create of it would have answered, none was sent

        mark = cp.mark()
        kept = eng.destroy()
        assert kept.ok, kept.errors
        said = server.wait_for_stdout(lambda line: "environment 'staging' was adopted" in line)
        assert "kept on Modal, no longer managed by this stack" in said
        assert mutating_rpcs(cp, mark) == [] and cp.state.environments["staging"].id == existing


def test_a_create_that_meets_an_environment_made_meanwhile_adopts_it(modal_control_plane, create_existing):
    """The look-up found nothing, then another client created it before our create arrived: every
    answer Modal may give is taken right. A refusal means adopted (destroy keeps it); a silent success
    cannot be told from our own create, so it is recorded as created."""
    cp = modal_control_plane
    cp.create_environment_concurrently("staging")
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([environment()])
        assert up.ok, up.errors
        assert mutating_rpcs(cp, 0) == ["EnvironmentCreate"]
        assert up.outputs[URN]["environment_id"] == cp.state.environments["staging"].id
        assert up.outputs[URN]["created"] is (create_existing == "succeed")
        if create_existing != "succeed":
            server.wait_for_stdout(lambda line: line == ADOPTED.format("staging"))
        assert eng.destroy().ok
        assert ("staging" in cp.state.environments) is (create_existing != "succeed")


def test_a_token_that_may_not_create_fails_with_the_reason_and_records_nothing(modal_control_plane):
    cp = modal_control_plane
    cp.fail_next("EnvironmentCreate", 1, Status.PERMISSION_DENIED, "token may not create environments")
    with serve(cp) as server:
        eng = engine(server)
        failed = eng.up([environment()])
        assert not failed.ok
        error = failed.errors[0]
        assert "create environment 'staging' failed: PermissionDeniedError: token may not create environments" in error
        assert "right workspace/environment role" in error
        assert eng.state.resources == {} and "staging" not in cp.state.environments


def test_the_default_environment_is_adopted_and_kept_whatever_its_name(monkeypatch, create_existing):
    """Modal's default environment is not always "main": here it is "production", and the stack that
    declares it adopts it and never deletes it, even with force_delete."""
    with ControlPlane(default_environment="production") as cp, connect_in_process(cp, monkeypatch):
        cp.environment_answers.create_existing = create_existing
        cp.create_secret("hf", {"K": "v"})  # the default environment holds the recipe's objects
        with serve(cp) as server:
            eng = engine(server)
            up = eng.up([environment(name="production", force_delete=True)])
            assert up.ok, up.errors
            assert up.outputs[URN]["created"] is False and mutating_rpcs(cp, 0) == []
            mark = cp.mark()
            assert eng.destroy().ok
            server.wait_for_stdout(lambda line: "environment 'production' was adopted" in line)
            assert mutating_rpcs(cp, mark) == []
        assert cp.secret_values("hf", "production") == {"K": "v"}


def test_refresh_after_a_deletion_by_hand_drops_the_environment(modal_control_plane, missing_status):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment()]).ok
        unchanged = eng.refresh()
        assert unchanged.ok and unchanged.steps[0].keys == ()
        cp.delete_environment("staging")  # by hand

        gone = eng.refresh()
        assert gone.ok, gone.errors
        assert gone.steps[0].detail == "deleted" and eng.state.resources == {}
        again = eng.up([environment()])
        assert again.ok and again.counts["create"] == 1 and again.outputs[URN]["created"] is True


def test_a_destroy_after_a_deletion_by_hand_says_it_is_gone(modal_control_plane, missing_status):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment()]).ok
        cp.delete_environment("staging")
        mark = cp.mark()
        assert eng.destroy().ok
        server.wait_for_stdout(lambda line: line == "[modal] environment 'staging' is already gone")
        assert mutating_rpcs(cp, mark) == []


def test_a_delete_answered_not_found_while_the_environment_stays_fails(modal_control_plane, missing_status):
    """"Not found" is what a delete whose first attempt got through hears; it is believed only when a
    look-up agrees. Here the environment is still there, so nothing claims it was deleted."""
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment()]).ok
        cp.fail_next("EnvironmentDelete", 1, missing_status, "Environment 'staging' not found")
        failed = eng.destroy()
        assert not failed.ok
        assert "delete environment 'staging' failed" in failed.errors[0]
        assert "staging" in cp.state.environments and URN in eng.state.resources
        assert not any("environment 'staging' deleted" in line for line in server.stdout_lines)
        assert eng.destroy().ok and "staging" not in cp.state.environments


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

        # Declared again, it is adopted now: no longer ours to delete, even with its contents.
        readopted = eng.up([environment(force_delete=True)])
        assert readopted.ok and readopted.outputs[URN]["created"] is False
        assert eng.destroy().ok
        assert "staging" in cp.state.environments


def test_force_delete_deletes_a_created_environment_with_its_contents(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([environment(force_delete=True)]).ok
        cp.create_volume("weights", environment="staging")
        cp.put_file("weights", "config.json", b"{}", environment="staging")
        assert eng.destroy().ok
        assert "staging" not in cp.state.environments


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED])
def test_every_mutating_call_survives_two_transient_failures(modal_control_plane, status):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("EnvironmentList", 2, status)  # the look-up before the create
        cp.fail_next("EnvironmentCreate", 2, status)
        mark = cp.mark()
        up = eng.up([environment()])
        assert up.ok, up.errors
        assert cp.rpcs_called(mark).count("EnvironmentCreate") == 3
        assert up.outputs[URN]["created"] is True

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
