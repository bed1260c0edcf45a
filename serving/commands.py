"""SGLang command lines and environment, rendered from the deployment config.

The launch command and the DeepGEMM compile command share one list of server arguments:
`sglang.compile_deep_gemm` (0.5.23) accepts the full server argument set and JIT-compiles the GEMM
shapes those arguments will ask for, so compiling with anything else would leave the server to
compile on its own at cold start (10-15 minutes on 8 B200s).

Each flag is declared once, as a field of `launch` in serving/config.py, and its argument is derived
from the field's name and value here (`flag_args`); only the values the config keeps elsewhere (the
model path, the GPUs) and the few flags SGLang spells differently are written out.

The API key is never an argument here: it would be visible in `ps` and in Modal's process list.
lifecycle.py hands it to SGLang through a private `--config` YAML file instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from serving import jit_caches
from serving.config import DeploymentConfig, FlagSection, Speculative

# Environment variable names, kept together so tests can check each against SGLang's registry.
HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
HF_XET_HIGH_PERFORMANCE = "HF_XET_HIGH_PERFORMANCE"
SGLANG_DG_CACHE_DIR = "SGLANG_DG_CACHE_DIR"

# The recipe reads these two with model loading, ahead of the kernel choices. Every other flag
# follows in the order serving/config.py declares its section and field.
LOADING_FLAGS = ("watchdog_timeout", "trust_remote_code")


def server_args(cfg: DeploymentConfig) -> list[str]:
    """Server arguments shared by launch and compile, grouped as the recipe reads them."""
    stability = cfg.launch.stability
    args = [
        # Model loading & parallelism: values the config keeps outside `launch`, because the
        # download and the Modal functions need them too.
        "--model-path", cfg.model_path,
        "--served-model-name", cfg.model.served_name,
        "--tp-size", str(cfg.parallelism.tp),
        "--ep-size", str(cfg.parallelism.ep),
        *flag_args(stability, LOADING_FLAGS),
    ]  # fmt: skip
    if cfg.model.weights == "dummy":
        # Random weights of the right shapes: the dummy-weights rehearsal mode has no shards.
        args += ["--load-format", "dummy"]
    for section in cfg.launch.sections():
        args += flag_args(section, [name for name in type(section).model_fields if name not in LOADING_FLAGS])
    return args


def flag_args(section: FlagSection, names: Iterable[str]) -> list[str]:
    """The arguments of the named flags of `section`: `--<name> <value>`, a bool as a switch given
    when true, None not at all. The exceptions to that rule are the `if`s below."""
    if isinstance(section, Speculative) and not section.algorithm:
        return []  # no speculative decoding: none of its settings
    args = []
    for name in names:
        value = getattr(section, name)
        if name == "flashinfer_allreduce_fusion_backend" and value == "disabled":
            # 0.5.23 offers no "off" backend: switching fusion off is a flag of its own.
            args.append("--enforce-disable-flashinfer-allreduce-fusion")
            continue
        flag = "--" + (section.FLAG_PREFIX + name).replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is not None and value is not False:
            args += [flag, str(value)]
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


# Python children buffer stdout in 8 KiB blocks when it is a pipe; unbuffered output reaches the
# log as it is written (SGLang's own logging goes to stderr, which is already line-buffered).
UNBUFFERED_ENV = {"PYTHONUNBUFFERED": "1"}

# SGLang must serve the weights on the volume, never fetch from the Hub: a missing or partial
# download should fail loudly, not turn into a 700 GB download inside a GPU container.
OFFLINE_ENV = {HF_HUB_OFFLINE: "1"}


def image_env(cfg: DeploymentConfig) -> dict[str, str]:
    """Environment baked into the SGLang image (compile and serve)."""
    return {
        # Faster chunked transfers of large Hugging Face artifacts.
        HF_XET_HIGH_PERFORMANCE: "1",
        # DeepGEMM reads and writes its compiled kernels in the mounted cache volume.
        SGLANG_DG_CACHE_DIR: cfg.storage.kernels_mount,
        # So do SGLang's other JIT caches and its libraries' (Triton, FlashInfer, ...): warmed by the
        # compile job, reused by every server container (serving/jit_caches.py).
        **jit_caches.cache_env(cfg.storage.kernels_mount),
    }


def serve_env(cfg: DeploymentConfig) -> dict[str, str]:
    """What an SGLang process (server or compile) adds to the image's environment."""
    return {**image_env(cfg), **OFFLINE_ENV}


def subprocess_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment an SGLang process starts with: `env`, unbuffered output unless `env` says
    otherwise, and the offline Hub whatever `env` says."""
    return {**UNBUFFERED_ENV, **env, **OFFLINE_ENV}


def secret_config_args(config_path: str | os.PathLike[str]) -> list[str]:
    """The argv fragment that hands SGLang the secret config file (written by lifecycle.py in the
    container; a placeholder path in `serving.render`)."""
    return ["--config", str(config_path)]
