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
MODAL_GPU_TYPES = ("T4", "L4", "A10G", "A100-40GB", "A100-80GB", "L40S", "H100", "H200", "B200")
BLACKWELL_GPU_TYPES = ("B200",)

# Written next to the weights after the snapshot download returns. The sentinel lands early in a
# parallel download, so on its own it cannot tell a finished download from an interrupted one, nor
# dummy-mode files from the full shards; this record can, so it is what proves the download job.
DOWNLOAD_RECORD = ".download-complete.json"

PositiveInt = Annotated[int, Field(gt=0)]
Seconds = Annotated[int, Field(gt=0, description="seconds")]
# A Modal object name (volume, secret, app), by Modal's own rule (serving/modal_rules.py).
ModalName = Annotated[str, AfterValidator(check_object_name)]


class _Section(BaseModel):
    # Unknown keys are typos in a stack file: fail loudly rather than silently ignore them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource(_Section):
    """Which weights to serve and under what name."""

    repo: str = "zai-org/GLM-5.1-FP8"
    # A commit sha pins the exact weights; a branch such as "main" moves under you, so the
    # download job's trigger (and the compile marker) would not notice an upstream change.
    revision: str = "main"
    served_name: str = "glm-5.1"
    # "full" downloads the ~700 GB of FP8 shards. "dummy" fetches only config and tokenizer files
    # and starts SGLang with random weights (`--load-format dummy`): for staging rehearsals of
    # config, cold start and the API surface without the 30-60 minute download.
    weights: Literal["full", "dummy"] = "full"

    @field_validator("repo")
    @classmethod
    def _repo_is_org_slash_name(cls, value: str) -> str:
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            raise ValueError(f"expected '<org>/<name>' of a Hugging Face repo, got {value!r}")
        return value

    @field_validator("revision", "served_name")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip() or any(ch.isspace() for ch in value):
            raise ValueError("must be non-empty and contain no whitespace")
        return value

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
    image: str = f"lmsysorg/sglang:v{SGLANG_VERSION}-cu130"

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
    # Splits chain-of-thought into `reasoning_content` and formats GLM tool calls.
    reasoning_parser: str = "glm45"
    tool_call_parser: str = "glm47"


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
    max_running_requests: PositiveInt = 48
    # Caps one prefill batch against prefill storms / OOM.
    max_prefill_tokens: PositiveInt = 32768
    max_total_tokens: PositiveInt = 65536

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


class Scaling(_Section):
    # Scale to zero when idle; the first request after idle pays the cold start.
    min_containers: Annotated[int, Field(ge=0)] = 0
    # Hard cap on spend: 3 x 48 running requests.
    max_containers: PositiveInt = 3
    # Keep a container warm 15 minutes after its last request, for bursty traffic.
    scaledown_window: Seconds = 900
    # HTTP requests one container takes at once (SGLang batches them internally).
    max_concurrent_inputs: PositiveInt = 20

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Scaling:
        if self.min_containers > self.max_containers:
            raise ValueError(
                f"min_containers: {self.min_containers} is above max_containers ({self.max_containers})"
            )
        return self


class Timeouts(_Section):
    server: Seconds = 86400  # 24 h container life limits fragmentation and leaks
    startup: Seconds = 900  # weight load + health + warmup must finish within 15 min
    download: Seconds = 7200  # 2 h ceiling for the ~700 GB pull
    compile: Seconds = 3600  # 1 h ceiling for the DeepGEMM compile
    verify: Seconds = 300
    warmup_request: Seconds = 300  # each; first requests pay CUDA-graph capture, long prefill most
    shutdown_grace: Seconds = 30  # SIGTERM, then SIGKILL after this


class Download(_Section):
    max_workers: PositiveInt = 8
    attempts: Annotated[int, Field(ge=1, le=10)] = 3
    # Backoff before attempt 2, 3, ...: 30 s, 60 s, 90 s.
    backoff_seconds: Seconds = 30
    cpu: Annotated[float, Field(gt=0)] = 4.0
    memory_mib: PositiveInt = 32768


class Storage(_Section):
    weights_volume: ModalName = "glm51-model-weights"
    kernels_volume: ModalName = "glm51-deepgemm-cache"
    # Fixed mount points, identical at compile and serve time, so paths baked into the DeepGEMM
    # cache and SGLang's --model-path agree.
    weights_mount: str = "/model-cache"
    kernels_mount: str = "/dg-cache"

    @field_validator("weights_mount", "kernels_mount")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value == "/":
            raise ValueError(f"must be an absolute path below /, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _distinct(self) -> Storage:
        # "field: why", so format_errors names the field (storage.kernels_volume: ...).
        if self.weights_volume == self.kernels_volume:
            raise ValueError(f"kernels_volume: must differ from weights_volume ({self.weights_volume!r})")
        if self.weights_mount == self.kernels_mount:
            raise ValueError(f"kernels_mount: must differ from weights_mount ({self.weights_mount!r})")
        return self


class SecretNames(_Section):
    """Names of Modal secrets and the keys inside them; values never live in this model."""

    hf_token: ModalName = "huggingface-secret"
    hf_token_key: str = "HF_TOKEN"
    api_key: ModalName = "glm51-api-key"
    api_key_key: str = "API_KEY"

    @field_validator("hf_token_key", "api_key_key")
    @classmethod
    def _env_var_name(cls, value: str) -> str:
        return check_env_var_name(value)


class KeepAlive(_Section):
    """Optional business-hours /health ping that keeps one container warm."""

    enabled: bool = False
    # Every 10 minutes, 08:00-18:59 UTC, Monday to Friday.
    schedule: str = "*/10 8-18 * * 1-5"
    url: str = ""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _check_cron(value)

    @model_validator(mode="after")
    def _url_when_enabled(self) -> KeepAlive:
        if self.enabled and not self.url.startswith("https://"):
            raise ValueError("url: keep-alive is enabled, so url must be the deployed https:// base URL")
        return self


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
        if self.timeouts.startup >= self.timeouts.server:
            raise ValueError("timeouts.startup: must be shorter than timeouts.server")
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
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
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
