"""The real Python dynamic-provider gRPC server, started and called the way the Pulumi engine does.

`ProviderServer` is the test-side twin of the engine's provider plugin client
(pkg/resource/plugin/provider_plugin.go + plugin.go in pulumi/pulumi). It starts
`python -u -m pulumi.dynamic` as a child process, reads the port the server prints, and calls the
ResourceProvider gRPC service with the SDK's own stubs (pulumi.runtime.proto.provider_pb2_grpc).
Properties go in and come out as plain dicts in wire form (see properties.py): secrets are the
SDK's secret marker, so a test can assert exactly what the engine would store as secret.

How the engine starts and talks to the dynamic provider (checked in pulumi/pulumi at commit
1b59498; read with SDK 3.272.0, the pinned SDK):

- Plugin `pulumi-resource-pulumi-python` is a shell shim (sdk/python/dist/pulumi-resource-pulumi-python)
  that runs `"$PULUMI_RUNTIME_VIRTUALENV/bin/python" -u -m pulumi.dynamic "$@"` with the venv's
  bin first on PATH and PYTHONHOME unset; a relative virtualenv is made absolute against `$PWD`.
  Nothing sets PYTHONPATH, so with `-m` the only source tree on sys.path is the working directory.
- The engine passes Pulumi.yaml `runtime.options` as `PULUMI_RUNTIME_<OPTION>` env vars, the
  project name as `PULUMI_PROJECT` and the config of the plugin's namespace as JSON in
  `PULUMI_CONFIG` (pkg/resource/plugin/provider_plugin.go `NewProvider`, pkg/host/host.go
  `Provider`). The only argument is the engine's own gRPC address; the server ignores it.
- Working directory = `ctx.Pwd`, which is the *program* directory: `getPwdMain` in
  pkg/engine/project.go sets it to the `main:` directory when Pulumi.yaml has one, and
  pkg/resource/plugin/plugin.go sets `cmd.Dir = pwd`. So with `main: infra/` the provider runs in
  infra/, the shim looks for a relative `virtualenv: .venv` as infra/.venv while the language host
  resolves it against the project root (sdk/python/toolchain/pip.go
  `resolveVirtualEnvironmentPath`; open upstream issue pulumi/pulumi#7061), provider modules must
  be installed in the venv (sys.path[0] is infra/, not the repository), and modules directly in
  infra/ are importable top-level names in the provider process. `launch_for_project` reproduces
  this; the default `ProviderServer()` runs from the repository root instead (as with no `main:`),
  which lets test-only providers be unpickled.
- The server prints its port as the first stdout line; after that, every non-blank stdout line is
  shown by the engine as info and every stderr line as an error-stream info message, with no URN
  (pkg/resource/plugin/plugin.go `newPlugin`/`runtrace`; dynamic plugins are not hidden). That is
  the only progress channel a dynamic provider has; `stdout_lines` captures it.
- Sequence: Handshake (the dynamic server answers UNIMPLEMENTED, so the engine falls back to the
  legacy protocol), GetPluginInfo, Configure. Configure args are the WHOLE stack config for dynamic
  providers, keys kept as "<namespace>:<key>", secret config marked secret
  (pkg/resource/deploy/target.go `GetPackageConfig`); the server unwraps them and answers
  `acceptSecrets=False`, no `supportsPreview`.
- Because acceptSecrets is False every later call sends secrets in plaintext and re-marks outputs
  with `annotateSecrets` (properties.py). Because supportsPreview is False a preview Create/Update
  never reaches the server: the plugin client returns the inputs as the outputs
  (provider_plugin.go `Create`/`Update`, `if req.Preview { ... !protocol.supportsPreview ...}`).
  `create`/`update` here do the same and record no call.
- In a preview, inputs computed from resources not created yet are unknown: Check and Diff get them
  (`KeepUnknowns: req.AllowUnknowns`) and the Python server hands the provider
  `pulumi.output.Unknown` instances (`deserialize_properties(..., keep_unknowns=True)`), which a
  provider's validation must accept and return unchanged. Outside preview they are dropped.
- Check(urn, olds=old INPUTS, news); Diff(id, urn, olds=old OUTPUTS, news, old_inputs);
  Create(urn, properties, timeout); Read(id, urn, properties=old outputs, inputs=old inputs);
  Update(id, urn, olds=old OUTPUTS, news, old_inputs, timeout); Delete(id, urn,
  properties=outputs, old_inputs, timeout). The Python server ignores old_inputs and hands the
  provider `olds` = old outputs in diff/update, `properties` = outputs in delete.
- The Python server drops DiffResult.stables and cannot send `diffs` (changed keys) or a detailed
  diff: only changes / replaces / deleteBeforeReplace reach the engine
  (sdk/python/lib/pulumi/dynamic/__main__.py `Diff`).
- A provider exception becomes gRPC status UNKNOWN whose details are the full Python traceback
  (`_abort_with_traceback` in the pinned 3.272.0 __main__.py); the engine shows that text to
  the user, so whatever a provider puts in an exception message is user-visible.
- The server has 4 worker threads (`ThreadPoolExecutor(max_workers=4)`), and Cancel does nothing.
"""

import fcntl
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime.proto import plugin_pb2, provider_pb2, provider_pb2_grpc

from . import properties as props

REPO_ROOT = Path(__file__).resolve().parents[2]
# The venv scripts/setup creates and Pulumi.yaml names; the engine runs the provider with it.
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
# The provider type of the default dynamic provider; the engine sends it in Configure.
DYNAMIC_PROVIDER_TYPE = "pulumi:providers:pulumi-python"
# Importing pulumi, grpc and dill takes ~1 s; a slow CI box gets plenty of slack before we call
# the start a failure (this is a bound on a hang, not a timed assertion).
START_TIMEOUT_S = 60.0
# How long a call may take before the test fails instead of hanging forever. Long Modal jobs
# in tests run against the local control plane, so minutes are already generous.
DEFAULT_CALL_TIMEOUT_S = 300.0
# The gRPC operations that change something outside the engine.
MUTATING_METHODS = frozenset({"Create", "Update", "Delete"})


class ProviderCallError(Exception):
    """A gRPC call failed; `details` is what the engine would show the user (often a traceback)."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method} failed ({code.name}): {details}")
        self.method = method
        self.code = code
        self.details = details


class ProviderStartError(Exception):
    pass


@dataclass(frozen=True)
class CheckFailure:
    property: str
    reason: str


@dataclass(frozen=True)
class CheckResult:
    inputs: dict
    failures: list[CheckFailure]


@dataclass(frozen=True)
class DiffResult:
    changes: str  # "none" | "some" | "unknown", the raw DiffResponse.changes
    replaces: list[str]
    stables: list[str]
    diffs: list[str]
    delete_before_replace: bool
    detailed_diff: dict[str, Any] | None

    @property
    def replace(self) -> bool:
        return bool(self.replaces) or any("REPLACE" in kind for kind in (self.detailed_diff or {}).values())


@dataclass(frozen=True)
class CreateResult:
    id: str
    properties: dict


@dataclass(frozen=True)
class ReadResult:
    id: str
    properties: dict
    inputs: dict | None


@dataclass(frozen=True)
class Call:
    """One gRPC call as the server saw it: method, URN and the (plaintext) request properties."""

    method: str
    urn: str
    request: dict = field(repr=False)


@dataclass(frozen=True)
class LaunchSpec:
    """How the engine would start the dynamic provider: interpreter, working directory, env."""

    python: Path
    cwd: Path
    env: dict[str, str]


def launch_for_project(project_root: Path = REPO_ROOT, *, config: Mapping[str, str] | None = None,
                       base_env: Mapping[str, str] | None = None) -> LaunchSpec:
    """Resolves cwd and interpreter from Pulumi.yaml exactly as the engine and the shim do.

    cwd is the `main:` directory if it is one (getPwdMain); a relative `virtualenv` option is made
    absolute against that cwd (the shim), not the project root. Raises ProviderStartError with the
    shim's own complaint if that venv does not exist, which is what `pulumi up` would print.
    """
    import yaml

    project = yaml.safe_load((project_root / "Pulumi.yaml").read_text())
    cwd = project_root
    main = project.get("main")
    if main:
        main_path = (project_root / main).resolve()
        cwd = main_path if main_path.is_dir() else main_path.parent
    runtime = project.get("runtime")
    options = runtime.get("options", {}) if isinstance(runtime, dict) else {}
    env = {f"PULUMI_RUNTIME_{k.upper()}": str(v) for k, v in (options or {}).items()}
    env["PULUMI_PROJECT"] = str(project["name"])
    env["PULUMI_CONFIG"] = json.dumps(dict(config or {}))
    virtualenv = options.get("virtualenv") if options else None
    if not virtualenv and options and options.get("toolchain") == "uv":
        virtualenv = ".venv"
    if virtualenv:
        venv = Path(virtualenv) if Path(virtualenv).is_absolute() else cwd / virtualenv
        python = venv / "bin" / "python"
        if not python.is_file():
            raise ProviderStartError(
                f"The 'virtualenv' option in Pulumi.yaml is set to \"{venv}\", but \"{venv}\" doesn't "
                "appear to be a virtual environment (the dynamic provider resolves it against its "
                "working directory, the program directory; see pulumi/pulumi#7061)"
            )
    else:
        python = Path(os.environ.get("PULUMI_PYTHON_CMD", "python3"))
    base = dict(os.environ if base_env is None else base_env)
    return LaunchSpec(python=python, cwd=cwd, env={**base, **env})


def _engine_env(base: Mapping[str, str], python: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # The shim puts the venv's bin first on PATH (only when it runs a venv's python).
    if python.parent.name == "bin":
        env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class ProviderServer:
    """A running `python -u -m pulumi.dynamic` and a client that calls it like the engine.

    Use as a context manager. `config` is the stack config sent in Configure (keys
    "<project>:<key>", values strings; wrap secret ones with properties.secret). `extra_env` is
    added to the child's environment (e.g. the local Modal control plane's client env).
    """

    def __init__(
        self,
        *,
        python: Path | str = VENV_PYTHON,
        cwd: Path | str = REPO_ROOT,
        extra_env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        project: str | None = None,
        config: Mapping[str, Any] | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        on_output: Callable[[str, str], None] | None = None,
    ):
        self.python = Path(python)
        self.cwd = Path(cwd)
        base = os.environ if base_env is None else base_env
        # The engine always sets PULUMI_PROJECT; a launch spec already carries the real one.
        self.project = project or base.get("PULUMI_PROJECT") or "project"
        self.config = dict(config or {})
        self.call_timeout_s = call_timeout_s
        self._on_output = on_output
        self.env = _engine_env(base, self.python, {"PULUMI_PROJECT": self.project, **(extra_env or {})})
        self.env.setdefault("PULUMI_CONFIG", "{}")
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.accept_secrets = True
        self.supports_preview = False
        self.plugin_version: str | None = None
        self.calls: list[Call] = []
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lines_lock = threading.Lock()
        self._idle: dict[str, bool] = {}  # stream name -> its reader waits for more output (or is done)
        self._channel: grpc.Channel | None = None
        self._stub: provider_pb2_grpc.ResourceProviderStub | None = None
        self._readers: list[threading.Thread] = []

    @classmethod
    def for_launch(cls, spec: LaunchSpec, **kwargs: Any) -> "ProviderServer":
        return cls(python=spec.python, cwd=spec.cwd, base_env=spec.env, **kwargs)

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "ProviderServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        # Same argv as the shim minus the engine address the server never reads.
        argv = [str(self.python), "-u", "-m", "pulumi.dynamic"]
        self.process = subprocess.Popen(
            argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        port_line: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, "stdout", port_line), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, "stderr", None), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            line = port_line.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            line = None
        if not line or not line.strip().isdigit():
            self.stop()
            raise ProviderStartError(
                f"dynamic provider did not print a port (got {line!r}); stderr:\n" + "\n".join(self._stderr)
            )
        self.port = int(line)
        self._channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self._channel).result(timeout=START_TIMEOUT_S)
        self._stub = provider_pb2_grpc.ResourceProviderStub(self._channel)
        self._handshake()
        self.plugin_version = self.get_plugin_info().version
        self.configure(self.config)

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None and self.process.poll() is None:
            # The server stops its gRPC server on KeyboardInterrupt; kill only if it hangs.
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        self._readers = []

    def _pump(self, stream: Any, name: str, port_line: "queue.Queue[str | None] | None") -> None:
        # Raw reads, so "waiting for more" (`_idle`) means every byte read so far was handed over as
        # lines: a buffered readline could hold complete lines nobody has seen yet.
        first = port_line is not None
        fd = stream.fileno()
        pending = b""
        while True:
            with self._lines_lock:
                self._idle[name] = True
            chunk = os.read(fd, 65536)
            with self._lines_lock:
                self._idle[name] = not chunk  # at EOF there is nothing left to wait for
            *complete, pending = (pending + chunk).split(b"\n") if chunk else [pending, b""]
            for raw in complete:
                line = raw.decode("utf-8", errors="replace").rstrip("\r")
                if first:
                    first = False
                    port_line.put(line)
                    continue
                # The engine skips blank lines (plugin.go runtrace: strings.TrimSpace(msg) != "").
                if not line.strip():
                    continue
                with self._lines_lock:
                    (self._stdout if name == "stdout" else self._stderr).append(line)
                if self._on_output is not None:
                    self._on_output(name, line)
            if not chunk:
                break
        if first:
            port_line.put(None)
        stream.close()

    def output_read(self) -> bool:
        """Whether every line the provider has written so far is in stdout_lines/stderr_lines: each
        pipe holds no unread byte and its reader has handed over all it read. The engine reads the
        provider's output on threads of its own too, so a line printed just before an answer may
        still be in the pipe when the answer arrives; the stand-in engine waits for this before it
        says what an operation printed."""
        if self.process is None:
            return True
        unread = [_unread_bytes(pipe) for pipe in (self.process.stdout, self.process.stderr)]
        with self._lines_lock:  # read after the pipes: an idle reader then has seen those bytes
            idle = all(self._idle.get(name, True) for name in ("stdout", "stderr"))
        return idle and not any(unread)

    @property
    def stdout_lines(self) -> list[str]:
        """Lines the provider printed after the port: what `pulumi up` shows as info."""
        with self._lines_lock:
            return list(self._stdout)

    @property
    def stderr_lines(self) -> list[str]:
        with self._lines_lock:
            return list(self._stderr)

    def mutating_calls(self) -> list[Call]:
        return [c for c in self.calls if c.method in MUTATING_METHODS]

    # ---- protocol --------------------------------------------------------------------------

    def _call(self, method: str, urn: str, request: Any, logged: dict) -> Any:
        if self._stub is None:
            raise RuntimeError("ProviderServer is not started")
        self.calls.append(Call(method, urn, logged))
        try:
            return getattr(self._stub, method)(request, timeout=self.call_timeout_s)
        except grpc.RpcError as err:
            raise ProviderCallError(method, err.code(), err.details() or "") from None

    def _handshake(self) -> None:
        try:
            self._stub.Handshake(provider_pb2.ProviderHandshakeRequest(), timeout=self.call_timeout_s)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise ProviderCallError("Handshake", err.code(), err.details() or "") from None
            return
        raise AssertionError("the dynamic provider unexpectedly implements Handshake; revisit this harness")

    def configure(self, config: Mapping[str, Any]) -> bool:
        """Sends the stack config as the engine does; returns the server's acceptSecrets."""
        args = dict(config)
        plain = props.reveal(args)
        variables = {
            f"pulumi-python:config:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in plain.items()
        }
        request = provider_pb2.ConfigureRequest(
            variables=variables, args=props.to_struct(args), acceptSecrets=True, acceptResources=True,
            sends_old_inputs=True, sends_old_inputs_to_delete=True,
            urn=f"urn:pulumi:stack::{self.project}::{DYNAMIC_PROVIDER_TYPE}::default",
            name="default", type=DYNAMIC_PROVIDER_TYPE,
        )
        response = self._call("Configure", "", request, {"args": plain})
        self.accept_secrets = response.acceptSecrets
        self.supports_preview = response.supportsPreview
        return self.accept_secrets

    def _outgoing(self, values: dict | None, *, keep_unknowns: bool = False) -> dict:
        values = dict(values or {})
        if not self.accept_secrets:
            values = props.strip_secrets(values)
        if not keep_unknowns:
            values = props.strip_unknowns(values)
        return values

    def check(self, urn: str, news: dict, olds: dict | None = None, *, allow_unknowns: bool = False) -> CheckResult:
        olds_wire = self._outgoing(olds, keep_unknowns=allow_unknowns)
        news_wire = self._outgoing(news, keep_unknowns=allow_unknowns)
        name, typ = urn_name_type(urn)
        response = self._call("Check", urn, provider_pb2.CheckRequest(
            urn=urn, name=name, type=typ, olds=props.to_struct(olds_wire), news=props.to_struct(news_wire),
        ), {"olds": olds_wire, "news": news_wire})
        inputs = props.from_struct(response.inputs) if response.HasField("inputs") else {}
        if not self.accept_secrets:
            props.annotate_secrets(inputs, news)
        failures = [CheckFailure(f.property, f.reason) for f in response.failures]
        return CheckResult(inputs=inputs, failures=failures)

    def diff(self, id: str, urn: str, old_outputs: dict, news: dict, old_inputs: dict, *,
             allow_unknowns: bool = False) -> DiffResult:
        wire = {
            "olds": self._outgoing(old_outputs, keep_unknowns=allow_unknowns),
            "news": self._outgoing(news, keep_unknowns=allow_unknowns),
            "old_inputs": self._outgoing(old_inputs, keep_unknowns=allow_unknowns),
        }
        name, typ = urn_name_type(urn)
        response = self._call("Diff", urn, provider_pb2.DiffRequest(
            id=id, urn=urn, name=name, type=typ, olds=props.to_struct(wire["olds"]),
            news=props.to_struct(wire["news"]), old_inputs=props.to_struct(wire["old_inputs"]),
        ), wire)
        changes = {
            provider_pb2.DiffResponse.DIFF_NONE: "none",
            provider_pb2.DiffResponse.DIFF_SOME: "some",
        }.get(response.changes, "unknown")
        detailed = None
        if response.hasDetailedDiff:
            detailed = {
                k: provider_pb2.PropertyDiff.Kind.Name(v.kind) for k, v in response.detailedDiff.items()
            }
        return DiffResult(
            changes=changes, replaces=list(response.replaces), stables=list(response.stables),
            diffs=list(response.diffs), delete_before_replace=response.deleteBeforeReplace,
            detailed_diff=detailed,
        )

    def create(self, urn: str, properties: dict, *, timeout: float = 0, preview: bool = False) -> CreateResult:
        if preview and not self.supports_preview:
            # The plugin client answers for the provider: outputs = inputs, no ID, no RPC.
            return CreateResult(id="", properties=dict(properties))
        wire = self._outgoing(properties, keep_unknowns=preview)
        name, typ = urn_name_type(urn)
        response = self._call("Create", urn, provider_pb2.CreateRequest(
            urn=urn, name=name, type=typ, properties=props.to_struct(wire), timeout=timeout, preview=preview,
        ), {"properties": wire, "timeout": timeout})
        outs = props.from_struct(response.properties)
        if not self.accept_secrets:
            props.annotate_secrets(outs, properties)
        if not response.id and not preview:
            raise ProviderCallError("Create", grpc.StatusCode.UNKNOWN,
                                    f"plugin returned empty resource.ID from create '{urn}'")
        return CreateResult(id=response.id, properties=outs)

    def read(self, id: str, urn: str, properties: dict, inputs: dict | None = None) -> ReadResult:
        wire = {"properties": self._outgoing(properties)}
        if inputs is not None:
            wire["inputs"] = self._outgoing(inputs)
        name, typ = urn_name_type(urn)
        request = provider_pb2.ReadRequest(id=id, urn=urn, name=name, type=typ,
                                           properties=props.to_struct(wire["properties"]))
        if inputs is not None:
            request.inputs.CopyFrom(props.to_struct(wire["inputs"]))
        response = self._call("Read", urn, request, wire)
        outs = props.from_struct(response.properties)
        new_inputs = props.from_struct(response.inputs) if response.HasField("inputs") else None
        if not self.accept_secrets:
            props.annotate_secrets(new_inputs, inputs)
            props.annotate_secrets(outs, properties)
        return ReadResult(id=response.id, properties=outs, inputs=new_inputs)

    def update(self, id: str, urn: str, old_outputs: dict, news: dict, old_inputs: dict, *,
               timeout: float = 0, preview: bool = False) -> dict:
        if preview and not self.supports_preview:
            return dict(news)
        wire = {
            "olds": self._outgoing(old_outputs),
            "news": self._outgoing(news, keep_unknowns=preview),
            "old_inputs": self._outgoing(old_inputs),
        }
        name, typ = urn_name_type(urn)
        response = self._call("Update", urn, provider_pb2.UpdateRequest(
            id=id, urn=urn, name=name, type=typ, olds=props.to_struct(wire["olds"]),
            news=props.to_struct(wire["news"]), old_inputs=props.to_struct(wire["old_inputs"]),
            timeout=timeout, preview=preview,
        ), {**wire, "timeout": timeout})
        outs = props.from_struct(response.properties)
        if not self.accept_secrets:
            props.annotate_secrets(outs, news)
        return outs

    def delete(self, id: str, urn: str, outputs: dict, old_inputs: dict, *, timeout: float = 0) -> None:
        wire = {"properties": self._outgoing(outputs), "old_inputs": self._outgoing(old_inputs)}
        name, typ = urn_name_type(urn)
        self._call("Delete", urn, provider_pb2.DeleteRequest(
            id=id, urn=urn, name=name, type=typ, properties=props.to_struct(wire["properties"]),
            old_inputs=props.to_struct(wire["old_inputs"]), timeout=timeout,
        ), {**wire, "timeout": timeout})

    def cancel(self) -> None:
        self._call("Cancel", "", empty_pb2.Empty(), {})

    def get_plugin_info(self) -> plugin_pb2.PluginInfo:
        return self._call("GetPluginInfo", "", empty_pb2.Empty(), {})

    def wait_for_stdout(self, predicate: Callable[[str], bool], timeout_s: float = 30.0) -> str:
        """Blocks until a stdout line matches (for watching progress of a call running elsewhere)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.stdout_lines:
                if predicate(line):
                    return line
            time.sleep(0.01)
        raise TimeoutError("no matching stdout line; got:\n" + "\n".join(self.stdout_lines))


def _unread_bytes(pipe: Any) -> int:
    """Bytes waiting in a pipe (0 once it is closed: nothing more will come)."""
    try:
        return struct.unpack("i", fcntl.ioctl(pipe.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0


def urn_name_type(urn: str) -> tuple[str, str]:
    """urn:pulumi:<stack>::<project>::<qualified type>::<name> -> (name, type)."""
    if not urn:
        return "", ""
    parts = urn.split("::")
    if len(parts) < 4:
        raise ValueError(f"not a Pulumi URN: {urn!r}")
    name = "::".join(parts[3:])
    typ = parts[2].split("$")[-1]
    return name, typ


def resource_type(resource_cls: type) -> str:
    """The type the SDK registers a dynamic resource class under: "pulumi-python:dynamic/<module>:<Name>"."""
    return f"pulumi-python:{resource_cls._resource_type_name}"


def make_urn(name: str, type_: str, *, stack: str = "stack", project: str = "project", parent_type: str = "") -> str:
    qualified = f"{parent_type}${type_}" if parent_type else type_
    return f"urn:pulumi:{stack}::{project}::{qualified}::{name}"


if __name__ == "__main__":  # pragma: no cover - manual smoke check
    with ProviderServer() as server:
        print("port", server.port, "acceptSecrets", server.accept_secrets, file=sys.stderr)
