"""The stack harness: a stack of the real Pulumi program, run by the real Pulumi CLI (tests/stack/cli.py)
against the local Modal control plane.

How a run goes, and which part is real:

- Config: the stack file `Pulumi.<stack>.yaml` of a temporary copy of the project; a test's edit is
  written into it (plain keys as YAML, secrets with `pulumi config set --secret`, value piped), so
  the CLI's own YAML parser, config handling and secrets provider are what the program sees.
- CLI and engine: the pinned `pulumi` binary with a local backend; the engine starts our dynamic
  provider as its own process (Pulumi.yaml's virtualenv), keeps the state, computes the steps.
- Program: infra/ as `__main__`, run inline through the Automation API (see cli.py for why).
- Modal: the providers (and their `python -m providers.runs.runner` children) use the real modal client
  against the control plane, a server thread of the test process reached through MODAL_SERVER_URL.
  Its functions run the REAL serving.jobs logic (download, compile, verify) on the control plane's
  volumes, with the config baked into the function's image environment, as the container would;
  only the Hub download and the compiler are stand-ins (serving.jobs takes them as parameters).
- Web: the control plane hands out web URLs served by its `WebFront` (tests/modal_control_plane/web.py):
  each request reaches a container of the app's live version, which answers /health and
  /v1/chat/completions like SGLang with the API key it read when it started.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.cost_preview import LOG_PREFIX as COST_PREFIX
from infra.cost_preview import RUN_COST_OUTPUT
from providers import (
    HttpCheck,
    ModalAppDeployment,
    ModalEnvironment,
    ModalJob,
    ModalProxyToken,
    ModalSecret,
    ModalVolume,
)
from providers.modal_access.retry import RETRY_BASE_SECONDS_ENV
from providers.runs.supervisor import PROGRESS_SECONDS_ENV
from serving import jobs
from serving.config import CONFIG_ENV_VAR, WEIGHT_SENTINEL, DeploymentConfig
from tests.modal_control_plane import ControlPlane
from tests.modal_control_plane.functions import VolumeAccess
from tests.pulumi_engine import properties as props
from tests.pulumi_engine.provider_server import make_urn, resource_type
from tests.stack.cli import CliWorld, Outcome, resource_name

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "glm-modal"
STACKS = ("staging", "prod")

# Test secrets. Canaries: neither may ever appear in plaintext outside a secret marker.
TEST_HF_TOKEN = "hf_canaryHfToken7e3b91d0"
TEST_API_KEY = "canary-api-key-5c2f8a61d94e4b7a9f03"  # 36 characters: strong enough for prod
SECRETS = {f"{PROJECT}:hfToken": TEST_HF_TOKEN, f"{PROJECT}:apiKey": TEST_API_KEY}

# Resource types as the engine sees them, from the resource classes themselves.
TYPES = {
    "environment": resource_type(ModalEnvironment),
    "secret": resource_type(ModalSecret),
    "volume": resource_type(ModalVolume),
    "job": resource_type(ModalJob),
    "app": resource_type(ModalAppDeployment),
    "check": resource_type(HttpCheck),
    "proxy_token": resource_type(ModalProxyToken),
}

# Logical names in infra/resources.py and infra/smoke.py, with their types.
RESOURCES = {
    "environment": TYPES["environment"],
    "hf-token-secret": TYPES["secret"],
    "api-key-secret": TYPES["secret"],
    "weights-volume": TYPES["volume"],
    "kernels-volume": TYPES["volume"],
    "stack-proxy-token": TYPES["proxy_token"],
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


# A secret in events and state carries the wire marker (with "ciphertext" instead of "value"), and a
# value not known until the update is the wire's unknown: the wire helpers read both.
is_secret = props.is_secret
UNKNOWN = props.UNKNOWN


def function_runs(calls: list) -> int:
    """Function calls started on Modal (each job run is one FunctionMap)."""
    return sum(1 for call in calls if call.rpc == "FunctionMap")


def deploys(calls: list) -> int:
    """Deployments published (a job's ephemeral app publishes too, as APP_STATE_EPHEMERAL)."""
    return sum(1 for call in calls if call.rpc == "AppPublish" and call.args.get("app_state") == "APP_STATE_DEPLOYED")


# A preview's cost line of a job run, and of the deploy (infra/cost_preview.py).
COST_RUN_LINE = re.compile(re.escape(COST_PREFIX) + r"([\w-]+): runs (\w+) on ")
COST_DEPLOY_LINE = re.compile(re.escape(COST_PREFIX) + r"app: deploys ")


def urn(stack: str, name: str) -> str:
    return make_urn(name, RESOURCES[name], stack=stack, project=PROJECT)


# ---- config ------------------------------------------------------------------------------------


def stack_file_config(stack: str) -> dict[str, Any]:
    """The `config:` map of Pulumi.<stack>.yaml, YAML-typed."""
    document = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(document.get("config") or {})


@dataclass
class StackConfig:
    """A stack's config for one run: plain values (YAML-typed) and secret values, by full key."""

    values: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=lambda: dict(SECRETS))
    # A last edit of the stack file's text, for what a mapping cannot say (a key given twice,
    # unquoted YAML spellings, aliases): applied after the secrets are set.
    text_edit: Callable[[str], str] | None = None

    @classmethod
    def of(cls, stack: str) -> StackConfig:
        return cls(stack_file_config(stack))

    @property
    def deployment(self) -> dict[str, Any]:
        return self.values[f"{PROJECT}:deployment"]


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


# ---- running the stack through the real CLI ----------------------------------------------------

# Test-speed knobs the providers read from their environment (see providers/modal_access/retry.py, supervisor.py).
FAST_PROVIDER_ENV = {RETRY_BASE_SECONDS_ENV: "0.01", PROGRESS_SECONDS_ENV: "60"}


@dataclass
class StackRun:
    """One CLI operation of a stack, plus what Modal saw meanwhile."""

    stack: str
    outcome: Outcome
    modal_calls: list  # CallRecords of the control plane during the run

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def text(self) -> str:
        return self.outcome.text

    @property
    def outputs(self) -> dict[str, Any]:
        return self.outcome.outputs

    @property
    def seconds(self) -> float:
        return self.outcome.seconds

    def op(self, name: str) -> str:
        return self.outcome.op(name)

    def ops(self) -> dict[str, str]:
        return self.outcome.ops()

    def changed(self) -> dict[str, str]:
        return self.outcome.changed()

    @property
    def mutating_modal_calls(self) -> list:
        return [call for call in self.modal_calls if call.mutating]

    @property
    def function_runs(self) -> int:
        return function_runs(self.modal_calls)

    @property
    def deploys(self) -> int:
        return deploys(self.modal_calls)

    # ---- what a preview said the `up` would run (its cost lines and its estimate output) ----

    @property
    def cost_lines(self) -> list[str]:
        return [line.strip() for line in self.text.splitlines() if COST_PREFIX in line]

    @property
    def announced_runs(self) -> dict[str, str]:
        """Job resource -> Modal function, for each job the preview's cost lines say will run."""
        return {match[1]: match[2] for line in self.cost_lines if (match := COST_RUN_LINE.search(line))}

    @property
    def announced_deploy(self) -> bool:
        return any(COST_DEPLOY_LINE.search(line) for line in self.cost_lines)

    @property
    def estimated_runs(self) -> list[str]:
        """The resources the stack output of the estimate lists (the jobs, and "app" for the deploy)."""
        return [run["name"] for run in self.outputs[RUN_COST_OUTPUT]["runs"]]


class StackHarness:
    """One stack of a CLI world: `pulumi stack init`, the two secrets set as the README says, then
    preview/up/refresh/destroy with the config a test hands in, written into the stack file first
    (plain keys as YAML, secrets with `pulumi config set --secret`, as an operator would)."""

    def __init__(self, stack: str, world: CliWorld, cp: ControlPlane, config: StackConfig | None = None):
        self.stack = stack
        self.world = world
        self.cp = cp
        self.config = config or StackConfig.of(stack)
        self._written: StackConfig | None = None  # what the stack file holds now
        self._clean_text: str | None = None  # the stack file before the last text edit
        world.check("stack", "init", stack)

    # ---- the stack file ----------------------------------------------------------------------------

    def write_config(self, config: StackConfig) -> None:
        """Make the stack file say `config`. The first run reads the committed file as it is (plus
        the secrets); later runs rewrite its plain keys and set again only the secrets that changed."""
        if self._written == config:
            return
        path = self.world.stack_file(self.stack)
        if self._clean_text is not None:
            path.write_text(self._clean_text)  # undo the last text edit, which PyYAML may not read
            self._clean_text = None
        document = yaml.safe_load(path.read_text())
        stored = document.get("config") or {}
        previous = self._written.secrets if self._written is not None else {}
        unchanged = {key: stored[key] for key, value in config.secrets.items()
                     if key in stored and previous.get(key) == value}  # fmt: skip
        if self._written is not None or config.values != stack_file_config(self.stack):
            document["config"] = {**config.values, **unchanged}
            path.write_text(yaml.safe_dump(document, sort_keys=False))
        for key, value in config.secrets.items():
            if key not in unchanged:
                self.world.check("config", "set", "--secret", key, "--stack", self.stack, input=value)
        if config.text_edit is not None:
            self._clean_text = path.read_text()
            path.write_text(config.text_edit(self._clean_text))
        self._written = copy.deepcopy(config)

    # ---- operations --------------------------------------------------------------------------------

    def preview(self, config: StackConfig | None = None, **options: Any) -> StackRun:
        return self._program_run("preview", config, options)

    def up(self, config: StackConfig | None = None, **options: Any) -> StackRun:
        return self._program_run("up", config, options)

    def _program_run(self, operation: str, config: StackConfig | None, options: dict[str, Any]) -> StackRun:
        self.write_config(config or self.config)
        mark = self.cp.mark()
        outcome = self.world.program_run(operation, self.stack, **options)
        return StackRun(self.stack, outcome, self.cp.calls_since(mark))

    def cli(self, *args: str, input: str | None = None) -> StackRun:  # noqa: A002
        """A plain CLI command of this stack: `pulumi <args> --stack <stack>`."""
        mark = self.cp.mark()
        outcome = self.world.run(*args, "--stack", self.stack, input=input)
        return StackRun(self.stack, outcome, self.cp.calls_since(mark))

    def refresh(self) -> StackRun:
        return self.cli("refresh", "--yes")

    def destroy(self) -> StackRun:
        return self.cli("destroy", "--yes")

    def export(self) -> dict[str, Any]:
        """`pulumi stack export`: the stack's state as the backend stores it."""
        return json.loads(self.world.check("stack", "export", "--stack", self.stack).stdout)

    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources in state, by logical name (the stack resource and providers left out)."""
        deployment = self.export()["deployment"]
        return {resource_name(urn): resource for resource in deployment.get("resources", [])
                if not (urn := resource["urn"]).split("::")[2].startswith(("pulumi:pulumi:", "pulumi:providers:"))}


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


# A snapshot as the Hub would deliver it: two tiny shards and the index mapping tensors to them, at
# the commit the requested revision resolves to.
SHARDS = {"model-00001-of-00002.safetensors": b"shard-one", "model-00002-of-00002.safetensors": b"shard-two"}
HUB_COMMIT = "c0ffee" + "5" * 34


class HubStandIn:
    """Stands in for huggingface_hub.snapshot_download: writes a tiny snapshot at HUB_COMMIT, and per
    file the metadata snapshot_download(local_dir=...) keeps (commit, etag, timestamp). Like it, a
    file already there at that commit is not transferred again (a download resumes). `requests`
    counts what would have gone to the Hub: the revision lookup of each call and each file fetched."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, *, local_dir: str, revision: str = "main", allow_patterns: list[str] | None = None,
                 **_: Any) -> str:  # fmt: skip
        root = Path(local_dir)
        root.mkdir(parents=True, exist_ok=True)
        weight_map = {f"layer.{i}.weight": name for i, name in enumerate(SHARDS)}
        index = {"metadata": {"total_size": sum(len(v) for v in SHARDS.values())}, "weight_map": weight_map}
        files = {"config.json": json.dumps({"architectures": ["GlmMoeDsaForCausalLM"]}).encode(),
                 WEIGHT_SENTINEL: json.dumps(index).encode()}  # fmt: skip
        if allow_patterns is None:  # full weights; dummy mode fetches only *.json and friends
            files.update(SHARDS)
        fetched = [f"revision {revision}"]
        for name, data in files.items():
            metadata = root / jobs.HUB_DOWNLOAD_METADATA_DIR / f"{name}.metadata"
            if (root / name).exists() and metadata.exists() and metadata.read_text().startswith(HUB_COMMIT):
                continue
            (root / name).write_bytes(data)
            metadata.parent.mkdir(parents=True, exist_ok=True)
            metadata.write_text(f"{HUB_COMMIT}\netag-{len(data)}\n1767322800.0\n")
            fetched.append(name)
        with self._lock:
            self.requests += fetched
        return str(root)


# The compiler stand-in: prints a line and exits 0, so serving.jobs writes its marker.
FAKE_COMPILE_ARGV = [sys.executable, "-c", "print('deep_gemm: compiled 0 kernels (stand-in)')"]


def _quiet(_line: str) -> None:
    """The jobs' log lines would go to Modal's log; here they would only clutter test output."""


def install_serving_functions(cp: ControlPlane, hub: HubStandIn) -> None:
    """Scripts the three setup functions of serving/app.py with the real serving.jobs logic."""

    def download(_args: tuple, _kwargs: dict, volumes: VolumeAccess) -> dict:
        cfg = running_config(cp, "download_model")
        with mounted(cfg, volumes, cfg.storage.weights_mount) as local:
            return jobs.download(local, downloader=hub, sleep=lambda _s: None, log=_quiet)

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


