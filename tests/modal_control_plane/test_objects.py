"""The real modal client managing environments, secrets and volumes against the control plane."""

import asyncio
import io
from urllib.parse import urlsplit

import modal
import pytest
from google.protobuf.empty_pb2 import Empty
from grpclib import Status
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from modal.exception import AlreadyExistsError, InvalidError, NotFoundError, PermissionDeniedError
from modal_proto import api_pb2
from modal_proto.api_grpc import ModalClientStub

from providers.modal_internals import remove_secret_keys

from .fixtures import connect_in_process
from .rpc_objects import EXISTING_CREATE_ANSWERS, MISSING_ENVIRONMENT_STATUSES
from .server import TOKEN_ID, TOKEN_SECRET, ControlPlane

# What the client raises for each status an environment that does not exist may be answered with.
MISSING_ENVIRONMENT_ERRORS = {Status.INVALID_ARGUMENT: InvalidError, Status.NOT_FOUND: NotFoundError}


def raw_call(cp: ControlPlane, rpc: str, request):
    """One RPC straight to the plane, bypassing the client's choice of RPC (its responses, a list
    for a streaming RPC): for answers the client itself never asks for."""

    async def call():
        url = urlsplit(cp.url)
        channel = Channel(url.hostname, url.port)
        try:
            metadata = {"x-modal-token-id": TOKEN_ID, "x-modal-token-secret": TOKEN_SECRET}
            return await getattr(ModalClientStub(channel), rpc)(request, metadata=metadata)
        finally:
            channel.close()

    return asyncio.run(call())


def test_client_hello_authenticates(modal_control_plane):
    modal.Client.from_env().hello()

    assert [call.rpc for call in modal_control_plane.calls] == ["ClientHello"]


def test_wrong_token_is_rejected(modal_control_plane):
    client = modal.Client.from_credentials("ak-someone-else", "as-wrong")
    with pytest.raises(modal.exception.AuthError, match="Token missing or invalid"):
        client.hello()


def test_environments_create_list_delete(modal_control_plane):
    modal.Environment.objects.create("staging")
    created = modal_control_plane.state.environments["staging"].id
    modal.Environment.objects.create("staging")  # Modal's servicer: an existing name is left as it is

    assert modal_control_plane.state.environments["staging"].id == created
    assert [env.name for env in modal.Environment.objects.list()] == ["main", "staging"]
    assert modal_control_plane.state.environments["staging"].settings["webhook_suffix"] == "staging"

    modal.Environment.objects.delete("staging")
    assert [env.name for env in modal.Environment.objects.list()] == ["main"]
    with pytest.raises(InvalidError, match="Environment 'staging' not found"):
        modal.Environment.objects.delete("staging")


@pytest.mark.parametrize("answer", EXISTING_CREATE_ANSWERS)
def test_a_create_of_an_existing_environment_answers_as_switched(modal_control_plane, answer):
    cp = modal_control_plane
    cp.environment_answers.create_existing = answer
    cp.create_environment("staging")
    existing = cp.state.environments["staging"].id
    expected = {"succeed": None, "already_exists": AlreadyExistsError, "permission_denied": PermissionDeniedError}

    if expected[answer] is None:
        modal.Environment.objects.create("staging")
    else:
        with pytest.raises(expected[answer], match="staging"):
            modal.Environment.objects.create("staging")
    assert cp.state.environments["staging"].id == existing  # never replaced
    modal.Environment.objects.create("fresh")  # a name that does not exist is created under every answer
    assert "fresh" in cp.state.environments


@pytest.mark.parametrize("answer", EXISTING_CREATE_ANSWERS)
def test_a_create_racing_another_client_meets_an_existing_environment(modal_control_plane, answer):
    cp = modal_control_plane
    cp.environment_answers.create_existing = answer
    cp.create_environment_concurrently("staging")
    assert "staging" not in cp.state.environments  # a look-up now still finds nothing

    if answer == "succeed":
        modal.Environment.objects.create("staging")
    else:
        with pytest.raises((AlreadyExistsError, PermissionDeniedError)):
            modal.Environment.objects.create("staging")
    assert [env.name for env in modal.Environment.objects.list()] == ["main", "staging"]
    assert cp.environment_answers.created_by_another_client_first == set()  # that race happens once


@pytest.mark.parametrize("status", MISSING_ENVIRONMENT_STATUSES)
def test_a_missing_environment_is_answered_with_the_switched_status_by_every_rpc(modal_control_plane, status):
    modal_control_plane.environment_answers.missing_status = status
    error = MISSING_ENVIRONMENT_ERRORS[status]
    with pytest.raises(error, match="Environment 'ghost' not found"):
        modal.Environment.from_name("ghost").hydrate()
    with pytest.raises(error, match="Environment 'ghost' not found"):
        modal.Secret.objects.create("hf", {"A": "1"}, environment_name="ghost")
    with pytest.raises(error, match="Environment 'ghost' not found"):
        modal.Volume.from_name("weights", environment_name="ghost").hydrate()
    with pytest.raises(error, match="Environment 'ghost' not found"):
        modal.Environment.objects.delete("ghost")


def test_the_default_environment_need_not_be_called_main(monkeypatch):
    with ControlPlane(default_environment="production") as cp, connect_in_process(cp, monkeypatch):
        modal.Secret.objects.create("hf", {"A": "1"})  # no environment named: the workspace's default
        modal.Environment.objects.create("staging")

        assert list(cp.state.environments) == ["production", "staging"]
        assert cp.secret_values("hf") == {"A": "1"} and cp.secret_values("hf", "production") == {"A": "1"}
        listed = raw_call(cp, "EnvironmentList", Empty())
        assert {item.name: item.default for item in listed.items} == {"production": True, "staging": False}
        assert cp.state.environments["production"].settings["webhook_suffix"] == ""
        with pytest.raises(InvalidError, match="Environment 'main' not found"):
            modal.Environment.from_name("main").hydrate()
        with pytest.raises(modal.exception.ConflictError, match="default environment cannot be deleted"):
            modal.Environment.objects.delete("production")


def test_a_renamed_default_environment_stays_the_default(modal_control_plane):
    from modal.environments import update_environment

    update_environment("main", new_name="prod")
    modal.Secret.objects.create("hf", {"A": "1"})

    assert modal_control_plane.state.default_environment == "prod"
    assert modal_control_plane.secret_values("hf", "prod") == {"A": "1"}


def test_environment_update_renames_and_sets_web_suffix(modal_control_plane):
    from modal.environments import update_environment

    modal.Environment.objects.create("staging")
    modal.Secret.objects.create("hf", {"A": "1"}, environment_name="staging")

    update_environment("staging", new_name="stage", new_web_suffix="stg")

    env = modal_control_plane.state.environments["stage"]
    assert "staging" not in modal_control_plane.state.environments
    assert env.settings["webhook_suffix"] == "stg"
    assert list(env.secrets) == ["hf"]
    assert modal.Secret.from_name("hf", environment_name="stage").info().environment_name == "stage"


def test_environment_lookup_and_create_if_missing(modal_control_plane):
    with pytest.raises(InvalidError, match="Environment 'nope' not found"):  # Modal's servicer's status
        modal.Environment.from_name("nope").hydrate()

    env = modal.Environment.from_name("dev", create_if_missing=True).hydrate()

    assert env.object_id == modal_control_plane.state.environments["dev"].id


def test_objects_are_scoped_per_environment(modal_control_plane):
    modal.Environment.objects.create("staging")
    modal.Secret.objects.create("hf", {"HF_TOKEN": "prod"})
    modal.Secret.objects.create("hf", {"HF_TOKEN": "stage"}, environment_name="staging")
    modal.Volume.objects.create("weights", environment_name="staging")

    assert modal_control_plane.secret_values("hf") == {"HF_TOKEN": "prod"}
    assert modal_control_plane.secret_values("hf", environment="staging") == {"HF_TOKEN": "stage"}
    assert [v.name for v in modal.Volume.objects.list(environment_name="staging")] == ["weights"]
    assert modal.Volume.objects.list() == []
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("weights").hydrate()

    # Deleting an environment takes its objects with it.
    modal.Environment.objects.delete("staging")
    assert "staging" not in modal_control_plane.state.environments
    assert modal_control_plane.secret_values("hf") == {"HF_TOKEN": "prod"}


def test_secret_create_get_list_delete(modal_control_plane):
    modal.Secret.objects.create("hf", {"HF_TOKEN": "hf_abc"})

    secret = modal.Secret.from_name("hf").hydrate()
    assert secret.object_id.startswith("st-")
    assert secret.info().name == "hf"
    assert [s.name for s in modal.Secret.objects.list()] == ["hf"]
    assert modal_control_plane.state.environments["main"].secrets["hf"].values == {"HF_TOKEN": "hf_abc"}

    modal.Secret.objects.delete("hf")
    assert modal.Secret.objects.list() == []
    with pytest.raises(NotFoundError):
        modal.Secret.from_name("hf").hydrate()


def test_missing_secret_raises_not_found(modal_control_plane):
    with pytest.raises(NotFoundError, match="Secret 'absent' not found"):
        modal.Secret.from_name("absent").hydrate()


def test_secret_create_twice_fails_unless_allow_existing(modal_control_plane):
    modal.Secret.objects.create("hf", {"HF_TOKEN": "one"})
    with pytest.raises(AlreadyExistsError):
        modal.Secret.objects.create("hf", {"HF_TOKEN": "two"})
    modal.Secret.objects.create("hf", {"HF_TOKEN": "two"}, allow_existing=True)

    assert modal_control_plane.secret_values("hf") == {"HF_TOKEN": "one"}


def test_secret_overwrite_keeps_identity_and_replaces_values(modal_control_plane):
    first = modal.Secret._create_deployed("hf", {"HF_TOKEN": "one", "OLD": "x"})
    second = modal.Secret._create_deployed("hf", {"HF_TOKEN": "two"}, overwrite=True)

    assert first == second
    assert modal_control_plane.secret_values("hf") == {"HF_TOKEN": "two"}


def test_secret_update_merges_values(modal_control_plane):
    modal.Secret.objects.create("hf", {"A": "1"})
    modal.Secret.from_name("hf").update({"B": "2"})

    assert modal_control_plane.secret_values("hf") == {"A": "1", "B": "2"}


def test_secret_update_without_a_value_removes_the_key(modal_control_plane):
    modal.Secret.objects.create("hf", {"A": "1", "B": "2"})
    secret = modal.Secret.from_name("hf").hydrate()
    remove_secret_keys(secret, ["B"])

    assert modal_control_plane.secret_values("hf") == {"A": "1"}


def test_secret_required_keys_are_checked(modal_control_plane):
    modal_control_plane.create_secret("hf", {"A": "1"})

    with pytest.raises(NotFoundError, match="missing required key"):
        modal.Secret.from_name("hf", required_keys=["HF_TOKEN"]).hydrate()


def test_secret_values_never_leave_the_control_plane(modal_control_plane):
    """Responses carry keys only, and the call log masks values too (it may be printed)."""
    modal.Secret.objects.create("hf", {"HF_TOKEN": "hf_supersecret"})
    secret = modal.Secret.from_name("hf").hydrate()

    assert secret._get_metadata().keys == ["HF_TOKEN"]
    assert "hf_supersecret" not in str(secret._get_metadata())
    assert "hf_supersecret" not in repr(modal_control_plane.calls)
    create = modal_control_plane.calls[0]
    assert create.rpc == "SecretGetOrCreate" and create.args["env_dict_keys"] == ["HF_TOKEN"]


def test_volume_create_lookup_list_delete(modal_control_plane):
    modal.Volume.objects.create("weights")
    with pytest.raises(AlreadyExistsError):
        modal.Volume.objects.create("weights")

    volume = modal.Volume.from_name("weights").hydrate()
    assert volume.object_id == modal_control_plane.state.environments["main"].volumes["weights"].id
    assert [v.name for v in modal.Volume.objects.list()] == ["weights"]

    modal.Volume.objects.delete("weights")
    assert modal.Volume.objects.list() == []
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("weights").hydrate()


def test_a_volume_keeps_the_version_it_was_created_with(modal_control_plane):
    """As Modal's servicer: the version asked for is recorded and reported; no version is
    UNSPECIFIED, which the client itself takes for v1."""
    modal.Volume.objects.create("plain")
    modal.Volume.objects.create("one", version=1)
    modal.Volume.objects.create("two", version=2)
    volumes = modal_control_plane.state.environments["main"].volumes

    assert {name: volume.version for name, volume in volumes.items()} == {
        "plain": api_pb2.VOLUME_FS_VERSION_UNSPECIFIED,
        "one": api_pb2.VOLUME_FS_VERSION_V1,
        "two": api_pb2.VOLUME_FS_VERSION_V2,
    }
    listed = raw_call(modal_control_plane, "VolumeList", api_pb2.VolumeListRequest())
    assert {item.label: item.metadata.version for item in listed.items} == {"plain": 0, "one": 1, "two": 2}
    looked_up = {name: modal.Volume.from_name(name).hydrate()._get_metadata().version for name in volumes}
    assert looked_up == {"plain": 0, "one": 1, "two": 2}
    modal.Volume.from_name("two", create_if_missing=True, version=1)  # no error before hydration ...
    with pytest.raises(InvalidError, match="exists but has version v2, not v1"):
        modal.Volume.from_name("two", version=1).hydrate()  # ... the client compares what it asked for


# What the client calls on each version (modal/volume.py): listing, writing, removing; both read
# with VolumeGetFile2.
FILE_RPCS = {
    1: {"list": "VolumeListFiles", "put": "VolumePutFiles", "remove": "VolumeRemoveFile"},
    2: {"list": "VolumeListFiles2", "put": "VolumePutFiles2", "remove": "VolumeRemoveFile2"},
}


@pytest.mark.parametrize("version", [1, 2])
def test_volume_files_through_the_client(modal_control_plane, version):
    cp = modal_control_plane
    modal.Volume.objects.create("weights", version=version)
    volume = modal.Volume.from_name("weights")
    mark = cp.mark()
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"{}"), "/GLM/config.json")
        batch.put_file(io.BytesIO(b"w" * 100), "/GLM/model-00001.safetensors")

    assert cp.volume_files("weights") == {
        "GLM/config.json": b"{}",
        "GLM/model-00001.safetensors": b"w" * 100,
    }
    assert [(e.path, e.type.name) for e in volume.listdir("/")] == [("GLM", "DIRECTORY")]
    assert sorted(e.path for e in volume.listdir("/GLM")) == ["GLM/config.json", "GLM/model-00001.safetensors"]
    assert b"".join(volume.read_file("GLM/config.json")) == b"{}"

    volume.remove_file("GLM/config.json")
    assert list(cp.volume_files("weights")) == ["GLM/model-00001.safetensors"]
    with pytest.raises(FileNotFoundError):
        b"".join(volume.read_file("GLM/config.json"))
    rpcs = set(cp.rpcs_called(mark))
    assert set(FILE_RPCS[version].values()) | {"VolumeGetFile2"} <= rpcs
    assert not rpcs & set(FILE_RPCS[3 - version].values())  # never the other version's family


@pytest.mark.parametrize("version", [1, 2])
def test_large_volume_files_span_several_blocks(modal_control_plane, version):
    """Files over the client's 8 MiB block size go through several block PUTs and GETs (v2), or one
    blob upload (v1), and come back whole."""
    data = bytes(range(256)) * (9 * 4096 + 7)  # a little over 9 MiB, not block-aligned
    modal.Volume.objects.create("weights", version=version)
    volume = modal.Volume.from_name("weights")
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(data), "big.bin")

    assert modal_control_plane.read_file("weights", "big.bin") == data
    assert b"".join(volume.read_file("big.bin")) == data
    buffer = io.BytesIO()
    volume.read_file_into_fileobj("big.bin", buffer)
    assert buffer.getvalue() == data


@pytest.mark.parametrize("version", [1, 2])
def test_tests_can_place_and_remove_files(modal_control_plane, version):
    modal_control_plane.create_volume("weights", version=version)
    modal_control_plane.put_file("weights", "GLM/model.safetensors.index.json", b"{}")
    volume = modal.Volume.from_name("weights")

    assert [e.path for e in volume.listdir("GLM")] == ["GLM/model.safetensors.index.json"]
    assert b"".join(volume.read_file("/GLM/model.safetensors.index.json")) == b"{}"

    modal_control_plane.remove_file("weights", "GLM")
    with pytest.raises(NotFoundError):
        volume.listdir("GLM")
    assert modal_control_plane.volume_files("weights") == {}


def test_a_volume_placed_by_a_test_is_v1_like_one_made_by_hand(modal_control_plane):
    modal_control_plane.put_file("weights", "a.txt", b"a")
    assert modal.Volume.from_name("weights").hydrate()._get_metadata().version == api_pb2.VOLUME_FS_VERSION_V1


@pytest.mark.parametrize("version", [1, 2])
def test_volume_upload_refuses_to_overwrite_without_force(modal_control_plane, version):
    modal_control_plane.create_volume("weights", version=version)
    modal_control_plane.put_file("weights", "a.txt", b"old")
    volume = modal.Volume.from_name("weights")

    with pytest.raises(FileExistsError), volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"new"), "a.txt")
    with volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"new"), "a.txt")

    assert modal_control_plane.read_file("weights", "a.txt") == b"new"


@pytest.mark.parametrize("version", [1, 2])
def test_commit_and_reload_work_on_both_versions(modal_control_plane, version):
    cp = modal_control_plane
    cp.create_volume("weights", version=version)
    volume = modal.Volume.from_name("weights")
    volume.commit()
    volume.reload()
    assert cp.rpcs_called()[-3:] == ["VolumeCommit", "VolumeReload", "VolumeReload"]  # commit reloads too

    modal.Volume.objects.delete("weights")
    with pytest.raises(RuntimeError, match="not found"):  # the client's own translation of NOT_FOUND
        volume.commit()


def test_a_file_rpc_of_the_other_version_is_refused(modal_control_plane):
    """Whether Modal serves a volume on the other version's RPCs is unknown, so the plane refuses it:
    only VolumeGetFile2 and VolumePutFiles2 serve both, as the client and Modal's servicer use them."""
    cp = modal_control_plane
    one = cp.create_volume("one", version=1)
    two = cp.create_volume("two", version=2)
    cp.put_file("one", "a.txt", b"a")
    cp.put_file("two", "a.txt", b"a")
    requests = {
        "VolumeListFiles": api_pb2.VolumeListFilesRequest(path="/"),
        "VolumeRemoveFile": api_pb2.VolumeRemoveFileRequest(path="a.txt"),
        "VolumeGetFile": api_pb2.VolumeGetFileRequest(path="a.txt"),
        "VolumePutFiles": api_pb2.VolumePutFilesRequest(),
        "VolumeListFiles2": api_pb2.VolumeListFiles2Request(path="/"),
        "VolumeRemoveFile2": api_pb2.VolumeRemoveFile2Request(path="a.txt"),
    }
    for rpc, request in requests.items():
        wrong = two if not rpc.endswith("2") else one
        request.volume_id = wrong.id
        with pytest.raises(GRPCError) as refused:
            raw_call(cp, rpc, request)
        assert refused.value.status == Status.INVALID_ARGUMENT
        assert f"is a v{1 if wrong is one else 2} volume" in refused.value.message
    assert cp.volume_files("one") == {"a.txt": b"a"} and cp.volume_files("two") == {"a.txt": b"a"}

    read = raw_call(cp, "VolumeGetFile2", api_pb2.VolumeGetFile2Request(volume_id=one.id, path="a.txt"))
    assert read.size == 1  # the client reads v1 files with VolumeGetFile2


def test_the_v1_read_serves_ranges(modal_control_plane):
    cp = modal_control_plane
    volume = cp.create_volume("one", version=1)
    cp.put_file("one", "data.bin", b"0123456789")

    whole = raw_call(cp, "VolumeGetFile", api_pb2.VolumeGetFileRequest(volume_id=volume.id, path="/data.bin"))
    part = raw_call(cp, "VolumeGetFile", api_pb2.VolumeGetFileRequest(volume_id=volume.id, path="data.bin",
                                                                      start=2, len=3))  # fmt: skip
    assert (whole.data, whole.size) == (b"0123456789", 10)
    assert (part.data, part.start, part.len, part.size) == (b"234", 2, 3, 10)
    with pytest.raises(GRPCError) as missing:
        raw_call(cp, "VolumeGetFile", api_pb2.VolumeGetFileRequest(volume_id=volume.id, path="nope"))
    assert missing.value.status == Status.NOT_FOUND
