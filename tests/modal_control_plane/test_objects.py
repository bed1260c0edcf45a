"""The real modal client managing environments, secrets and volumes against the control plane."""

import io

import modal
import pytest
from modal.exception import AlreadyExistsError, NotFoundError

from providers.modal_internals import remove_secret_keys


def test_client_hello_authenticates(modal_control_plane):
    modal.Client.from_env().hello()

    assert [call.rpc for call in modal_control_plane.calls] == ["ClientHello"]


def test_wrong_token_is_rejected(modal_control_plane):
    client = modal.Client.from_credentials("ak-someone-else", "as-wrong")
    with pytest.raises(modal.exception.AuthError, match="Token missing or invalid"):
        client.hello()


def test_environments_create_list_delete(modal_control_plane):
    modal.Environment.objects.create("staging")
    with pytest.raises(AlreadyExistsError):
        modal.Environment.objects.create("staging")

    assert [env.name for env in modal.Environment.objects.list()] == ["main", "staging"]
    assert modal_control_plane.state.environments["staging"].settings["webhook_suffix"] == "staging"

    modal.Environment.objects.delete("staging")
    assert [env.name for env in modal.Environment.objects.list()] == ["main"]
    with pytest.raises(NotFoundError):
        modal.Environment.objects.delete("staging")


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
    with pytest.raises(NotFoundError):
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


def test_operations_in_a_missing_environment_fail(modal_control_plane):
    with pytest.raises(NotFoundError, match="Environment 'ghost' not found"):
        modal.Secret.objects.create("hf", {"A": "1"}, environment_name="ghost")


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


def test_volume_files_through_the_client(modal_control_plane):
    volume = modal.Volume.from_name("weights", create_if_missing=True)
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"{}"), "/GLM/config.json")
        batch.put_file(io.BytesIO(b"w" * 100), "/GLM/model-00001.safetensors")

    assert modal_control_plane.volume_files("weights") == {
        "GLM/config.json": b"{}",
        "GLM/model-00001.safetensors": b"w" * 100,
    }
    assert [(e.path, e.type.name) for e in volume.listdir("/")] == [("GLM", "DIRECTORY")]
    assert sorted(e.path for e in volume.listdir("/GLM")) == ["GLM/config.json", "GLM/model-00001.safetensors"]
    assert b"".join(volume.read_file("GLM/config.json")) == b"{}"

    volume.remove_file("GLM/config.json")
    assert list(modal_control_plane.volume_files("weights")) == ["GLM/model-00001.safetensors"]
    with pytest.raises(FileNotFoundError):
        b"".join(volume.read_file("GLM/config.json"))


def test_large_volume_files_span_several_blocks(modal_control_plane):
    """Files over the client's 8 MiB block size go through several block PUTs and GETs."""
    data = bytes(range(256)) * (9 * 4096 + 7)  # a little over 9 MiB, not block-aligned
    volume = modal.Volume.from_name("weights", create_if_missing=True)
    with volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(data), "big.bin")

    assert modal_control_plane.read_file("weights", "big.bin") == data
    assert b"".join(volume.read_file("big.bin")) == data
    buffer = io.BytesIO()
    volume.read_file_into_fileobj("big.bin", buffer)
    assert buffer.getvalue() == data


def test_tests_can_place_and_remove_files(modal_control_plane):
    modal_control_plane.put_file("weights", "GLM/model.safetensors.index.json", b"{}")
    volume = modal.Volume.from_name("weights")

    assert [e.path for e in volume.listdir("GLM")] == ["GLM/model.safetensors.index.json"]
    assert b"".join(volume.read_file("/GLM/model.safetensors.index.json")) == b"{}"

    modal_control_plane.remove_file("weights", "GLM")
    with pytest.raises(NotFoundError):
        volume.listdir("GLM")
    assert modal_control_plane.volume_files("weights") == {}


def test_volume_upload_refuses_to_overwrite_without_force(modal_control_plane):
    modal_control_plane.put_file("weights", "a.txt", b"old")
    volume = modal.Volume.from_name("weights")

    with pytest.raises(FileExistsError), volume.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"new"), "a.txt")
    with volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"new"), "a.txt")

    assert modal_control_plane.read_file("weights", "a.txt") == b"new"
