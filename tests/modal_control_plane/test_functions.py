"""Calling functions on a deployed app and in an ephemeral run, with scripted outcomes."""

import threading

import modal
import pytest
from grpclib import Status
from modal.exception import ServiceError

from . import sample_app
from .client_retries import CLIENT_ATTEMPTS
from .functions import UnscriptedFunctionError

# How long a test waits for a handler thread to be released before declaring the test broken.
HANDLER_WAIT_SECONDS = 30


@pytest.fixture
def cp(modal_control_plane):
    modal_control_plane.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    return modal_control_plane


@pytest.fixture
def deployed(cp):
    sample_app.app.deploy(name="sample")
    return cp


def _write_marker():
    return modal.Function.from_name("sample", "write_marker")


def test_scripted_result_of_a_deployed_function(deployed):
    deployed.script_function("write_marker", result="/models/done")

    assert _write_marker().remote("done", contents="yes") == "/models/done"

    [call] = deployed.function_calls
    assert call.tag == "write_marker" and call.status == "succeeded"
    assert call.args == ("done",) and call.kwargs == {"contents": "yes"}
    assert deployed.rpcs_called()[-3:] == ["FunctionGet", "FunctionMap", "FunctionGetOutputs"]


def test_scripted_writes_land_in_the_volume(deployed):
    deployed.script_function("write_marker", writes={(sample_app.VOLUME_NAME, "markers/a"): b"A"})

    assert _write_marker().remote("a", "A") is None

    volume = modal.Volume.from_name(sample_app.VOLUME_NAME)
    assert b"".join(volume.read_file("markers/a")) == b"A"


def test_scripted_error_string_is_raised_as_runtime_error(deployed):
    deployed.script_function("write_marker", error="disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _write_marker().remote("a", "A")
    assert deployed.function_calls[0].status == "failed"


def test_scripted_exception_keeps_its_type(deployed):
    deployed.script_function("write_marker", error=PermissionError("hub says 403"))

    with pytest.raises(PermissionError, match="hub says 403"):
        _write_marker().remote("a", "A")


def test_scripted_delay_keeps_the_call_running_until_it_is_over(deployed):
    deployed.script_function("write_marker", seconds=0.3, result="late")

    assert _write_marker().remote("a", "A") == "late"


def test_handler_sees_arguments_and_volumes(deployed):
    deployed.put_file(sample_app.VOLUME_NAME, "existing.txt", b"before")
    seen = {}

    def write_marker(args, kwargs, volumes):
        seen.update(args=args, kwargs=kwargs, mounts=volumes.mounts)
        seen["existing"] = volumes.read(sample_app.VOLUME_NAME, "existing.txt")
        volumes.write(sample_app.VOLUME_NAME, args[0], kwargs["contents"].encode())
        return f"/models/{args[0]}"

    deployed.on_function("write_marker", write_marker)

    assert _write_marker().remote("m.txt", contents="hi") == "/models/m.txt"
    assert seen == {
        "args": ("m.txt",),
        "kwargs": {"contents": "hi"},
        "mounts": {sample_app.MOUNT_PATH: sample_app.VOLUME_NAME},
        "existing": b"before",
    }
    assert deployed.read_file(sample_app.VOLUME_NAME, "m.txt") == b"hi"


def test_handler_exception_fails_the_call_with_its_traceback(deployed):
    def write_marker(args, kwargs, volumes):
        raise ValueError(f"bad name {args[0]!r}")

    deployed.on_function("write_marker", write_marker)

    with pytest.raises(ValueError, match="bad name 'x'") as raised:
        _write_marker().remote("x", "y")
    assert raised.type is ValueError
    call = deployed.function_calls[0]
    assert call.status == "failed"
    assert "in write_marker" in call.inputs[0].result.traceback


def test_handler_can_run_real_code_on_a_local_copy_of_a_volume(deployed):
    deployed.put_file(sample_app.VOLUME_NAME, "old/stale.bin", b"x")

    def write_marker(args, kwargs, volumes):
        with volumes.local_dir(sample_app.VOLUME_NAME) as root:
            (root / "old" / "stale.bin").unlink()
            (root / "GLM").mkdir()
            (root / "GLM" / "config.json").write_text("{}")
        return "ok"

    deployed.on_function("write_marker", write_marker)
    _write_marker().remote("x", "y")

    assert deployed.volume_files(sample_app.VOLUME_NAME) == {"GLM/config.json": b"{}"}


def test_unscripted_functions_fail_loudly(deployed):
    with pytest.raises(UnscriptedFunctionError, match="no outcome scripted for function 'write_marker'"):
        _write_marker().remote("a", "b")


def test_class_methods_use_the_class_script_unless_a_method_has_its_own(deployed):
    deployed.script_function("Server.*", result="from class")
    server = modal.Cls.from_name("sample", "Server")()

    assert server.health.remote() == "from class"

    deployed.script_function("Server.health", result="from method")
    assert server.health.remote() == "from method"
    assert deployed.function_calls[-1].inputs[0].method_name == "health"


def test_spawn_then_poll_a_running_call(deployed):
    """A long job as our provider runs it: spawn, poll while running, collect by id later."""
    release = threading.Event()

    def write_marker(args, kwargs, volumes):
        if not release.wait(HANDLER_WAIT_SECONDS):
            raise TimeoutError("test never released the handler")
        return "finished"

    deployed.on_function("write_marker", write_marker)
    call = _write_marker().spawn("a", "b")

    with pytest.raises(TimeoutError):
        call.get(timeout=0)
    assert deployed.function_calls[0].status == "running"

    release.set()
    assert modal.FunctionCall.from_id(call.object_id).get(timeout=HANDLER_WAIT_SECONDS) == "finished"
    assert deployed.function_calls[0].status == "succeeded"


def test_cancelled_call_reports_termination(deployed):
    release = threading.Event()
    deployed.on_function("write_marker", lambda args, kwargs, volumes: release.wait(HANDLER_WAIT_SECONDS))

    call = _write_marker().spawn("a", "b")
    call.cancel()

    with pytest.raises(modal.exception.RemoteError):
        call.get(timeout=HANDLER_WAIT_SECONDS)
    assert deployed.function_calls[0].status == "cancelled"
    release.set()


def test_large_arguments_travel_through_blob_storage(deployed):
    payload = b"\x00\x01" * (3 * 1024 * 1024)  # 6 MiB: above the client's 2 MiB inline limit
    deployed.on_function("write_marker", lambda args, kwargs, volumes: len(args[1]))
    mark = deployed.mark()

    assert _write_marker().remote("big", payload) == len(payload)
    assert "BlobCreate" in deployed.rpcs_called(since=mark)


def test_polling_failures_beyond_the_client_budget_surface(deployed):
    deployed.script_function("write_marker", result="x")
    function = _write_marker().hydrate()
    deployed.fail_next("FunctionGetOutputs", n=CLIENT_ATTEMPTS, status=Status.UNAVAILABLE)

    with pytest.raises(ServiceError):
        function.remote("a", "b")


def test_ephemeral_run_without_deploying(cp):
    """`with app.run(): fn.remote()`: how the provider runs one-off jobs before any deploy."""
    cp.on_function(
        "write_marker", lambda args, kwargs, volumes: volumes.write(sample_app.VOLUME_NAME, args[0], args[1].encode())
    )

    with sample_app.app.run():
        sample_app.write_marker.remote("from-run", "E")

    assert cp.read_file(sample_app.VOLUME_NAME, "from-run") == b"E"
    assert cp.state.environments["main"].apps == {}  # nothing deployed
    [run] = cp.state.ephemeral_apps
    assert run.state == "stopped" and "write_marker" in run.functions
    assert cp.function_calls[0].app_id == run.id


def test_ephemeral_run_in_another_environment(cp):
    cp.create_environment("staging")
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"}, environment="staging")
    cp.script_function("write_marker", writes={(sample_app.VOLUME_NAME, "m"): b"staging"})

    with sample_app.app.run(environment_name="staging"):
        sample_app.write_marker.remote("m", "staging")

    assert cp.read_file(sample_app.VOLUME_NAME, "m", environment="staging") == b"staging"
    assert sample_app.VOLUME_NAME not in cp.state.environments["main"].volumes
