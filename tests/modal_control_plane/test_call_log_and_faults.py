"""The call log, fault injection, and loud failure for anything the control plane does not serve."""

import time

import modal
import pytest
from grpclib import Status
from modal.exception import ServiceError, UnimplementedError
from modal_proto import api_pb2

from .calls import is_mutating
from .client_retries import CLIENT_ATTEMPTS
from .server import ControlPlane


def test_every_call_is_logged_with_name_arguments_and_time(modal_control_plane):
    cp = modal_control_plane
    before = time.time()

    modal.Secret.objects.create("hf", {"HF_TOKEN": "x"}, environment_name="main")

    [call] = cp.calls
    assert call.rpc == "SecretGetOrCreate"
    assert call.mutating
    assert call.args["deployment_name"] == "hf"
    assert call.args["environment_name"] == "main"
    assert call.args["object_creation_type"] == "OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS"
    assert before <= call.ts <= time.time()
    assert call.metadata["x-retry-attempt"] == "0"
    assert "x-modal-token-secret" not in call.metadata


def test_lookups_are_not_mutating_and_creations_are(modal_control_plane):
    cp = modal_control_plane
    cp.create_secret("hf", {"A": "1"})
    cp.put_file("weights", "a", b"a")

    mark = cp.mark()
    modal.Secret.from_name("hf").hydrate()
    modal.Volume.from_name("weights").listdir("/")
    modal.Environment.objects.list()
    assert cp.calls_since(mark) and cp.mutating_calls(since=mark) == []

    modal.Volume.from_name("weights").remove_file("a")
    modal.Secret.from_name("fresh", environment_name="main")  # lazy: no call until used
    modal.Volume.from_name("new", create_if_missing=True).hydrate()
    assert [c.rpc for c in cp.mutating_calls(since=mark)] == ["VolumeRemoveFile", "VolumeGetOrCreate"]  # a v1 volume


@pytest.mark.parametrize(
    ("rpc", "request_message", "mutating"),
    [
        ("AppPublish", api_pb2.AppPublishRequest(), True),
        ("FunctionPrecreate", api_pb2.FunctionPrecreateRequest(), True),
        ("FunctionMap", api_pb2.FunctionMapRequest(), True),
        ("VolumePutFiles2", api_pb2.VolumePutFiles2Request(), True),
        ("AppStop", api_pb2.AppStopRequest(), True),
        ("ImageGetOrCreate", api_pb2.ImageGetOrCreateRequest(), True),
        ("AppGetByDeploymentName", api_pb2.AppGetByDeploymentNameRequest(), False),
        ("AppGetLayout", api_pb2.AppGetLayoutRequest(), False),
        ("FunctionGetOutputs", api_pb2.FunctionGetOutputsRequest(), False),
        ("AppHeartbeat", api_pb2.AppHeartbeatRequest(), False),
        ("ImageJoinStreaming", api_pb2.ImageJoinStreamingRequest(), False),
        ("MountBatchedCheckExistence", api_pb2.MountBatchedCheckExistenceRequest(), False),
        ("SecretGetOrCreate", api_pb2.SecretGetOrCreateRequest(), False),
        (
            "SecretGetOrCreate",
            api_pb2.SecretGetOrCreateRequest(object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING),
            True,
        ),
    ],
)
def test_mutating_classification(rpc, request_message, mutating):
    assert is_mutating(rpc, request_message) is mutating


def test_mark_calls_since_and_clear(modal_control_plane):
    cp = modal_control_plane
    modal.Environment.objects.list()
    mark = cp.mark()
    modal.Secret.objects.list()

    assert cp.rpcs_called(since=mark) == ["SecretList"]
    assert cp.rpcs_called() == ["EnvironmentList", "SecretList"]
    cp.clear_calls()
    assert cp.calls == []
    assert cp.calls_since(0) == []


def test_fail_next_fails_exactly_n_calls_then_recovers(modal_control_plane):
    cp = modal_control_plane
    cp.fail_next("EnvironmentList", n=4, status=Status.UNAVAILABLE, message="maintenance")

    with pytest.raises(ServiceError, match="maintenance"):
        modal.Environment.objects.list()
    assert [env.name for env in modal.Environment.objects.list()] == ["main"]
    assert cp.rpcs_called() == ["EnvironmentList"] * 5


def test_fail_next_with_a_permanent_status(modal_control_plane):
    modal_control_plane.fail_next("SecretList", status=Status.PERMISSION_DENIED, message="not yours")

    with pytest.raises(modal.exception.PermissionDeniedError, match="not yours"):
        modal.Secret.objects.list()
    assert modal.Secret.objects.list() == []


def test_fault_controls_reject_unknown_rpc_names(modal_control_plane):
    with pytest.raises(ValueError, match="SecretGetOrCreat"):
        modal_control_plane.fail_next("SecretGetOrCreat")
    with pytest.raises(ValueError, match="NoSuchRpc"):
        modal_control_plane.add_latency("NoSuchRpc", 1.0)


def test_added_latency_delays_each_call(modal_control_plane):
    cp = modal_control_plane
    cp.add_latency("SecretList", 0.3)

    started = time.monotonic()
    modal.Secret.objects.list()
    modal.Secret.objects.list()
    assert time.monotonic() - started >= 0.6  # a lower bound: sleeping never ends early

    cp.add_latency("SecretList", 0)
    assert cp.faults.latency == {}


def test_unimplemented_rpcs_fail_loudly_with_their_name(modal_control_plane):
    with pytest.raises(UnimplementedError, match="DictGetOrCreate is not implemented by tests/modal_control_plane"):
        modal.Dict.from_name("cache", create_if_missing=True).hydrate()

    assert modal_control_plane.rpcs_called() == ["DictGetOrCreate"]


def test_a_crash_inside_the_control_plane_is_recorded(monkeypatch):
    """The fixture fails a test whose control plane crashed; here we only check the recording."""
    with ControlPlane() as cp:

        async def broken(request):
            raise KeyError("bug")

        monkeypatch.setattr(cp.rpcs, "EnvironmentList", broken)
        from .fixtures import connect_in_process

        with connect_in_process(cp, monkeypatch), pytest.raises(modal.exception.InternalError):
            modal.Environment.objects.list()
        # Answered with INTERNAL, which the client retries: one record per attempt.
        assert len(cp.server_errors) == CLIENT_ATTEMPTS
        assert all("KeyError: 'bug'" in error for error in cp.server_errors)


def test_starts_fast_on_loopback_only():
    started = time.monotonic()
    with ControlPlane() as cp:
        elapsed = time.monotonic() - started
        assert cp.url.startswith("http://127.0.0.1:")
        assert cp.blob_url.startswith("http://127.0.0.1:")
        assert cp._grpc_server._server.sockets[0].getsockname()[0] == "127.0.0.1"
    # Typically a few milliseconds; the bound leaves a wide margin for a loaded CI machine.
    assert elapsed < 1.0


def test_client_env_points_subprocesses_here(modal_control_plane):
    env = modal_control_plane.client_env
    assert env["MODAL_SERVER_URL"] == modal_control_plane.url
    assert set(env) >= {"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH", "HOME"}
    assert "MODAL_ENVIRONMENT" not in env

    full = modal_control_plane.subprocess_env({"PATH": "/bin", "MODAL_ENVIRONMENT": "prod", "MODAL_PROFILE": "x"})
    assert full["PATH"] == "/bin" and "MODAL_PROFILE" not in full and "MODAL_ENVIRONMENT" not in full
    assert modal_control_plane.subprocess_env({}, environment="dev")["MODAL_ENVIRONMENT"] == "dev"
