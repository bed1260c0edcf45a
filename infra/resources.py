"""The resources of one stack, in the order they must exist:

    environment -> secrets (HF token, API key) + volumes (weights, kernels) + proxy auth tokens
      -> download job -> compile job -> verify job -> app deployment [-> smoke test]

Each job runs one function of `serving.app` ephemerally and re-runs only when its triggers change:
the download for the weights it fetches (`weights_inputs()`), the compile for the kernels it builds
(`kernel_inputs()`), the verify whenever either of them ran again. Everything else in the config
only redeploys the app. The README's "Which change costs what" table is this file's contract, and
tests/stack/test_change_impact.py holds it to it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pulumi

from infra.edge import EdgeTokens, declare_tokens
from infra.job_views import job_module_env
from infra.settings import InfraSettings, StackSettings
from infra.smoke import declare_smoke_test
from infra.source_version import source_version
from providers.app import ModalAppDeployment
from providers.environment import ModalEnvironment
from providers.http_check import HttpCheck
from providers.job import ModalJob
from providers.secret import ModalSecret
from providers.volume import ModalVolume
from serving.config import CONFIG_ENV_VAR, DeploymentConfig
from serving.stack_file import REPO_ROOT

# The Modal app module the jobs run and the app deploys (serving/app.py).
SERVING_MODULE = "serving.app"
SERVING_DIR = REPO_ROOT / "serving"

# The web endpoint whose URL is the API: the SGLang server class's web server.
WEB_ENDPOINT = "Server.serve"

# A job waits this much longer than its Modal function's own timeout: the first run builds the
# multi-GB SGLang image and waits for 8 B200s before the function's clock even starts.
JOB_TIMEOUT_MARGIN_SECONDS = 1800

# The app's redeploy trigger for the API key: the (secret) digest of the API key secret's values, so
# that a new key redeploys the app, which replaces the running containers (a container reads its
# secrets once, at start). A trigger, not a module_env entry: the module does not need it, and a
# secret inside module_env makes the program see the whole of it as secret, config included.
API_KEY_TRIGGER = "api_key_secret_digest"


@dataclass(frozen=True)
class StackResources:
    environment: ModalEnvironment
    hf_token_secret: ModalSecret
    api_key_secret: ModalSecret
    weights_volume: ModalVolume
    kernels_volume: ModalVolume
    download: ModalJob
    compile: ModalJob
    verify: ModalJob
    app: ModalAppDeployment
    smoke_test: HttpCheck | None
    edge_tokens: EdgeTokens


def serving_source_digest(directory: Path | None = None) -> str:
    """sha256 over serving/*.py (names and contents): a code change redeploys the app."""
    digest = hashlib.sha256()
    for path in sorted((directory or SERVING_DIR).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def _in_volume(path: str, mount: str) -> str:
    """A container path below `mount` as a path inside the volume mounted there."""
    return str(PurePosixPath(path).relative_to(mount))


def declare(settings: StackSettings) -> StackResources:
    cfg = settings.deployment
    environment = ModalEnvironment("environment", name=settings.infra.modal_environment)
    hf_token_secret, api_key_secret = _declare_secrets(settings, environment.name)
    weights_volume, kernels_volume = _declare_volumes(settings, environment.name)
    edge_tokens = declare_tokens(settings, environment.name)
    # An ephemeral run of serving.app looks up every secret and volume its functions and server
    # class name, so each job waits for all of them, not only for the ones its function uses.
    foundation: list[pulumi.Resource] = [hf_token_secret, api_key_secret, weights_volume, kernels_volume]
    download, compile_job, verify = _declare_setup_jobs(cfg, environment.name, foundation)
    # The keep-alive's token secret is only looked up by the deployed app, so the jobs need not wait for it.
    keepalive = [edge_tokens.keepalive_secret] if edge_tokens.keepalive_secret is not None else []
    app = _declare_app(
        cfg, settings.infra, environment.name, api_key_secret, depends_on=[*foundation, *keepalive, verify]
    )

    smoke_test = None
    if settings.infra.smoke_test:
        smoke_test = declare_smoke_test(
            cfg,
            web_url=app.web_url,
            deployment_version=app.deployment_version,
            api_key=settings.api_key,
            edge_headers=edge_tokens.headers(edge_tokens.stack_token) if cfg.edge.requires_proxy_auth else None,
            depends_on=[app, edge_tokens.stack_token],
        )

    return StackResources(
        environment=environment,
        hf_token_secret=hf_token_secret,
        api_key_secret=api_key_secret,
        weights_volume=weights_volume,
        kernels_volume=kernels_volume,
        download=download,
        compile=compile_job,
        verify=verify,
        app=app,
        smoke_test=smoke_test,
        edge_tokens=edge_tokens,
    )


def _declare_secrets(settings: StackSettings, env_name: pulumi.Output[str]) -> tuple[ModalSecret, ModalSecret]:
    """The HF token and API key secrets, each holding its value under the key the config names."""
    names = settings.deployment.secrets
    hf_token_secret = ModalSecret(
        "hf-token-secret",
        name=names.hf_token,
        environment=env_name,
        values=settings.hf_token.apply(lambda token: {names.hf_token_key: token}),
    )
    api_key_secret = ModalSecret(
        "api-key-secret",
        name=names.api_key,
        environment=env_name,
        values=settings.api_key.apply(lambda key: {names.api_key_key: key}),
    )
    return hf_token_secret, api_key_secret


def _declare_volumes(settings: StackSettings, env_name: pulumi.Output[str]) -> tuple[ModalVolume, ModalVolume]:
    """The weights and kernels volumes."""
    storage = settings.deployment.storage
    # `protect`: `pulumi destroy` (and any replacement) stops at these unless unprotected first.
    volume_opts = pulumi.ResourceOptions(protect=settings.protect_volumes)
    weights_volume = ModalVolume("weights-volume", name=storage.weights_volume, environment=env_name,
                                 opts=volume_opts)  # fmt: skip
    kernels_volume = ModalVolume("kernels-volume", name=storage.kernels_volume, environment=env_name,
                                 opts=volume_opts)  # fmt: skip
    return weights_volume, kernels_volume


def _declare_setup_jobs(
    cfg: DeploymentConfig, env_name: pulumi.Output[str], foundation: list[pulumi.Resource]
) -> tuple[ModalJob, ModalJob, ModalJob]:
    """The download, compile and verify jobs, each after the one before it."""
    download = ModalJob(
        "download-weights",
        module=SERVING_MODULE,
        function="download_model",
        environment=env_name,
        module_env=job_module_env(cfg, "download"),
        triggers={"weights": cfg.weights_inputs()},
        # Written only after the whole snapshot landed (the index alone arrives early).
        artifact={
            "volume": cfg.storage.weights_volume,
            "path": _in_volume(cfg.download_record_path, cfg.storage.weights_mount),
        },
        timeout_seconds=cfg.timeouts.download + JOB_TIMEOUT_MARGIN_SECONDS,
        opts=pulumi.ResourceOptions(depends_on=foundation),
    )
    compile_job = ModalJob(
        "compile-kernels",
        module=SERVING_MODULE,
        function="compile_deepgemm",
        environment=env_name,
        module_env=job_module_env(cfg, "compile"),
        triggers={"kernels": cfg.kernel_inputs()},
        artifact={"volume": cfg.storage.kernels_volume, "path": cfg.compile_marker_name},
        # A kernels volume adopted from elsewhere (the reference recipe's `.compiled-<model>` marker)
        # does not say which SGLang built its kernels: the preview says why the compile runs anyway.
        first_run_note=(
            f"any kernels already in volume '{cfg.storage.kernels_volume}' (e.g. the reference recipe's "
            f"'.compiled-{cfg.model.directory}' marker) prove nothing about SGLang {cfg.sglang.version} with this "
            f"config: the compile runs ({cfg.hardware.modal_gpu}, up to an hour)"
        ),
        timeout_seconds=cfg.timeouts.compile + JOB_TIMEOUT_MARGIN_SECONDS,
        opts=pulumi.ResourceOptions(depends_on=[*foundation, download]),
    )
    verify = ModalJob(
        "verify-setup",
        module=SERVING_MODULE,
        function="verify_setup",
        environment=env_name,
        module_env=job_module_env(cfg, "verify"),
        # A job's id is the function call of its last run, so a new run of either job (a changed
        # trigger, or a refresh that found its artifact gone) re-runs the verify, and nothing else
        # does. The id, not an output: a job that only records a new config for its next run keeps
        # its id, which a preview knows, where its outputs would be unknown until the update ran.
        triggers={"download_run": download.id, "compile_run": compile_job.id},
        # verify_setup returns {"ok": false, "failures": [...]} instead of raising.
        require_ok=True,
        # It leaves no artifact: its run record lives next to the kernels it checks.
        record_volume=cfg.storage.kernels_volume,
        timeout_seconds=cfg.timeouts.verify + JOB_TIMEOUT_MARGIN_SECONDS,
        opts=pulumi.ResourceOptions(depends_on=[*foundation, download, compile_job]),
    )
    return download, compile_job, verify


def _declare_app(
    cfg: DeploymentConfig,
    infra: InfraSettings,
    env_name: pulumi.Output[str],
    api_key_secret: ModalSecret,
    depends_on: list[pulumi.Resource],
) -> ModalAppDeployment:
    """The deployment of serving.app with the whole config, after the verify job passed, tagged with
    the stack's deployTag or the checkout's commit."""
    source = source_version()
    return ModalAppDeployment(
        "app",
        module=SERVING_MODULE,
        app_name=cfg.app_name,
        environment=env_name,
        module_env={CONFIG_ENV_VAR: cfg.to_json()},
        source_digest=serving_source_digest(),
        redeploy_triggers={API_KEY_TRIGGER: api_key_secret.values_digest},
        web_endpoint=WEB_ENDPOINT,
        strategy=infra.deploy_strategy,
        tag=infra.deploy_tag if infra.deploy_tag is not None else source.tag,
        commit=source.commit,
        opts=pulumi.ResourceOptions(depends_on=depends_on),
    )
