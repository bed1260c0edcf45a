"""Calling functions on a deployed app and in an ephemeral run, with scripted outcomes."""

import threading
import time

import modal
import modal.experimental
import pytest
from grpclib import Status
from modal.exception import OutputExpiredError, RemoteError, ServiceError

from . import sample_app
from .client_retries import CLIENT_ATTEMPTS
from .clock import plane_with_clock
from .functions import (
    DETACHED_APP_STOP_MODES,
    RESULT_TTL_SECONDS,
    STOP_WHEN_CALLS_END,
    ContainerTerminated,
    UnscriptedFunctionError,
)

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


def wait_for(condition, what: str, timeout_s: float = HANDLER_WAIT_SECONDS) -> None:
    """Polls `condition` (a bound on a hang, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def gated_writer(late_path: str):
    """A handler whose work runs past a cancel, as a download blocked in a thread pool does: it writes
    `late_path` once released. Returns (handler, started, release, errors seen by the handler)."""
    started, release, seen = threading.Event(), threading.Event(), []

    def write_marker(args, kwargs, volumes):
        started.set()
        if not release.wait(HANDLER_WAIT_SECONDS):
            raise TimeoutError("test never released the handler")
        try:
            volumes.write(sample_app.VOLUME_NAME, late_path, b"written after the cancel")
        except BaseException as error:
            seen.append(error)
            raise
        return "finished"

    return write_marker, started, release, seen


def test_a_cancel_ends_the_call_with_an_empty_remote_error_and_stops_a_scripted_run(deployed):
    """Modal's container answers a cancel with GENERIC_STATUS_TERMINATED and no text, so the client
    raises RemoteError("") (container_io_manager.output_items_cancellation, _process_result)."""
    deployed.script_function("write_marker", seconds=30, writes={(sample_app.VOLUME_NAME, "never"): b"x"})
    call = _write_marker().spawn("a", "b")
    mark = deployed.mark()

    call.cancel()

    with pytest.raises(RemoteError) as raised:
        call.get(timeout=HANDLER_WAIT_SECONDS)
    assert str(raised.value) == "" and type(raised.value) is RemoteError
    [record] = [c for c in deployed.calls_since(mark) if c.rpc == "FunctionCallCancel"]
    assert record.args.get("terminate_containers", False) is False  # the client's default
    [plane_call] = deployed.function_calls
    assert plane_call.status == "cancelled" and plane_call.containers_running == 0
    assert "never" not in deployed.volume_files(sample_app.VOLUME_NAME)


def test_a_cancel_leaves_work_in_other_threads_writing_after_it(deployed):
    handler, started, release, seen = gated_writer("late")
    deployed.on_function("write_marker", handler)
    call = _write_marker().spawn("a", "b")
    assert started.wait(HANDLER_WAIT_SECONDS)

    call.cancel()
    with pytest.raises(RemoteError):
        call.get(timeout=HANDLER_WAIT_SECONDS)  # the call is over for Modal ...
    [plane_call] = deployed.function_calls
    assert plane_call.status == "cancelled" and plane_call.inputs[0].cancelled.is_set()
    assert plane_call.containers_running == 1  # ... its container is not

    release.set()
    wait_for(lambda: plane_call.containers_running == 0, "the handler to end")
    assert seen == []
    assert deployed.read_file(sample_app.VOLUME_NAME, "late") == b"written after the cancel"


@pytest.mark.parametrize("text", ["", "Function call was cancelled", "container terminated by user"])
def test_a_cancel_that_terminates_the_containers_stops_every_later_write(deployed, text):
    deployed.runner.terminated_message = text  # what Modal says for a killed container is not documented
    handler, started, release, seen = gated_writer("late")
    deployed.on_function("write_marker", handler)
    call = _write_marker().spawn("a", "b")
    assert started.wait(HANDLER_WAIT_SECONDS)

    call.cancel(terminate_containers=True)
    with pytest.raises(RemoteError) as raised:
        call.get(timeout=HANDLER_WAIT_SECONDS)
    assert str(raised.value) == text
    [plane_call] = deployed.function_calls
    assert plane_call.status == "cancelled" and plane_call.containers_running == 0

    release.set()
    wait_for(lambda: seen, "the handler to try its write")
    assert isinstance(seen[0], ContainerTerminated)
    assert "late" not in deployed.volume_files(sample_app.VOLUME_NAME)


@pytest.mark.parametrize("mode", DETACHED_APP_STOP_MODES)
def test_a_detached_app_whose_call_was_cancelled_stops_as_the_switch_says(cp, mode):
    cp.runner.detached_app_stop = mode
    handler, started, release, seen = gated_writer("late")
    cp.on_function("write_marker", handler)
    with sample_app.app.run(detach=True):
        app_id = sample_app.app.app_id
        call = sample_app.write_marker.spawn("a", "b")
        assert started.wait(HANDLER_WAIT_SECONDS)
        call.cancel()
    lifecycle = modal.experimental.get_app_lifecycle(app_id)
    if mode == STOP_WHEN_CALLS_END:
        assert lifecycle.stopped_at is not None  # stopped with its call, taking the container along
    else:
        assert lifecycle.stopped_at is None  # its container still runs, so the app does
        modal.App.lookup(app_id).stop()  # what ends it: stopping the app terminates its containers
        assert modal.experimental.get_app_lifecycle(app_id).stopped_at is not None
    release.set()
    wait_for(lambda: seen, "the handler to try its write")
    assert isinstance(seen[0], ContainerTerminated)
    assert "late" not in cp.volume_files(sample_app.VOLUME_NAME)


def test_stopping_an_app_terminates_the_containers_of_its_calls(deployed):
    handler, started, release, seen = gated_writer("late")
    deployed.on_function("write_marker", handler)
    call = _write_marker().spawn("a", "b")
    assert started.wait(HANDLER_WAIT_SECONDS)

    modal.App.lookup("sample").stop()

    with pytest.raises(RemoteError):
        call.get(timeout=HANDLER_WAIT_SECONDS)
    release.set()
    wait_for(lambda: seen, "the handler to try its write")
    assert isinstance(seen[0], ContainerTerminated)


@pytest.fixture
def aged(monkeypatch):
    with plane_with_clock(monkeypatch) as (plane, clock):
        plane.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
        sample_app.app.deploy(name="sample")
        yield plane, clock


def test_a_result_expires_seven_days_after_the_call_completed(aged):
    cp, clock = aged
    cp.script_function("write_marker", result="/models/done")
    call = _write_marker().spawn("done", "yes")
    assert call.get(timeout=HANDLER_WAIT_SECONDS) == "/models/done"

    clock.advance(RESULT_TTL_SECONDS - 60)
    assert modal.FunctionCall.from_id(call.object_id).get(timeout=0) == "/models/done"  # still there

    clock.advance(120)
    with pytest.raises(OutputExpiredError):
        modal.FunctionCall.from_id(call.object_id).get(timeout=0)


def test_a_running_call_never_expires(aged):
    cp, clock = aged
    release = threading.Event()
    cp.on_function("write_marker", lambda args, kwargs, volumes: release.wait(HANDLER_WAIT_SECONDS) and "late")
    call = _write_marker().spawn("a", "b")
    clock.advance(RESULT_TTL_SECONDS * 2)

    with pytest.raises(TimeoutError):
        call.get(timeout=0)
    release.set()
    assert call.get(timeout=HANDLER_WAIT_SECONDS) == "late"  # a fresh result, readable at once


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
