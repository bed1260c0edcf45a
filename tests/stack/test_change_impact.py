"""Which change costs what: for each edit of the README's table, exactly the expected jobs run again
and exactly the expected resources update or are replaced, in the preview and in the `up`.

One staging stack is applied once; the cases then edit it one after the other (each case's edit is
applied on top of the previous ones, as a sequence of pull requests would), because applying a stack
from scratch is the expensive part. "replace" of a job means it runs again; "update" of a job means
it records a new config for its next run and runs nothing. Each preview's cost lines (and its
estimate output) must name exactly the runs and the deploy its `up` then makes (infra/cost_preview.py).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import infra.resources
from serving.config import DeploymentConfig

from .conftest import Rig, rig
from .harness import JOB_FUNCTIONS, JOBS, PROJECT, RUN_COST_OUTPUT, Edit, StackConfig, StackHarness, StackRun
from .harness import deployment_edits as deployment
from .harness import secret_edit as secret

# One worker runs every case, in order: they share the applied stack (applying one is ~half a
# minute) and each case's edit builds on the previous ones.
pytestmark = pytest.mark.xdist_group("change-impact")

# The smoke test (on in staging) follows the app: a new deployment version re-runs it.
FOLLOWS_APP = {"smoke-test": "update"}
APP = {"app": "update", **FOLLOWS_APP}
RERUN_COMPILE = {"compile-kernels": "replace", "verify-setup": "replace", **APP}
RERUN_ALL = {"download-weights": "replace", **RERUN_COMPILE}


@dataclass(frozen=True)
class Change:
    id: str
    edit: Edit
    expected: dict[str, str]  # resource -> "update" | "replace"; every other resource: "same"


def infra_setting(key: str, value: object) -> Edit:
    return lambda config: config.values.__setitem__(f"{PROJECT}:{key}", value)


def source_change(config: StackConfig) -> None:
    """Marker: the case edits serving/ (see `edit_serving_source`), not the config."""


CHANGES = [
    # Nothing but the app: scaling knobs, serving timeouts, warmup, the API key, the code.
    Change("scaling-max-containers", deployment(scaling__max_containers=2), APP),
    Change("scaling-scaledown-window", deployment(scaling__scaledown_window=600), APP),
    Change("scaling-concurrent-inputs", deployment(scaling__max_concurrent_inputs=10), APP),
    Change("startup-timeout", deployment(timeouts__startup=1200), APP),
    Change("warmup-request-timeout", deployment(timeouts__warmup_request=240), APP),
    Change("api-key", secret("apiKey", "canary-rotated-api-key-0b8e33c1f7a2"), {"api-key-secret": "update", **APP}),
    Change("serving-source", source_change, APP),
    # The HF token is only the download's: its secret changes, nothing runs, nothing redeploys.
    Change("hf-token", secret("hfToken", "hf_canaryRotatedToken61d0"), {"hf-token-secret": "update"}),
    # Launch flags that do not shape kernels: the compile records them for its next run.
    Change("max-running-requests", deployment(launch__memory__max_running_requests=32),
           {"compile-kernels": "update", **APP}),
    Change("parsers", deployment(launch__parsers__tool_call_parser="glm45"), {"compile-kernels": "update", **APP}),
    Change("served-name", deployment(model__served_name="glm-5.1-rehearsal"), {"compile-kernels": "update", **APP}),
    # A job's own settings: recorded for its next run.
    Change("download-timeout", deployment(timeouts__download=5400), {"download-weights": "update", **APP}),
    Change("download-workers", deployment(download__max_workers=16), {"download-weights": "update", **APP}),
    Change("compile-timeout", deployment(timeouts__compile=5400), {"compile-kernels": "update", **APP}),
    Change("verify-timeout", deployment(timeouts__verify=600), {"verify-setup": "update", **APP}),
    # The keep-alive reads the stack's proxy auth token from a secret, made with it.
    Change("keepalive", deployment(keepalive__enabled=True), {"edge-token-secret": "create", **APP}),
    # Who passes Modal's edge: a client token is made (or revoked and deleted) and nothing redeploys;
    # the edge's own setting changes the Server's definition (and the keep-alive's token secret goes
    # with it: an open edge wants none).
    Change("client-token-added", infra_setting("clientTokens", ["search", "batch-eval"]),
           {"client-proxy-token-search": "create", "client-proxy-token-batch-eval": "create"}),
    Change("client-token-removed", infra_setting("clientTokens", ["search"]),
           {"client-proxy-token-batch-eval": "delete"}),
    Change("edge-opened", deployment(edge__requires_proxy_auth=False), {"edge-token-secret": "delete", **APP}),
    Change("edge-closed", deployment(edge__requires_proxy_auth=True), {"edge-token-secret": "create", **APP}),
    # Kernel-shaping settings: compile (and verify) again.
    Change("expert-parallelism", deployment(parallelism__ep=2), RERUN_COMPILE),
    Change("gpu-count-and-tp", deployment(hardware__gpu_count=4, parallelism__tp=4, parallelism__ep=1), RERUN_COMPILE),
    Change("moe-backend", deployment(launch__backends__moe_runner_backend="triton"), RERUN_COMPILE),
    Change("speculative-steps", deployment(launch__speculative__num_steps=2, launch__speculative__num_draft_tokens=3),
           RERUN_COMPILE),
    Change("kv-cache-dtype", deployment(launch__speculative__algorithm=None, launch__memory__kv_cache_dtype="fp8_e4m3"),
           RERUN_COMPILE),
    # Another build of the pinned release (the version itself is pinned to the one the offline checks
    # parse commands with). The download's app also builds this image, so the download records it.
    Change("sglang-image", deployment(sglang__image="lmsysorg/sglang:v0.5.23-cu129"),
           {"download-weights": "update", **RERUN_COMPILE}),
    # The weights: download, compile and verify again.
    Change("model-revision", deployment(model__revision="4b1d2c0ffee5"), RERUN_ALL),
    Change("weights-mode", deployment(model__weights="full"), RERUN_ALL),
    Change("model-repo", deployment(model__repo="zai-org/GLM-5.1-FP8-Rehearsal"), RERUN_ALL),
    # How and with which tag the app is deployed: used by its next deploy, never a reason for one.
    Change("deploy-strategy", infra_setting("deployStrategy", "recreate"), {}),
    Change("deploy-tag", infra_setting("deployTag", "release-7"), {}),
]  # fmt: skip


@dataclass
class AppliedStack:
    rig: Rig
    harness: StackHarness
    config: StackConfig
    # The copy of serving/ the program digests in this module, so a case can edit "the code".
    serving_source: Path
    # The preview before the stack existed, as `pulumi preview` and as `pulumi preview --diff`.
    first_preview: StackRun
    first_diff_preview: StackRun


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedStack]:
    source = tmp_path_factory.mktemp("source") / "serving"
    shutil.copytree(infra.resources.SERVING_DIR, source, ignore=shutil.ignore_patterns("__pycache__"))
    config = StackConfig.of("staging")
    # The runners import serving/ from the same copy (ahead of the installed one), so a case's edit
    # reaches Modal as it does from an operator's checkout: as a changed mount of the app's functions.
    with pytest.MonkeyPatch.context() as patch, rig(extra_env={"PYTHONPATH": str(source.parent)}) as running:
        patch.setattr(infra.resources, "SERVING_DIR", source)
        harness = running.harness("staging", config)
        first_preview = harness.preview()
        first_diff_preview = harness.preview(diff=True)
        baseline = harness.up()
        assert baseline.ok, baseline.text
        yield AppliedStack(running, harness, config, source, first_preview, first_diff_preview)


def edit_serving_source(applied: AppliedStack) -> None:
    with (applied.serving_source / "warmup.py").open("a") as file:
        file.write("\n# a changed warmup prompt\n")


def test_the_first_preview_prices_every_job_and_the_deploy(applied: AppliedStack) -> None:
    preview = applied.first_preview
    assert preview.ok, preview.text
    assert preview.announced_runs == JOB_FUNCTIONS and preview.announced_deploy
    # Nothing measured yet: each job priced for its configured range, on its hardware.
    lines = "\n".join(preview.cost_lines)
    assert "compile-kernels: runs compile_deepgemm on 8x B200: 10m-1h (config range), est. $8.33-$50.00" in lines
    assert "download-weights: runs download_model on 4 CPU cores, 32 GiB: 30s-5m (config range for dummy" in lines
    low, high = preview.outputs[RUN_COST_OUTPUT]["total_usd"]
    assert 0 < low < high
    # With --diff the CLI writes the lines to stderr; the estimate is among the outputs on stdout.
    diff = applied.first_diff_preview
    assert diff.ok and diff.announced_runs == JOB_FUNCTIONS and diff.announced_deploy
    assert "[cost] " in diff.outcome.stderr and "run_cost_estimate" in diff.outcome.stdout


@pytest.mark.parametrize("change", CHANGES, ids=[change.id for change in CHANGES])
def test_a_change_costs_exactly_what_the_readme_says(change: Change, applied: AppliedStack) -> None:
    if change.edit is source_change:
        edit_serving_source(applied)
    config = copy.deepcopy(applied.config)
    change.edit(config)
    DeploymentConfig.model_validate(config.deployment)  # the edit itself is a valid config
    calls_before = len(applied.rig.cp.function_calls)
    chats_before = len(applied.rig.web.chat_requests())

    preview = applied.harness.preview(config)
    up = applied.harness.up(config)
    if up.ok:
        applied.config = config

    assert preview.ok, preview.text
    assert preview.modal_calls == []
    assert preview.changed() == change.expected
    assert up.ok, up.text
    assert up.changed() == change.expected

    rerun = {name for name in JOBS if change.expected.get(name) == "replace"}
    ran = [call.tag for call in applied.rig.cp.function_calls[calls_before:]]
    assert sorted(ran) == sorted(JOB_FUNCTIONS[name] for name in rerun)
    assert up.function_runs == len(rerun)
    assert up.deploys == (1 if "app" in change.expected else 0)
    # The preview said exactly which runs the `up` then made, and nothing at all when it made none.
    assert sorted(preview.announced_runs.values()) == sorted(ran)
    assert preview.announced_deploy == (up.deploys == 1)
    assert sorted(preview.estimated_runs) == sorted([*preview.announced_runs, *(["app"] if up.deploys else [])])
    if not ran and not up.deploys:
        assert preview.cost_lines == [] and preview.outputs[RUN_COST_OUTPUT]["total_usd"] == [0, 0]
    # The smoke test ran exactly when the app was redeployed.
    assert len(applied.rig.web.chat_requests()) - chats_before == (1 if "app" in change.expected else 0)


def test_after_all_changes_a_second_up_does_nothing(applied: AppliedStack) -> None:
    preview = applied.harness.preview(applied.config, expect_no_changes=True)
    again = applied.harness.up(applied.config, expect_no_changes=True)
    assert preview.ok and again.ok and set(again.ops().values()) == {"same"}
    assert preview.cost_lines == [] and preview.outputs[RUN_COST_OUTPUT]["runs"] == []
    assert again.mutating_modal_calls == [] and (again.function_runs, again.deploys) == (0, 0)
