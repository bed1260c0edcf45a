"""A stack file that cannot be deployed, by mistake or on purpose, fails `pulumi preview` (the real CLI)
before anything is registered, naming the property, with no stack trace, no secret value in what the
CLI prints, and no Modal call; `python -m serving.render` refuses the same deployments the same way.

The corpus is grouped by kind (`Case.kind`): the deployment model's own rules, Modal's limits, strict
types, cross-field safety, values that would reach an argv or an image, names, the keep-alive's
target, infra keys, credentials, and YAML that Pulumi and PyYAML read differently."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from serving import render
from serving.config import DeploymentConfig
from serving.log_redaction import MIN_HIDDEN_PIECE, secret_spellings
from serving.versions import SGLANG_VERSION

from .conftest import rig
from .harness import (
    PROJECT,
    STACKS,
    TEST_API_KEY,
    TEST_HF_TOKEN,
    Edit,
    StackConfig,
    StackHarness,
    deployment_edits,
    set_path,
)
from .harness import secret_edit as secret


@dataclass(frozen=True)
class Case:
    id: str
    stack: str
    edit: Edit
    # Every property the error must name, as "<config key>[.<path>]".
    names: tuple[str, ...]
    kind: str = "model"
    # Where the CLI refuses the file itself (it cannot parse it), what it says instead of naming a key.
    cli_says: tuple[str, ...] = ()
    # What `serving.render` says besides naming `names` (for a file it cannot read at all).
    render_says: tuple[str, ...] = ()

    @property
    def deployment_names(self) -> tuple[str, ...]:
        """What `serving.render`, which reads only the deployment object, must name of this case."""
        return tuple(name for name in self.names if name.startswith(D))


def deployment(path: str, value: object) -> Edit:
    return lambda config: set_path(config.deployment, path, value)


def drop_deployment_key(path: str) -> Edit:
    def edit(config: StackConfig) -> None:
        *parents, last = path.split(".")
        node = config.deployment
        for part in parents:
            node = node[part]
        del node[last]

    return edit


def infra(key: str, value: object) -> Edit:
    return lambda config: config.values.__setitem__(f"{PROJECT}:{key}", value)


def drop(key: str) -> Edit:
    def edit(config: StackConfig) -> None:
        config.values.pop(f"{PROJECT}:{key}", None)
        config.secrets.pop(f"{PROJECT}:{key}", None)

    return edit


def infra_as_secret(key: str, value: str) -> Edit:
    """`pulumi config set --secret` of a plain infra setting (e.g. a secret pasted under the wrong key)."""

    def edit(config: StackConfig) -> None:
        config.values.pop(f"{PROJECT}:{key}", None)
        config.secrets[f"{PROJECT}:{key}"] = value

    return edit


def in_plaintext(key: str) -> Edit:
    """`pulumi config set` without --secret: the value is in the stack file, not a secret key."""

    def edit(config: StackConfig) -> None:
        config.values[f"{PROJECT}:{key}"] = config.secrets.pop(f"{PROJECT}:{key}")

    return edit


def as_secret(key: str) -> Edit:
    """A `secure:` value inside the key: the CLI then lists the whole key among the secret ones."""

    def edit(config: StackConfig) -> None:
        value = config.values.pop(f"{PROJECT}:{key}")
        config.secrets[f"{PROJECT}:{key}"] = json.dumps(value)

    return edit


def infra_plain(key: str, value: object) -> Edit:
    """A plain value under a key of any namespace (`pulumi config set <key> <value>`)."""
    return lambda config: config.values.__setitem__(key, value)


def secret_any(key: str, value: str) -> Edit:
    """`pulumi config set --secret <key>` for a key of any namespace."""
    return lambda config: config.secrets.__setitem__(key, value)


def both(*edits: Edit) -> Edit:
    def edit(config: StackConfig) -> None:
        for one in edits:
            one(config)

    return edit


D = f"{PROJECT}:deployment"

MODEL = [
    # --- the deployment model: wrong types, out of range, unknown keys --------------------------
    Case("unknown-gpu-type", "prod", deployment("hardware.gpu_type", "X100"), (f"{D}.hardware.gpu_type",)),
    Case("gpu-the-kernels-do-not-fit", "prod", deployment("hardware.gpu_type", "H100"), (f"{D}.hardware.gpu_type",)),
    Case("gpu-count-above-8", "prod", deployment("hardware.gpu_count", 9), (f"{D}.hardware.gpu_count",)),
    Case("gpu-count-not-a-number", "staging", deployment("hardware.gpu_count", "eight"),
         (f"{D}.hardware.gpu_count",)),
    Case("tp-does-not-match-gpu-count", "prod", deployment("parallelism.tp", 4), (f"{D}.parallelism.tp",)),
    Case("gpu-count-does-not-match-tp", "staging", deployment("hardware.gpu_count", 4), (f"{D}.parallelism.tp",)),
    Case("ep-does-not-divide-tp", "prod", deployment("parallelism.ep", 3), (f"{D}.parallelism.ep",)),
    Case("tp-zero", "prod", deployment("parallelism.tp", 0), (f"{D}.parallelism.tp",)),
    Case("fp8-kv-with-eagle", "prod", deployment("launch.memory.kv_cache_dtype", "fp8_e4m3"),
         (f"{D}.launch.memory.kv_cache_dtype",)),
    Case("auto-kv-with-eagle", "staging", deployment("launch.memory.kv_cache_dtype", "auto"),
         (f"{D}.launch.memory.kv_cache_dtype",)),
    Case("unknown-kv-dtype", "prod", deployment("launch.memory.kv_cache_dtype", "int4"),
         (f"{D}.launch.memory.kv_cache_dtype",)),
    Case("mem-fraction-above-1", "prod", deployment("launch.memory.mem_fraction_static", 1.5),
         (f"{D}.launch.memory.mem_fraction_static",)),
    Case("prefill-above-total", "prod", deployment("launch.memory.max_prefill_tokens", 100000),
         (f"{D}.launch.memory.max_prefill_tokens",)),
    Case("draft-tokens-not-steps-plus-one", "prod", deployment("launch.speculative.num_draft_tokens", 7),
         (f"{D}.launch.speculative.num_draft_tokens",)),
    Case("unknown-speculative-algorithm", "prod", deployment("launch.speculative.algorithm", "MEDUSA"),
         (f"{D}.launch.speculative.algorithm",)),
    Case("privileged-port", "staging", deployment("launch.port", 80), (f"{D}.launch.port",)),
    Case("negative-download-timeout", "prod", deployment("timeouts.download", -5), (f"{D}.timeouts.download",)),
    Case("zero-startup-timeout", "prod", deployment("timeouts.startup", 0), (f"{D}.timeouts.startup",)),
    Case("startup-not-below-server-timeout", "prod", deployment_edits(timeouts__startup=7200, timeouts__server=3600),
         (f"{D}.timeouts.startup",)),
    Case("timeout-as-text", "staging", deployment("timeouts.compile", "1h"), (f"{D}.timeouts.compile",)),
    Case("min-above-max-containers", "prod", deployment("scaling.min_containers", 5),
         (f"{D}.scaling.min_containers",)),
    Case("zero-max-containers", "staging", deployment("scaling.max_containers", 0), (f"{D}.scaling.max_containers",)),
    Case("negative-scaledown", "staging", deployment("scaling.scaledown_window", -1),
         (f"{D}.scaling.scaledown_window",)),
    Case("repo-without-org", "prod", deployment("model.repo", "GLM-5.1-FP8"), (f"{D}.model.repo",)),
    Case("blank-revision", "prod", deployment("model.revision", " "), (f"{D}.model.revision",)),
    Case("unknown-weights-mode", "staging", deployment("model.weights", "partial"), (f"{D}.model.weights",)),
    Case("served-name-with-space", "prod", deployment("model.served_name", "glm 5"), (f"{D}.model.served_name",)),
    Case("unpinned-image", "prod", deployment("sglang.image", "lmsysorg/sglang:latest"), (f"{D}.sglang.image",)),
    Case("image-of-another-release", "prod", deployment("sglang.image", "lmsysorg/sglang:v0.5.10-cu129"),
         (f"{D}.sglang.image",)),
    Case("sglang-version-not-the-pinned-one", "prod",
         deployment_edits(sglang__version="0.5.24", sglang__image="lmsysorg/sglang:v0.5.24-cu130"),
         (f"{D}.sglang.version",)),
    Case("same-volume-twice", "prod", deployment("storage.kernels_volume", "glm51-model-weights"),
         (f"{D}.storage.kernels_volume",)),
    Case("relative-mount", "prod", deployment("storage.weights_mount", "model-cache"),
         (f"{D}.storage.weights_mount",)),
    Case("invalid-volume-name", "staging", deployment("storage.weights_volume", "bad name!"),
         (f"{D}.storage.weights_volume",)),
    Case("secret-key-not-an-env-var", "prod", deployment("secrets.hf_token_key", "hf-token"),
         (f"{D}.secrets.hf_token_key",)),
    Case("invalid-app-name", "prod", deployment("app_name", "glm/5"), (f"{D}.app_name",)),
    Case("unknown-deployment-key", "prod", deployment("replicas", 2), (f"{D}.replicas",)),
    Case("unknown-nested-key", "staging", deployment("hardware.gpus", 8), (f"{D}.hardware.gpus",)),
    Case("keepalive-bad-cron", "prod", deployment("keepalive.schedule", "every 10 minutes"),
         (f"{D}.keepalive.schedule",)),
    Case("section-not-an-object", "prod", deployment("scaling", 3), (f"{D}.scaling",)),
    Case("deployment-not-an-object", "prod", infra("deployment", "glm-5.1"), (D,)),
    Case("deployment-missing", "staging", drop("deployment"), (D,)),
    Case("deployment-holding-a-secret", "prod", as_secret("deployment"), (D,)),
]  # fmt: skip

INFRA = [
    Case("environment-missing", "prod", drop("modalEnvironment"), (f"{PROJECT}:modalEnvironment",)),
    Case("environment-invalid-name", "staging", infra("modalEnvironment", "glm staging"),
         (f"{PROJECT}:modalEnvironment",)),
    # Names the config model would take but Modal (and the environment provider's check) would not.
    Case("environment-name-with-a-dot", "staging", infra("modalEnvironment", "glm.staging"),
         (f"{PROJECT}:modalEnvironment",)),
    Case("environment-name-like-an-id", "prod", infra("modalEnvironment", "en-prod"),
         (f"{PROJECT}:modalEnvironment",)),
    Case("protect-not-a-boolean", "staging", infra("protectVolumes", "yes"), (f"{PROJECT}:protectVolumes",)),
    Case("smoke-test-not-a-boolean", "staging", infra("smokeTest", 1), (f"{PROJECT}:smokeTest",)),
    Case("require-api-key-not-a-boolean", "prod", infra("requireApiKey", "maybe"), (f"{PROJECT}:requireApiKey",)),
    Case("unknown-infra-key", "staging", infra("smokeTests", True), (f"{PROJECT}:smokeTests",)),
    Case("unknown-deploy-strategy", "staging", infra("deployStrategy", "blue-green"),
         (f"{PROJECT}:deployStrategy",)),
    Case("deploy-tag-modal-would-refuse", "prod", infra("deployTag", "v1 final"), (f"{PROJECT}:deployTag",)),
    Case("infra-key-set-as-a-secret", "staging", infra_as_secret("modalEnvironment", "canary infra secret"),
         (f"{PROJECT}:modalEnvironment",)),
    Case("boolean-set-as-a-secret", "prod", infra_as_secret("smokeTest", "canary-bool-secret"),
         (f"{PROJECT}:smokeTest",)),
    Case("prod-unprotected", "prod", infra("protectVolumes", False), (f"{PROJECT}:protectVolumes",)),
    Case("prod-without-required-key", "prod", infra("requireApiKey", False), (f"{PROJECT}:requireApiKey",)),
    # --- who passes Modal's edge (infra/edge.py) -----------------------------------------------
    Case("client-token-name-invalid", "staging", infra("clientTokens", ["search team"]),
         (f"{PROJECT}:clientTokens.0",)),
    Case("client-token-names-repeated", "prod", infra("clientTokens", ["search", "batch", "search"]),
         (f"{PROJECT}:clientTokens",)),
    Case("client-tokens-not-a-list", "staging", infra("clientTokens", "search"), (f"{PROJECT}:clientTokens",)),
    # The deployment alone is valid (render takes it); serving it on prod must be meant.
    Case("prod-edge-open-unannounced", "prod", deployment("edge.requires_proxy_auth", False),
         (f"{PROJECT}:allowPublicEndpoint",)),
    Case("public-endpoint-allowed-but-edge-closed", "staging", infra("allowPublicEndpoint", True),
         (f"{PROJECT}:allowPublicEndpoint",)),
    # --- the price table of the preview's cost lines (infra/costs.py) ---------------------------
    Case("negative-cpu-price", "prod", infra("costs", {"prices": {"cpu_core_per_hour": -1}}),
         (f"{PROJECT}:costs.prices.cpu_core_per_hour",)),
    Case("no-price-for-the-gpu", "staging", infra("costs", {"prices": {"gpu_per_hour": {"H100": 3.95}}}),
         (f"{PROJECT}:costs.prices.gpu_per_hour",)),
    Case("duration-range-backwards", "prod", infra("costs", {"durations": {"compile": {"low": 3600, "high": 60}}}),
         (f"{PROJECT}:costs.durations.compile.low",)),
    Case("unknown-costs-key", "staging", infra("costs", {"price": {}}), (f"{PROJECT}:costs.price",)),
]  # fmt: skip

CREDENTIALS = [
    Case("hf-token-missing", "prod", drop("hfToken"), (f"{PROJECT}:hfToken",)),
    Case("api-key-missing", "staging", drop("apiKey"), (f"{PROJECT}:apiKey",)),
    Case("hf-token-empty", "staging", secret("hfToken", ""), (f"{PROJECT}:hfToken",)),
    Case("hf-token-in-plaintext", "prod", in_plaintext("hfToken"), (f"{PROJECT}:hfToken",)),
    Case("api-key-in-plaintext", "staging", in_plaintext("apiKey"), (f"{PROJECT}:apiKey",)),
    Case("hf-token-not-a-hub-token", "prod", secret("hfToken", "canary-not-a-hub-token-81c2"),
         (f"{PROJECT}:hfToken",)),
    Case("api-key-too-short-for-prod", "prod", secret("apiKey", "canary-short"), (f"{PROJECT}:apiKey",)),
    Case("api-key-looks-like-a-flag", "staging", secret("apiKey", "--canary-flag-like-key"), (f"{PROJECT}:apiKey",)),
    Case("api-key-with-whitespace-around", "staging", secret("apiKey", " canary key"), (f"{PROJECT}:apiKey",)),
    # --- several at once: every one is named ----------------------------------------------------
    Case("several-problems", "prod",
         both(deployment("hardware.gpu_type", "X100"), deployment("scaling.min_containers", 9), drop("apiKey"),
              infra("smokeTest", "on")),
         (f"{D}.hardware.gpu_type", f"{D}.scaling.min_containers", f"{PROJECT}:apiKey", f"{PROJECT}:smokeTest")),
]  # fmt: skip


def copy_secret_name(into: str, source: str = "hf_token") -> Edit:
    """Point one secret name of the deployment at the Modal secret another one names."""

    def edit(config: StackConfig) -> None:
        cfg = DeploymentConfig.model_validate(config.deployment)
        set_path(config.deployment, f"secrets.{into}", getattr(cfg.secrets, source))

    return edit


def text(old: str, new: str) -> Edit:
    """Replace the first `old` in the stack file's text with `new` (YAML a mapping cannot say)."""

    def edit(config: StackConfig) -> None:
        config.text_edit = lambda stack_file: stack_file.replace(old, new, 1)

    return edit


def under_deployment(yaml_lines: str) -> Edit:
    """Raw YAML lines added at the top of the deployment object (indented as the harness writes it)."""
    return text(f"{D}:\n", f"{D}:\n" + "".join(f"    {line}\n" for line in yaml_lines.splitlines()))


# An app id as Modal spells them: a name like it would be taken for one.
APP_ID_LIKE = "ap-" + "A1b2C3d4E5f6G7h8I9j0K1"
ALIAS_BOMB = "\n".join([f"x0: &a0 [{', '.join(['lol'] * 10)}]"] + [
    f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)
])  # fmt: skip

MODAL_LIMITS = [
    Case("scaledown-above-modal-max", "staging", deployment("scaling.scaledown_window", 3601),
         (f"{D}.scaling.scaledown_window",)),
    Case("scaledown-below-modal-min", "prod", deployment("scaling.scaledown_window", 1),
         (f"{D}.scaling.scaledown_window",)),
    Case("server-timeout-above-24h", "prod", deployment("timeouts.server", 86401), (f"{D}.timeouts.server",)),
    Case("download-timeout-above-24h", "prod", deployment("timeouts.download", 100000), (f"{D}.timeouts.download",)),
    Case("compile-timeout-above-24h", "staging", deployment("timeouts.compile", 90000), (f"{D}.timeouts.compile",)),
    Case("verify-timeout-absurd", "prod", deployment("timeouts.verify", 10**12), (f"{D}.timeouts.verify",)),
    Case("watchdog-above-24h", "prod", deployment("launch.stability.watchdog_timeout", 86401),
         (f"{D}.launch.stability.watchdog_timeout",)),
    Case("shutdown-grace-absurd", "prod", deployment("timeouts.shutdown_grace", 100000),
         (f"{D}.timeouts.shutdown_grace",)),
    Case("warmup-not-below-startup", "prod", deployment("timeouts.warmup_request", 900),
         (f"{D}.timeouts.warmup_request",)),
    Case("retries-outlast-the-download", "prod",
         deployment_edits(download__attempts=10, download__backoff_seconds=3600), (f"{D}.download.backoff_seconds",)),
    Case("max-containers-absurd", "prod", deployment("scaling.max_containers", 100000),
         (f"{D}.scaling.max_containers",)),
    Case("min-containers-absurd", "staging",
         deployment_edits(scaling__min_containers=5000, scaling__max_containers=5000),
         (f"{D}.scaling.min_containers", f"{D}.scaling.max_containers")),
    Case("concurrent-inputs-absurd", "prod", deployment("scaling.max_concurrent_inputs", 10**6),
         (f"{D}.scaling.max_concurrent_inputs",)),
    Case("download-cpu-zero", "prod", deployment("download.cpu", 0.0), (f"{D}.download.cpu",)),
    Case("download-cpu-absurd", "prod", deployment("download.cpu", 1000.0), (f"{D}.download.cpu",)),
    Case("download-memory-below-modal-min", "staging", deployment("download.memory_mib", 16),
         (f"{D}.download.memory_mib",)),
    Case("download-memory-absurd", "prod", deployment("download.memory_mib", 10**9), (f"{D}.download.memory_mib",)),
    Case("download-workers-absurd", "prod", deployment("download.max_workers", 10000),
         (f"{D}.download.max_workers",)),
    Case("total-tokens-absurd", "prod", deployment("launch.memory.max_total_tokens", 10**30),
         (f"{D}.launch.memory.max_total_tokens",)),
    Case("port-above-65535", "staging", deployment("launch.port", 70000), (f"{D}.launch.port",)),
    Case("mount-at-root", "prod", deployment("storage.weights_mount", "/"), (f"{D}.storage.weights_mount",)),
    Case("mount-at-modal-root-dir", "prod", deployment("storage.kernels_mount", "/root"),
         (f"{D}.storage.kernels_mount",)),
    Case("mount-at-tmp", "staging", deployment("storage.kernels_mount", "/tmp"), (f"{D}.storage.kernels_mount",)),
    Case("mount-escaping-with-dotdot", "prod", deployment("storage.weights_mount", "/model-cache/../etc"),
         (f"{D}.storage.weights_mount",)),
    Case("mount-with-dot", "prod", deployment("storage.weights_mount", "/./model-cache"),
         (f"{D}.storage.weights_mount",)),
    Case("mount-in-a-system-directory", "prod", deployment("storage.weights_mount", "/usr/local/model-cache"),
         (f"{D}.storage.weights_mount",)),
    Case("mount-over-proc", "staging", deployment("storage.kernels_mount", "/proc/kernels"),
         (f"{D}.storage.kernels_mount",)),
    Case("mount-with-trailing-slash", "prod", deployment("storage.weights_mount", "/model-cache/"),
         (f"{D}.storage.weights_mount",)),
    Case("mount-with-double-slash", "prod", deployment("storage.kernels_mount", "//dg-cache"),
         (f"{D}.storage.kernels_mount",)),
]  # fmt: skip

STRICT_TYPES = [
    Case("boolean-as-a-count", "prod", deployment("scaling.min_containers", True), (f"{D}.scaling.min_containers",)),
    Case("number-as-a-boolean", "prod", deployment("keepalive.enabled", 1), (f"{D}.keepalive.enabled",)),
    Case("word-as-a-boolean", "staging", deployment("launch.stability.trust_remote_code", "yes"),
         (f"{D}.launch.stability.trust_remote_code",)),
    Case("quoted-number", "prod", deployment("scaling.max_containers", "3"), (f"{D}.scaling.max_containers",)),
    Case("fractional-gpu-count", "prod", deployment("hardware.gpu_count", 7.5), (f"{D}.hardware.gpu_count",)),
    Case("fractional-timeout", "prod", deployment("timeouts.server", 3600.5), (f"{D}.timeouts.server",)),
    Case("infinite-cpu", "staging", under_deployment("download:\n  cpu: .inf"), (f"{D}.download.cpu",),
         cli_says=("unsupported value: +Inf",)),
    Case("list-as-a-name", "prod", deployment("model.served_name", ["glm"]), (f"{D}.model.served_name",)),
    Case("object-as-a-port", "prod", deployment("launch.port", {"value": 8000}), (f"{D}.launch.port",)),
    Case("null-port", "staging", deployment("launch.port", None), (f"{D}.launch.port",)),
    Case("negative-port", "prod", deployment("launch.port", -1), (f"{D}.launch.port",)),
    Case("string-mem-fraction", "prod", deployment("launch.memory.mem_fraction_static", "0.88"),
         (f"{D}.launch.memory.mem_fraction_static",)),
]  # fmt: skip

CROSS_FIELD = [
    Case("both-secrets-one-modal-secret", "prod", copy_secret_name("api_key"), (f"{D}.secrets.api_key",)),
    Case("both-secrets-one-modal-secret-staging", "staging", copy_secret_name("hf_token", "api_key"),
         (f"{D}.secrets.api_key",)),
    Case("both-secret-keys-the-same", "prod", deployment("secrets.api_key_key", "HF_TOKEN"),
         (f"{D}.secrets.api_key_key",)),
    Case("secret-key-over-the-config-variable", "prod", deployment("secrets.api_key_key", "GLM_DEPLOYMENT_CONFIG"),
         (f"{D}.secrets.api_key_key",)),
    Case("secret-key-over-hub-offline", "staging", deployment("secrets.hf_token_key", "HF_HUB_OFFLINE"),
         (f"{D}.secrets.hf_token_key",)),
    Case("secret-key-over-path", "prod", deployment("secrets.api_key_key", "PATH"), (f"{D}.secrets.api_key_key",)),
    Case("secret-key-ld-preload", "prod", deployment("secrets.hf_token_key", "LD_PRELOAD"),
         (f"{D}.secrets.hf_token_key",)),
    Case("secret-key-pythonpath", "staging", deployment("secrets.api_key_key", "PYTHONPATH"),
         (f"{D}.secrets.api_key_key",)),
    Case("secret-key-over-modal-token", "prod", deployment("secrets.hf_token_key", "MODAL_TOKEN_ID"),
         (f"{D}.secrets.hf_token_key",)),
    Case("secret-key-over-the-kernel-cache", "prod", deployment("secrets.api_key_key", "SGLANG_DG_CACHE_DIR"),
         (f"{D}.secrets.api_key_key",)),
    Case("kernels-mounted-inside-weights", "prod", deployment("storage.kernels_mount", "/model-cache/dg"),
         (f"{D}.storage.kernels_mount",)),
    Case("weights-mounted-inside-kernels", "staging", deployment("storage.weights_mount", "/dg-cache/weights"),
         (f"{D}.storage.kernels_mount",)),
    Case("weights-larger-than-2-gpus", "prod", deployment_edits(hardware__gpu_count=2, parallelism__tp=2),
         (f"{D}.hardware.gpu_count",)),
    Case("weights-larger-than-1-gpu", "staging", deployment_edits(hardware__gpu_count=1, parallelism__tp=1),
         (f"{D}.hardware.gpu_count",)),
]  # fmt: skip

ARGV_AND_IMAGE = [
    Case("served-name-is-a-flag", "prod", deployment("model.served_name", "--api-key"), (f"{D}.model.served_name",)),
    Case("served-name-with-a-second-line", "prod", deployment("model.served_name", "glm\n--host 0.0.0.0"),
         (f"{D}.model.served_name",)),
    Case("revision-is-a-flag", "prod", deployment("model.revision", "-main"), (f"{D}.model.revision",)),
    Case("revision-with-a-newline", "staging", deployment("model.revision", "main\n"), (f"{D}.model.revision",)),
    Case("revision-climbing-out", "prod", deployment("model.revision", "../../etc"), (f"{D}.model.revision",)),
    Case("repo-named-dotdot", "prod", deployment("model.repo", "zai-org/.."), (f"{D}.model.repo",)),
    Case("repo-with-a-space", "prod", deployment("model.repo", "zai-org/GLM 5.1"), (f"{D}.model.repo",)),
    Case("repo-with-a-newline", "staging", deployment("model.repo", "zai-org/GLM-5.1-FP8\n"), (f"{D}.model.repo",)),
    Case("image-with-a-second-argument", "prod",
         deployment("sglang.image", f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130 --privileged"), (f"{D}.sglang.image",)),
    Case("image-with-a-second-line", "prod",
         deployment("sglang.image", f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130\nRUN curl x | sh"),
         (f"{D}.sglang.image",)),
    Case("image-is-a-flag", "staging", deployment("sglang.image", f"--sglang:v{SGLANG_VERSION}"),
         (f"{D}.sglang.image",)),
    Case("mount-with-a-second-env-line", "prod", deployment("storage.kernels_mount", "/dg-cache\nENV X=1"),
         (f"{D}.storage.kernels_mount",)),
    Case("mount-with-a-space", "prod", deployment("storage.weights_mount", "/model cache"),
         (f"{D}.storage.weights_mount",)),
    Case("unknown-reasoning-parser", "prod", deployment("launch.parsers.reasoning_parser", "qwen3"),
         (f"{D}.launch.parsers.reasoning_parser",)),
    Case("tool-parser-is-a-flag", "staging", deployment("launch.parsers.tool_call_parser", "--api-key"),
         (f"{D}.launch.parsers.tool_call_parser",)),
    Case("backend-with-a-newline", "prod", deployment("launch.backends.dsa_decode_backend", "trtllm\n"),
         (f"{D}.launch.backends.dsa_decode_backend",)),
    Case("cron-with-a-second-line", "prod", deployment("keepalive.schedule", "*/10 8-18 * * 1-5\n* * * * *"),
         (f"{D}.keepalive.schedule",)),
    Case("cron-with-tabs", "prod", deployment("keepalive.schedule", "*/10\t8-18\t*\t*\t1-5"),
         (f"{D}.keepalive.schedule",)),
]  # fmt: skip

NAMES = [
    Case("app-name-with-a-trailing-newline", "prod", deployment("app_name", "glm-5.1-production\n"),
         (f"{D}.app_name",)),
    Case("app-name-like-an-app-id", "prod", deployment("app_name", APP_ID_LIKE), (f"{D}.app_name",)),
    Case("volume-name-with-a-trailing-newline", "staging", deployment("storage.weights_volume", "weights\n"),
         (f"{D}.storage.weights_volume",)),
    Case("volume-name-not-ascii", "prod", deployment("storage.kernels_volume", "kernels-ß"),
         (f"{D}.storage.kernels_volume",)),
    Case("secret-name-too-long", "prod", deployment("secrets.api_key", "k" * 65), (f"{D}.secrets.api_key",)),
    Case("environment-with-a-trailing-newline", "staging", infra("modalEnvironment", "glm-staging\n"),
         (f"{PROJECT}:modalEnvironment",)),
    Case("environment-not-ascii", "prod", infra("modalEnvironment", "glm-prød"), (f"{PROJECT}:modalEnvironment",)),
    Case("environment-too-long", "prod", infra("modalEnvironment", "e" * 65), (f"{PROJECT}:modalEnvironment",)),
]  # fmt: skip

KEEPALIVE = [
    Case("keepalive-to-another-host", "prod",
         deployment_edits(keepalive__enabled=True, keepalive__url="https://collector.example"),
         (f"{D}.keepalive.url",)),
    Case("keepalive-url-while-disabled", "staging", deployment("keepalive.url", "http://169.254.169.254/"),
         (f"{D}.keepalive.url",)),
]  # fmt: skip

MORE_CREDENTIALS = [
    Case("modal-token-secret-in-plaintext", "prod", infra_plain("modal:tokenSecret", "as-canaryModalSecret0000000"),
         ("modal:tokenSecret",)),
    Case("modal-token-id-in-plaintext", "staging", infra_plain("modal:tokenId", "ak-canaryModalTokenId0000000"),
         ("modal:tokenId",)),
    Case("modal-token-not-shaped-like-one", "prod",
         both(secret_any("modal:tokenId", "canary-not-a-token-id"), secret_any("modal:tokenSecret", "as-" + "s" * 22)),
         ("modal:tokenId",)),
    Case("modal-token-id-without-its-secret", "staging", secret_any("modal:tokenId", "ak-" + "a" * 22),
         ("modal:tokenSecret",)),
    Case("other-namespace-password-in-plaintext", "prod", infra_plain("registry:password", "canary-registry-pw"),
         ("registry:password",)),
    Case("api-key-with-a-newline", "staging", secret("apiKey", "canary-api\nkey-with-a-newline"),
         (f"{PROJECT}:apiKey",)),
    Case("api-key-with-a-control-character", "prod", secret("apiKey", "canary-api-key-with-bell\x07-0123456789abcdef"),
         (f"{PROJECT}:apiKey",)),
    Case("hf-token-too-short", "prod", secret("hfToken", "hf_canary"), (f"{PROJECT}:hfToken",)),
]  # fmt: skip

YAML = [
    # `glm-modal:deployment:` with nothing under it (a lost indentation): refused, not read as "defaults".
    Case("deployment-left-empty", "prod", infra("deployment", None), (D,)),
    Case("key-given-twice", "prod", under_deployment("app_name: glm-a\napp_name: glm-b"), (f"{D}.app_name",),
         cli_says=('mapping key "app_name" already defined',)),
    Case("aliases-expanding-exponentially", "staging", under_deployment(ALIAS_BOMB), (),
         cli_says=("excessive aliasing",), render_says=("aliases expand the document",)),
    Case("unquoted-yes", "prod", under_deployment("keepalive:\n  enabled: yes"), (f"{D}.keepalive.enabled",)),
    Case("sexagesimal-minutes", "staging", under_deployment("timeouts:\n  warmup_request: 5:00"),
         (f"{D}.timeouts.warmup_request",)),
]  # fmt: skip

CASES = [
    *(replace(case, kind="model") for case in MODEL),
    *(replace(case, kind="infra keys") for case in INFRA),
    *(replace(case, kind="credentials") for case in (*CREDENTIALS, *MORE_CREDENTIALS)),
    *(replace(case, kind="modal limits") for case in MODAL_LIMITS),
    *(replace(case, kind="strict types") for case in STRICT_TYPES),
    *(replace(case, kind="cross-field") for case in CROSS_FIELD),
    *(replace(case, kind="argv and image") for case in ARGV_AND_IMAGE),
    *(replace(case, kind="names") for case in NAMES),
    *(replace(case, kind="keep-alive target") for case in KEEPALIVE),
    *(replace(case, kind="yaml") for case in YAML),
]

# Secret values an error message must never contain.
CANARIES = (TEST_API_KEY, TEST_HF_TOKEN, "canary-not-a-hub-token-81c2", "canary-short", "--canary-flag-like-key",
            "canary key", "canary infra secret", "canary-bool-secret", "as-canaryModalSecret0000000",
            "ak-canaryModalTokenId0000000", "canary-not-a-token-id", "canary-registry-pw", "canary-api\nkey",
            "canary-api-key-with-bell", "hf_canary\n")  # fmt: skip


@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, StackHarness]]:
    # One CLI world for all cases: a rejected config never reaches the provider, which the tests check.
    with rig() as running:
        yield {stack: running.harness(stack) for stack in STACKS}


def test_the_corpus_holds_at_least_a_hundred_cases_of_every_kind() -> None:
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)
    kinds = {case.kind for case in CASES}
    assert kinds == {"model", "infra keys", "credentials", "modal limits", "strict types", "cross-field",
                     "argv and image", "names", "keep-alive target", "yaml"}  # fmt: skip


def names_the_property(text: str, name: str) -> bool:
    """The CLI prints the program's error under the stack's diagnostics, each problem on its own line."""
    return re.search(rf"^\s*{re.escape(name)}: ", text, re.MULTILINE) is not None


def leaks_nothing(text: str) -> bool:
    return "Traceback" not in text and not any(canary in text for canary in CANARIES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_an_invalid_config_fails_preview_naming_the_property(case: Case, stacks: dict[str, StackHarness]) -> None:
    config = StackConfig.of(case.stack)
    case.edit(config)
    run = stacks[case.stack].preview(config)

    assert not run.ok
    if case.cli_says:
        # The CLI cannot read the file at all: its own error, before any program runs.
        assert all(part in run.text for part in case.cli_says), run.text
    else:
        for name in case.names:
            assert names_the_property(run.text, name), run.text
        assert f"Pulumi.{case.stack}.yaml" in run.text
    # A pulumi.RunError: the message alone, no stack trace, no secret.
    assert leaks_nothing(run.text) and "inline source runtime error" not in run.text, run.text
    # Nothing was registered, so neither the provider nor Modal was called.
    assert run.ops() == {} and run.modal_calls == []


def rendered_stack_file(case: Case, directory: Path) -> Path:
    """The stack file of the case as the harness writes it (secrets as ciphertext placeholders)."""
    config = StackConfig.of(case.stack)
    case.edit(config)
    values = {**config.values, **{key: {"secure": "v1:canary-ciphertext"} for key in config.secrets}}
    text = yaml.safe_dump({"config": values}, sort_keys=False)
    path = directory / f"Pulumi.{case.stack}.yaml"
    path.write_text(config.text_edit(text) if config.text_edit else text)
    return path


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_render_refuses_the_same_deployments_the_same_way(case: Case, tmp_path: Path) -> None:
    path = rendered_stack_file(case, tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = render.main(["--file", str(path)])

    if not case.deployment_names and case.kind != "yaml":
        # Infra keys and credentials are the program's: render reads only the deployment, valid here.
        assert status == 0, err.getvalue()
        return
    assert status == render.EXIT_INVALID and out.getvalue() == ""
    for name in case.deployment_names:
        assert name in err.getvalue(), err.getvalue()
    assert all(part in err.getvalue() for part in case.render_says), err.getvalue()
    assert leaks_nothing(err.getvalue()), err.getvalue()


def test_an_invalid_config_fails_up_the_same_way(stacks: dict[str, StackHarness]) -> None:
    config = StackConfig.of("prod")
    deployment("parallelism.tp", 4)(config)
    run = stacks["prod"].up(config)
    assert not run.ok and names_the_property(run.text, f"{D}.parallelism.tp")
    assert run.ops() == {} and run.modal_calls == []


# The stack's API key as `openssl rand -base64 32` makes one: `/`, `+`, `=` take other spellings.
HOSTILE_API_KEY = "Zk8/q2+Wc1vR0pX9yT2mLb7Gh4Nf6Js5Ae0Dk3Ro1U="


def test_a_rejected_value_quoting_the_stack_api_key_is_redacted_in_the_preview(
    stacks: dict[str, StackHarness],
) -> None:
    # A hostile stack file: the served name would pass the stack's own key to SGLang's argv, and its
    # validation error quotes the rejected value whole (infra/messages.py redacts it).
    config = StackConfig.of("prod")
    secret("apiKey", HOSTILE_API_KEY)(config)
    deployment("model.served_name", f" --api-key {HOSTILE_API_KEY}")(config)
    run = stacks["prod"].preview(config)

    assert not run.ok and names_the_property(run.text, f"{D}.model.served_name"), run.text
    assert not [spelling for spelling in secret_spellings(HOSTILE_API_KEY) if spelling in run.text], run.text
    pieces = {HOSTILE_API_KEY[i : i + MIN_HIDDEN_PIECE] for i in range(len(HOSTILE_API_KEY) - MIN_HIDDEN_PIECE + 1)}
    assert not [piece for piece in pieces if piece in run.text], run.text
    assert leaks_nothing(run.text), run.text
    assert run.ops() == {} and run.modal_calls == []


@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_stack_files_are_valid(stack: str, stacks: dict[str, StackHarness]) -> None:
    run = stacks[stack].preview(StackConfig.of(stack))
    assert run.ok, run.text
