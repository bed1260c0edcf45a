"""The in-memory state of the control plane: what Modal would have stored for our workspace.

Objects are scoped per environment, as on Modal: `state.environments["main"].secrets["hf"]`. The
workspace's default environment (the one an empty environment name means) is `default_environment`:
"main" unless the plane was started with another name, because Modal's is not always called "main"
(a workspace may rename it, or make another environment the default).
Every object also has an id with Modal's prefix ("st-", "vo-", "ap-", "fu-", ...) registered in
`state.by_id`, because the client refers to hydrated objects by id only.

The state is shared between the server thread and the test thread: mutate it only while holding
`state.lock` (the helpers on the `ControlPlane` handle do).
"""

from __future__ import annotations

import itertools
import shlex
import threading
from dataclasses import dataclass, field
from typing import Any

# The environment a workspace starts with, and the one an empty environment name means, unless the
# plane is started with another default (`ControlPlane(default_environment=...)`).
DEFAULT_ENVIRONMENT = "main"

# Volume versions as modal_proto numbers them (VolumeFsVersion). A volume keeps the version its
# creator asked for, UNSPECIFIED included, as Modal's own servicer stores it; the client treats
# UNSPECIFIED as v1 (`modal/volume.py`: `_Volume._is_v1`, `_validate_volume_version`).
VOLUME_FS_VERSION_UNSPECIFIED = 0
VOLUME_FS_VERSION_V1 = 1
VOLUME_FS_VERSION_V2 = 2

# The image builder version our environments report: the newest modal 1.6.4 knows, so the client
# builds its images the way a fresh workspace would.
IMAGE_BUILDER_VERSION = "2026.10"

# The workspace name used in web URLs, as Modal builds them: https://<workspace>--<label>.modal.run
WORKSPACE = "control-plane-test"
# The user our client token belongs to: who Modal records as the creator of what the client creates
# (a proxy token's `created_by`). A personal workspace is named after its user.
USERNAME = WORKSPACE


@dataclass
class Secret:
    id: str
    name: str
    environment: str
    values: dict[str, str]
    created_at: float


@dataclass
class Volume:
    id: str
    name: str
    environment: str
    created_at: float
    version: int = VOLUME_FS_VERSION_V1  # as asked for when it was created (VolumeGetOrCreate's `version`)
    files: dict[str, bytes] = field(default_factory=dict)  # path (no leading "/") -> contents
    mtimes: dict[str, float] = field(default_factory=dict)

    @property
    def is_v1(self) -> bool:
        """What the client concludes from the version it is given: anything but V2 is v1."""
        return self.version != VOLUME_FS_VERSION_V2


@dataclass
class ImageLayer:
    """One image the client asked for: a base (registry image or a parent image id) plus the
    Dockerfile commands that would be run on it. Builds never happen here."""

    id: str
    base_images: list[dict[str, str]]  # [{"docker_tag": ..., "image_id": ...}]
    dockerfile_commands: list[str]
    secret_ids: list[str]
    build_function: str  # source of a `run_function` step, if any
    context_files: list[str]
    builder_version: str

    @property
    def env(self) -> dict[str, str]:
        """Variables set by this layer's `ENV KEY=value` commands (what `Image.env()` emits)."""
        variables = {}
        for command in self.dockerfile_commands:
            if command.startswith("ENV "):
                for assignment in shlex.split(command[len("ENV ") :]):
                    key, _, value = assignment.partition("=")
                    variables[key] = value
        return variables


@dataclass
class FunctionRecord:
    id: str
    app_id: str
    tag: str  # e.g. "download_model", or "Server.*" for the service function of a class
    definition: Any | None = None  # api_pb2.FunctionData once FunctionCreate has run
    handle_metadata: Any | None = None  # api_pb2.FunctionHandleMetadata
    web_url: str = ""
    definition_id: str = ""
    image_id: str = ""
    secret_ids: list[str] = field(default_factory=list)
    volume_mounts: dict[str, str] = field(default_factory=dict)  # mount path -> volume id
    gpu: str = ""
    is_class: bool = False
    is_server: bool = False


@dataclass
class Deployment:
    """One version of a deployed app, as `modal app history` lists it; `functions` keeps what its
    functions were (copies of their records), so a rollback can bring them back."""

    version: int
    deployed_at: float
    tag: str
    commit_info: Any | None  # api_pb2.CommitInfo, when the client sent one
    functions: dict[str, FunctionRecord]
    classes: dict[str, str]
    rollback_version: int = 0  # the version a rollback restored, 0 for an ordinary deploy

    @property
    def definition_ids(self) -> dict[str, str]:
        """{function id: definition id} of this version: what a publish is compared with."""
        return {record.id: record.definition_id for record in self.functions.values()}


@dataclass
class Container:
    """One container of a deployed app's function, as `TaskList` lists it ("ta-" ids).

    A container reads its secrets once, when it starts (Modal injects them as environment
    variables), so `secret_values` is a snapshot: a secret updated later reaches only containers
    started after the update. `state`: "running" takes requests; "draining" belongs to an older
    version after a rolling deploy (no new requests; it still holds its GPUs until it is stopped);
    "stopped" is gone from `TaskList`.

    What it costs (containers.py): `gpus` GPUs (its function's definition) from `enqueued_at` until
    `stopped_at`; a running one is scaled down `scaledown_window` seconds after its last request
    (`last_request_at`), or after its start if it never had one."""

    task_id: str
    app_id: str
    function_id: str
    version: int
    enqueued_at: float
    secret_values: dict[str, str]
    state: str = "running"
    stopped_at: float = 0.0
    requests: int = 0
    gpus: int = 0
    scaledown_window: float = 0.0
    last_request_at: float = 0.0

    def gpu_seconds(self, now: float) -> float:
        """GPU-seconds so far: its GPUs times its life, which ends when it stops (now, if it still runs)."""
        end = self.stopped_at if self.state == "stopped" else now
        return self.gpus * max(0.0, end - self.enqueued_at)


@dataclass
class App:
    id: str
    name: str  # the deployment name, or the description of an ephemeral app
    environment: str
    created_at: float
    state: str = "initializing"  # initializing | ephemeral | deployed | stopped
    # A detached ephemeral app (`app.run(detach=True)`) outlives its client: a disconnect leaves it
    # running until its last function call ends.
    detached: bool = False
    disconnected: bool = False
    deployment_version: int = 0
    deployed_at: float = 0.0
    functions: dict[str, FunctionRecord] = field(default_factory=dict)  # tag -> record
    classes: dict[str, str] = field(default_factory=dict)  # class name -> class id
    images: list[ImageLayer] = field(default_factory=list)  # layers requested while this app loaded
    mounts: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    stopped_at: float = 0.0
    history: list[Deployment] = field(default_factory=list)  # oldest first
    containers: list[Container] = field(default_factory=list)  # every container it ever had, oldest first

    @property
    def live_containers(self) -> list[Container]:
        """Containers that still exist on Modal (running or draining): what `TaskList` lists."""
        return [container for container in self.containers if container.state != "stopped"]

    @property
    def deployment(self) -> Deployment | None:
        """The version serving now."""
        return self.history[-1] if self.history else None

    @property
    def web_urls(self) -> dict[str, str]:
        return {tag: fn.web_url for tag, fn in self.functions.items() if fn.web_url}

    @property
    def web_url(self) -> str | None:
        """The app's web URL when it has exactly one web endpoint (our serving app's server)."""
        urls = list(self.web_urls.values())
        return urls[0] if len(urls) == 1 else None

    @property
    def image_env(self) -> dict[str, str]:
        """Environment variables set by all of the app's image layers, later layers winning."""
        variables: dict[str, str] = {}
        for layer in self.images:
            variables.update(layer.env)
        return variables


@dataclass
class Environment:
    id: str
    name: str
    created_at: float
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Secret] = field(default_factory=dict)
    volumes: dict[str, Volume] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)  # deployed apps by deployment name


@dataclass
class ProxyToken:
    """A proxy auth token ("webhook token" in modal_proto): what Modal's edge wants in the `Modal-Key`
    (`id`, "wk-...") and `Modal-Secret` (`secret`, "ws-...") headers before a request to an endpoint
    with `requires_proxy_auth` reaches a container (https://modal.com/docs/guide/webhook-proxy-auth).

    `secret` never leaves the plane but in WebhookTokenCreate's answer (the proto's WebhookToken has
    no secret field). `name` is an optional label (empty: none). `environment_ids`: the environments
    it is allowed in (`proxy_tokens.allow`), by id, so a renamed environment keeps its tokens and a
    deleted one, recreated under its name, gets none. Where it is valid: `valid_in`."""

    id: str
    secret: str
    name: str
    scoped: bool
    created_at: float
    created_by: str
    environment_ids: set[str] = field(default_factory=set)

    def valid_in(self, environment_id: str) -> bool:
        """A scoped token authenticates only in the environments it is allowed in; an unscoped one is
        workspace-wide: every environment of the workspace, allowed or not. That is what "scoped"
        means in Modal's docs and in Modal's own servicer (only scoped tokens with an explicit
        association are listed for an environment)."""
        return not self.scoped or environment_id in self.environment_ids


@dataclass
class Mount:
    id: str
    files: dict[str, str]  # path in container -> sha256 hex of contents


@dataclass
class ControlPlaneState:
    environments: dict[str, Environment] = field(default_factory=dict)
    by_id: dict[str, Any] = field(default_factory=dict)
    images: dict[str, ImageLayer] = field(default_factory=dict)
    built_images: set[str] = field(default_factory=set)
    mounts: dict[str, Mount] = field(default_factory=dict)
    mount_files: dict[str, bytes] = field(default_factory=dict)  # sha256 hex -> contents
    ephemeral_apps: list[App] = field(default_factory=list)
    proxy_tokens: dict[str, ProxyToken] = field(default_factory=dict)  # by id, oldest first
    # Every container ever started, oldest first; unlike `App.containers`, it outlives the app's
    # environment, so the workspace's totals (containers started, GPU-seconds) never shrink.
    containers: list[Container] = field(default_factory=list)
    default_environment: str = DEFAULT_ENVIRONMENT
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _counters: dict[str, itertools.count] = field(default_factory=dict, repr=False)

    def new_id(self, prefix: str) -> str:
        """Sequential ids per prefix ("st-1", "st-2", ...) so failures read the same on every run."""
        counter = self._counters.setdefault(prefix, itertools.count(1))
        return f"{prefix}-{next(counter)}"

    def environment(self, name: str | None) -> Environment | None:
        """The environment of that name; an empty name means the workspace's default, as on Modal."""
        return self.environments.get(name or self.default_environment)

    def add_environment(self, name: str, now: float) -> Environment:
        env = Environment(
            id=self.new_id("en"),
            name=name,
            created_at=now,
            settings={
                "image_builder_version": IMAGE_BUILDER_VERSION,
                # Modal's default environment has no web suffix; others get their name.
                "webhook_suffix": "" if name == self.default_environment else name,
            },
        )
        self.environments[name] = env
        self.by_id[env.id] = env
        return env

    def add_secret(self, env: Environment, name: str, values: dict[str, str], now: float) -> Secret:
        """A new named secret of `env` (replacing any of that name), registered by id."""
        secret = Secret(self.new_id("st"), name, env.name, values, now)
        env.secrets[name] = secret
        self.by_id[secret.id] = secret
        return secret

    def add_volume(self, env: Environment, name: str, now: float, version: int = VOLUME_FS_VERSION_V1) -> Volume:
        """A new, empty named volume of `env`, registered by id. v1 unless told otherwise: what
        `modal volume create`, `Volume.objects.create(name)` and `from_name(create_if_missing=True)` make."""
        volume = Volume(self.new_id("vo"), name, env.name, now, version)
        env.volumes[name] = volume
        self.by_id[volume.id] = volume
        return volume

    def remove_environment(self, name: str) -> None:
        env = self.environments.pop(name)
        self.by_id.pop(env.id, None)
        # Not documented by Modal; the association names an environment that is gone, so it allows
        # nothing either way, and listing it (WebhookTokenEnvironmentList) would name a dead id.
        for token in self.proxy_tokens.values():
            token.environment_ids.discard(env.id)
        for obj in [*env.secrets.values(), *env.volumes.values(), *env.apps.values()]:
            self.by_id.pop(obj.id, None)

    def all_apps(self) -> list[App]:
        return [obj for obj in self.by_id.values() if isinstance(obj, App)]
