"""A stack file that cannot be deployed fails `pulumi preview` (the real CLI) before anything is
registered, naming the property, with no stack trace and no secret value in what the CLI prints."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

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


def both(*edits: Edit) -> Edit:
    def edit(config: StackConfig) -> None:
        for one in edits:
            one(config)

    return edit


D = f"{PROJECT}:deployment"

CASES = [
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
    Case("keepalive-without-url", "prod", deployment("keepalive.enabled", True), (f"{D}.keepalive.url",)),
    Case("keepalive-bad-cron", "prod", deployment("keepalive.schedule", "every 10 minutes"),
         (f"{D}.keepalive.schedule",)),
    Case("section-not-an-object", "prod", deployment("scaling", 3), (f"{D}.scaling",)),
    Case("deployment-not-an-object", "prod", infra("deployment", "glm-5.1"), (D,)),
    Case("deployment-missing", "staging", drop("deployment"), (D,)),
    Case("deployment-holding-a-secret", "prod", as_secret("deployment"), (D,)),
    # --- infra keys -----------------------------------------------------------------------------
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
    Case("infra-key-set-as-a-secret", "staging", infra_as_secret("modalEnvironment", "canary infra secret"),
         (f"{PROJECT}:modalEnvironment",)),
    Case("boolean-set-as-a-secret", "prod", infra_as_secret("smokeTest", "canary-bool-secret"),
         (f"{PROJECT}:smokeTest",)),
    Case("prod-unprotected", "prod", infra("protectVolumes", False), (f"{PROJECT}:protectVolumes",)),
    Case("prod-without-required-key", "prod", infra("requireApiKey", False), (f"{PROJECT}:requireApiKey",)),
    # --- the price table of the preview's cost lines (infra/costs.py) ---------------------------
    Case("negative-cpu-price", "prod", infra("costs", {"prices": {"cpu_core_per_hour": -1}}),
         (f"{PROJECT}:costs.prices.cpu_core_per_hour",)),
    Case("no-price-for-the-gpu", "staging", infra("costs", {"prices": {"gpu_per_hour": {"H100": 3.95}}}),
         (f"{PROJECT}:costs.prices.gpu_per_hour",)),
    Case("duration-range-backwards", "prod", infra("costs", {"durations": {"compile": {"low": 3600, "high": 60}}}),
         (f"{PROJECT}:costs.durations.compile.low",)),
    Case("unknown-costs-key", "staging", infra("costs", {"price": {}}), (f"{PROJECT}:costs.price",)),
    # --- secrets --------------------------------------------------------------------------------
    Case("hf-token-missing", "prod", drop("hfToken"), (f"{PROJECT}:hfToken",)),
    Case("api-key-missing", "staging", drop("apiKey"), (f"{PROJECT}:apiKey",)),
    Case("hf-token-empty", "staging", secret("hfToken", ""), (f"{PROJECT}:hfToken",)),
    Case("hf-token-in-plaintext", "prod", in_plaintext("hfToken"), (f"{PROJECT}:hfToken",)),
    Case("api-key-in-plaintext", "staging", in_plaintext("apiKey"), (f"{PROJECT}:apiKey",)),
    Case("hf-token-not-a-hub-token", "prod", secret("hfToken", "canary-not-a-hub-token-81c2"),
         (f"{PROJECT}:hfToken",)),
    Case("api-key-too-short-for-prod", "prod", secret("apiKey", "canary-short"), (f"{PROJECT}:apiKey",)),
    Case("api-key-looks-like-a-flag", "staging", secret("apiKey", "--canary-flag-like-key"), (f"{PROJECT}:apiKey",)),
    Case("api-key-with-whitespace", "staging", secret("apiKey", "canary key"), (f"{PROJECT}:apiKey",)),
    # --- several at once: every one is named ----------------------------------------------------
    Case("several-problems", "prod",
         both(deployment("hardware.gpu_type", "X100"), deployment("scaling.min_containers", 9), drop("apiKey"),
              infra("smokeTest", "on")),
         (f"{D}.hardware.gpu_type", f"{D}.scaling.min_containers", f"{PROJECT}:apiKey", f"{PROJECT}:smokeTest")),
]  # fmt: skip

# Secret values an error message must never contain.
CANARIES = (TEST_API_KEY, TEST_HF_TOKEN, "canary-not-a-hub-token-81c2", "canary-short", "--canary-flag-like-key",
            "canary key", "canary infra secret", "canary-bool-secret")  # fmt: skip


@pytest.fixture(scope="module")
def stacks() -> Iterator[dict[str, StackHarness]]:
    # One CLI world for all cases: a rejected config never reaches the provider, which the tests check.
    with rig() as running:
        yield {stack: running.harness(stack) for stack in STACKS}


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def names_the_property(text: str, name: str) -> bool:
    """The CLI prints the program's error under the stack's diagnostics, each problem on its own line."""
    return re.search(rf"^\s*{re.escape(name)}: ", text, re.MULTILINE) is not None


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_an_invalid_config_fails_preview_naming_the_property(case: Case, stacks: dict[str, StackHarness]) -> None:
    config = StackConfig.of(case.stack)
    case.edit(config)
    run = stacks[case.stack].preview(config)

    assert not run.ok
    for name in case.names:
        assert names_the_property(run.text, name), run.text
    # A pulumi.RunError: the message alone, no stack trace, no secret.
    assert "Traceback" not in run.text and "inline source runtime error" not in run.text
    assert not any(canary in run.text for canary in CANARIES), run.text
    assert f"Pulumi.{case.stack}.yaml" in run.text
    # Nothing was registered, so neither the provider nor Modal was called.
    assert run.ops() == {} and run.modal_calls == []


def test_an_invalid_config_fails_up_the_same_way(stacks: dict[str, StackHarness]) -> None:
    config = StackConfig.of("prod")
    deployment("parallelism.tp", 4)(config)
    run = stacks["prod"].up(config)
    assert not run.ok and names_the_property(run.text, f"{D}.parallelism.tp")
    assert run.ops() == {} and run.modal_calls == []


@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_stack_files_are_valid(stack: str, stacks: dict[str, StackHarness]) -> None:
    run = stacks[stack].preview(StackConfig.of(stack))
    assert run.ok, run.text
