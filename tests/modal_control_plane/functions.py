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
from modal_proto import api_pb2

from .rpc_objects import normalize_path, remove_path, write_file

if TYPE_CHECKING:
    from .blob_server import BlobStore
    from .state import App, ControlPlaneState, FunctionRecord, Volume

SUCCESS = api_pb2.GenericResult.GENERIC_STATUS_SUCCESS
FAILURE = api_pb2.GenericResult.GENERIC_STATUS_FAILURE
TERMINATED = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED


class UnscriptedFunctionError(RuntimeError):
    """Raised (remotely, so the client re-raises it) by a function no test scripted."""


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
                 mounts: dict[str, str] | None = None):  # fmt: skip
        self._state = state
        self.environment = environment
        self._now = now
        # Where the function has each volume mounted: mount path -> volume name.
        self.mounts: dict[str, str] = dict(mounts or {})

    def _volume(self, name: str, *, create: bool = False) -> Volume:
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


class FunctionRunner:
    def __init__(self, state: ControlPlaneState, blobs: BlobStore, now: Callable[[], float]):
        self._state = state
        self._blobs = blobs
        self._now = now
        self._lock = threading.Lock()
        self.outcomes: dict[str, ScriptedOutcome | Handler] = {}
        self.calls: dict[str, FunctionCall] = {}

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
        volumes = VolumeAccess(self._state, call.environment, self._now, call.volume_mounts)
        try:
            if inp.decode_error is not None:
                raise inp.decode_error
            if outcome is None:
                raise UnscriptedFunctionError(
                    f"modal_control_plane: no outcome scripted for function {tag!r}; use "
                    "cp.script_function(...) or cp.on_function(...)"
                )
            if isinstance(outcome, ScriptedOutcome):
                if outcome.seconds:
                    await asyncio.sleep(outcome.seconds)
                for (volume, path), data in outcome.writes.items():
                    volumes.write(volume, path, data)
                if isinstance(outcome.error, BaseException):
                    raise outcome.error
                if outcome.error is not None:
                    raise RuntimeError(outcome.error)
                value = outcome.result
            else:
                value = await asyncio.to_thread(outcome, inp.args, inp.kwargs, volumes)
            _finish(inp, api_pb2.GenericResult(status=SUCCESS, data=serialize(value)))
        except asyncio.CancelledError:
            _finish(inp, CANCELLED_RESULT)
        except Exception as exc:
            _finish(inp, _failure(exc))
        self.stop_if_done(call.app_id)

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
            if inp.result is not None
        ]

    def cancel(self, call: FunctionCall) -> None:
        # Settle the inputs here rather than in the tasks: a task cancelled before it first ran
        # never executes its body.
        for inp in call.inputs:
            _finish(inp, CANCELLED_RESULT)
        for task in call.tasks:
            task.cancel()
        self.stop_if_done(call.app_id)

    def stop_if_done(self, app_id: str) -> None:
        """Stop a detached app once it had calls and none of them runs any more (Modal runs a detached
        app until its work is done, whether or not its client said goodbye), or once its client
        disconnected before it called anything."""
        with self._lock:
            calls = [call for call in self.calls.values() if call.app_id == app_id]
        with self._state.lock:
            app = self._state.by_id.get(app_id)
            if app is None or not app.detached or app.state == "stopped":
                return
            if any(call.unfinished() for call in calls) or not (calls or app.disconnected):
                return
            app.state = "stopped"
            app.stopped_at = self._now()

    def cancel_app(self, app_id: str) -> None:
        with self._lock:
            calls = [call for call in self.calls.values() if call.app_id == app_id]
        for call in calls:
            self.cancel(call)

    def snapshot(self) -> list[FunctionCall]:
        with self._lock:
            return list(self.calls.values())


CANCELLED_RESULT = api_pb2.GenericResult(status=TERMINATED, exception="Function call was cancelled")


def _finish(inp: CallInput, result: api_pb2.GenericResult) -> None:
    """Record an input's outcome once: the first of completion and cancellation wins."""
    if inp.result is None:
        inp.result = result
        inp.done.set()


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
