"""ModalVolume through the real dynamic-provider gRPC server, the real modal client and the local
control plane: lifecycle, adoption, drift, the refusal to delete data, retries and failures, on both
VolumeFS versions (v1, what the stack creates; v2, which it can only adopt), and the run records and
jobs that write to a volume of either version."""

from __future__ import annotations

import modal
import pytest
from grpclib import Status

from providers.runs import run_records
from providers.volume import NEW_VOLUME_VERSION, ModalVolume, VolumeProvider
from tests.modal_control_plane.rpc_objects import MISSING_ENVIRONMENT_STATUSES
from tests.providers import test_job as jobs
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
URN = urn_of(ModalVolume, "weights")
# The file RPCs the modal client uses on each version (modal/volume.py); both read with VolumeGetFile2.
FILE_RPCS = {
    1: {"list": "VolumeListFiles", "put": "VolumePutFiles", "remove": "VolumeRemoveFile"},
    2: {"list": "VolumeListFiles2", "put": "VolumePutFiles2", "remove": "VolumeRemoveFile2"},
}


def volume(name: str = "weights", **inputs: object):
    return desired(ModalVolume, VolumeProvider(), "weights", {"name": name, "environment": ENV, **inputs})


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def version(request, modal_control_plane):
    """The version of the volume under test. The stack creates v1 volumes (NEW_VOLUME_VERSION); a v2
    one can only be adopted, so for v2 an empty one exists before the first `up`."""
    if request.param != NEW_VOLUME_VERSION:
        modal_control_plane.create_volume("weights", ENV, version=request.param)
    return request.param


def file_rpcs_called(cp, since: int) -> set[str]:
    return {rpc for rpc in cp.rpcs_called(since) if rpc in FILE_RPCS[1].values() or rpc in FILE_RPCS[2].values()}


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
        outputs = up.outputs[URN]
        assert outputs["volume_id"] == created.id
        assert {k: outputs[k] for k in ("name", "environment", "delete_data", "version")} == {
            "name": "weights", "environment": ENV, "delete_data": False, "version": 1,
        }  # fmt: skip
        assert up.ids[URN] == f"{ENV}/weights"
        assert mutating_rpcs(cp, 0) == ["VolumeGetOrCreate"]  # one create; the id comes from a lookup
        [create] = [call for call in cp.calls if call.mutating]
        assert create.args["version"] == "VOLUME_FS_VERSION_V1"  # asked for, not left to Modal's default
        assert created.version == 1
        server.wait_for_stdout(lambda line: line == "[modal] volume 'weights' in environment 'main' created (v1)")

        mark = cp.mark()
        again = eng.up([volume()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == []  # a second identical apply: check + diff only, no Modal call
        assert again.calls_of(*PROVIDER_MUTATIONS) == []

        mark = cp.mark()
        flipped = eng.up([volume(delete_data=True)])
        assert flipped.ok and flipped.counts["update"] == 1
        assert cp.calls_since(mark) == []  # delete_data lives in our state only
        assert flipped.outputs[URN]["version"] == 1

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


@pytest.mark.parametrize("adopted", [1, 2], ids=["v1", "v2"])
def test_create_adopts_an_existing_volume_and_keeps_its_data_and_version(modal_control_plane, adopted):
    cp = modal_control_plane
    cp.create_volume("weights", ENV, version=adopted)  # made by hand, by the recipe or by a failed run
    cp.put_file("weights", "shard-00001.safetensors", b"weights")
    existing = cp.state.environments[ENV].volumes["weights"].id
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([volume()])
        assert up.ok, up.errors
        server.wait_for_stdout(lambda line: f"already exists (v{adopted}): adopting it with its contents" in line)
        assert eng.refresh().steps[0].keys == ()  # a refresh reads the same version back
    assert up.outputs[URN]["volume_id"] == existing and up.outputs[URN]["version"] == adopted
    assert cp.state.environments[ENV].volumes["weights"].version == adopted
    assert cp.volume_files("weights") == {"shard-00001.safetensors": b"weights"}


def test_refresh_sees_a_deleted_volume_and_the_next_up_recreates_it(modal_control_plane, version):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).outputs[URN]["version"] == version
        modal.Volume.objects.delete("weights", environment_name=ENV)  # by hand, outside Pulumi

        refreshed = eng.refresh()
        assert refreshed.ok, refreshed.errors
        assert refreshed.steps[0].detail == "deleted"
        assert eng.state.resources == {}

        up = eng.up([volume()])
        assert up.ok and up.counts["create"] == 1
        assert "weights" in cp.state.environments[ENV].volumes
        assert up.outputs[URN]["version"] == NEW_VOLUME_VERSION  # recreated as the stack creates volumes


@pytest.mark.parametrize("status", MISSING_ENVIRONMENT_STATUSES, ids=lambda status: status.name)
def test_refresh_after_its_environment_was_deleted_by_hand_drops_the_volume(modal_control_plane, status):
    """Deleting an environment deletes its volumes. Modal may answer a look-up in a missing environment
    with INVALID_ARGUMENT (its servicer's status) or NOT_FOUND: under both, the volume is gone."""
    cp = modal_control_plane
    cp.environment_answers.missing_status = status
    cp.create_environment("staging")
    staged = desired(ModalVolume, VolumeProvider(), "weights", {"name": "weights", "environment": "staging"})
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([staged]).ok
        cp.delete_environment("staging")

        refreshed = eng.refresh()
        assert refreshed.ok, refreshed.errors
        assert refreshed.steps[0].detail == "deleted" and eng.state.resources == {}


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


def test_a_delete_keeps_a_volume_that_holds_data_on_modal_and_says_so(modal_control_plane, version):
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
        assert file_rpcs_called(cp, mark) == {FILE_RPCS[version]["list"]}  # the emptiness check
        assert cp.volume_files("weights")  # untouched
        assert URN not in eng.state.resources


def test_an_empty_volume_is_deleted(modal_control_plane, version):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        mark = cp.mark()
        assert eng.destroy().ok
        assert "weights" not in cp.state.environments[ENV].volumes
        assert file_rpcs_called(cp, mark) == {FILE_RPCS[version]["list"]}


def test_delete_data_deletes_a_volume_with_its_data(modal_control_plane, version):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        cp.put_file("weights", "config.json", b"{}")
        assert eng.up([volume(delete_data=True)]).ok
        assert eng.destroy().ok
        assert "weights" not in cp.state.environments[ENV].volumes


def test_a_rename_keeps_the_old_volume_with_data_and_converges(modal_control_plane, version):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([volume()]).ok
        cp.put_file("weights", "config.json", b"{}")
        moved = eng.up([volume(name="weights-v2")])
        assert moved.ok, moved.errors
        assert set(cp.state.environments[ENV].volumes) == {"weights", "weights-v2"}
        assert cp.volume_files("weights")
        assert cp.state.environments[ENV].volumes["weights"].version == version  # the old one as it was
        mark = cp.mark()
        again = eng.up([volume(name="weights-v2")])
        assert again.ok and mutating_rpcs(cp, mark) == []


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED, Status.ABORTED])
def test_every_mutating_call_survives_two_transient_failures(modal_control_plane, version, status):
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

        listing = FILE_RPCS[version]["list"]
        cp.fail_next(listing, 2, status)  # streaming: the client never retries it, we do
        cp.fail_next("VolumeDelete", 2, status)
        mark = cp.mark()
        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.rpcs_called(mark).count("VolumeDelete") == 3
        assert "weights" not in cp.state.environments[ENV].volumes


def test_run_records_are_written_read_and_listed_on_both_versions(modal_control_plane, version):
    """The durable record of a job's run (providers/runs/run_records.py) through the client's own choice of
    RPCs for the version: written by a batch upload, read back, listed."""
    cp = modal_control_plane
    cp.create_volume("weights", ENV, version=version)
    record = run_records.RunRecord(job="serving.app.download_model", identity_digest="0" * 16,
                                   function_call_id="fc-1", started_at=1.0, deadline_at=2.0)  # fmt: skip
    mark = cp.mark()
    assert run_records.read_record(ENV, "weights", record.job) is None
    run_records.write_record(ENV, "weights", record)
    run_records.write_record(ENV, "weights", record.finished("succeeded", result={"ok": True}))  # overwrites

    [listed] = run_records.list_records(ENV, "weights")
    assert listed.outcome == "succeeded" and listed.function_call_id == "fc-1"
    assert run_records.read_record(ENV, "weights", record.job) == listed
    assert file_rpcs_called(cp, mark) == {FILE_RPCS[version]["put"], FILE_RPCS[version]["list"]}
    assert list(cp.volume_files("weights")) == [".job-runs/serving.app.download_model.json"]


def test_a_job_proven_by_an_artifact_runs_records_and_reruns_on_both_versions(modal_control_plane, version):
    """A job writing its artifact into a volume of either version: its run record, the artifact check,
    and the refresh that finds the artifact gone, each through that version's file RPCs."""
    cp = modal_control_plane
    cp.create_volume(jobs.VOLUME, ENV, version=version)
    jobs.script_success(cp)
    with jobs.serve(cp) as server:
        eng = engine(server)
        up = eng.up([jobs.job()])
        assert up.ok, up.errors
        assert up.outputs[jobs.URN]["artifact_present"] is True
        files = cp.volume_files(jobs.VOLUME)
        assert jobs.MARKER in files and ".job-runs/sample_modal_app.write_artifact.json" in files
        assert {FILE_RPCS[version]["put"], FILE_RPCS[version]["list"]} <= file_rpcs_called(cp, 0)
        assert not file_rpcs_called(cp, 0) & set(FILE_RPCS[3 - version].values())

        cp.remove_file(jobs.VOLUME, jobs.MARKER)
        drifted = eng.refresh()
        assert drifted.ok and drifted.outputs[jobs.URN]["artifact_present"] is False
        rerun = eng.up([jobs.job()])
        assert rerun.ok, rerun.errors
        assert len(jobs.finished_calls(cp)) == 2 and jobs.MARKER in cp.volume_files(jobs.VOLUME)
    assert cp.state.environments[ENV].volumes[jobs.VOLUME].version == version


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
