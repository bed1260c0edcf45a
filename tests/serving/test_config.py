"""The deployment model: recipe defaults, what it rejects (naming the field), serialization, and
which changes re-run the download and compile jobs."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from serving import commands
from serving.config import (
    CONFIG_ENV_VAR,
    DeploymentConfig,
    SGLangRelease,
    format_errors,
    is_reserved_env_var,
    load_from_env,
)
from serving.versions import SGLANG_VERSION

# The reference recipe's production launch command (README: "The reference recipe"), every flag in
# its order, in the words of SGLang 0.5.23: `--tp/--ep` by their full names, `dsa` for `nsa`,
# `--dsa-*-backend` for the removed `--nsa-*-backend`, the fusion backend named instead of the
# deprecated boolean switch, and BF16 KV asked for by name (0.5.23 resolves "auto" to FP8 for DSA on
# Blackwell).
RECIPE_SERVER_ARGS = [
    "--model-path", "/model-cache/GLM-5.1-FP8",
    "--served-model-name", "glm-5.1",
    "--tp-size", "8",
    "--ep-size", "1",
    "--watchdog-timeout", "1200",
    "--trust-remote-code",
    "--attention-backend", "dsa",
    "--dsa-decode-backend", "trtllm",
    "--dsa-prefill-backend", "trtllm",
    "--moe-runner-backend", "flashinfer_trtllm",
    "--flashinfer-allreduce-fusion-backend", "auto",
    "--speculative-algorithm", "EAGLE",
    "--speculative-num-steps", "3",
    "--speculative-eagle-topk", "1",
    "--speculative-num-draft-tokens", "4",
    "--reasoning-parser", "glm45",
    "--tool-call-parser", "glm47",
    "--kv-cache-dtype", "bfloat16",
    "--mem-fraction-static", "0.88",
    "--max-running-requests", "48",
    "--max-prefill-tokens", "32768",
    "--max-total-tokens", "65536",
    "--enable-metrics",
]  # fmt: skip


def data(**changes) -> dict:
    """The default config as a plain dict, with dotted-path changes applied ("a.b": value)."""
    result = copy.deepcopy(DeploymentConfig().model_dump())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = result
        for part in parents:
            node = node[part]
        node[leaf] = value
    return result


def errors_of(raw: dict) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        DeploymentConfig.model_validate(raw)
    return format_errors(caught.value)


# --- defaults reproduce the recipe ---


def test_default_launch_command_is_the_recipe_flag_by_flag():
    cfg = DeploymentConfig()
    assert commands.server_args(cfg) == RECIPE_SERVER_ARGS
    assert commands.launch_command(cfg) == [
        "python3", "-m", "sglang.launch_server", *RECIPE_SERVER_ARGS, "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip


def test_default_compile_command_uses_the_same_server_args():
    assert commands.compile_command(DeploymentConfig()) == [
        "python3", "-m", "sglang.compile_deep_gemm", *RECIPE_SERVER_ARGS, "--timeout", "3600",
    ]  # fmt: skip


def test_default_modal_knobs_are_the_recipes():
    cfg = DeploymentConfig()
    assert (cfg.app_name, cfg.model.repo, cfg.model.served_name, cfg.model.weights) == (
        "glm-5.1-production",
        "zai-org/GLM-5.1-FP8",
        "glm-5.1",
        "full",
    )
    assert (cfg.hardware.modal_gpu, cfg.parallelism.tp, cfg.parallelism.ep) == ("B200:8", 8, 1)
    scaling = cfg.scaling
    assert (scaling.min_containers, scaling.max_containers, scaling.scaledown_window) == (0, 3, 900)
    assert scaling.max_concurrent_inputs == 20
    timeouts = cfg.timeouts
    assert (timeouts.server, timeouts.startup, timeouts.download, timeouts.compile) == (86400, 900, 7200, 3600)
    assert timeouts.shutdown_grace == 30
    assert (cfg.download.cpu, cfg.download.memory_mib, cfg.download.attempts) == (4.0, 32768, 3)
    assert cfg.download.backoff_seconds == 30
    storage = cfg.storage
    assert (storage.weights_volume, storage.kernels_volume) == ("glm51-model-weights", "glm51-deepgemm-cache")
    assert (storage.weights_mount, storage.kernels_mount) == ("/model-cache", "/dg-cache")
    assert (cfg.secrets.hf_token, cfg.secrets.hf_token_key) == ("huggingface-secret", "HF_TOKEN")
    assert (cfg.secrets.api_key, cfg.secrets.api_key_key) == ("glm51-api-key", "API_KEY")
    assert cfg.keepalive.enabled is False
    assert cfg.sentinel_path == "/model-cache/GLM-5.1-FP8/model.safetensors.index.json"
    assert cfg.sglang.image == f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130"


def test_default_environment_is_the_recipes_minus_the_removed_spec_v2_switch():
    cfg = DeploymentConfig()
    # The recipe's, plus the JIT caches beside DeepGEMM's on the kernels volume (serving/jit_caches.py).
    assert commands.image_env(cfg) == {"HF_XET_HIGH_PERFORMANCE": "1", "SGLANG_DG_CACHE_DIR": "/dg-cache",
                                       "SGLANG_CACHE_DIR": "/dg-cache/jit-cache",
                                       "SGLANG_JIT_CACHE_DIR": "/dg-cache/jit-cache/jit",
                                       "TRITON_CACHE_DIR": "/dg-cache/jit-cache/triton",
                                       "TORCHINDUCTOR_CACHE_DIR": "/dg-cache/jit-cache/inductor",
                                       "CUDA_CACHE_PATH": "/dg-cache/jit-cache/nv",
                                       "TILELANG_CACHE_DIR": "/dg-cache/jit-cache/tilelang",
                                       "FLASHINFER_WORKSPACE_BASE": "/dg-cache/jit-cache",
                                       "CUTE_DSL_CACHE_DIR": "/dg-cache/jit-cache/cute_dsl"}  # fmt: skip
    assert commands.serve_env(cfg) == {**commands.image_env(cfg), "HF_HUB_OFFLINE": "1"}


# --- what the model rejects, naming the field ---

INVALID = {
    "unknown gpu type": ({"hardware.gpu_type": "B300X"}, "hardware.gpu_type", "unknown Modal GPU type"),
    "non-Blackwell gpu": ({"hardware.gpu_type": "H100"}, "hardware.gpu_type", "Blackwell"),
    "gpu count above a node": ({"hardware.gpu_count": 16}, "hardware.gpu_count", "8"),
    "gpu count not a number": ({"hardware.gpu_count": "eight"}, "hardware.gpu_count", "integer"),
    "tp not the gpu count": ({"parallelism.tp": 4}, "parallelism.tp", "must equal hardware.gpu_count"),
    "ep not dividing tp": ({"parallelism.ep": 3}, "parallelism.ep", "does not divide"),
    "zero tp": ({"parallelism.tp": 0}, "parallelism.tp", "greater than 0"),
    "fp8 kv with eagle": ({"launch.memory.kv_cache_dtype": "fp8_e4m3"}, "launch.memory.kv_cache_dtype", "22359"),
    "auto kv with eagle": ({"launch.memory.kv_cache_dtype": "auto"}, "launch.memory.kv_cache_dtype", "fp8_e4m3"),
    "kv dtype dsa cannot use": ({"launch.memory.kv_cache_dtype": "fp8_e5m2"}, "launch.memory.kv_cache_dtype", ""),
    "eagle3 without draft model": ({"launch.speculative.algorithm": "EAGLE3"}, "launch.speculative.algorithm", ""),
    "draft window not steps + 1": (
        {"launch.speculative.num_draft_tokens": 5},
        "launch.speculative.num_draft_tokens",
        "num_steps + 1",
    ),
    "mem fraction above 1": ({"launch.memory.mem_fraction_static": 1.2}, "launch.memory.mem_fraction_static", ""),
    "prefill above total": ({"launch.memory.max_prefill_tokens": 70000}, "launch.memory.max_prefill_tokens", ""),
    "typo in a dsa backend": (
        {"launch.backends.dsa_decode_backend": "trtlm"},
        "launch.backends.dsa_decode_backend",
        "",
    ),
    "recipe's nsa spelling": ({"launch.backends.attention_backend": "nsa"}, "launch.backends.attention_backend", ""),
    "fusion as a boolean": (
        {"launch.backends.flashinfer_allreduce_fusion_backend": True},
        "launch.backends.flashinfer_allreduce_fusion_backend",
        "",
    ),
    "privileged port": ({"launch.port": 80}, "launch.port", "1024"),
    "zero watchdog": ({"launch.stability.watchdog_timeout": 0}, "launch.stability.watchdog_timeout", ""),
    "min above max containers": ({"scaling.min_containers": 4}, "scaling.min_containers", "above max_containers"),
    "negative min containers": ({"scaling.min_containers": -1}, "scaling.min_containers", ""),
    "zero max containers": ({"scaling.max_containers": 0}, "scaling.max_containers", ""),
    "zero scaledown": ({"scaling.scaledown_window": 0}, "scaling.scaledown_window", ""),
    "zero server timeout": ({"timeouts.server": 0}, "timeouts.server", "greater than 0"),
    "negative startup timeout": ({"timeouts.startup": -5}, "timeouts.startup", "greater than 0"),
    "startup outlives the container": ({"timeouts.startup": 86400}, "timeouts.startup", "shorter than"),
    "zero download attempts": ({"download.attempts": 0}, "download.attempts", ""),
    "string timeout": ({"timeouts.compile": "an hour"}, "timeouts.compile", "integer"),
    "unknown top-level key": ({"replicas": 2}, "replicas", "Extra inputs"),
    "unknown nested key (typo)": ({"launch.memory.kv_dtype": "bfloat16"}, "launch.memory.kv_dtype", "Extra inputs"),
    "section of the wrong type": ({"launch.memory": "big"}, "launch.memory", ""),
    "boolean that is not one": ({"keepalive.enabled": "sometimes"}, "keepalive.enabled", "boolean"),
    "bad volume name": ({"storage.weights_volume": "my weights!"}, "storage.weights_volume", "Modal object name"),
    "volume name too long": ({"storage.kernels_volume": "k" * 70}, "storage.kernels_volume", ""),
    "same volume twice": ({"storage.kernels_volume": "glm51-model-weights"}, "storage.kernels_volume", "differ"),
    "relative mount": ({"storage.weights_mount": "model-cache"}, "storage.weights_mount", "absolute"),
    "mount at root": ({"storage.kernels_mount": "/"}, "storage.kernels_mount", "absolute"),
    "same mount twice": ({"storage.kernels_mount": "/model-cache"}, "storage.kernels_mount", "must not be"),
    "bad secret name": ({"secrets.api_key": "api key"}, "secrets.api_key", "Modal object name"),
    "bad secret env key": ({"secrets.api_key_key": "api-key"}, "secrets.api_key_key", "environment variable"),
    "bad app name": ({"app_name": "glm 5.1"}, "app_name", "Modal object name"),
    "unpinned image": ({"sglang.image": "lmsysorg/sglang"}, "sglang.image", "name:tag"),
    "latest image": ({"sglang.image": "lmsysorg/sglang:latest"}, "sglang.image", "unpinned"),
    "image of another release": ({"sglang.image": "lmsysorg/sglang:v0.5.10-cu130"}, "sglang.image", "not SGLang"),
    "image of a longer version": ({"sglang.image": f"lmsysorg/sglang:v{SGLANG_VERSION}0"}, "sglang.image", ""),
    "image of a post release": ({"sglang.image": f"lmsysorg/sglang:v{SGLANG_VERSION}.post1"}, "sglang.image", ""),
    "version not the checked release": ({"sglang.version": "0.5.10"}, "sglang.version", "serving/versions.py"),
    # The ping carries the API key: its target is the app's own endpoint, never a setting.
    "keepalive to another host": (
        {"keepalive.enabled": True, "keepalive.url": "https://collector.example"},
        "keepalive.url",
        "Extra inputs",
    ),
    "cron with 4 fields": ({"keepalive.schedule": "*/10 8-18 * *"}, "keepalive.schedule", "5-field"),
    "cron minute out of range": ({"keepalive.schedule": "61 * * * *"}, "keepalive.schedule", "0-59"),
    "cron words": ({"keepalive.schedule": "every ten minutes on weekdays"}, "keepalive.schedule", ""),
    "cron zero step": ({"keepalive.schedule": "*/0 * * * *"}, "keepalive.schedule", "step"),
    "cron backwards range": ({"keepalive.schedule": "0 18-8 * * *"}, "keepalive.schedule", "backwards"),
    "repo without org": ({"model.repo": "GLM-5.1-FP8"}, "model.repo", "<org>/<name>"),
    "blank revision": ({"model.revision": " "}, "model.revision", "branch, tag or commit"),
    "unknown weights mode": ({"model.weights": "partial"}, "model.weights", ""),
}


@pytest.mark.parametrize("changes, path, words", INVALID.values(), ids=INVALID.keys())
def test_invalid_config_is_rejected_with_the_field_path(changes, path, words):
    lines = errors_of(data(**changes))
    matching = [line for line in lines if line.startswith(f"{path}: ")]
    assert matching, f"no error names {path}: {lines}"
    assert all(line.split(": ", 1)[1].strip() for line in matching)
    assert words in matching[0]


def test_there_are_at_least_25_rejected_configs():
    assert len(INVALID) >= 25


def test_every_problem_is_reported_not_only_the_first():
    lines = errors_of(data(**{"hardware.gpu_type": "H100", "scaling.max_containers": 0, "launch.port": 1}))
    assert {line.split(":")[0] for line in lines} == {"hardware.gpu_type", "scaling.max_containers", "launch.port"}


def test_speculation_off_allows_an_fp8_kv_cache():
    cfg = DeploymentConfig.model_validate(
        data(**{"launch.speculative.algorithm": None, "launch.memory.kv_cache_dtype": "fp8_e4m3"})
    )
    assert "--speculative-algorithm" not in commands.server_args(cfg)


def test_an_image_pinned_by_tag_and_digest_is_accepted():
    image = f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130@sha256:" + "a" * 64
    assert DeploymentConfig.model_validate(data(**{"sglang.image": image})).sglang.image == image


def test_valid_cron_schedules_are_accepted():
    for schedule in ("*/10 8-18 * * 1-5", "0 9 * jan-mar mon-fri", "0,30 * 1-31/2 * 0", "5 4 * * 7"):
        assert DeploymentConfig.model_validate(data(**{"keepalive.schedule": schedule})).keepalive.schedule == schedule


def test_sections_are_frozen():
    with pytest.raises(ValidationError):
        DeploymentConfig().scaling.max_containers = 10


# --- the JSON that reaches the container ---


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"model.weights": "dummy", "scaling.max_containers": 1, "storage.weights_volume": "glm51-staging-w"},
        {"launch.speculative.algorithm": None, "launch.memory.kv_cache_dtype": "fp8_e4m3"},
        {"keepalive.enabled": True},
    ],
)
def test_json_round_trip_through_the_image_environment(changes):
    cfg = DeploymentConfig.model_validate(data(**changes))
    environment = {CONFIG_ENV_VAR: cfg.to_json()}
    assert load_from_env(environment) == cfg
    assert json.loads(environment[CONFIG_ENV_VAR]) == cfg.model_dump(mode="json")


def test_without_the_variable_the_container_runs_the_defaults():
    assert load_from_env({}) == DeploymentConfig()


def test_invalid_json_in_the_environment_fails_with_the_field():
    raw = json.dumps(data(**{"parallelism.tp": 4}))
    with pytest.raises(ValidationError) as caught:
        load_from_env({CONFIG_ENV_VAR: raw})
    assert any(line.startswith("parallelism.tp: ") for line in format_errors(caught.value))


# --- which changes re-run the download and the compile ---

SAME_KERNELS = {
    "scaling": {"scaling.max_containers": 1, "scaling.min_containers": 1, "scaling.scaledown_window": 60},
    "timeouts": {"timeouts.startup": 600, "timeouts.compile": 1800, "timeouts.server": 3600},
    "parser": {"launch.parsers.tool_call_parser": "glm"},
    "memory limits": {
        "launch.memory.max_running_requests": 16,
        "launch.memory.mem_fraction_static": 0.8,
        "launch.memory.max_prefill_tokens": 16384,
        "launch.memory.max_total_tokens": 131072,
    },
    "stability": {"launch.stability.watchdog_timeout": 600, "launch.stability.enable_metrics": False},
    "names": {"app_name": "glm-other", "secrets.api_key": "other-key", "model.served_name": "glm"},
    "keepalive": {"keepalive.enabled": True},
    "port": {"launch.port": 9000},
}

OTHER_KERNELS = {
    "revision": {"model.revision": "0123456789abcdef"},
    "repo": {"model.repo": "zai-org/GLM-5.1-FP8-other"},
    "gpu count": {"hardware.gpu_count": 4, "parallelism.tp": 4},
    "expert parallelism": {"parallelism.ep": 2},
    "image": {"sglang.image": f"lmsysorg/sglang:v{SGLANG_VERSION}-cu129"},
    "dsa backend": {"launch.backends.dsa_decode_backend": "flashmla_sparse"},
    "moe backend": {"launch.backends.moe_runner_backend": "deep_gemm"},
    "fusion": {"launch.backends.flashinfer_allreduce_fusion_backend": "disabled"},
    "speculative steps": {"launch.speculative.num_steps": 2, "launch.speculative.num_draft_tokens": 3},
    "speculation off": {"launch.speculative.algorithm": None},
    "weights mode": {"model.weights": "dummy"},
}


@pytest.mark.parametrize("changes", SAME_KERNELS.values(), ids=SAME_KERNELS.keys())
def test_changes_that_do_not_shape_kernels_keep_the_fingerprint(changes):
    base = DeploymentConfig()
    changed = DeploymentConfig.model_validate(data(**changes))
    assert changed != base
    assert changed.kernel_fingerprint() == base.kernel_fingerprint()
    assert changed.compile_marker_name == base.compile_marker_name
    assert changed.weights_inputs() == base.weights_inputs()


@pytest.mark.parametrize("changes", OTHER_KERNELS.values(), ids=OTHER_KERNELS.keys())
def test_changes_that_shape_kernels_change_the_fingerprint(changes):
    base = DeploymentConfig()
    changed = DeploymentConfig.model_validate(data(**changes))
    assert changed.kernel_fingerprint() != base.kernel_fingerprint()
    assert changed.compile_marker_name != base.compile_marker_name


def test_kv_cache_dtype_changes_the_fingerprint():
    no_spec = data(**{"launch.speculative.algorithm": None})
    bf16 = DeploymentConfig.model_validate(no_spec)
    fp8 = DeploymentConfig.model_validate(
        {**no_spec, "launch": {**no_spec["launch"], "memory": {"kv_cache_dtype": "fp8_e4m3"}}}
    )
    assert fp8.kernel_fingerprint() != bf16.kernel_fingerprint()


def test_sglang_version_changes_the_fingerprint():
    # The version field only accepts the pinned release, so build the next one without validation.
    base = DeploymentConfig()
    newer = base.model_copy(update={"sglang": SGLangRelease.model_construct(version="0.5.24", image=base.sglang.image)})
    assert newer.kernel_fingerprint() != base.kernel_fingerprint()


def test_only_the_weights_re_run_the_download():
    base = DeploymentConfig()
    for changes in (*SAME_KERNELS.values(), {"launch.backends.dsa_decode_backend": "flashmla_sparse"}):
        assert DeploymentConfig.model_validate(data(**changes)).weights_inputs() == base.weights_inputs()
    for changes in ({"model.revision": "abc123"}, {"model.weights": "dummy"}, {"model.repo": "zai-org/Other"}):
        assert DeploymentConfig.model_validate(data(**changes)).weights_inputs() != base.weights_inputs()


def test_fingerprint_is_stable_across_processes_and_key_order():
    # Recorded in the compile marker on the volume and compared by later containers: it must not
    # depend on dict order or the hash seed of the process.
    cfg = DeploymentConfig()
    reordered = DeploymentConfig.model_validate(dict(reversed(list(cfg.model_dump().items()))))
    assert reordered.kernel_fingerprint() == cfg.kernel_fingerprint()
    code = "from serving.config import DeploymentConfig; print(DeploymentConfig().kernel_fingerprint())"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == cfg.kernel_fingerprint()


def test_every_variable_the_deployment_sets_is_one_a_secret_key_may_not_override():
    # A secret's keys become environment variables of the container, over the image's own.
    cfg = DeploymentConfig()
    ours = {CONFIG_ENV_VAR, *commands.subprocess_env(commands.serve_env(cfg)), *commands.image_env(cfg)}
    assert all(is_reserved_env_var(name) for name in ours), sorted(n for n in ours if not is_reserved_env_var(n))
    for name in ours:
        changes = {"secrets.api_key_key": name}
        assert "secrets.api_key_key" in " ".join(errors_of(data(**changes)))
