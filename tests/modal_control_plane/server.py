"""`ControlPlane`: a local Modal control plane that the real modal client talks gRPC to.

It serves modal_proto's `ModalClient` service with grpclib on 127.0.0.1:<free port>, plus a small
HTTP server for blobs and volume blocks (see `blob_server.py`), both on one event loop in a
daemon thread, so tests and the synchronous modal API can both use it from the main thread.

Every RPC goes through `ControlPlane._handle`, which in order: records the call in the call log,
checks the client's token, applies injected latency and failures, then answers with the method
of the same name on `Rpcs` (or UNIMPLEMENTED naming the RPC, so a gap in this control plane
shows up as `modal.exception.UnimplementedError: <Rpc> is not implemented ...`).

A handler that crashes is a bug here, not in the code under test: it is answered with INTERNAL
and recorded in `server_errors`, which the pytest fixture turns into a test failure.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import grpclib.const
import grpclib.server
from grpclib import GRPCError, Status
from modal_proto.api_grpc import ModalClientBase

from . import blob_server
from .calls import LOGGED_HEADERS, CallLog, CallRecord, FaultPlan, is_mutating, summarize
from .containers import Containers
from .edge import KEY_HEADER, SECRET_HEADER
from .functions import FunctionCall, FunctionRunner, Handler, ScriptedOutcome
from .rpc_apps import NOOP_WHEN_UNCHANGED, PUBLISH_NOOP_MODES, AppRpcs
from .rpc_objects import EnvironmentAnswers, normalize_path, remove_path, write_file
from .rpc_tokens import ProxyTokenAnswers, TokenRpcs, add_token
from .state import DEFAULT_ENVIRONMENT, VOLUME_FS_VERSION_V1, App, ControlPlaneState, ProxyToken, Secret, Volume

# Dummy credentials: the control plane checks that every call carries exactly these, like Modal
# checks real ones, so a client that is not pointed at us (or lost its token) fails loudly.
TOKEN_ID = "ak-control-plane-test"
TOKEN_SECRET = "as-control-plane-test"  # a fixed fake, not a credential

# How long start() waits for the server thread to bind its sockets before giving up.
STARTUP_TIMEOUT_SECONDS = 10.0

SERVICE_PREFIX = "/modal.client.ModalClient/"

# (environment name, endpoint slug "<app>-<label>") -> the URL the endpoint is served at.
WebUrlOf = Callable[[str, str], str]


class IssuedToken(NamedTuple):
    """A proxy token's credentials, as the create shows them once: `token_id, token_secret = ...`."""

    token_id: str
    token_secret: str

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends Modal's edge (edge.py)."""
        return {KEY_HEADER: self.token_id, SECRET_HEADER: self.token_secret}


class Rpcs(AppRpcs, TokenRpcs):
    """All implemented RPCs, sharing the control plane's state, blob store, runner and clock."""

    def __init__(self, plane: ControlPlane):
        self._plane = plane
        self.state = plane.state
        self.blobs = plane.blobs
        self.runner = plane.runner
        self.now = plane.now
        self.web_url_of = plane.web_url_of
        self.containers = plane.containers
        self.publish_noop = plane.publish_noop
        self.stopping_seconds = plane.stopping_seconds
        self.blob_url = ""  # known once the blob server is bound

    # The switches are read from the plane at each call: a test may replace them at any time.
    @property
    def environment_answers(self) -> EnvironmentAnswers:
        return self._plane.environment_answers

    @property
    def proxy_token_answers(self) -> ProxyTokenAnswers:
        return self._plane.proxy_token_answers


class _Routes:
    """Gives grpclib one handler per RPC of the service, all routed through `_handle`."""

    def __init__(self, plane: ControlPlane):
        self._plane = plane

    def __getattr__(self, rpc: str):
        if rpc.startswith("_"):
            raise AttributeError(rpc)
        return functools.partial(self._plane._handle, rpc)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return ModalClientBase.__mapping__(self)  # type: ignore[arg-type]


class ControlPlane:
    """Handle on a running control plane. Start with `start()` (or use it as a context manager)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        web_url_of: WebUrlOf | None = None,
        publish_noop: str = NOOP_WHEN_UNCHANGED,
        default_environment: str = DEFAULT_ENVIRONMENT,
        stopping_seconds: float = 1.0,
        proxy_token_answers: ProxyTokenAnswers | None = None,
    ):
        """`web_url_of(environment, slug)`, if given, is the URL handed out for a web endpoint
        instead of Modal's *.modal.run scheme (unreachable offline): e.g. the web front of web.py.
        `publish_noop`: whether a deploy that changes no definition is a no-op, as Modal answers it
        (NOOP_WHEN_UNCHANGED, the default) or a new version all the same (NOOP_NEVER): see AppPublish.
        `stopping_seconds`: how long a stopped app reports APP_STATE_STOPPING (rpc_apps `_reported_state`).
        `default_environment`: the name of the workspace's default environment, the one it starts with
        (Modal's is "main" unless renamed). `environment_answers` (rpc_objects.EnvironmentAnswers) and
        `proxy_token_answers` (rpc_tokens.ProxyTokenAnswers, also a keyword here, for a fixture's
        indirect parameters) can be changed at any time: how environment and proxy token RPCs answer
        where Modal's answer is unknown."""
        if publish_noop not in PUBLISH_NOOP_MODES:
            raise ValueError(f"publish_noop must be one of {PUBLISH_NOOP_MODES}, not {publish_noop!r}")
        self._clock = clock
        self.web_url_of = web_url_of
        self.publish_noop = publish_noop
        self.stopping_seconds = stopping_seconds
        self._last_ts = 0.0
        self._ts_lock = threading.Lock()
        self.state = ControlPlaneState(default_environment=default_environment)
        self.environment_answers = EnvironmentAnswers()
        self.proxy_token_answers = proxy_token_answers or ProxyTokenAnswers()
        self.log = CallLog()
        self.faults = FaultPlan()
        self.blobs = blob_server.BlobStore()
        self.runner = FunctionRunner(self.state, self.blobs, self.now)
        self.containers = Containers(self.state, self.now)
        self.rpcs = Rpcs(self)
        self.server_errors: list[str] = []
        self.state.add_environment(default_environment, self.now())
        self._routes = _Routes(self)
        handlers = self._routes.__mapping__()
        # All 285 RPCs of the service, whether implemented here or not, and which ones stream.
        self.rpc_names = frozenset(path.removeprefix(SERVICE_PREFIX) for path in handlers)
        self._streaming = frozenset(
            path.removeprefix(SERVICE_PREFIX)
            for path, handler in handlers.items()
            if handler.cardinality is grpclib.const.Cardinality.UNARY_STREAM
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: Path | None = None
        self.url = ""
        self.blob_url = ""

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="modal-control-plane-"))
        (self._tmpdir / "home").mkdir()
        (self._tmpdir / "modal.toml").write_text("")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._serve, args=(ready, failure), name="modal-control-plane", daemon=True
        )
        self._thread.start()
        if not ready.wait(STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError("modal control plane did not start")
        if failure:
            raise RuntimeError("modal control plane failed to start") from failure[0]
        return self

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._grpc_server = grpclib.server.Server([self._routes])
            loop.run_until_complete(self._grpc_server.start("127.0.0.1", 0))
            port = self._grpc_server._server.sockets[0].getsockname()[1]  # grpclib has no public accessor
            self.url = f"http://127.0.0.1:{port}"
            self._blob_runner, self.blob_url = loop.run_until_complete(blob_server.start(self.blobs))
            self.rpcs.blob_url = self.blob_url
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        # stop() ended run_forever: close the servers and whatever function calls still run.
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._grpc_server.close()
        loop.run_until_complete(self._grpc_server.wait_closed())
        loop.run_until_complete(self._blob_runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def now(self) -> float:
        """The clock, made strictly increasing so that ordering by time (newest-first listings,
        pagination by `created_before`) is never ambiguous."""
        with self._ts_lock:
            ts = max(self._clock(), self._last_ts + 1e-6)
            self._last_ts = ts
            return ts

    # ---- how clients reach it ------------------------------------------------------------------

    @property
    def client_env(self) -> dict[str, str]:
        """Environment variables that point a modal client (e.g. a `modal deploy` subprocess) here.
        MODAL_ENVIRONMENT is deliberately absent: the workspace's default environment applies.
        HOME is an empty temp dir, so nothing in a real home can leak in; drop it for a subprocess
        that needs the real one (e.g. the pulumi CLI and its plugin cache)."""
        assert self._tmpdir is not None, "start() the control plane first"
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": TOKEN_ID,
            "MODAL_TOKEN_SECRET": TOKEN_SECRET,
            "MODAL_CONFIG_PATH": str(self._tmpdir / "modal.toml"),
            "HOME": str(self._tmpdir / "home"),
            # Loopback must never go through a proxy that happens to be configured.
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def subprocess_env(
        self, base: Mapping[str, str] | None = None, *, environment: str | None = None
    ) -> dict[str, str]:
        """A complete environment for a subprocess: `base` (default os.environ) without any
        MODAL_* settings of its own, plus `client_env`, plus MODAL_ENVIRONMENT if given."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("MODAL_")}
        env.update(self.client_env)
        if environment is not None:
            env["MODAL_ENVIRONMENT"] = environment
        return env

    # ---- the RPC pipeline ----------------------------------------------------------------------

    async def _handle(self, rpc: str, stream: grpclib.server.Stream) -> None:
        request = await stream.recv_message()
        assert request is not None
        metadata = stream.metadata or {}
        headers = {key: str(value) for key, value in metadata.items() if key in LOGGED_HEADERS}
        self.log.append(CallRecord(rpc, is_mutating(rpc, request), summarize(rpc, request), self.now(), headers))
        if metadata.get("x-modal-token-id") != TOKEN_ID or metadata.get("x-modal-token-secret") != TOKEN_SECRET:
            raise GRPCError(Status.UNAUTHENTICATED, "Token missing or invalid for the modal control plane")
        delay, failure = self.faults.take(rpc)
        if delay:
            await asyncio.sleep(delay)
        if failure is not None:
            raise GRPCError(failure.status, failure.message)
        implementation = getattr(self.rpcs, rpc, None)
        if implementation is None:
            raise GRPCError(Status.UNIMPLEMENTED, f"{rpc} is not implemented by tests/modal_control_plane")
        try:
            if rpc in self._streaming:
                async for response in implementation(request):
                    await stream.send_message(response)
            else:
                await stream.send_message(await implementation(request))
        except (GRPCError, asyncio.CancelledError):
            raise
        except Exception as exc:
            self.server_errors.append(f"{rpc}: {''.join(traceback.format_exception(exc))}")
            raise GRPCError(Status.INTERNAL, f"modal control plane bug in {rpc}: {exc!r}") from exc

    # ---- call log ------------------------------------------------------------------------------

    @property
    def calls(self) -> list[CallRecord]:
        return self.log.snapshot()

    def mark(self) -> int:
        return self.log.mark()

    def calls_since(self, mark: int) -> list[CallRecord]:
        return self.log.since(mark)

    def clear_calls(self) -> None:
        self.log.clear()

    def mutating_calls(self, since: int = 0) -> list[CallRecord]:
        return [call for call in self.log.since(since) if call.mutating]

    def rpcs_called(self, since: int = 0) -> list[str]:
        """Just the RPC names, in order: handy for asserting a sequence."""
        return [call.rpc for call in self.log.since(since)]

    # ---- fault injection -----------------------------------------------------------------------

    def _check_rpc(self, rpc: str) -> None:
        if rpc not in self.rpc_names:
            raise ValueError(f"{rpc!r} is not an RPC of modal_proto's ModalClient service")

    def fail_next(
        self, rpc: str, n: int = 1, status: Status = Status.UNAVAILABLE, message: str = "injected failure"
    ) -> None:
        """Fail the next `n` calls of `rpc` with `status`. Remember that the client itself retries
        some statuses (see client_retries.py): to reach our own retry logic, outlast it."""
        self._check_rpc(rpc)
        self.faults.fail_next(rpc, n, status, message)

    def add_latency(self, rpc: str, seconds: float) -> None:
        """Delay every call of `rpc` by `seconds` (0 removes the delay)."""
        self._check_rpc(rpc)
        self.faults.add_latency(rpc, seconds)

    def pending_failures(self, rpc: str) -> int:
        return self.faults.pending_failures(rpc)

    # ---- state helpers for tests ---------------------------------------------------------------

    def _env(self, environment: str | None):
        env = self.state.environment(environment)
        if env is None:
            raise KeyError(f"environment {environment!r} does not exist")
        return env

    def create_environment(self, name: str) -> None:
        with self.state.lock:
            if name not in self.state.environments:
                self.state.add_environment(name, self.now())

    def delete_environment(self, name: str) -> None:
        """Delete an environment with everything in it, as `modal environment delete` would by hand."""
        with self.state.lock:
            self.state.remove_environment(name)

    def create_environment_concurrently(self, name: str) -> None:
        """Another client creates environment `name` just before the next `EnvironmentCreate` of that
        name arrives: the race between a look-up that found nothing and the create that follows."""
        with self.state.lock:
            self.environment_answers.created_by_another_client_first.add(name)

    def create_secret(self, name: str, values: dict[str, str], environment: str | None = None) -> Secret:
        with self.state.lock:
            return self.state.add_secret(self._env(environment), name, dict(values), self.now())

    def secret_values(self, name: str, environment: str | None = None) -> dict[str, str] | None:
        with self.state.lock:
            secret = self._env(environment).secrets.get(name)
            return dict(secret.values) if secret else None

    def create_volume(
        self, name: str, environment: str | None = None, *, version: int = VOLUME_FS_VERSION_V1
    ) -> Volume:
        """The named volume, created empty with `version` (1 or 2) if missing; one that exists keeps its
        own version. v1 by default: what `modal volume create` and `from_name(create_if_missing=True)` make."""
        if version not in (1, 2):
            raise ValueError(f"a volume version is 1 or 2, not {version!r}")
        with self.state.lock:
            env = self._env(environment)
            return env.volumes.get(name) or self.state.add_volume(env, name, self.now(), version)

    def put_file(self, volume: str, path: str, data: bytes, environment: str | None = None) -> None:
        """Place a file in a volume (created if missing), as if some container had written it."""
        with self.state.lock:
            write_file(self.create_volume(volume, environment), path, data, self.now())

    def remove_file(self, volume: str, path: str, environment: str | None = None) -> None:
        with self.state.lock:
            target = self._env(environment).volumes[volume]
            try:
                remove_path(target, path, recursive=True)
            except GRPCError as exc:
                raise FileNotFoundError(exc.message) from None

    def volume_files(self, volume: str, environment: str | None = None) -> dict[str, bytes]:
        """{path: contents} of a volume; paths are relative to its root, e.g. "models/config.json"."""
        with self.state.lock:
            return dict(self._env(environment).volumes[volume].files)

    def read_file(self, volume: str, path: str, environment: str | None = None) -> bytes:
        return self.volume_files(volume, environment)[normalize_path(path)]

    def app(self, name: str, environment: str | None = None) -> App:
        """The app deployed (or last deployed, if stopped) under `name`."""
        with self.state.lock:
            return self._env(environment).apps[name]

    # ---- proxy tokens, by hand (as an operator would in Modal's dashboard) ----------------------

    def create_proxy_token(
        self, name: str = "", *, scoped: bool = True, environments: Iterable[str | None] = ()
    ) -> IssuedToken:
        """A new proxy token, allowed in `environments` (None: the default one). Scoped unless told
        otherwise: an unscoped token is valid in every environment (state.ProxyToken.valid_in).
        Names follow `proxy_token_answers.duplicate_name`, as a create through the client does."""
        with self.state.lock:
            allowed = {self._env(environment).id for environment in environments}
            try:
                token = add_token(self.state, self.proxy_token_answers, self.now(), name, scoped)
            except GRPCError as exc:
                raise ValueError(exc.message) from None
            token.environment_ids |= allowed
            return IssuedToken(token.id, token.secret)

    def allow_proxy_token(self, token_id: str, environment: str | None = None) -> None:
        with self.state.lock:
            self.state.proxy_tokens[token_id].environment_ids.add(self._env(environment).id)

    def revoke_proxy_token(self, token_id: str, environment: str | None = None) -> None:
        with self.state.lock:
            self.state.proxy_tokens[token_id].environment_ids.discard(self._env(environment).id)

    def delete_proxy_token(self, token_id: str) -> None:
        with self.state.lock:
            del self.state.proxy_tokens[token_id]

    def proxy_token(self, token_id: str) -> ProxyToken:
        with self.state.lock:
            return self.state.proxy_tokens[token_id]

    def proxy_tokens_valid_in(self, environment: str | None = None) -> list[str]:
        """Ids of the tokens Modal's edge accepts for an app of `environment` (scoped ones allowed
        there, and every unscoped one), oldest first."""
        with self.state.lock:
            environment_id = self._env(environment).id
            return [token.id for token in self.state.proxy_tokens.values() if token.valid_in(environment_id)]

    # ---- what requests cost --------------------------------------------------------------------

    def containers_started(self, app: str | None = None, environment: str | None = None) -> int:
        """Containers ever started for the app deployed under `app` (in `environment`), or, without an
        app, in the whole workspace (deleted environments included)."""
        with self.state.lock:
            return self.containers.started(None if app is None else self._env(environment).apps[app])

    def gpu_seconds(self, app: str | None = None, environment: str | None = None) -> float:
        """GPU-seconds of those containers up to now (`now()`), idle ones scaled down at the end of
        their window (containers.py)."""
        with self.state.lock:
            return self.containers.gpu_seconds(None if app is None else self._env(environment).apps[app])

    # ---- function scripting --------------------------------------------------------------------

    def script_function(
        self,
        function_name: str,
        *,
        seconds: float = 0.0,
        result: Any = None,
        error: str | BaseException | None = None,
        writes: Mapping[tuple[str, str], bytes] | None = None,
    ) -> None:
        """Decide what calls of `function_name` (a Modal tag: "fn", "Cls.*", "Cls.method") do."""
        self.runner.script(function_name, ScriptedOutcome(seconds, result, error, dict(writes or {})))

    def on_function(self, function_name: str, handler: Handler) -> None:
        """Run `handler(args, kwargs, volumes)` for calls of `function_name` (see functions.py)."""
        self.runner.script(function_name, handler)

    @property
    def function_calls(self) -> list[FunctionCall]:
        return self.runner.snapshot()
