"""Running function calls: what a Modal container would have done, scripted by the test.

A test decides the outcome of each function by its Modal tag ("download_model", or for a class
"Server.*", or one method "Server.generate"):

- `script_function(tag, seconds=, result=, error=, writes=)`: after `seconds` (on the control
  plane's loop, so other RPCs keep flowing and the client keeps polling), write
  `writes[(volume, path)] = bytes` into the app's environment's volumes, then fail with `error`
  (a string becomes a `RuntimeError`, an exception instance is raised as is) or return `result`;
- `on_function(tag, handler)`: call `handler(args, kwargs, volumes)` in a worker thread with the
  call's unpickled arguments and a `VolumeAccess` for the app's environment; its return value is the
  result, and an exception it raises fails the call with that exception and its traceback text,
  which the client re-raises, as Modal does.

A function nobody scripted fails loudly with `UnscriptedFunctionError`, naming the tag.

Each input runs in a container of its own (`CallInput.container`: "running", "exited" once the
function's code ended, "terminated" once Modal killed it). Cancelling and ageing behave as on Modal:

- `FunctionCall.cancel()` (terminate_containers=False, the client's default): Modal sends the
  container a cancel event, its SIGUSR1 handler raises `InputCancellation` in the function's MAIN
  thread, and the container reports the input as GENERIC_STATUS_TERMINATED with no exception text
  and no data (modal/_container_entrypoint.py, `output_items_cancellation` in
  modal/_runtime/container_io_manager.py), so the client raises `RemoteError("")`
  (`_process_result` in modal/_utils/function_utils.py). Here: a scripted outcome (asleep in its
  main thread) stops at once and writes nothing more. A handler stands for work that runs in threads
  of its own (a download blocked in huggingface_hub's thread pool): the signal never reaches them, so
  it keeps running and its volume writes keep landing until its container ends; `volumes.cancelled`
  is the InputCancellation its main thread got (`volumes.raise_if_cancelled()` for a handler that
  models code which does stop).
- `cancel(terminate_containers=True)`: the containers running the inputs are killed (the docstring
  of `FunctionCall.cancel`; the worker SIGINTs them, modal-client #2254). Nothing the function does
  afterwards reaches a volume (a handler's next volume access raises `ContainerTerminated`). Modal
  itself reports such an input, since its container cannot; with which text is not documented:
  `FunctionRunner.terminated_message` (default "") is that text, and stopping an app does the same to
  its containers.
- When a detached app stops by itself is not documented once a cancel left a container running:
  `FunctionRunner.detached_app_stop` is STOP_WHEN_CONTAINERS_EXIT (default: the app lives while any
  of its containers runs, the strictest reading) or STOP_WHEN_CALLS_END (it stops once every input
  has an output, taking leftover containers with it).
- Results expire: Modal keeps a call's result for 7 days after completion (docs, "Job processing":
  "accessible via FunctionCall.get() for up to 7 days after completion. After this period, we return
  an expired response"). An expired input is left out of FunctionGetOutputs, which then answers no
  output and no unfinished input: that is how modal 1.6.4 detects expiry (`poll_function` raises
  OutputExpiredError). Age is measured with the control plane's clock (`ControlPlane(clock=...)`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grpclib import GRPCError, Status
from modal._serialization import deserialize_data_format, serialize
from modal.exception import InputCancellation
from modal_proto import api_pb2

from .rpc_objects import normalize_path, remove_path, write_file

if TYPE_CHECKING:
    from .blob_server import BlobStore
    from .state import App, ControlPlaneState, FunctionRecord, Volume

SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
FAILURE = api_pb2.GenericResult.GENERIC_STATUS_FAILURE
TERMINATED = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED

# How long Modal keeps a finished call's result (Modal's docs, "Job processing").
RESULT_TTL_SECONDS = 7 * 24 * 3600

# `FunctionRunner.detached_app_stop`: when a detached app whose calls all have an output stops.
STOP_WHEN_CONTAINERS_EXIT = "when-containers-exit"
STOP_WHEN_CALLS_END = "when-calls-end"
DETACHED_APP_STOP_MODES = (STOP_WHEN_CONTAINERS_EXIT, STOP_WHEN_CALLS_END)

# What the container sends for an input whose main thread got InputCancellation: no text, no data.
CANCELLED_BY_CONTAINER = api_pb2.GenericResult(status=TERMINATED)


class UnscriptedFunctionError(RuntimeError):
    """Raised (remotely, so the client re-raises it) by a function no test scripted."""


class ContainerTerminated(BaseException):
    """Raised in a handler's thread when it touches a volume after Modal killed its container: what it
    would have written never lands. A BaseException, so a handler's `except Exception` cannot hide it."""


@dataclass(frozen=True)
class ScriptedOutcome:
    seconds: float = 0.0
    result: Any = None
    error: str | BaseException | None = None
    writes: dict[tuple[str, str], bytes] = field(default_factory=dict)


Handler = Callable[[tuple, dict, "VolumeAccess"], Any]


class VolumeAccess:
    """The volumes of one environment, as a running function sees them (by volume name)."""

    def __init__(self, state: ControlPlaneState, environment: str, now: Callable[[], float],
                 mounts: dict[str, str] | None = None, call_input: CallInput | None = None):  # fmt: skip
        self._state = state
        self.environment = environment
        self._now = now
        # Where the function has each volume mounted: mount path -> volume name.
        self.mounts: dict[str, str] = dict(mounts or {})
        self._input = call_input
        # Set when a non-terminating cancel raised InputCancellation in the function's main thread.
        self.cancelled = call_input.cancelled if call_input is not None else threading.Event()

    def raise_if_cancelled(self) -> None:
        """What code running in the function's main thread meets after a cancel: InputCancellation."""
        if self.cancelled.is_set():
            raise InputCancellation("Input was cancelled by user")

    def _volume(self, name: str, *, create: bool = False) -> Volume:
        # Called with state.lock held: a container killed meanwhile has its access refused here.
        if self._input is not None and self._input.container == "terminated":
            raise ContainerTerminated(f"the container of input {self._input.id} was terminated")
        env = self._state.environment(self.environment)
        if env is None:
            raise KeyError(f"environment {self.environment!r} does not exist")
        volume = env.volumes.get(name)
        if volume is None:
            if not create:
                raise KeyError(f"volume {name!r} does not exist in environment {self.environment!r}")
            volume = self._state.add_volume(env, name, self._now())
        return volume

    def read(self, volume: str, path: str) -> bytes:
        with self._state.lock:
            return self._volume(volume).files[normalize_path(path)]

    def exists(self, volume: str, path: str) -> bool:
        with self._state.lock:
            return normalize_path(path) in self._volume(volume).files

    def write(self, volume: str, path: str, data: bytes) -> None:
        with self._state.lock:
            write_file(self._volume(volume, create=True), path, data, self._now())

    def remove(self, volume: str, path: str, *, recursive: bool = False) -> None:
        with self._state.lock:
            try:
                remove_path(self._volume(volume), path, recursive=recursive)
            except GRPCError as exc:
                raise FileNotFoundError(exc.message) from None

    def files(self, volume: str) -> dict[str, bytes]:
        with self._state.lock:
            return dict(self._volume(volume).files)

    @contextlib.contextmanager
    def local_dir(self, volume: str) -> Iterator[Path]:
        """A temporary directory holding the volume's files; on exit, what the code in the `with`
        block wrote, changed or deleted there is applied to the volume (as a commit would). Lets real
        code that works on a mounted path (e.g. a download into /models) run against a fake volume."""
        with tempfile.TemporaryDirectory(prefix=f"volume-{volume}-") as tmp:
            root = Path(tmp)
            before = self.files(volume)
            for path, data in before.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_bytes(data)
            try:
                yield root
            finally:
                after = {
                    p.relative_to(root).as_posix(): p.read_bytes()
                    for p in root.rglob("*")
                    if p.is_file() and not p.is_symlink()
                }
                with self._state.lock:
                    target = self._volume(volume, create=True)
                    for path in set(before) - set(after):
                        remove_path(target, path, recursive=False)
                    for path, data in after.items():
                        if before.get(path) != data:
                            write_file(target, path, data, self._now())
                shutil.rmtree(root, ignore_errors=True)


@dataclass
class CallInput:
    id: str
    idx: int
    method_name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    decode_error: BaseException | None = None
    result: api_pb2.GenericResult | None = None
    completed_at: float | None = None  # when `result` was produced, on the control plane's clock
    container: str = "running"  # running | exited (its code ended) | terminated (killed by Modal)
    cancelled: threading.Event = field(default_factory=threading.Event)  # a non-terminating cancel
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> str:
        if self.result is None:
            return "running"
        return {SUCCESS: "succeeded", TERMINATED: "cancelled"}.get(self.result.status, "failed")


@dataclass
class FunctionCall:
    """One `.remote()`/`.spawn()` of a function; tests read these from `cp.function_calls`."""

    id: str
    function_id: str
    app_id: str
    tag: str
    environment: str
    created_at: float
    volume_mounts: dict[str, str] = field(default_factory=dict)  # mount path -> volume name
    inputs: list[CallInput] = field(default_factory=list)
    tasks: list[asyncio.Task] = field(default_factory=list, repr=False)

    def unfinished(self) -> int:
        return sum(1 for inp in self.inputs if inp.result is None)

    @property
    def args(self) -> tuple:
        return self.inputs[0].args if self.inputs else ()

    @property
    def kwargs(self) -> dict:
        return self.inputs[0].kwargs if self.inputs else {}

    @property
    def status(self) -> str:
        statuses = {inp.status for inp in self.inputs}
        for status in ("running", "failed", "cancelled"):
            if status in statuses:
                return status
        return "succeeded"

    @property
    def containers_running(self) -> int:
        """Containers of this call whose code still runs (after a non-terminating cancel, too)."""
        return sum(1 for inp in self.inputs if inp.container == "running")


class FunctionRunner:
    def __init__(self, state: ControlPlaneState, blobs: BlobStore, now: Callable[[], float]):
        self._state = state
        self._blobs = blobs
        self._now = now
        self._lock = threading.Lock()
        self.outcomes: dict[str, ScriptedOutcome | Handler] = {}
        self.calls: dict[str, FunctionCall] = {}
        # The switches for what Modal does not document (module docstring).
        self.terminated_message = ""
        self.detached_app_stop = STOP_WHEN_CONTAINERS_EXIT
        self.result_ttl_seconds: float = RESULT_TTL_SECONDS

    # ---- scripting (test thread) ---------------------------------------------------------------

    def script(self, tag: str, outcome: ScriptedOutcome | Handler) -> None:
        with self._lock:
            self.outcomes[tag] = outcome

    def _outcome_for(self, tag: str, method_name: str) -> ScriptedOutcome | Handler | None:
        candidates = [tag]
        if method_name:
            class_name = tag.removesuffix(".*")
            candidates = [f"{class_name}.{method_name}", f"{class_name}.*", tag]
        with self._lock:
            for candidate in candidates:
                if candidate in self.outcomes:
                    return self.outcomes[candidate]
        return None

    # ---- calls (control plane loop) ------------------------------------------------------------

    def get(self, function_call_id: str) -> FunctionCall:
        with self._lock:
            call = self.calls.get(function_call_id)
        if call is None:
            raise GRPCError(Status.NOT_FOUND, f"Function call '{function_call_id}' not found")
        return call

    def start(self, record: FunctionRecord, app: App, items: list[api_pb2.FunctionPutInputsItem]) -> FunctionCall:
        with self._state.lock:
            call_id = self._state.new_id("fc")
            volume_names = {
                path: vol.name
                for path, volume_id in record.volume_mounts.items()
                if (vol := self._state.by_id.get(volume_id)) is not None
            }
        call = FunctionCall(call_id, record.id, app.id, record.tag, app.environment, self._now(), volume_names)
        with self._lock:
            self.calls[call.id] = call
        self.add_inputs(call, items)
        return call

    def add_inputs(self, call: FunctionCall, items: list[api_pb2.FunctionPutInputsItem]) -> list[CallInput]:
        added = []
        for item in items:
            with self._state.lock:
                input_id = self._state.new_id("in")
            inp = CallInput(id=input_id, idx=item.idx, method_name=item.input.method_name)
            try:
                inp.args, inp.kwargs = self._decode_args(item.input)
            except Exception as exc:
                inp.decode_error = exc
            call.inputs.append(inp)
            call.tasks.append(asyncio.get_running_loop().create_task(self._execute(call, inp)))
            added.append(inp)
        return added

    def _decode_args(self, function_input: api_pb2.FunctionInput) -> tuple[tuple, dict]:
        if function_input.WhichOneof("args_oneof") == "args_blob_id":
            with self._blobs.lock:
                data = self._blobs.blobs[function_input.args_blob_id]
        else:
            data = function_input.args
        args, kwargs = deserialize_data_format(data, function_input.data_format or api_pb2.DATA_FORMAT_PICKLE, None)
        return tuple(args), dict(kwargs)

    async def _execute(self, call: FunctionCall, inp: CallInput) -> None:
        tag = f"{call.tag.removesuffix('.*')}.{inp.method_name}" if inp.method_name else call.tag
        outcome = self._outcome_for(call.tag, inp.method_name)
        volumes = VolumeAccess(self._state, call.environment, self._now, call.volume_mounts, inp)
        in_thread = False
        try:
            if inp.decode_error is not None:
                raise inp.decode_error
            if outcome is None:
                raise UnscriptedFunctionError(
                    f"modal_control_plane: no outcome scripted for function {tag!r}; use "
                    "cp.script_function(...) or cp.on_function(...)"
                )
            if isinstance(outcome, ScriptedOutcome):
                value = await _scripted(outcome, volumes)
            else:
                in_thread = True
                loop = asyncio.get_running_loop()
                value = await asyncio.to_thread(self._run_handler, loop, call, inp, outcome, volumes)
            self._finish(inp, api_pb2.GenericResult(status=SUCCESS, data=serialize(value)))
        except asyncio.CancelledError:
            # The main thread's InputCancellation (or the plane shutting down): what the container sends.
            self._finish(inp, CANCELLED_BY_CONTAINER)
        except ContainerTerminated:
            pass  # killed: Modal already reported the input
        except Exception as exc:
            self._finish(inp, _failure(exc))
        finally:
            if not in_thread:
                self._exit_container(inp)
        self.stop_if_done(call.app_id)

    def _run_handler(
        self, loop: asyncio.AbstractEventLoop, call: FunctionCall, inp: CallInput, handler: Handler,
        volumes: VolumeAccess,
    ) -> Any:  # fmt: skip
        """The handler in its worker thread; its container ends when it returns, whoever waited for it."""
        try:
            return handler(inp.args, inp.kwargs, volumes)
        finally:
            self._exit_container(inp)
            # Back on the loop: stopping the app settles asyncio state, which only the loop may touch.
            with contextlib.suppress(RuntimeError):  # the plane stopped meanwhile
                loop.call_soon_threadsafe(self.stop_if_done, call.app_id)

    def _exit_container(self, inp: CallInput) -> None:
        with self._state.lock:
            if inp.container == "running":
                inp.container = "exited"

    def _finish(self, inp: CallInput, result: api_pb2.GenericResult) -> None:
        """Record an input's outcome once: the first of completion and cancellation wins."""
        if inp.result is None:
            inp.result = result
            inp.completed_at = self._now()
            inp.done.set()

    def _expired(self, inp: CallInput) -> bool:
        return inp.completed_at is not None and self._now() - inp.completed_at > self.result_ttl_seconds

    async def wait_outputs(
        self, call: FunctionCall, wanted: range | None, timeout: float
    ) -> list[api_pb2.FunctionGetOutputsItem]:
        inputs = [inp for inp in call.inputs if wanted is None or inp.idx in wanted]
        pending = [asyncio.ensure_future(inp.done.wait()) for inp in inputs if not inp.done.is_set()]
        if pending and len(pending) == len(inputs):
            _, still_pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for future in still_pending:
                future.cancel()
        else:
            for future in pending:
                future.cancel()
        return [
            api_pb2.FunctionGetOutputsItem(
                input_id=inp.id, idx=inp.idx, result=inp.result, data_format=api_pb2.DATA_FORMAT_PICKLE
            )
            for inp in inputs
            if inp.result is not None and not self._expired(inp)
        ]

    def cancel(self, call: FunctionCall, *, terminate_containers: bool = False) -> None:
        """FunctionCallCancel (see the module docstring)."""
        if terminate_containers:
            self._terminate(call)
        else:
            for inp in call.inputs:
                if inp.result is None:
                    inp.cancelled.set()
                    # Settled here rather than in the task: a task cancelled before it first ran
                    # never executes its body.
                    self._finish(inp, CANCELLED_BY_CONTAINER)
            for task in call.tasks:
                task.cancel()
        self.stop_if_done(call.app_id)

    def _terminate(self, call: FunctionCall) -> None:
        """Kill the containers of the call's inputs; Modal reports the unfinished ones as terminated."""
        with self._state.lock:
            for inp in call.inputs:
                if inp.container == "running":
                    inp.container = "terminated"
                self._finish(inp, api_pb2.GenericResult(status=TERMINATED, exception=self.terminated_message))
        for task in call.tasks:
            task.cancel()

    def stop_if_done(self, app_id: str) -> None:
        """Stop a detached app once it had calls and none of them runs any more (Modal runs a detached
        app until its work is done, whether or not its client said goodbye; see `detached_app_stop`
        for a container a cancel left running), or once its client disconnected before it called
        anything. Its containers end with it."""
        with self._lock:
            calls = [call for call in self.calls.values() if call.app_id == app_id]
        with self._state.lock:
            app = self._state.by_id.get(app_id)
            if app is None or not app.detached or app.state == "stopped":
                return
            if any(call.unfinished() for call in calls) or not (calls or app.disconnected):
                return
            if self.detached_app_stop == STOP_WHEN_CONTAINERS_EXIT and any(c.containers_running for c in calls):
                return
            app.state = "stopped"
            app.stopped_at = self._now()
            for call in calls:
                self._terminate(call)

    def cancel_app(self, app_id: str) -> None:
        """The app stopped (AppStop, a disconnect of an app that is not detached): Modal terminates all
        of its containers (`App.stop`'s docstring)."""
        with self._lock:
            calls = [call for call in self.calls.values() if call.app_id == app_id]
        for call in calls:
            self._terminate(call)

    def snapshot(self) -> list[FunctionCall]:
        with self._lock:
            return list(self.calls.values())


async def _scripted(outcome: ScriptedOutcome, volumes: VolumeAccess) -> Any:
    if outcome.seconds:
        await asyncio.sleep(outcome.seconds)
    for (volume, path), data in outcome.writes.items():
        volumes.write(volume, path, data)
    if isinstance(outcome.error, BaseException):
        raise outcome.error
    if outcome.error is not None:
        raise RuntimeError(outcome.error)
    return outcome.result


def _failure(exc: BaseException) -> api_pb2.GenericResult:
    """A failed input as a Modal container reports it: the pickled exception (which the client
    re-raises) plus its repr and formatted traceback."""
    try:
        data = serialize(exc)
    except Exception:
        data = b""  # unpicklable: the client raises RemoteError with the repr instead
    return api_pb2.GenericResult(
        status=FAILURE,
        exception=repr(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        data=data,
    )
