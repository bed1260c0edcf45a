"""SGLang command lines and environment, rendered from the deployment config.

The launch command and the DeepGEMM compile command share one list of server arguments:
`sglang.compile_deep_gemm` (0.5.23) accepts the full server argument set and JIT-compiles the GEMM
shapes those arguments will ask for, so compiling with anything else would leave the server to
compile on its own at cold start (10-15 minutes on 8 B200s).

The API key is never an argument here: it would be visible in `ps` and in Modal's process list.
lifecycle.py hands it to SGLang through a private `--config` YAML file instead.
"""

from __future__ import annotations

from serving.config import DeploymentConfig

# Environment variable names, kept together so tests can check each against SGLang's registry.
HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
HF_XET_HIGH_PERFORMANCE = "HF_XET_HIGH_PERFORMANCE"
SGLANG_DG_CACHE_DIR = "SGLANG_DG_CACHE_DIR"


def server_args(cfg: DeploymentConfig) -> list[str]:
    """Server arguments shared by launch and compile, grouped as the recipe reads them."""
    launch = cfg.launch
    args = [
        # Model loading & parallelism
        "--model-path", cfg.model_path,
        "--served-model-name", cfg.model.served_name,
        "--tp-size", str(cfg.parallelism.tp),
        "--ep-size", str(cfg.parallelism.ep),
        "--watchdog-timeout", str(launch.stability.watchdog_timeout),
    ]  # fmt: skip
    if launch.stability.trust_remote_code:
        args.append("--trust-remote-code")
    if cfg.model.weights == "dummy":
        # Random weights of the right shapes: the dummy-weights rehearsal mode has no shards.
        args += ["--load-format", "dummy"]

    backends = launch.backends
    args += [
        "--attention-backend", backends.attention_backend,
        "--dsa-decode-backend", backends.dsa_decode_backend,
        "--dsa-prefill-backend", backends.dsa_prefill_backend,
        "--moe-runner-backend", backends.moe_runner_backend,
    ]  # fmt: skip
    if backends.flashinfer_allreduce_fusion_backend == "disabled":
        args.append("--enforce-disable-flashinfer-allreduce-fusion")
    else:
        # 0.5.23's spelling of the recipe's deprecated `--enable-flashinfer-allreduce-fusion`.
        args += ["--flashinfer-allreduce-fusion-backend", backends.flashinfer_allreduce_fusion_backend]

    spec = launch.speculative
    if spec.algorithm:
        args += [
            "--speculative-algorithm", spec.algorithm,
            "--speculative-num-steps", str(spec.num_steps),
            "--speculative-eagle-topk", str(spec.eagle_topk),
            "--speculative-num-draft-tokens", str(spec.num_draft_tokens),
        ]  # fmt: skip

    memory = launch.memory
    args += [
        "--reasoning-parser", launch.parsers.reasoning_parser,
        "--tool-call-parser", launch.parsers.tool_call_parser,
        "--kv-cache-dtype", memory.kv_cache_dtype,
        "--mem-fraction-static", str(memory.mem_fraction_static),
        "--max-running-requests", str(memory.max_running_requests),
        "--max-prefill-tokens", str(memory.max_prefill_tokens),
        "--max-total-tokens", str(memory.max_total_tokens),
    ]  # fmt: skip
    if launch.stability.enable_metrics:
        args.append("--enable-metrics")
    return args


def launch_command(cfg: DeploymentConfig) -> list[str]:
    """argv of the serving process (without the API key; see lifecycle.secret_config_args)."""
    return [
        "python3", "-m", "sglang.launch_server",
        *server_args(cfg),
        "--host", "0.0.0.0",
        "--port", str(cfg.launch.port),
    ]  # fmt: skip


def compile_command(cfg: DeploymentConfig) -> list[str]:
    """argv of the one-off DeepGEMM compile: the serving arguments plus the compile timeout."""
    return [
        "python3", "-m", "sglang.compile_deep_gemm",
        *server_args(cfg),
        "--timeout", str(cfg.timeouts.compile),
    ]  # fmt: skip


def image_env(cfg: DeploymentConfig) -> dict[str, str]:
    """Environment baked into the SGLang image (compile and serve)."""
    return {
        # Faster chunked transfers of large Hugging Face artifacts.
        HF_XET_HIGH_PERFORMANCE: "1",
        # DeepGEMM reads and writes its compiled kernels in the mounted cache volume.
        SGLANG_DG_CACHE_DIR: cfg.storage.kernels_mount,
    }


def serve_env(cfg: DeploymentConfig) -> dict[str, str]:
    """Extra environment of the SGLang serving subprocess."""
    # Serve only from the volume: a runtime hub fetch would hide a missing or partial download.
    return {**image_env(cfg), HF_HUB_OFFLINE: "1"}
