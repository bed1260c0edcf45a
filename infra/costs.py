"""What a job run or a deployment costs on Modal: the price table and duration ranges of the stack
config (`glm-modal:costs`, optional), and the arithmetic of an estimate. Pure: no Pulumi, no Modal.

Prices: Modal bills per second of each container's GPUs, CPU cores and memory (for CPU and memory:
the reservation, or the usage when that is higher, so the reservation is a lower bound). The defaults
are the published rates of modal.com/pricing, per second there, per hour here (x 3600), read on
PRICES_READ_ON from copies of that page (modal.com itself is not reachable from where this was
written): B200 $0.001736/s (techbytes.app and blaxel.ai, May and June 2026), CPU $0.0000131 per
physical core/s and memory $0.00000222 per GiB/s (beam.cloud, verified June 27, 2026, and
apis.io's Modal FinOps profile). Override any of them in the stack file when Modal's page says
otherwise; the date is printed with every estimate so a reader knows how old the figures are.

Durations: a job's last measured run when the stack has one, else the range stated here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.config import format_errors

# The stack config key (`glm-modal:costs`) of the table; absent means all defaults.
COSTS_KEY = "costs"

PRICES_READ_ON = "2026-11-29"
PRICES_SOURCE = "https://modal.com/pricing"

# Modal's published per-second rates, as $/h. Only GPU types whose rate was read are listed; a stack
# whose hardware.gpu_type has no rate here must add one (checked at preview).
MODAL_GPU_PER_HOUR = {
    "B200": 6.2496,  # $0.001736/s
    "H100": 3.9492,  # $0.001097/s
    "A100-80GB": 2.4984,  # $0.000694/s
    "L40S": 1.9512,  # $0.000542/s
    "L4": 0.7992,  # $0.000222/s
    "T4": 0.5904,  # $0.000164/s
}
MODAL_CPU_CORE_PER_HOUR = 0.04716  # $0.0000131 per physical core per second
MODAL_MEMORY_GIB_PER_HOUR = 0.007992  # $0.00000222 per GiB per second

# What a container reserves when its function asks for no cpu/memory (modal.com/docs/guide/resources).
MODAL_DEFAULT_CPU_CORES = 0.125
MODAL_DEFAULT_MEMORY_GIB = 0.125  # 128 MiB

NonNegative = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    # A stack file value "6.25" is not a number, and an unknown key is a typo.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Prices(_Strict):
    """$/h of one GPU by Modal type, of one physical CPU core and of one GiB of memory."""

    read_on: str = PRICES_READ_ON
    gpu_per_hour: dict[str, NonNegative] = Field(default_factory=lambda: dict(MODAL_GPU_PER_HOUR))
    cpu_core_per_hour: NonNegative = MODAL_CPU_CORE_PER_HOUR
    memory_gib_per_hour: NonNegative = MODAL_MEMORY_GIB_PER_HOUR


class SecondsRange(_Strict):
    low: Annotated[int, Field(ge=0)]
    high: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> SecondsRange:
        if self.low > self.high:
            raise ValueError(f"low: {self.low} is above high ({self.high})")
        return self


class Durations(_Strict):
    """How long each run takes when the stack has not measured it yet, in seconds."""

    # ~700 GB from the Hub: 30-60 minutes (the README's figure).
    download_full_weights: SecondsRange = SecondsRange(low=1800, high=3600)
    # Config and tokenizer files only.
    download_dummy_weights: SecondsRange = SecondsRange(low=30, high=300)
    # The recipe's ~10 minutes on 8x B200, up to the compile timeout's hour.
    compile: SecondsRange = SecondsRange(low=600, high=3600)
    # Two volume listings and a few small reads.
    verify: SecondsRange = SecondsRange(low=10, high=120)
    # A server container's start: weight load, health, warmup (6-10 min typical, 15 min timeout).
    cold_start: SecondsRange = SecondsRange(low=360, high=900)


class CostSettings(_Strict):
    """`glm-modal:costs`: the price table and the duration ranges estimates use."""

    prices: Prices = Prices()
    durations: Durations = Durations()


def load_costs(value: Any, gpu_type: str | None, key: str) -> tuple[CostSettings | None, list[str]]:
    """The stack's `costs` setting (None: the defaults), validated; problems name `key` and the field."""
    if value is None:
        value = {}
    if isinstance(value, str):  # structured YAML reaches the program as its JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, [f"{key}: must be an object (structured YAML under the key), not a string"]
    try:
        costs = CostSettings.model_validate(value)
    except ValidationError as error:
        return None, [f"{key}.{line}" for line in format_errors(error)]
    if gpu_type is not None and gpu_type not in costs.prices.gpu_per_hour:
        return None, [f"{key}.prices.gpu_per_hour: no price for {gpu_type} (the deployment's hardware.gpu_type)"]
    return costs, []


# ---- the arithmetic ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    """What one container reserves."""

    cpu_cores: float
    memory_gib: float
    gpu_type: str | None = None
    gpu_count: int = 0

    def describe(self) -> str:
        if self.gpu_type:
            return f"{self.gpu_count}x {self.gpu_type}"
        return f"{self.cpu_cores:g} CPU cores, {self.memory_gib:g} GiB"

    def per_hour(self, prices: Prices) -> float:
        gpus = self.gpu_count * prices.gpu_per_hour[self.gpu_type] if self.gpu_type else 0.0
        return gpus + self.cpu_cores * prices.cpu_core_per_hour + self.memory_gib * prices.memory_gib_per_hour


def modal_default_hardware(gpu_type: str | None = None, gpu_count: int = 0) -> Hardware:
    """A function that asks for no cpu/memory (only, perhaps, GPUs)."""
    return Hardware(MODAL_DEFAULT_CPU_CORES, MODAL_DEFAULT_MEMORY_GIB, gpu_type, gpu_count)


@dataclass(frozen=True)
class RunEstimate:
    """One run an `up` would make: what, on what, for how long, for how much."""

    name: str  # the resource (download-weights, ..., app)
    what: str  # e.g. "runs compile_deepgemm", "deploys glm-5.1-staging"
    hardware: Hardware
    seconds: tuple[float, float]
    basis: str  # where the duration comes from
    usd: tuple[float, float]

    def line(self) -> str:
        low, high = self.seconds
        duration = format_seconds(low) if low == high else f"{format_seconds(low)}-{format_seconds(high)}"
        return (f"{self.name}: {self.what} on {self.hardware.describe()}: {duration} ({self.basis}), "
                f"est. {format_usd_range(self.usd)}")  # fmt: skip

    def as_output(self) -> dict[str, Any]:
        return {"name": self.name, "what": self.what, "hardware": self.hardware.describe(),
                "seconds": list(self.seconds), "basis": self.basis, "usd": [round(v, 2) for v in self.usd]}  # fmt: skip


def estimate_run(name: str, what: str, hardware: Hardware, prices: Prices, *,
                 measured_seconds: float | None, configured: SecondsRange, basis: str) -> RunEstimate:  # fmt: skip
    """A run priced for its last measured duration, else for the configured range."""
    if measured_seconds is not None:
        seconds = (float(measured_seconds), float(measured_seconds))
        basis = "last run"
    else:
        seconds = (float(configured.low), float(configured.high))
    rate = hardware.per_hour(prices) / 3600
    return RunEstimate(name, what, hardware, seconds, basis, (seconds[0] * rate, seconds[1] * rate))


def format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m" + (f"{rest:02d}s" if rest else "")
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h" + (f"{minutes:02d}m" if minutes else "")


def format_usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else "<$0.01"


def format_usd_range(usd: tuple[float, float]) -> str:
    low, high = usd
    return format_usd(low) if format_usd(low) == format_usd(high) else f"{format_usd(low)}-{format_usd(high)}"
