"""The stack harness: the real Pulumi program of a stack, run the way `pulumi preview`/`up` run it,
against the engine stand-in (tests/pulumi_engine) and the local Modal control plane.

How a run goes, and which part is real:

- Config: the stack file `Pulumi.<stack>.yaml` as the CLI hands it to the language host (object
  values as JSON text, booleans as "true"/"false"), plus the two secrets a test sets (as
  `pulumi config set --secret` would: listed among the secret keys), set with
  `pulumi.runtime.set_all_config`, which is what the language host's exec script calls.
- Program: infra/ run as `__main__` with `runpy.run_path(".")` from inside infra/ (the engine
  starts the program with the `main:` directory as working directory and "." as the program),
  inside `run_in_stack`, under `pulumi.runtime.set_mocks` with `mocks_bridge.EngineMonitor`.
  A `pulumi.RunError` is what the exec script prints without a stack trace; anything else
  would reach the operator as a traceback (`ProgramRun.traceback_free`).
- Engine: tests/pulumi_engine/engine.py sends every dynamic resource through the real
  `python -m pulumi.dynamic` server (Check, Diff, Create/Update/Delete; no Create in preview) and
  keeps the state between runs.
- Modal: the providers (and their `python -m providers.runner` children) use the real modal client
  against the control plane. Its functions run the REAL serving.jobs logic (download, compile,
  verify) on the control plane's volumes, with the config baked into the function's image
  environment, as the container would; only the Hub download and the compiler are stand-ins
  (serving.jobs takes them as parameters).
- Web: the deployed server's URL is routed to `WebStandIn`, a tiny HTTP server answering /health
  and /v1/chat/completions like SGLang, so the smoke test has something to talk to.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pulumi
import yaml

from providers.base import RETRY_BASE_SECONDS_ENV
from providers.runner import PROGRESS_SECONDS_ENV
from serving import jobs
from serving.config import CONFIG_ENV_VAR, WEIGHT_SENTINEL, DeploymentConfig
from tests.modal_control_plane import ControlPlane
from tests.modal_control_plane.functions import VolumeAccess
from tests.pulumi_engine import properties as props
from tests.pulumi_engine.engine import DeploymentResult, Engine, State
from tests.pulumi_engine.mocks_bridge import ProgramRun, run_program
from tests.pulumi_engine.provider_server import ProviderServer, launch_for_project, make_urn

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
PROJECT = "glm-modal"
STACKS = ("staging", "prod")

# Test secrets. Canaries: neither may ever appear in plaintext outside a secret marker.
TEST_HF_TOKEN = "hf_canaryHfToken7e3b91d0"
TEST_API_KEY = "canary-api-key-5c2f8a61d94e4b7a9f03"  # 36 characters: strong enough for prod
SECRETS = {f"{PROJECT}:hfToken": TEST_HF_TOKEN, f"{PROJECT}:apiKey": TEST_API_KEY}

# Resource types as the engine sees them (pulumi-python:dynamic/<module>:<name>).
TYPES = {
    "environment": "pulumi-python:dynamic/modal:Environment",
    "secret": "pulumi-python:dynamic/modal:Secret",
    "volume": "pulumi-python:dynamic/modal:Volume",
    "job": "pulumi-python:dynamic/modal:Job",
    "app": "pulumi-python:dynamic/modal:AppDeployment",
    "check": "pulumi-python:dynamic/http:HttpCheck",
}

# Logical names in infra/resources.py and infra/smoke.py, with their types.
RESOURCES = {
    "environment": TYPES["environment"],
    "hf-token-secret": TYPES["secret"],
    "api-key-secret": TYPES["secret"],
    "weights-volume": TYPES["volume"],
    "kernels-volume": TYPES["volume"],
    "download-weights": TYPES["job"],
    "compile-kernels": TYPES["job"],
    "verify-setup": TYPES["job"],
    "app": TYPES["app"],
    "smoke-test": TYPES["check"],
}
JOBS = ("download-weights", "compile-kernels", "verify-setup")
# Modal function of each job (serving/app.py).
JOB_FUNCTIONS = {"download-weights": "download_model", "compile-kernels": "compile_deepgemm",
                 "verify-setup": "verify_setup"}  # fmt: skip


def urn(stack: str, name: str) -> str:
    return make_urn(name, RESOURCES[name], stack=stack, project=PROJECT)


# ---- config ------------------------------------------------------------------------------------


def stack_file_config(stack: str) -> dict[str, Any]:
    """The `config:` map of Pulumi.<stack>.yaml, YAML-typed."""
    document = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(document.get("config") or {})


def as_engine_value(value: Any) -> str:
    """A config value as the CLI passes it to the program: objects as JSON, booleans lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


@dataclass
class StackConfig:
    """A stack's config for one run: plain values (YAML-typed) and secret values, by full key."""

    values: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=lambda: dict(SECRETS))

    @classmethod
    def of(cls, stack: str) -> StackConfig:
        return cls(stack_file_config(stack))

    @property
    def deployment(self) -> dict[str, Any]:
        return self.values[f"{PROJECT}:deployment"]

    def engine_map(self) -> tuple[dict[str, str], list[str]]:
        config = {key: as_engine_value(value) for key, value in self.values.items()}
        config.update(self.secrets)
        return config, sorted(self.secrets)

    def configure_payload(self) -> dict[str, Any]:
        """What the engine sends the dynamic provider in Configure: the whole config, secrets marked."""
        config, secret_keys = self.engine_map()
        return {key: props.secret(value) if key in secret_keys else value for key, value in config.items()}


def set_path(document: dict, dotted: str, value: Any) -> None:
    """document["a"]["b"]["c"] = value for "a.b.c", creating objects on the way."""
    *parents, last = dotted.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


# An edit of a stack's config, as a test case applies it.
Edit = Callable[[StackConfig], None]


def deployment_edits(**values: object) -> Edit:
    """Sets values of the deployment object by path, `__` standing for `.` (scaling__max_containers=2)."""

    def edit(config: StackConfig) -> None:
        for path, value in values.items():
            set_path(config.deployment, path.replace("__", "."), value)

    return edit


def secret_edit(key: str, value: str) -> Edit:
    """`pulumi config set --secret <key> <value>`."""
    return lambda config: config.secrets.__setitem__(f"{PROJECT}:{key}", value)


# ---- running the program -----------------------------------------------------------------------


@dataclass
class StackRun:
    """One preview/up of a stack: the engine's result plus what Modal saw meanwhile."""

    stack: str
    operation: str
    program: ProgramRun
    modal_calls: list  # CallRecords of the control plane during the run
    seconds: float

    @property
    def result(self) -> DeploymentResult:
        return self.program.result

    @property
    def outputs(self) -> dict[str, Any]:
        return self.program.stack_outputs

    @property
    def error(self) -> BaseException | None:
        return self.program.error

    @property
    def ok(self) -> bool:
        return self.error is None and self.result.ok

    @property
    def traceback_free(self) -> bool:
        """The language host prints a RunError's message alone; any other exception with a trace."""
        return self.error is None or isinstance(self.error, pulumi.RunError)

    def op(self, name: str) -> str:
        """The logical step of resource `name`: create, same, update, replace, delete."""
        return self.result.step(urn(self.stack, name)).op

    def ops(self) -> dict[str, str]:
        names = [n for n in RESOURCES if any(s.urn == urn(self.stack, n) for s in self.result.steps)]
        return {name: self.op(name) for name in names}

    def changed(self) -> dict[str, str]:
        return {name: op for name, op in self.ops().items() if op != "same"}

    @property
    def mutating_modal_calls(self) -> list:
        return [call for call in self.modal_calls if call.mutating]

    def rpc_count(self, rpc: str) -> int:
        return sum(1 for call in self.modal_calls if call.rpc == rpc)

    @property
    def function_runs(self) -> int:
        """Function calls started on Modal (each job run is one FunctionMap)."""
        return self.rpc_count("FunctionMap")

    @property
    def deploys(self) -> int:
        """Deployments published (a job's ephemeral app publishes too, as APP_STATE_EPHEMERAL)."""
        return sum(1 for call in self.modal_calls
                   if call.rpc == "AppPublish" and call.args.get("app_state") == "APP_STATE_DEPLOYED")  # fmt: skip

    def registration(self, name: str):
        wanted = urn(self.stack, name)
        return next(r for r in self.program.registrations if r.urn == wanted)


def _program() -> None:
    # As the exec script: the working directory is the program directory and the program is ".".
    with contextlib.chdir(INFRA_DIR):
        runpy.run_path(".", run_name="__main__")


class StackHarness:
    """One stack's engine state, driven run after run against one provider server and control plane."""

    def __init__(self, stack: str, server: ProviderServer, cp: ControlPlane, config: StackConfig | None = None):
        self.stack = stack
        self.server = server
        self.cp = cp
        self.config = config or StackConfig.of(stack)
        self.engine = Engine(server, State())

    def preview(self, config: StackConfig | None = None) -> StackRun:
        return self._run("preview", config)

    def up(self, config: StackConfig | None = None) -> StackRun:
        return self._run("up", config)

    def _run(self, operation: str, config: StackConfig | None) -> StackRun:
        config = config or self.config
        values, secret_keys = config.engine_map()
        pulumi.runtime.set_all_config(values, secret_keys)
        mark = self.cp.mark()
        started = time.perf_counter()
        program_run = run_program(self.engine, operation, _program, project=PROJECT, stack=self.stack)
        seconds = time.perf_counter() - started
        return StackRun(self.stack, operation, program_run, self.cp.calls_since(mark), seconds)

    def destroy(self) -> DeploymentResult:
        return self.engine.destroy()

    def refresh(self) -> DeploymentResult:
        return self.engine.refresh()


# ---- the provider server, as the engine starts it ----------------------------------------------

# Test-speed knobs the providers read from their environment (see providers/base.py, runner.py).
FAST_PROVIDER_ENV = {RETRY_BASE_SECONDS_ENV: "0.01", PROGRESS_SECONDS_ENV: "60"}


def provider_server(cp: ControlPlane, config: StackConfig) -> ProviderServer:
    """The dynamic provider process as `pulumi up` would start it for this project (Pulumi.yaml's
    virtualenv and program directory), pointed at the control plane."""
    spec = launch_for_project(REPO_ROOT)
    # subprocess_env drops every MODAL_* of the base, so no MODAL_ENVIRONMENT reaches the providers.
    env = {**cp.subprocess_env(base=spec.env), **FAST_PROVIDER_ENV}
    return ProviderServer(python=spec.python, cwd=spec.cwd, base_env=env, project=PROJECT,
                          config=config.configure_payload())  # fmt: skip


# ---- what the serving functions do, on the control plane's volumes -----------------------------


def image_env(cp: ControlPlane, image_id: str) -> dict[str, str]:
    """The environment an image's containers get: its layers' ENV commands, base first."""
    chain = []
    seen = set()
    while image_id and image_id not in seen:
        seen.add(image_id)
        layer = cp.state.images.get(image_id)
        if layer is None:
            break
        chain.append(layer)
        image_id = next((base.get("image_id", "") for base in layer.base_images if base.get("image_id")), "")
    env: dict[str, str] = {}
    for layer in reversed(chain):
        env.update(layer.env)
    return env


def running_config(cp: ControlPlane, tag: str) -> DeploymentConfig:
    """The config the container of the running call of `tag` was built with (its image env)."""
    calls = [call for call in cp.function_calls if call.tag == tag and call.status == "running"]
    if len(calls) != 1:
        raise RuntimeError(f"expected one running call of {tag}, found {len(calls)}")
    record = cp.state.by_id[calls[0].function_id]
    raw = image_env(cp, record.image_id).get(CONFIG_ENV_VAR)
    if raw is None:
        raise RuntimeError(f"{tag}: no {CONFIG_ENV_VAR} in its image environment")
    return DeploymentConfig.model_validate_json(raw)


@contextlib.contextmanager
def mounted(cfg: DeploymentConfig, volumes: VolumeAccess, *mounts: str) -> Iterator[DeploymentConfig]:
    """cfg with the given mount points re-pointed at local copies of the volumes mounted there;
    what the code writes is applied to the volumes afterwards (as a volume commit would)."""
    with contextlib.ExitStack() as stack:
        storage = cfg.storage.model_dump()
        for mount in mounts:
            volume = volumes.mounts[mount]
            local = stack.enter_context(volumes.local_dir(volume))
            key = "weights_mount" if mount == cfg.storage.weights_mount else "kernels_mount"
            storage[key] = str(local)
        yield cfg.model_copy(update={"storage": cfg.storage.model_copy(update=storage)})


# A snapshot as the Hub would deliver it: two tiny shards and the index mapping tensors to them.
SHARDS = {"model-00001-of-00002.safetensors": b"shard-one", "model-00002-of-00002.safetensors": b"shard-two"}


def fake_snapshot_download(*, local_dir: str, allow_patterns: list[str] | None = None, **_: Any) -> str:
    """Stand-in for huggingface_hub.snapshot_download: writes a complete tiny snapshot."""
    root = Path(local_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["GlmMoeDsaForCausalLM"]}))
    weight_map = {f"layer.{i}.weight": name for i, name in enumerate(SHARDS)}
    index = {"metadata": {"total_size": sum(len(v) for v in SHARDS.values())}, "weight_map": weight_map}
    (root / WEIGHT_SENTINEL).write_text(json.dumps(index))
    if allow_patterns is None:  # full weights; dummy mode fetches only *.json and friends
        for name, data in SHARDS.items():
            (root / name).write_bytes(data)
    return str(root)


# The compiler stand-in: prints a line and exits 0, so serving.jobs writes its marker.
FAKE_COMPILE_ARGV = [sys.executable, "-c", "print('deep_gemm: compiled 0 kernels (stand-in)')"]


def _quiet(_line: str) -> None:
    """The jobs' log lines would go to Modal's log; here they would only clutter test output."""


def install_serving_functions(cp: ControlPlane) -> None:
    """Scripts the three setup functions of serving/app.py with the real serving.jobs logic."""

    def download(_args: tuple, _kwargs: dict, volumes: VolumeAccess) -> dict:
        cfg = running_config(cp, "download_model")
        with mounted(cfg, volumes, cfg.storage.weights_mount) as local:
            return jobs.download(local, downloader=fake_snapshot_download, sleep=lambda _s: None, log=_quiet)

    def compile_kernels(_args: tuple, kwargs: dict, volumes: VolumeAccess) -> dict:
        cfg = running_config(cp, "compile_deepgemm")
        with mounted(cfg, volumes, cfg.storage.weights_mount, cfg.storage.kernels_mount) as local:
            return jobs.compile_kernels(local, argv=FAKE_COMPILE_ARGV, force=kwargs.get("force", False),
                                        on_line=_quiet, log=_quiet)  # fmt: skip

    def verify(_args: tuple, _kwargs: dict, volumes: VolumeAccess) -> dict:
        cfg = running_config(cp, "verify_setup")
        with mounted(cfg, volumes, cfg.storage.weights_mount, cfg.storage.kernels_mount) as local:
            return jobs.verify(local)

    cp.on_function("download_model", download)
    cp.on_function("compile_deepgemm", compile_kernels)
    cp.on_function("verify_setup", verify)


# ---- the deployed server's web endpoint --------------------------------------------------------


class WebStandIn:
    """What answers at the deployed app's web URL: /health and /v1/chat/completions like SGLang,
    with the Bearer key required on the chat endpoint. `health_status`/`chat_status` choose the
    answers; `requests` records (method, path, authorized) per request.

    The accepted keys come from `api_keys(environment)`, called per request: like the real server,
    which reads its key from the Modal secret when its container starts."""

    def __init__(self, api_keys: Callable[[str], set[str]] = lambda _environment: {TEST_API_KEY}):
        self.api_keys = api_keys
        self.health_status = 200
        self.chat_status = 200
        self.requests: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> WebStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, environment: str, label: str) -> str:
        return f"http://127.0.0.1:{self.port}/{environment}/{label}"

    def chat_requests(self) -> list[tuple[str, str, bool]]:
        with self._lock:
            return [r for r in self.requests if r[1].endswith("/v1/chat/completions")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                environment = self.path.strip("/").split("/", 1)[0]
                given = self.headers.get("Authorization", "")
                return any(given == f"Bearer {key}" for key in standin.api_keys(environment))

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with standin._lock:
                    standin.requests.append(("GET", self.path, self._authorized()))
                if self.path.endswith("/health"):
                    self._reply(standin.health_status, {"status": "ok" if standin.health_status == 200 else "loading"})
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                authorized = self._authorized()
                with standin._lock:
                    standin.requests.append(("POST", self.path, authorized))
                if not self.path.endswith("/v1/chat/completions"):
                    self._reply(404, {"error": "not found"})
                elif not authorized:
                    self._reply(401, {"error": "unauthorized"})
                elif standin.chat_status != 200:
                    # Like SGLang errors that quote the request: the key comes back in the body.
                    self._reply(standin.chat_status, {"object": "error", "message": "the model is on fire",
                                                      "request_headers": dict(self.headers)})
                else:
                    message = {"role": "assistant", "content": "ready", "reasoning_content": None}
                    self._reply(200, {"object": "chat.completion", "model": request.get("model"),
                                      "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        return Handler


def api_keys_in(cp: ControlPlane, key_name: str = "API_KEY") -> Callable[[str], set[str]]:
    """The API keys the control plane's secrets of an environment hold right now."""

    def keys(environment: str) -> set[str]:
        with cp.state.lock:
            env = cp.state.environment(environment)
            secrets = list(env.secrets.values()) if env is not None else []
            return {secret.values[key_name] for secret in secrets if key_name in secret.values}

    return keys


def route_web_urls(cp: ControlPlane, web: WebStandIn) -> None:
    """Makes the control plane hand out web URLs served by `web` instead of *.modal.run (which
    cannot be reached offline). The control plane has no option for it yet, so this replaces its
    URL scheme on this instance only."""

    def web_url(app: Any, label: str) -> str:
        return web.url_for(app.environment, f"{app.name}-{label}".lower().replace(".", "-"))

    cp.rpcs._web_url = web_url
