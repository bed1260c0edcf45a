# # GLM-5.1-FP8 with SGLang on 8x B200, as a Modal app
#
# Four Modal Functions share two Volumes:
#
# 1. `download_model` (CPU) pulls the ~700 GB snapshot from Hugging Face into the weights volume.
# 2. `compile_deepgemm` (8x B200) JIT-compiles DeepGEMM's FP8 kernels for exactly the server
#    arguments we serve with, into the kernels volume, and records what it compiled for. Its server
#    run also fills the other JIT caches there (Triton, FlashInfer, ...: serving/jit_caches.py).
# 3. `verify_setup` (CPU) checks both volumes against the current config.
# 4. `Server` (8x B200) starts SGLang from the volumes, warms it up, and serves its OpenAI API.
#
# Everything deployment-specific comes from one typed config (`serving/config.py`). The config this
# module reads at import is the config every container runs: it is baked into the images' environment
# as JSON, so the container re-imports this module with exactly the same values.
#
# Run it with plain Modal (from the repository root, with the project installed):
#
#     modal run serving/app.py                      # download -> compile -> verify
#     modal run serving/app.py::download_model      # one step at a time
#     modal deploy serving/app.py                   # the server
#
# Without `GLM_DEPLOYMENT_CONFIG` in the environment this deploys the production defaults; with it
# (JSON of DeploymentConfig, e.g. from `python -m serving.render --stack staging`), that config.
# Pulumi-managed stacks deploy this same module with the stack's config.
#
# Importing this module needs no network: Modal objects are only descriptions until deployed.

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Mapping

import modal

from serving import commands, jobs
from serving.config import CONFIG_ENV_VAR, DeploymentConfig, load_from_env
from serving.log_redaction import print_line

# ## The config

# Parsed and validated once, here. Locally it comes from the environment (or the defaults); inside
# a container it comes from the image environment set below, so both sides agree.
cfg = load_from_env()
CONFIG_JSON = cfg.to_json()

app = modal.App(cfg.app_name)

# Each setup job also has an app of its own, holding that one function: a job started on its own
# (`pulumi up` runs each as a detached ephemeral app, providers/runs/runner.py) then brings up nothing else,
# in particular no web endpoint (a `-dev` URL whose first request would start 8x B200 before the
# weights are there) and no GPU class. `app` includes all three below, so `modal run serving/app.py`
# and `modal deploy serving/app.py` see every function, as before.
download_app = modal.App(f"{cfg.app_name}-download-model")
compile_app = modal.App(f"{cfg.app_name}-compile-deepgemm")
verify_app = modal.App(f"{cfg.app_name}-verify-setup")

# ## Container images

# The download image is deliberately small: no CUDA, just the Hub client with hf_xet (chunked,
# parallel transfers of multi-GB files) and what our own modules import. Pinned to the versions in
# pyproject.toml (tests check they agree), so the job runs the code the tests ran; hf-xet is only an
# indirect dependency there, pinned here to the release huggingface-hub 2.4.0 was tested with.
# Python 3.11 is the version the project supports (`requires-python`).
DOWNLOAD_PYTHON_VERSION = "3.11"
DOWNLOAD_PACKAGES = (
    "huggingface-hub==2.4.0",
    "hf-xet==1.8.0",  # huggingface-hub's optional Xet transfer backend
    "pydantic==2.14.4",  # serving.config
    "tenacity==9.1.2",  # serving.jobs retries
)

download_image = (
    modal.Image.debian_slim(python_version=DOWNLOAD_PYTHON_VERSION)
    .pip_install(*DOWNLOAD_PACKAGES)
    .env({commands.HF_XET_HIGH_PERFORMANCE: "1", CONFIG_ENV_VAR: CONFIG_JSON})
    # Our package, mounted at container start (not baked into a layer). Needed when this file runs
    # as a script (`modal run serving/app.py` imports it as the top-level module `app`).
    .add_local_python_source("serving")
)

# The serving image is the pinned SGLang release itself (never `:latest`: the launch command is only
# known to parse for this release). Modal runs our code with the image's `python`; some CUDA base
# images ship only `python3`, so link it if needed. The image environment carries the locations of
# the DeepGEMM cache and of every other JIT cache (all on the kernels volume) and the config.
ENSURE_PYTHON_ON_PATH = 'RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python'

sglang_image = (
    modal.Image.from_registry(cfg.sglang.image, setup_dockerfile_commands=[ENSURE_PYTHON_ON_PATH])
    .env({**commands.image_env(cfg), CONFIG_ENV_VAR: CONFIG_JSON})
    .add_local_python_source("serving")
)

# The lifecycle module needs `requests` and `yaml`, which the SGLang image has and the small
# download image does not; Modal only raises a failed import here inside the image that needs it.
with sglang_image.imports():
    from serving import lifecycle

# ## Storage

# Weights and compiled kernels live in Volumes, so a cold start neither re-downloads 700 GB nor
# recompiles kernels for 10-15 minutes. A Pulumi-managed stack creates both volumes before it
# deploys this app; `create_if_missing=True` additionally lets plain `modal run`/`modal deploy` work
# on a fresh workspace, and is a no-op when the volume exists. A mistyped name therefore gives an
# empty volume, which `verify_setup` and the server's start-up check report with the fix.
weights_volume = modal.Volume.from_name(cfg.storage.weights_volume, create_if_missing=True)
kernels_volume = modal.Volume.from_name(cfg.storage.kernels_volume, create_if_missing=True)

# The same mount points at compile and serve time: the paths SGLang sees (--model-path, the DeepGEMM
# cache dir) must match the ones the kernels were compiled with.
WEIGHTS_ONLY = {cfg.storage.weights_mount: weights_volume}
BOTH_VOLUMES = {cfg.storage.weights_mount: weights_volume, cfg.storage.kernels_mount: kernels_volume}

# ## Secrets

# Created once by the operator (`modal secret create <name> HF_TOKEN=-` / `API_KEY=-`; `=-` asks for the
# value in $EDITOR, keeping it out of argv and shell history) or by the Pulumi stack; values never
# appear in this code, the config or the images.
hf_token_secret = modal.Secret.from_name(cfg.secrets.hf_token)
api_key_secret = modal.Secret.from_name(cfg.secrets.api_key)
# The proxy auth token the keep-alive shows Modal's edge (only looked up when the keep-alive is on and
# the edge requires one). A Pulumi stack writes it from the token it creates; by hand:
# `modal workspace proxy-tokens create`, allow it in the environment, then
# `modal secret create <name> EDGE_TOKEN_ID=wk-... EDGE_TOKEN_SECRET=-`.
edge_token_secret = modal.Secret.from_name(cfg.secrets.edge_token)


def reload_volumes(*volumes: modal.Volume) -> None:
    # Volumes are eventually consistent: without a reload, a container started right after another
    # one committed can see a stale listing (no weights, no marker) and fail for nothing.
    for volume in volumes:
        volume.reload()


# ## Step 1: download the weights (CPU)

# Pure I/O, so no GPU: 4 cores and 32 GiB keep eight parallel shard transfers fed for cents an hour.
# The job skips when the weights are already there and retries transient Hub errors with backoff.


@download_app.function(
    image=download_image,
    volumes=WEIGHTS_ONLY,
    secrets=[hf_token_secret],
    cpu=cfg.download.cpu,
    memory=cfg.download.memory_mib,
    timeout=cfg.timeouts.download,
)
def download_model() -> dict:
    result = jobs.download(cfg)
    if not result["skipped"]:
        weights_volume.commit()  # make the new files visible to the compile and server containers
    return result


# ## Step 2: compile the DeepGEMM kernels (8x B200)

# Kernels are built for one GPU architecture and one set of matrix shapes, so this runs on the
# serving hardware with the serving arguments. `force=True` recompiles even when the marker matches.


@compile_app.function(
    image=sglang_image,
    gpu=cfg.hardware.modal_gpu,
    volumes=BOTH_VOLUMES,
    timeout=cfg.timeouts.compile,
)
def compile_deepgemm(force: bool = False) -> dict:
    reload_volumes(weights_volume, kernels_volume)
    result = jobs.compile_kernels(cfg, force=force)
    if not result["skipped"]:
        kernels_volume.commit()
    return result


# ## Step 3: verify both volumes (CPU)

# Cheap and read-only. Returns a report whose `failures` each name the command that fixes them.


@verify_app.function(image=download_image, volumes=BOTH_VOLUMES, timeout=cfg.timeouts.verify)
def verify_setup() -> dict:
    reload_volumes(weights_volume, kernels_volume)
    report = jobs.verify(cfg)
    print_line(json.dumps(report, indent=2))
    return report


app.include(download_app).include(compile_app).include(verify_app)


# ## The server (8x B200)

# `app.cls` + `@modal.web_server`, as in the recipe, rather than modal 1.6's `app.server`: in 1.6.4
# `app.server` has no `timeout` (we cap a container's life at 24 h against fragmentation and leaks),
# it turns requests above `max_concurrency` away with 429 where `@modal.concurrent` queues them and
# scales out, and it routes through a separate regional proxy (`routing_region`).

# Our own startup deadline ends this many seconds before Modal's, so a slow start fails with our
# error (which quotes the tail of SGLang's log) rather than Modal killing the container silently.
STARTUP_ERROR_MARGIN_SECONDS = 30


def prepare_sglang(
    cfg: DeploymentConfig, environ: Mapping[str, str], *, startup_timeout: float
) -> lifecycle.SGLangServer:
    """Check the volumes and the API key, then describe the SGLang process (not started yet).

    Fails fast, with the fix, instead of letting SGLang fetch from the Hub or JIT-compile for
    minutes on a GPU container.
    """
    jobs.require_ready(cfg)
    api_key = environ.get(cfg.secrets.api_key_key)
    if not api_key:
        raise RuntimeError(
            f"secret '{cfg.secrets.api_key}' has no {cfg.secrets.api_key_key}: "
            f"`modal secret create {cfg.secrets.api_key} {cfg.secrets.api_key_key}=-` (or `pulumi up`)"
        )
    return lifecycle.SGLangServer(
        commands.launch_command(cfg),
        port=cfg.launch.port,
        api_key=api_key,
        served_model_name=cfg.model.served_name,
        # The key reaches SGLang only through the private --config file: drop it from the
        # environment too, so it is not readable in /proc/<pid>/environ of every SGLang worker.
        env={**{k: v for k, v in environ.items() if k != cfg.secrets.api_key_key}, **commands.serve_env(cfg)},
        startup_timeout=startup_timeout,
        warmup_request_timeout=cfg.timeouts.warmup_request,
        # Random weights answer with noise: still check status and shape, not the content.
        check_warmup_answers=cfg.model.weights == "full",
        shutdown_grace=cfg.timeouts.shutdown_grace,
    )


@app.cls(
    image=sglang_image,
    gpu=cfg.hardware.modal_gpu,
    volumes=BOTH_VOLUMES,
    secrets=[api_key_secret],
    timeout=cfg.timeouts.server,
    # Bounds the whole start: volume reload, checks, weight load, health wait and warmup in `start`.
    startup_timeout=cfg.timeouts.startup,
    min_containers=cfg.scaling.min_containers,
    max_containers=cfg.scaling.max_containers,
    scaledown_window=cfg.scaling.scaledown_window,
)
@modal.concurrent(max_inputs=cfg.scaling.max_concurrent_inputs)
class Server:
    @modal.enter()
    def start(self) -> None:
        started = time.monotonic()
        reload_volumes(weights_volume, kernels_volume)
        remaining = cfg.timeouts.startup - (time.monotonic() - started) - STARTUP_ERROR_MARGIN_SECONDS
        self.sglang = prepare_sglang(cfg, os.environ, startup_timeout=max(remaining, 1.0))
        # Returns once SGLang is healthy and all four warmup paths answered well; Modal routes
        # traffic only after this. From then on a crash of SGLang ends the container.
        self.sglang.start()

    # With `requires_proxy_auth`, Modal's edge answers a request without a valid proxy auth token 401
    # before any container starts (serving/config.py `Edge` says why that matters on 8x B200).
    @modal.web_server(
        port=cfg.launch.port, startup_timeout=cfg.timeouts.startup, requires_proxy_auth=cfg.edge.requires_proxy_auth
    )
    def serve(self) -> None:
        # SGLang is already listening on the port (started and warmed up in `start`).
        pass

    @modal.exit()
    def stop(self) -> None:
        # SIGTERM, wait cfg.timeouts.shutdown_grace, then SIGKILL SGLang's whole process group.
        sglang = getattr(self, "sglang", None)
        if sglang is not None:
            sglang.stop()


# ## Optional keep-alive

# During business hours a /health ping keeps one container warm, so the first request of the day
# does not pay a 6-10 minute cold start. Only defined when enabled, so a disabled config deploys no
# schedule at all. SGLang does not require the API key on /health; sending it costs nothing and
# keeps working if that changes. The edge does require the proxy auth token (when the config says
# so). Because the request carries both, its target is this app's own web endpoint as Modal reports
# it, never a URL from the config.
KEEPALIVE_REQUEST_TIMEOUT_SECONDS = 60


def health_request(
    web_url: str | None, api_key: str, edge_token: tuple[str, str] | None = None
) -> urllib.request.Request:
    """The keep-alive's GET of /health on our own deployment, whose URL Modal gives (`web_url`), with
    the API key and, for an edge that requires proxy auth, the token (id, secret) Modal's edge wants."""
    if not web_url:
        raise RuntimeError(f"{cfg.app_name}'s Server has no web endpoint URL: is the app deployed?")
    headers = {"Authorization": f"Bearer {api_key}"}
    if edge_token is not None:
        headers.update({"Modal-Key": edge_token[0], "Modal-Secret": edge_token[1]})
    return urllib.request.Request(f"{web_url.rstrip('/')}/health", headers=headers)


def edge_token_from(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The keep-alive's proxy auth token from its secret, when the edge requires one."""
    if not cfg.edge.requires_proxy_auth:
        return None
    names = cfg.secrets
    token = (environ.get(names.edge_token_id_key, ""), environ.get(names.edge_token_secret_key, ""))
    if not all(token):
        raise RuntimeError(
            f"secret '{names.edge_token}' lacks {names.edge_token_id_key} or {names.edge_token_secret_key}: "
            "the edge requires a proxy auth token (`pulumi up` writes it)"
        )
    return token


if cfg.keepalive.enabled:

    @app.function(
        image=download_image,
        secrets=[api_key_secret, *([edge_token_secret] if cfg.edge.requires_proxy_auth else [])],
        schedule=modal.Cron(cfg.keepalive.schedule),
        timeout=cfg.timeouts.startup + KEEPALIVE_REQUEST_TIMEOUT_SECONDS,
    )
    def keep_warm() -> int:
        request = health_request(
            Server().serve.get_web_url(), os.environ.get(cfg.secrets.api_key_key, ""), edge_token_from(os.environ)
        )
        # A cold container answers only after its start-up, hence a timeout covering it.
        with urllib.request.urlopen(request, timeout=cfg.timeouts.startup) as response:
            print_line(f"[keep-warm] /health -> {response.status}")
            return response.status


# ## One-shot setup from a laptop

# `modal run serving/app.py` chains the three setup steps remotely, so nothing large touches the
# laptop. Exits non-zero, with the fixes, when verification fails.


@app.local_entrypoint()
def main(force_compile: bool = False) -> None:
    print("download:", json.dumps(download_model.remote()))
    print("compile:", json.dumps(compile_deepgemm.remote(force=force_compile)))
    report = verify_setup.remote()
    if not report["ok"]:
        raise SystemExit("verify_setup failed:\n" + "\n".join(f"  - {line}" for line in report["failures"]))
    print(f"verify: ok; deploy with `modal deploy serving/app.py` ({cfg.app_name})")
