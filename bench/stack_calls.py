# # What preview and a no-op up cost, per stack, through the real Pulumi CLI
#
# Drives both stacks of the real program (infra/) with the pinned `pulumi` binary and a local
# backend (tests/stack/cli.py: the engine starts our dynamic provider as its own process; the
# program runs inline through the Automation API), against the local Modal control plane, whose
# setup functions run the real serving/jobs.py. For each stack, in order:
#
#   1. `pulumi preview --diff` of a new stack      -> Modal calls (goal: 0)
#   2. `pulumi up` of the new stack                -> applies everything (3 jobs, 1 deploy)
#   3. `pulumi preview --expect-no-changes`        -> Modal calls (goal: 0)
#   4. `pulumi up --expect-no-changes`             -> mutating Modal calls, function calls, deploys (goal: 0)
#
# Then, on the same control plane, what the reference recipe does to an already set-up prod: its
# imperative re-run, `modal run serving/app.py::download_model`, `::compile_deepgemm`,
# `::verify_setup`, then `modal deploy serving/app.py` (with the stack's config), counted the same
# way: function runs, containers started by GPU type, deploys.
#
# Times are wall-clock seconds of each CLI command; everything on "Modal" answers at once here, so
# they measure the CLI, the engine, the program and the providers.
#
#     .venv/bin/python bench/stack_calls.py
#
# The last line is one JSON object: {"engine": "<pulumi version>", "staging": {...}, "prod": {...},
# "recipe_rerun": {...}}.

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path; the harness lives under tests/ at the root.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from serving.config import CONFIG_ENV_VAR, DeploymentConfig  # noqa: E402
from tests.stack.cli import PULUMI_VERSION  # noqa: E402
from tests.stack.conftest import Rig, rig  # noqa: E402
from tests.stack.harness import STACKS, StackConfig, StackRun, deploys, function_runs  # noqa: E402

RECIPE_STEPS = ("serving/app.py::download_model", "serving/app.py::compile_deepgemm", "serving/app.py::verify_setup")


def measure(running: Rig, stack: str) -> tuple[dict, dict[str, StackRun]]:
    harness = running.harness(stack)
    runs = {
        "preview (new)": harness.preview(diff=True),
        "up (new)": harness.up(),
        "preview (applied)": harness.preview(expect_no_changes=True),
        "up (no-op)": harness.up(expect_no_changes=True),
    }
    for name, run in runs.items():
        if not run.ok:
            raise SystemExit(f"{stack}: {name} failed:\n{run.text}")
    previews = (runs["preview (new)"], runs["preview (applied)"])
    noop = runs["up (no-op)"]
    summary = {
        "preview_modal_calls": sum(len(run.modal_calls) for run in previews),
        "noop_up_mutating_calls": len(noop.mutating_modal_calls),
        "noop_up_function_calls": noop.function_runs,
        "noop_up_deploys": noop.deploys,
        "preview_s": round(sum(run.seconds for run in previews), 3),
        "noop_up_s": round(noop.seconds, 3),
        "first_up_s": round(runs["up (new)"].seconds, 3),
    }
    return summary, runs


def gpu_containers(running: Rig, since: int) -> dict[str, int]:
    """Containers started since call `since` of the function-call list, by GPU type ("cpu": none)."""
    counts: Counter[str] = Counter()
    for call in running.cp.function_calls[since:]:
        record = running.cp.state.by_id[call.function_id]
        counts[record.gpu or "cpu"] += 1
    return dict(counts)


def recipe_rerun(running: Rig, stack: str) -> dict:
    """The recipe's commands on an applied stack, with the stack's config and environment."""
    config = StackConfig.of(stack)
    cfg = DeploymentConfig.model_validate(config.deployment)
    env = {**running.world.env, CONFIG_ENV_VAR: cfg.model_dump_json(),
           "MODAL_ENVIRONMENT": config.values["glm-modal:modalEnvironment"]}  # fmt: skip
    mark, calls_before = running.cp.mark(), len(running.cp.function_calls)
    modal = str(REPO_ROOT / ".venv" / "bin" / "modal")
    for command in [[modal, "run", step] for step in RECIPE_STEPS] + [[modal, "deploy", "serving/app.py"]]:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command[1:])} failed:\n{done.stdout}{done.stderr}")
    calls = running.cp.calls_since(mark)
    return {
        "function_runs": function_runs(calls),
        "gpu_containers": gpu_containers(running, calls_before),
        "deploys": deploys(calls),
        "mutating_calls": sum(1 for call in calls if call.mutating),
    }


def main() -> None:
    results: dict[str, object] = {"engine": PULUMI_VERSION}
    header = f"{'stack':8} {'run':18} {'seconds':>8} {'modal calls':>12} {'mutating':>9} {'functions':>10} " \
             f"{'deploys':>8}  resources"  # fmt: skip
    print(f"pulumi {PULUMI_VERSION} (real CLI, local backend)")
    print(header)
    print("-" * len(header))
    for stack in STACKS:
        with rig() as running:
            summary, runs = measure(running, stack)
            if stack == "prod":
                results["recipe_rerun"] = recipe_rerun(running, stack)
        results[stack] = summary
        for name, run in runs.items():
            ops = Counter(run.ops().values())
            print(
                f"{stack:8} {name:18} {run.seconds:8.2f} {len(run.modal_calls):12d} "
                f"{len(run.mutating_modal_calls):9d} {run.function_runs:10d} {run.deploys:8d}  "
                + ", ".join(f"{count} {op}" for op, count in sorted(ops.items()))
            )
    recipe = results["recipe_rerun"]
    noop = results["prod"]
    print()
    print("re-running an applied prod stack      function runs   containers by GPU          deploys")
    print(f"  recipe (modal run x3, modal deploy)  {recipe['function_runs']:13d}   "
          f"{json.dumps(recipe['gpu_containers']):25}  {recipe['deploys']:7d}")  # fmt: skip
    print(f"  pulumi up (no-op)                    {noop['noop_up_function_calls']:13d}   {'{}':25}  "
          f"{noop['noop_up_deploys']:7d}")  # fmt: skip
    print()
    print("goals: preview_modal_calls 0, noop_up_mutating_calls 0, noop_up_function_calls 0, noop_up_deploys 0")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
