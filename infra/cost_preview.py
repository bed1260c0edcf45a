"""Every preview says what the `up` would run on Modal, on what hardware, for how long and for how
much; a preview whose `up` runs nothing says nothing.

Which runs: the engine's own plan, not a second guess of it. A job whose step is a create or a
replace (a changed trigger, an artifact a refresh found gone, or a new run of a job it depends on)
has no id yet in a preview, and only those steps run the job; a job that only records a new config
(`~ update`) or stays the same keeps its id. Likewise the app deploys exactly when its deployment
version is not known yet (its one update that deploys nothing, of web_endpoint or timeout_seconds
alone, is not one this program makes: both are constants in infra/resources.py). So the program
asks, in a preview, which of these outputs are unknown (`_unknown`), which needs no Modal call and
no provider code.

Where it shows: one info line per run (`[cost] compile-kernels: runs compile_deepgemm on 8x B200:
...`), attached to that resource, and a total on the stack, which `pulumi preview` prints under
"Diagnostics" (as does the PR comment of pulumi/actions; `--diff` writes them to stderr); and the stack
output RUN_COST_OUTPUT, which a preview shows under "Outputs" and carries in its engine events
(the stack's resource outputs event) for scripts. After an `up` nothing is pending, so the stored
output lists no runs (and a no-op preview shows no change of it).

How long: the job's last measured run (its `duration_seconds`, kept in the stack output
JOB_SECONDS_OUTPUT, which the next preview reads back through a reference to this same stack),
when that run was of the same kind (the same weights mode for the download, the same GPUs for the
compile); otherwise the range of `glm-modal:costs.durations` (infra/costs.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi

from infra.costs import (
    CostSettings,
    Hardware,
    RunEstimate,
    SecondsRange,
    estimate_run,
    format_usd,
    format_usd_range,
    modal_default_hardware,
)

if TYPE_CHECKING:
    from infra.resources import StackResources
    from infra.settings import StackSettings

# Stack outputs: the estimate of what the `up` runs, and each job's last measured run.
RUN_COST_OUTPUT = "run_cost_estimate"
JOB_SECONDS_OUTPUT = "job_run_seconds"

# Every cost line starts with this, so a reader (and a script) can find them among diagnostics.
LOG_PREFIX = "[cost] "


@dataclass(frozen=True)
class JobRun:
    """A job of the stack as the estimate sees it."""

    resource: pulumi.Resource
    id: pulumi.Output[str]
    duration_seconds: pulumi.Output[float]
    function: str
    hardware: Hardware
    configured: SecondsRange
    # What makes one run take as long as another: a measured run of another kind does not count.
    kind: str
    basis: str  # how the configured range is named in a line


def job_runs(settings: StackSettings, resources: StackResources) -> list[JobRun]:
    """The three setup jobs with the hardware serving/app.py gives their functions."""
    cfg = settings.deployment
    durations = settings.costs.durations
    full = cfg.model.weights == "full"
    gpus = modal_default_hardware(cfg.hardware.gpu_type, cfg.hardware.gpu_count)
    download_hardware = Hardware(cfg.download.cpu, cfg.download.memory_mib / 1024)
    return [
        JobRun(resources.download, resources.download.id, resources.download.duration_seconds, "download_model",
               download_hardware, durations.download_full_weights if full else durations.download_dummy_weights,
               kind=f"{cfg.model.weights} weights", basis=f"config range for {cfg.model.weights} weights"),
        JobRun(resources.compile, resources.compile.id, resources.compile.duration_seconds, "compile_deepgemm",
               gpus, durations.compile, kind=gpus.describe(), basis="config range"),
        JobRun(resources.verify, resources.verify.id, resources.verify.duration_seconds, "verify_setup",
               modal_default_hardware(), durations.verify, kind="verify", basis="config range"),
    ]  # fmt: skip


def deploy_estimate(settings: StackSettings, prices_and_durations: CostSettings) -> RunEstimate:
    """The app's deployment: no container starts until a request, except the `min_containers` kept
    warm and, on a stack with the smoke test, the one its request starts (then idle for the
    scaledown window)."""
    cfg = settings.deployment
    containers = max(cfg.scaling.min_containers, 1 if settings.infra.smoke_test else 0)
    hardware = modal_default_hardware(cfg.hardware.gpu_type, cfg.hardware.gpu_count)
    rate = hardware.per_hour(prices_and_durations.prices)
    cold = prices_and_durations.durations.cold_start
    if containers == 0:
        seconds, basis = SecondsRange(low=0, high=0), "no container starts until a request (min_containers 0)"
    elif cfg.scaling.min_containers:
        seconds = cold
        basis = f"cold start of {containers} container(s) kept warm, then {format_usd(rate * containers)}/h"
    else:
        window = cfg.scaling.scaledown_window
        seconds = SecondsRange(low=cold.low + window, high=cold.high + window)
        basis = "the smoke test's cold start + scaledown_window"
    run = estimate_run("app", f"deploys {cfg.app_name}", hardware, prices_and_durations.prices,
                       measured_seconds=None, configured=seconds, basis=basis)  # fmt: skip
    usd = (run.usd[0] * containers, run.usd[1] * containers)
    return RunEstimate(run.name, run.what, hardware, run.seconds,
                       f"{run.basis}; {format_usd(rate)}/h per container while one runs", usd)  # fmt: skip


def nothing_pending(costs: CostSettings) -> dict[str, Any]:
    return {"runs": [], "total_usd": [0, 0], "prices_read_on": costs.prices.read_on}


def summarize(runs: list[RunEstimate], costs: CostSettings) -> dict[str, Any]:
    total = (sum(run.usd[0] for run in runs), sum(run.usd[1] for run in runs))
    return {**nothing_pending(costs), "runs": [run.as_output() for run in runs],
            "total_usd": [round(total[0], 2), round(total[1], 2)]}  # fmt: skip


def total_line(summary: dict[str, Any]) -> str:
    names = ", ".join(run["name"] for run in summary["runs"])
    low, high = summary["total_usd"]
    return (f"total for this up ({names}): est. {format_usd_range((low, high))} "
            f"(Modal prices read {summary['prices_read_on']}; glm-modal:costs)")  # fmt: skip


async def _unknown(output: pulumi.Output[Any]) -> bool:
    """Whether a preview leaves `output` unknown, i.e. the engine plans to (re)create its resource.

    `Output.is_known` is the one member of pulumi 3.272.0's Output this uses that its source marks an
    implementation detail (there is no documented way to ask); tests/infra/test_cost_preview.py
    pins what it answers in a preview, so an SDK bump that changes it fails there."""
    return not await output.is_known()


async def _planned(outputs: list[pulumi.Output[Any]]) -> list[bool]:
    return [await _unknown(output) for output in outputs]


def _self_reference() -> pulumi.StackReference:
    """This stack's own outputs as the last `up` left them (read from the state backend, not Modal)."""
    return pulumi.StackReference(f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}")


def declare_cost_preview(settings: StackSettings, resources: StackResources) -> None:
    costs = settings.costs
    jobs = job_runs(settings, resources)
    if not pulumi.runtime.is_dry_run():
        # After this `up` nothing is pending; record what each job's last run measured.
        seconds = pulumi.Output.all(*[job.duration_seconds for job in jobs])
        pulumi.export(RUN_COST_OUTPUT, nothing_pending(costs))
        pulumi.export(JOB_SECONDS_OUTPUT, seconds.apply(
            lambda values: {job.function: {"seconds": value, "kind": job.kind}
                            for job, value in zip(jobs, values, strict=True) if value is not None}))  # fmt: skip
        return
    previous = _self_reference().get_output(JOB_SECONDS_OUTPUT)
    planned: Awaitable[list[bool]] = _planned([*(job.id for job in jobs), resources.app.deployment_version])
    deploy = deploy_estimate(settings, costs)

    def estimate(args: list[Any]) -> dict[str, Any]:
        runs_planned, measured, urns = args[0], args[1] or {}, args[2:]
        runs: list[RunEstimate] = []
        for job, runs_now, urn in zip(jobs, runs_planned, urns, strict=False):
            if not runs_now:
                continue
            last = measured.get(job.function) or {}
            seconds = last.get("seconds") if last.get("kind") == job.kind else None
            run = estimate_run(urn.rsplit("::", 1)[-1], f"runs {job.function}", job.hardware, costs.prices,
                               measured_seconds=seconds, configured=job.configured, basis=job.basis)  # fmt: skip
            runs.append(run)
            pulumi.log.info(LOG_PREFIX + run.line(), resource=job.resource)
        if runs_planned[-1]:
            runs.append(deploy)
            pulumi.log.info(LOG_PREFIX + deploy.line(), resource=resources.app)
        if not runs:
            return nothing_pending(costs)
        summary = summarize(runs, costs)
        pulumi.log.info(LOG_PREFIX + total_line(summary))
        return summary

    urns = [job.resource.urn for job in jobs]
    plan = pulumi.Output.all(pulumi.Output.from_input(planned), previous, *urns)
    pulumi.export(RUN_COST_OUTPUT, plan.apply(estimate))
    # Unchanged by a preview: the measurements are the last `up`'s.
    pulumi.export(JOB_SECONDS_OUTPUT, previous)
