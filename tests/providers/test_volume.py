"""ModalVolume through the real dynamic-provider gRPC server, the real modal client and the local
control plane: lifecycle, adoption, drift, the refusal to delete data, retries and failures."""

from __future__ import annotations

import modal
import pytest
from grpclib import Status

from providers.volume import ModalVolume, VolumeProvider
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
from tests.pulumi_engine import properties as wire

ENV = "main"


def volume(name: str = "weights", **inputs: object):
    return desired(ModalVolume, VolumeProvider(), "weights", {"name": name, "environment": ENV, **inputs})


def test_lifecycle_preview_up_noop_update_replace_destroy(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)

        preview = eng.preview([volume()])
        assert preview.ok, preview.errors
        assert cp.calls == []  # check (and the engine's preview create) never reach Modal

        up = eng.up([volume()])
        assert up.ok, up.errors
        created = cp.state.environments[ENV].volumes["weights"]
        outputs = up.outputs[urn_of(ModalVolume, "weights")]
        assert outputs["volume_id"] == created.id
        assert {k: outputs[k] for k in ("name", "environment", "delete_data")} == {
            "name": "weights", "environment": ENV, "delete_data": False,
        }  # fmt: skip
        assert up.ids[urn_of(ModalVolume, "weights")] == f"{ENV}/weights"
        assert mutating_rpcs(cp, 0) == ["VolumeGetOrCreate"]  # one create; the id comes from a lookup
        server.wait_for_stdout(lambda line: line == "[modal] volume 'weights' in environment 'main' created")

        mark = cp.mark()
        again = eng.up([volume()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == []  # a second identical apply: check + diff only, no Modal call
        assert again.calls_of(*PROVIDER_MUTATIONS) == []

        mark = cp.mark()
        flipped = eng.up([volume(delete_data=True)])
        assert flipped.ok and flipped.counts["update"] == 1
        assert cp.calls_since(mark) == []  # delete_data lives in our state only

        cp.put_file("weights", "model.safetensors.index.json", b"{}")
        renamed = eng.up([volume(name="weights-v2", delete_data=True)])
        assert renamed.ok, renamed.errors
        assert renamed.counts["replace"] == 1
        volumes = cp.state.environments[ENV].volumes
        assert set(volumes) == {"weights-v2"}  # the old one (with data, but delete_data) is gone

        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.state.environments[ENV].volumes == {}


def test_diff_is_precise_and_never_calls_modal(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        urn = urn_of(ModalVolume, "weights")
        outputs, old_inputs = eng.state.resources[urn].outputs, eng.state.resources[urn].inputs
        mark = cp.mark()

        def diff(**changes: object):
            return server.diff(f"{ENV}/weights", urn, outputs, {**old_inputs, **changes}, old_inputs)

        assert diff().changes == "none"
        in_place = diff(delete_data=True)
        assert (in_place.changes, in_place.replaces) == ("some", [])
        assert diff(name="other").replaces == ["name"]
        assert diff(environment="staging").replaces == ["environment"]
        assert diff(name="other", environment="staging").replaces == ["name", "environment"]
        # In a preview an input may not be known yet: that is a change, never an "I don't know".
        pending = server.diff(
            f"{ENV}/weights", urn, outputs, {**old_inputs, "environment": wire.UNKNOWN}, old_inputs, allow_unknowns=True
        )
        assert (pending.changes, pending.replaces) == ("some", ["environment"])
        assert cp.calls_since(mark) == []


def test_create_adopts_an_existing_volume_and_keeps_its_data(modal_control_plane):
    cp = modal_control_plane
    cp.put_file("weights", "shard-00001.safetensors", b"weights")  # made by hand or by a failed run
    existing = cp.state.environments[ENV].volumes["weights"].id
    with serve(cp) as server:
        up = engine(server).up([volume()])
        assert up.ok, up.errors
        server.wait_for_stdout(lambda line: "already exists: adopting it with its contents" in line)
    assert up.outputs[urn_of(ModalVolume, "weights")]["volume_id"] == existing
    assert cp.volume_files("weights") == {"shard-00001.safetensors": b"weights"}


def test_refresh_sees_a_deleted_volume_and_the_next_up_recreates_it(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        modal.Volume.objects.delete("weights", environment_name=ENV)  # by hand, outside Pulumi

        refreshed = eng.refresh()
        assert refreshed.ok, refreshed.errors
        assert refreshed.steps[0].detail == "deleted"
        assert eng.state.resources == {}

        up = eng.up([volume()])
        assert up.ok and up.counts["create"] == 1
        assert "weights" in cp.state.environments[ENV].volumes


@IMPORT_READ_HAS_NO_PROVIDER
def test_import_reads_an_existing_volume_by_id(modal_control_plane):
    cp = modal_control_plane
    existing = cp.create_volume("cache", environment=ENV).id
    with serve(cp) as server:
        urn = urn_of(ModalVolume, "cache")
        read = import_read(server, f"{ENV}/cache", urn)
        assert read.id == f"{ENV}/cache"
        assert read.properties["volume_id"] == existing
        assert {k: v for k, v in read.inputs.items() if k != "__provider"} == {
            "name": "cache", "environment": ENV, "delete_data": False,
        }  # fmt: skip
        assert import_read(server, f"{ENV}/nope", urn).id == ""  # not there: the import fails
    assert mutating_rpcs(cp, 0) == []


def test_a_delete_keeps_a_volume_that_holds_data_on_modal_and_says_so(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        cp.put_file("weights", "model.safetensors.index.json", b"{}")

        mark = cp.mark()
        destroyed = eng.destroy()
        # Done, not failed: a refusal would fail this delete again on every later `up`.
        assert destroyed.ok
        said = server.wait_for_stdout(lambda line: "kept on Modal" in line)
        assert "volume 'weights' in environment" in said
        assert "model.safetensors.index.json" in said and f"modal volume delete weights --env {ENV}" in said
        assert "VolumeDelete" not in cp.rpcs_called(mark)
        assert cp.volume_files("weights")  # untouched
        assert urn_of(ModalVolume, "weights") not in eng.state.resources


def test_delete_data_deletes_a_volume_with_its_data(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        cp.put_file("weights", "config.json", b"{}")
        assert eng.up([volume(delete_data=True)]).ok
        assert eng.destroy().ok
        assert "weights" not in cp.state.environments[ENV].volumes


def test_a_rename_keeps_the_old_volume_with_data_and_converges(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        cp.put_file("weights", "config.json", b"{}")
        moved = eng.up([volume(name="weights-v2")])
        assert moved.ok, moved.errors
        assert set(cp.state.environments[ENV].volumes) == {"weights", "weights-v2"}
        assert cp.volume_files("weights")
        mark = cp.mark()
        again = eng.up([volume(name="weights-v2")])
        assert again.ok and mutating_rpcs(cp, mark) == []


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.ABORTED])
def test_every_mutating_call_survives_two_transient_failures(modal_control_plane, status):
    """UNAVAILABLE is retried by the modal client itself, RESOURCE_EXHAUSTED and ABORTED by us: either
    way exactly 3 attempts reach the control plane (no retries stacked on retries)."""
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)

        cp.fail_next("VolumeGetOrCreate", 2, status)
        mark = cp.mark()
        assert eng.up([volume(delete_data=True)]).ok
        assert cp.rpcs_called(mark).count("VolumeGetOrCreate") == 3 + 1  # 2 failed + create, then lookup
        cp.put_file("weights", "config.json", b"{}")

        cp.fail_next("VolumeListFiles2", 2, status)  # streaming: the client never retries it, we do
        cp.fail_next("VolumeDelete", 2, status)
        mark = cp.mark()
        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.rpcs_called(mark).count("VolumeDelete") == 3
        assert "weights" not in cp.state.environments[ENV].volumes


def test_a_permanent_failure_is_explained_and_a_rerun_converges(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("VolumeGetOrCreate", 1, Status.PERMISSION_DENIED, "token lacks volume:create")
        mark = cp.mark()
        failed = eng.up([volume()])
        assert not failed.ok
        assert cp.rpcs_called(mark) == ["VolumeGetOrCreate"]  # permanent: not retried by anyone
        error = failed.errors[0]
        assert "create volume 'weights' in environment 'main' failed" in error
        assert "PermissionDeniedError: token lacks volume:create" in error
        assert "right workspace/environment role" in error
        assert eng.state.resources == {}

        rerun = eng.up([volume()])
        assert rerun.ok and rerun.counts["create"] == 1
        assert "weights" in cp.state.environments[ENV].volumes


def test_too_many_transient_failures_give_up_with_advice(modal_control_plane):
    """4 UNAVAILABLE exhaust the modal client's own 4 attempts; we add none on top."""
    cp = modal_control_plane
    with serve(cp) as server:
        cp.fail_next("VolumeGetOrCreate", 4, Status.UNAVAILABLE)
        mark = cp.mark()
        failed = engine(server).up([volume()])
    assert not failed.ok
    assert cp.rpcs_called(mark) == ["VolumeGetOrCreate"] * 4
    assert "ServiceError" in failed.errors[0] and "run `pulumi up` again" in failed.errors[0]


def test_check_rejects_bad_inputs_property_by_property(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        bad = desired(
            ModalVolume, VolumeProvider(), "weights",
            {"name": "no spaces allowed", "environment": "en-reserved", "delete_data": "maybe", "size": 5},
        )  # fmt: skip
        result = server.check(bad.urn, bad.inputs)
    failures = {f.property: f.reason for f in result.failures}
    assert set(failures) == {"name", "environment", "delete_data", "size"}
    assert "letters, digits" in failures["name"]
    assert "en-" in failures["environment"]
    assert "Extra inputs are not permitted" in failures["size"]
    assert cp.calls == []
