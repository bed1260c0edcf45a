"""The one typed model of a GLM-5.1-FP8 deployment.

Everything that decides what runs on Modal lives here, once: infra validates it at `pulumi preview`
(so a bad stack file fails before anything is touched), and the container runs exactly the same
object, which reaches it serialized as JSON in an image environment variable (`CONFIG_ENV_VAR`),
never re-typed by hand.

Defaults reproduce the reference recipe's production values (the README's "The reference recipe"),
expressed in the words of the pinned SGLang release. Validation rejects what cannot work and names the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from serving import jit_caches
from serving.modal_rules import check_env_var_name, check_object_name
from serving.versions import SGLANG_VERSION

# The container reads its config from this image environment variable (JSON of DeploymentConfig).
CONFIG_ENV_VAR = "GLM_DEPLOYMENT_CONFIG"

# File that proves a Hugging Face snapshot landed completely: it is written with the shards'
# index, and without it SGLang cannot map tensors to shards.
WEIGHT_SENTINEL = "model.safetensors.index.json"

# GPUs Modal offers, by the name its `gpu=` parameter takes. Only Blackwell (sm100) parts can run
# the DeepGEMM kernels we precompile and the TRT-LLM sparse-attention backends; kernels built for
# one architecture do not load on another.
# Memory per GPU (GB), for the GPUs that can run this deployment (B200: 192 GB HBM3e).
GPU_MEMORY_GB = {"B200": 192}
# Size of the weights of the repos whose size we know (the recipe: ~700 GB of FP8 shards); a config
# that cannot hold them at its parallelism fails at preview instead of out of memory after the jobs ran.
KNOWN_WEIGHTS_GB = {"zai-org/GLM-5.1-FP8": 700}

MODAL_GPU_TYPES = ("T4", "L4", "A10G", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200")
BLACKWELL_GPU_TYPES = ("B200",)

# Written next to the weights after the snapshot download returns. The sentinel lands early in a
# parallel download, so on its own it cannot tell a finished download from an interrupted one, nor
# dummy-mode files from the full shards; this record can, so it is what proves the download job.
DOWNLOAD_RECORD = ".download-complete.json"

# Modal's own limits, checked here so a value Modal refuses fails at preview, not in the deploy after
# the jobs ran: a Function's timeout is 1 s to 24 h (docs: guide/timeouts), its scaledown window 2 to
# 3600 s (modal 1.6.4 `_functions.py` refuses anything else at deploy time).
MODAL_MAX_TIMEOUT_SECONDS = 24 * 60 * 60
MODAL_SCALEDOWN_WINDOW_RANGE = (2, 3600)

# Every integer is bounded: no value of a stack file may reach Modal or SGLang as an absurd number.
# Counts nobody needs this many of stay far below these; the caps only stop typos (an extra zero).
LARGEST_COUNT = 1_000_000

PositiveInt = Annotated[int, Field(gt=0, le=LARGEST_COUNT)]
Seconds = Annotated[int, Field(gt=0, le=MODAL_MAX_TIMEOUT_SECONDS, description="seconds, at most Modal's 24 h")]
# A Modal object name (volume, secret, app), by Modal's own rule (serving/modal_rules.py).
ModalName = Annotated[str, AfterValidator(check_object_name)]


def _pattern_check(pattern: str, what: str) -> AfterValidator:
    """A text field matched on its WHOLE string (a trailing newline never passes)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


# Values that become an SGLang argument, a path in an image's environment or a Hub request: one
# token of printable ASCII, never starting with '-' (argparse would read a flag), never whitespace,
# a newline or a control character (a second argument, or a second line in the image's ENV).
# A Hugging Face repo id: `<org>/<name>`, each 1-96 of letters, digits, '-', '_', '.', not starting
# with '-' or '.', without '--' or '..' (the Hub's own rule); the name becomes a folder on the volume.
_HUB_PART = r"(?!.*(--|\.\.))[A-Za-z0-9_][A-Za-z0-9._-]{0,95}"
HubRepo = Annotated[str, _pattern_check(rf"{_HUB_PART}/{_HUB_PART}", "a Hugging Face repo id '<org>/<name>'")]
# A git revision: a branch, tag or commit sha as the Hub accepts them (no '..', no leading '-' or '/').
Revision = Annotated[
    str, _pattern_check(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}", "a branch, tag or commit of the repo")
]
# The model name clients send: letters, digits and '._:/-', a letter or digit first.
ServedName = Annotated[
    str, _pattern_check(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", "a model name (letters, digits, '._:/-')")
]
# A container image reference `registry/name:tag[@sha256:<digest>]`, in Docker's grammar.
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
ImageReference = Annotated[
    str,
    _pattern_check(
        rf"(?:[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]+)?/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
        r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(?:@sha256:[a-f0-9]{64})?",
        "an image reference 'name:tag' (optionally '@sha256:<digest>')",
    ),
]
# Where a volume is mounted: a canonical absolute path of plain components (no '.', '..', '//', no
# trailing '/'), which Modal's own check (`validate_mount_points`) and the image ENV both take as is.
_MOUNT_PATH = re.compile(r"(/[A-Za-z0-9_][A-Za-z0-9._-]*)+")
# Modal refuses "/", "/root" and "/tmp" themselves (our code runs from /root).
MODAL_RESERVED_MOUNTS = ("/root", "/tmp")  # noqa: S108 (names the directory, writes nothing)
# A mount on or under a system directory would hide the image's own files (Python, CUDA, SGLang).
SYSTEM_DIRECTORIES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var", "/sgl-workspace",
)  # fmt: skip


def _check_mount_path(value: str) -> str:
    if not _MOUNT_PATH.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"{value!r} must be a canonical absolute path like /model-cache (no '.', '..', trailing '/')")
    if value in MODAL_RESERVED_MOUNTS:
        raise ValueError(f"{value!r} is a directory Modal does not mount volumes on; use e.g. /model-cache")
    for system in SYSTEM_DIRECTORIES:
        if value == system or value.startswith(system + "/"):
            raise ValueError(f"{value!r} is in {system}, a system directory of the image; mount elsewhere")
    return value


MountPath = Annotated[str, AfterValidator(_check_mount_path)]

# Environment variables the images and processes of this deployment set themselves, and the families
# their libraries and Modal read: a secret's key must not override one of them in the container.
RESERVED_ENV_VARS = ("PATH", "HOME", "USER", "SHELL", "PWD", "TMPDIR", "HOSTNAME")
RESERVED_ENV_VAR_PREFIXES = (
    "GLM_", "MODAL_", "SGLANG_", "HF_HUB_", "HF_XET_", "HF_HOME", "HF_DATASETS_", "TRANSFORMERS_", "PYTHON",
    "LD_", "CUDA_", "NCCL_", "NVIDIA_", "TORCH", "TRITON_", "FLASHINFER_", "DG_", "DEEPGEMM_", "TVM_", "OMP_",
    "TILELANG_", "CUTE_DSL_",
    "XDG_", "SSL_", "REQUESTS_", "CURL_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
)  # fmt: skip


def is_reserved_env_var(name: str) -> bool:
    upper = name.upper()
    return upper in RESERVED_ENV_VARS or upper.startswith(RESERVED_ENV_VAR_PREFIXES)


class _Section(BaseModel):
    # Unknown keys are typos in a stack file: fail loudly rather than silently ignore them. Strict:
    # "yes" is not a boolean, true is not 1, "8" is not 8, and no float is infinite or NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ModelSource(_Section):
    """Which weights to serve and under what name."""

    repo: HubRepo = "zai-org/GLM-5.1-FP8"
    # A commit sha pins the exact weights; a branch such as "main" moves under you, so the
    # download job's trigger (and the compile marker) would not notice an upstream change.
    revision: Revision = "main"
    served_name: ServedName = "glm-5.1"
    # "full" downloads the ~700 GB of FP8 shards. "dummy" fetches only config and tokenizer files
    # and starts SGLang with random weights (`--load-format dummy`): for staging rehearsals of
    # config, cold start and the API surface without the 30-60 minute download.
    weights: Literal["full", "dummy"] = "full"

    @property
    def directory(self) -> str:
        """Folder name of the snapshot inside the weights volume (recipe: GLM-5.1-FP8)."""
        return self.repo.split("/", 1)[1]


class Hardware(_Section):
    gpu_type: str = "B200"
    # Eight B200s (8 x 192 GB HBM3e) hold the ~700 GB of FP8 weights plus a BF16 KV cache.
    gpu_count: Annotated[int, Field(ge=1, le=8)] = 8

    @field_validator("gpu_type")
    @classmethod
    def _gpu_fits_kernels(cls, value: str) -> str:
        if value not in MODAL_GPU_TYPES:
            raise ValueError(f"unknown Modal GPU type {value!r}; known: {', '.join(MODAL_GPU_TYPES)}")
        if value not in BLACKWELL_GPU_TYPES:
            raise ValueError(
                f"{value} cannot run this deployment: the DeepGEMM kernels and TRT-LLM DSA backends are "
                f"built for Blackwell (sm100); use one of {', '.join(BLACKWELL_GPU_TYPES)}"
            )
        return value

    @property
    def modal_gpu(self) -> str:
        return f"{self.gpu_type}:{self.gpu_count}"


class Parallelism(_Section):
    # Tensor parallel across every GPU shards the MoE; the model fits in VRAM at TP 8, so expert
    # parallelism stays off (EP 1).
    tp: PositiveInt = 8
    ep: PositiveInt = 1


class SGLangRelease(_Section):
    # The release the offline checks parse our commands with (serving/versions.py, installed by
    # scripts/setup). A stack file cannot move it on its own: a new release is pinned there first,
    # so the tests run against the version the image will run.
    version: str = SGLANG_VERSION
    # Pinned serve image of the same release. Never `:latest`: the launch command is only known to
    # parse for this release. A digest may follow the tag (`...:v0.5.23-cu130@sha256:...`).
    image: ImageReference = f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130"

    @field_validator("version")
    @classmethod
    def _is_the_checked_release(cls, value: str) -> str:
        if value != SGLANG_VERSION:
            raise ValueError(
                f"{value!r} is not the SGLang release the offline checks use ({SGLANG_VERSION}); "
                "bump serving/versions.py, re-run ./scripts/setup and the tests to change it"
            )
        return value

    @model_validator(mode="after")
    def _image_pins_version(self) -> SGLangRelease:
        name = self.image.split("@", 1)[0]
        tag = name.rsplit(":", 1)[-1] if ":" in name.split("/")[-1] else ""
        if not tag or tag == "latest":
            raise ValueError(f"image: {self.image!r} is unpinned; use a tag of release v{self.version}")
        # "v0.5.23" or "v0.5.23-cu130", never "v0.5.230" or "v0.5.23.post1" (other releases).
        if not re.fullmatch(rf"v?{re.escape(self.version)}(-[\w.-]+)?", tag):
            raise ValueError(f"image: tag {tag!r} is not SGLang release {self.version} (the version field)")
        return self


# --- SGLang launch flags ---------------------------------------------------------------------------


class _ShapesKernels:
    """Marks a setting that changes the compiled DeepGEMM kernels (how to use it: `Launch`)."""

    def __repr__(self) -> str:
        return "SHAPES_KERNELS"


SHAPES_KERNELS = _ShapesKernels()


class FlagSection(_Section):
    """A group of SGLang launch flags: each field is the flag of its name (how to add one: `Launch`)."""

    # Put in front of each field name to spell its flag (`num_steps` -> `--speculative-num-steps`).
    FLAG_PREFIX: ClassVar[str] = ""


# Sparse-attention (DSA) kernels of 0.5.23 that run on Blackwell. The parser also offers ROCm-only
# (triton, aiter), XPU and Hopper-only (fa3) kernels, which cannot run on a B200.
DsaBackend = Literal["trtllm", "flashmla_sparse", "flashmla_kv", "flashmla_auto", "flashinfer_sparse_mla", "tilelang"]
# MoE runners for FP8 experts on Blackwell.
MoeRunnerBackend = Literal[
    "auto", "flashinfer_trtllm", "flashinfer_cutlass", "flashinfer_cutedsl", "deep_gemm", "cutlass", "triton"
]


class Backends(FlagSection):
    """Blackwell kernels. TRT-LLM for both sparse-attention phases avoids the flashmla_kv decode
    accuracy regression on B200 (sglang#21291). `dsa` is 0.5.23's name for the recipe's `nsa`
    (the recipe's nsa-named decode/prefill backend flags are gone; `nsa` survives only as a
    deprecated alias of the attention backend)."""

    # GLM-5.1 is a DeepSeek-sparse-attention model: no other attention backend serves it.
    attention_backend: Literal["dsa"] = "dsa"
    dsa_decode_backend: DsaBackend = "trtllm"
    dsa_prefill_backend: DsaBackend = "trtllm"
    moe_runner_backend: MoeRunnerBackend = "flashinfer_trtllm"
    # Fuses the TP all-reduce with residual + RMSNorm to cut communication. The recipe's
    # `--enable-flashinfer-allreduce-fusion` is deprecated in 0.5.23 in favour of naming the
    # backend; "auto" picks mnnvl on B200. "disabled" forces fusion off.
    flashinfer_allreduce_fusion_backend: Literal["auto", "mnnvl", "trtllm", "cutedsl", "disabled"] = "auto"


class Speculative(FlagSection):
    """EAGLE with GLM's built-in MTP head: 3 draft steps, top-1, 4 draft tokens.

    EAGLE and NEXTN (its alias) draft with the MTP layer inside the served checkpoint. EAGLE3 is not
    offered: it needs a separate draft model, which this config has no field for. Without an
    algorithm SGLang gets none of these flags."""

    FLAG_PREFIX: ClassVar[str] = "speculative_"

    algorithm: Literal["EAGLE", "NEXTN"] | None = "EAGLE"
    num_steps: PositiveInt = 3
    eagle_topk: PositiveInt = 1
    num_draft_tokens: PositiveInt = 4

    @model_validator(mode="after")
    def _draft_window_covers_steps(self) -> Speculative:
        if self.algorithm and self.eagle_topk == 1 and self.num_draft_tokens != self.num_steps + 1:
            raise ValueError(
                f"num_draft_tokens: with eagle_topk 1 it must be num_steps + 1 ({self.num_steps + 1}), "
                f"got {self.num_draft_tokens}"
            )
        return self


class Parsers(FlagSection):
    """Splits chain-of-thought into `reasoning_content` and formats GLM tool calls. Only the parsers
    of the pinned release that read GLM's output are offered (tests check each is one of its
    choices); null leaves the flag out."""

    reasoning_parser: Literal["glm45"] | None = "glm45"
    tool_call_parser: Literal["glm47", "glm45", "glm"] | None = "glm47"


# Far above what 8 GPUs hold; only stops a typo from reaching SGLang.
MAX_TOKENS = 16 * 1024 * 1024
MAX_RUNNING_REQUESTS = 4096


class Memory(FlagSection):
    # BF16 KV: FP8 KV crashes with EAGLE on Blackwell (sglang#22359) and is slower (sglang#17526). The
    # recipe got BF16 by omitting the flag, but in 0.5.23 "auto" with DSA on sm100 resolves to
    # fp8_e4m3 (arg_groups/overrides.py), so BF16 must now be asked for by name. DSA models accept
    # only these (SGLang asserts bfloat16 or fp8_e4m3 after resolving "auto"). The attention
    # kernels are compiled for one KV dtype.
    kv_cache_dtype: Annotated[Literal["auto", "bfloat16", "fp8_e4m3"], SHAPES_KERNELS] = "bfloat16"
    # Aggressive KV reservation after weights; safe on 192 GB per GPU.
    mem_fraction_static: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.88
    # Beyond 48, EAGLE verifier queues grow and TTFT spikes.
    max_running_requests: Annotated[int, Field(gt=0, le=MAX_RUNNING_REQUESTS)] = 48
    # Caps one prefill batch against prefill storms / OOM.
    max_prefill_tokens: Annotated[int, Field(gt=0, le=MAX_TOKENS)] = 32768
    max_total_tokens: Annotated[int, Field(gt=0, le=MAX_TOKENS)] = 65536

    @model_validator(mode="after")
    def _prefill_fits_total(self) -> Memory:
        if self.max_prefill_tokens > self.max_total_tokens:
            raise ValueError(
                f"max_prefill_tokens: {self.max_prefill_tokens} exceeds max_total_tokens ({self.max_total_tokens})"
            )
        return self


class Stability(FlagSection):
    trust_remote_code: bool = True
    # 20 minutes: the default watchdog kills the server during the 5-7 minute weight load.
    watchdog_timeout: Seconds = 1200
    # Prometheus metrics on /metrics.
    enable_metrics: bool = True


class Launch(_Section):
    """The flags of `sglang.launch_server`, by section; serving/commands.py derives the argv.

    To add a flag, add one field to the section it belongs to, named as SGLang names the flag without
    its dashes, typed with the values this deployment can run, defaulted, with a comment saying why:

        chunked_prefill_size: PositiveInt = 8192

    commands.py passes it as `--chunked-prefill-size 8192`: `--<name> <value>`, a bool as a switch
    given when true, None not at all. If the flag changes the compiled DeepGEMM kernels, mark it:

        chunked_prefill_size: Annotated[PositiveInt, SHAPES_KERNELS] = 8192

    Marked, it is one of kernel_inputs(), so changing it re-runs the compile job, and the verify job
    keeps it in its view of the config (infra/job_views.py); unmarked, a change redeploys the app
    only. A section marked here shapes kernels with every flag it holds. Only a flag whose argument
    is not `--<name> <value>`, or that depends on another flag, needs code (in commands.py).
    """

    # Only the server listens, so this is not a flag of the compile (commands.launch_command).
    port: Annotated[int, Field(ge=1024, le=65535)] = 8000
    # Each backend is a choice of kernels; speculative decoding compiles its draft and verify shapes.
    backends: Annotated[Backends, SHAPES_KERNELS] = Backends()
    speculative: Annotated[Speculative, SHAPES_KERNELS] = Speculative()
    parsers: Parsers = Parsers()
    memory: Memory = Memory()
    stability: Stability = Stability()

    def sections(self) -> list[FlagSection]:
        """The flag sections, in the order their flags appear on the command line."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return [value for value in values if isinstance(value, FlagSection)]

    def kernel_flags(self) -> dict[str, Any]:
        """What shapes kernels, by name: a marked section as a whole, else each marked flag."""
        found: dict[str, Any] = {}
        for section, flag, value in self._kernel_shaping():
            if flag is None:
                found[section] = value.model_dump()
            else:
                found[flag] = value
        return found

    def kernel_flags_only(self) -> Launch:
        """This launch with every setting that does not shape kernels at its default."""
        kept: dict[str, Any] = {}
        for section, flag, value in self._kernel_shaping():
            if flag is None:
                kept[section] = value
            else:
                kept.setdefault(section, {})[flag] = value
        return type(self).model_validate(kept)

    def _kernel_shaping(self) -> Iterator[tuple[str, str | None, Any]]:
        # (section, None, section) for a marked section, (section, flag, value) for a marked flag.
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if SHAPES_KERNELS in field.metadata:
                yield name, None, value
            elif isinstance(value, FlagSection):
                for flag, flag_field in type(value).model_fields.items():
                    if SHAPES_KERNELS in flag_field.metadata:
                        yield name, flag, getattr(value, flag)


# Each container holds 8 B200s: more than this many is a typo, not a plan (raise it here if you mean it).
MAX_CONTAINERS = 64
# Requests one container takes at once; SGLang queues beyond its own max_running_requests anyway.
MAX_CONCURRENT_INPUTS = 1000


class Scaling(_Section):
    # Scale to zero when idle; the first request after idle pays the cold start.
    min_containers: Annotated[int, Field(ge=0, le=MAX_CONTAINERS)] = 0
    # Hard cap on spend: 3 x 48 running requests.
    max_containers: Annotated[int, Field(gt=0, le=MAX_CONTAINERS)] = 3
    # Keep a container warm 15 minutes after its last request, for bursty traffic. Modal takes 2-3600 s.
    scaledown_window: Annotated[
        int, Field(ge=MODAL_SCALEDOWN_WINDOW_RANGE[0], le=MODAL_SCALEDOWN_WINDOW_RANGE[1], description="seconds")
    ] = 900
    # HTTP requests one container takes at once (SGLang batches them internally).
    max_concurrent_inputs: Annotated[int, Field(gt=0, le=MAX_CONCURRENT_INPUTS)] = 20

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Scaling:
        if self.min_containers > self.max_containers:
            raise ValueError(
                f"min_containers: {self.min_containers} is above max_containers ({self.max_containers})"
            )
        return self


# Modal gives a stopping container's exit handler a bounded time before it kills the container;
# a grace longer than a few minutes would only be cut short.
MAX_SHUTDOWN_GRACE_SECONDS = 300


class Timeouts(_Section):
    server: Seconds = 86400  # 24 h container life limits fragmentation and leaks
    startup: Seconds = 900  # weight load + health + warmup must finish within 15 min
    download: Seconds = 7200  # 2 h ceiling for the ~700 GB pull
    compile: Seconds = 3600  # 1 h ceiling for the DeepGEMM compile
    verify: Seconds = 300
    warmup_request: Seconds = 300  # each; first requests pay CUDA-graph capture, long prefill most
    shutdown_grace: Annotated[int, Field(gt=0, le=MAX_SHUTDOWN_GRACE_SECONDS)] = 30  # SIGTERM, then SIGKILL

    @model_validator(mode="after")
    def _fit_in_each_other(self) -> Timeouts:
        if self.startup >= self.server:
            raise ValueError("startup: must be shorter than timeouts.server")
        if self.warmup_request >= self.startup:
            raise ValueError(f"warmup_request: must be shorter than timeouts.startup ({self.startup})")
        return self


class Download(_Section):
    max_workers: Annotated[int, Field(gt=0, le=64)] = 8
    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    # Backoff before attempt 2, 3, ...: 30 s, 60 s, 90 s.
    backoff_seconds: Annotated[int, Field(gt=0, le=3600)] = 30
    # Physical cores and MiB Modal reserves for the download container: at least Modal's default
    # reservation (0.125 cores, 128 MiB); Modal refuses requests above its per-container maximum at
    # deploy time without publishing it, so these caps stay at sizes a network-bound download could use.
    cpu: Annotated[float, Field(ge=0.125, le=64.0)] = 4.0
    memory_mib: Annotated[int, Field(ge=128, le=256 * 1024)] = 32768


class Storage(_Section):
    weights_volume: ModalName = "glm51-model-weights"
    kernels_volume: ModalName = "glm51-deepgemm-cache"
    # Fixed mount points, identical at compile and serve time, so paths baked into the DeepGEMM
    # cache and SGLang's --model-path agree.
    weights_mount: MountPath = "/model-cache"
    kernels_mount: MountPath = "/dg-cache"

    @model_validator(mode="after")
    def _distinct(self) -> Storage:
        # "field: why", so format_errors names the field (storage.kernels_volume: ...).
        if self.weights_volume == self.kernels_volume:
            raise ValueError(f"kernels_volume: must differ from weights_volume ({self.weights_volume!r})")
        weights, kernels = self.weights_mount, self.kernels_mount
        if weights == kernels or weights.startswith(kernels + "/") or kernels.startswith(weights + "/"):
            # One volume mounted inside the other hides part of it (or all of it).
            raise ValueError(f"kernels_mount: must not be, contain or lie inside weights_mount ({weights!r})")
        return self


class SecretNames(_Section):
    """Names of Modal secrets and the keys inside them; values never live in this model."""

    hf_token: ModalName = "huggingface-secret"
    hf_token_key: str = "HF_TOKEN"
    api_key: ModalName = "glm51-api-key"
    api_key_key: str = "API_KEY"
    # The proxy auth token the keep-alive sends to Modal's edge (edge.requires_proxy_auth): its id and
    # secret, under these keys. Only the keep-alive reads it; the server never needs it.
    edge_token: ModalName = "glm51-edge-token"
    edge_token_id_key: str = "EDGE_TOKEN_ID"
    edge_token_secret_key: str = "EDGE_TOKEN_SECRET"

    @field_validator("hf_token_key", "api_key_key", "edge_token_id_key", "edge_token_secret_key")
    @classmethod
    def _env_var_name(cls, value: str) -> str:
        check_env_var_name(value)
        if is_reserved_env_var(value):
            # The secret's keys become environment variables of the container, over ours.
            raise ValueError(f"{value!r} is an environment variable the deployment or its libraries set or read")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> SecretNames:
        # One Modal secret for both would have each `pulumi up` overwrite the other's value.
        if self.hf_token == self.api_key:
            raise ValueError(f"api_key: must differ from hf_token ({self.hf_token!r}): each is its own Modal secret")
        if self.edge_token in (self.hf_token, self.api_key):
            raise ValueError(f"edge_token: must differ from hf_token and api_key ({self.edge_token!r})")
        # Each key becomes an environment variable of the containers: two alike would overwrite each other.
        first_with: dict[str, str] = {}
        for field in ("hf_token_key", "api_key_key", "edge_token_id_key", "edge_token_secret_key"):
            key = getattr(self, field)
            if key in first_with:
                raise ValueError(f"{field}: must differ from {first_with[key]} ({key!r})")
            first_with[key] = field
        return self


class Edge(_Section):
    """What Modal's edge lets through to the server, before any container starts.

    With `requires_proxy_auth` (the default), a request reaches the server only with the `Modal-Key` and
    `Modal-Secret` headers of a proxy auth token allowed in the app's environment (the stack creates
    them); any other request is answered 401 by Modal and starts nothing. Without it anyone who knows
    the URL starts 8x B200 with one request, whatever path it asks for: SGLang checks the API key
    only inside a running container, and leaves /health*, /ready* and /metrics open even with one."""

    requires_proxy_auth: bool = True


class KeepAlive(_Section):
    """Optional business-hours /health ping that keeps one container warm. It pings this app's own
    web endpoint, as Modal reports it (serving/app.py): the request carries the API key, so its
    target is never a setting."""

    enabled: bool = False
    # Every 10 minutes, 08:00-18:59 UTC, Monday to Friday.
    schedule: str = "*/10 8-18 * * 1-5"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)


class DeploymentConfig(_Section):
    app_name: ModalName = "glm-5.1-production"
    model: ModelSource = ModelSource()
    hardware: Hardware = Hardware()
    parallelism: Parallelism = Parallelism()
    sglang: SGLangRelease = SGLangRelease()
    launch: Launch = Launch()
    scaling: Scaling = Scaling()
    timeouts: Timeouts = Timeouts()
    download: Download = Download()
    storage: Storage = Storage()
    secrets: SecretNames = SecretNames()
    keepalive: KeepAlive = KeepAlive()
    edge: Edge = Edge()

    @model_validator(mode="after")
    def _cross_field_rules(self) -> DeploymentConfig:
        # Each message starts with the dotted field path so preview errors name the property.
        if self.parallelism.tp != self.hardware.gpu_count:
            raise ValueError(
                f"parallelism.tp: {self.parallelism.tp} must equal hardware.gpu_count "
                f"({self.hardware.gpu_count}): SGLang shards the model over exactly TP GPUs"
            )
        if self.parallelism.tp % self.parallelism.ep:
            raise ValueError(
                f"parallelism.ep: {self.parallelism.ep} does not divide parallelism.tp ({self.parallelism.tp})"
            )
        kv_dtype = self.launch.memory.kv_cache_dtype
        if self.launch.speculative.algorithm and kv_dtype != "bfloat16":
            why = "resolves to fp8_e4m3 for DSA on Blackwell" if kv_dtype == "auto" else "is an FP8 KV cache"
            raise ValueError(
                f"launch.memory.kv_cache_dtype: {kv_dtype!r} {why}, which crashes with EAGLE speculative "
                "decoding on Blackwell (sglang#22359); use 'bfloat16' or set launch.speculative.algorithm to null"
            )
        if self.download.attempts * self.download.backoff_seconds >= self.timeouts.download:
            raise ValueError(
                f"download.backoff_seconds: {self.download.attempts} attempts backing off "
                f"{self.download.backoff_seconds} s each do not fit in timeouts.download ({self.timeouts.download} s)"
            )
        # Only the GPUs' memory, not launch.memory.mem_fraction_static: the jobs' views of this config
        # (infra/job_views.py) reset launch flags that do not shape kernels, and must stay valid.
        weights_gb = KNOWN_WEIGHTS_GB.get(self.model.repo)
        gpu_gb = GPU_MEMORY_GB[self.hardware.gpu_type]
        if weights_gb is not None and weights_gb / self.hardware.gpu_count >= gpu_gb:
            raise ValueError(
                f"hardware.gpu_count: {self.model.repo} is ~{weights_gb} GB of weights, "
                f"{weights_gb / self.hardware.gpu_count:.0f} GB per GPU at {self.hardware.gpu_count} GPUs, "
                f"more than a {self.hardware.gpu_type} holds ({gpu_gb} GB)"
            )
        return self

    # --- derived values: computed here so serving and infra cannot disagree ---

    @property
    def model_path(self) -> str:
        return f"{self.storage.weights_mount}/{self.model.directory}"

    @property
    def sentinel_path(self) -> str:
        return f"{self.model_path}/{WEIGHT_SENTINEL}"

    @property
    def download_record_path(self) -> str:
        return f"{self.model_path}/{DOWNLOAD_RECORD}"

    def weights_inputs(self) -> dict:
        """Inputs that change the downloaded weights: only these re-run the download job."""
        return {"repo": self.model.repo, "revision": self.model.revision, "weights": self.model.weights}

    def kernel_inputs(self) -> dict:
        """Inputs that change the compiled DeepGEMM kernels: only these re-run the compile job.

        The weights, the GPUs and their split, the SGLang release, the JIT caches it fills
        (serving/jit_caches.py), and the launch flags marked SHAPES_KERNELS. Scaling, timeouts,
        unmarked flags (parsers, memory limits), the API key and warmup do not shape kernels.
        """
        return {
            "model": self.weights_inputs(),
            "gpu": self.hardware.modal_gpu,
            "parallelism": self.parallelism.model_dump(),
            "sglang": self.sglang.model_dump(),
            # The JIT caches the compile warms on the kernels volume: another set needs another run.
            "jit_caches": jit_caches.layout(),
            **self.launch.kernel_flags(),
        }

    def kernel_fingerprint(self) -> str:
        """Short stable hash of kernel_inputs(), recorded in the compile marker."""
        return _digest(self.kernel_inputs())

    @property
    def compile_marker_name(self) -> str:
        # One marker per kernel fingerprint: a config that needs different kernels never mistakes
        # an older compile for its own.
        return f".compiled-{self.model.directory}-{self.kernel_fingerprint()}.json"

    @property
    def compile_marker_path(self) -> str:
        return f"{self.storage.kernels_mount}/{self.compile_marker_name}"

    def to_json(self) -> str:
        return self.model_dump_json()


# Cron fields in order, with their allowed ranges and names (as modal.Cron reads them).
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def _check_cron(expression: str) -> str:
    # A schedule Modal would reject fails at deploy time, after the image build; catch it at preview.
    fields = expression.split(" ")
    if not re.fullmatch(r"[A-Za-z0-9*,/-]+( [A-Za-z0-9*,/-]+)*", expression) or len(fields) != len(_CRON_FIELDS):
        raise ValueError(f"expected a 5-field cron expression (minute hour day month weekday), got {expression!r}")
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            span, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                raise ValueError(f"{name} field {text!r}: step {step!r} is not a positive number")
            if span == "*":
                continue
            bounds = span.split("-")
            if len(bounds) > 2:
                raise ValueError(f"{name} field {text!r}: {span!r} is not a value or a range")
            values = []
            for bound in bounds:
                if bound.lower() in names:
                    values.append(names.index(bound.lower()) + (1 if low == 1 else 0))
                elif bound.isdigit() and low <= int(bound) <= high:
                    values.append(int(bound))
                else:
                    raise ValueError(f"{name} field {text!r}: {bound!r} is not in {low}-{high}")
            if values != sorted(values):
                raise ValueError(f"{name} field {text!r}: range {span!r} runs backwards")
    return expression


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_from_env(environ: dict[str, str] | None = None) -> DeploymentConfig:
    """The config this process runs: the JSON in CONFIG_ENV_VAR, else the production defaults.

    Plain `modal deploy serving/app.py` without the variable deploys the recipe's defaults.
    """
    raw = (environ if environ is not None else os.environ).get(CONFIG_ENV_VAR)
    return DeploymentConfig.model_validate_json(raw) if raw else DeploymentConfig()


def format_errors(error) -> list[str]:
    """pydantic ValidationError -> ['field.path: message', ...] for operators."""
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        # Cross-field validators put the offending field first ("min_containers: ..."): fold it
        # into the path so every line reads "section.field: why".
        named = re.match(r"([a-z_][a-z0-9_.]*): (.*)", message, re.DOTALL)
        if named:
            path = f"{path}.{named[1]}" if path else named[1]
            message = named[2]
        lines.append(f"{path}: {message}" if path else message)
    return lines
