# # What preview and a no-op up cost, per stack
#
# Drives the real Pulumi program (infra/) of both stacks through the stack harness of tests/stack:
# the program runs under `pulumi.runtime.set_mocks` as `__main__`, every dynamic resource goes
# through the real `python -m pulumi.dynamic` server, and the providers talk to the local Modal
# control plane with the real modal client. For each stack, in order:
#
#   1. `pulumi preview` of a new stack       -> Modal calls (goal: 0)
#   2. `pulumi up` of the new stack          -> applies everything (3 jobs, 1 deploy)
#   3. `pulumi preview` of the applied stack -> Modal calls (goal: 0)
#   4. `pulumi up` again, nothing changed    -> mutating Modal calls, function calls, deploys (goal: 0)
#
# Times are wall-clock seconds of the program run plus the engine's provider calls; everything on
# "Modal" answers instantly here, so they measure our own overhead.
#
# Run from the repository root with the project's virtualenv:
#
#     .venv/bin/python bench/stack_calls.py
#
# The last line is one JSON object: {"staging": {...}, "prod": {...}}, each with
# preview_modal_calls (both previews together), noop_up_mutating_calls, noop_up_function_calls,
# noop_up_deploys, preview_s (both previews together) and noop_up_s.

from __future__ import annotations

import json
import sys
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path; the harness lives under tests/ at the root.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.stack.conftest import rig  # noqa: E402
from tests.stack.harness import STACKS, StackConfig, StackRun  # noqa: E402


def measure(stack: str) -> tuple[dict, dict[str, StackRun]]:
    with rig(StackConfig.of(stack)) as running:
        harness = running.harness(stack)
        runs = {
            "preview (new)": harness.preview(),
            "up (new)": harness.up(),
            "preview (applied)": harness.preview(),
            "up (no-op)": harness.up(),
        }
    for name, run in runs.items():
        if not run.ok:
            raise SystemExit(f"{stack}: {name} failed: {run.error or run.result.errors}")
    previews = (runs["preview (new)"], runs["preview (applied)"])
    noop = runs["up (no-op)"]
    summary = {
        "preview_modal_calls": sum(len(run.modal_calls) for run in previews),
        "noop_up_mutating_calls": len(noop.mutating_modal_calls),
        "noop_up_function_calls": noop.function_runs,
        "noop_up_deploys": noop.deploys,
        "preview_s": round(sum(run.seconds for run in previews), 3),
        "noop_up_s": round(noop.seconds, 3),
    }
    return summary, runs


def main() -> None:
    results: dict[str, dict] = {}
    header = f"{'stack':8} {'run':18} {'seconds':>8} {'modal calls':>12} {'mutating':>9} {'functions':>10} " \
             f"{'deploys':>8}  resources"  # fmt: skip
    print(header)
    print("-" * len(header))
    for stack in STACKS:
        summary, runs = measure(stack)
        results[stack] = summary
        for name, run in runs.items():
            ops: dict[str, int] = {}
            for op in run.ops().values():
                ops[op] = ops.get(op, 0) + 1
            print(
                f"{stack:8} {name:18} {run.seconds:8.2f} {len(run.modal_calls):12d} "
                f"{len(run.mutating_modal_calls):9d} {run.function_runs:10d} {run.deploys:8d}  "
                + ", ".join(f"{count} {op}" for op, count in sorted(ops.items()))
            )
    print()
    print("goals: preview_modal_calls 0, noop_up_mutating_calls 0, noop_up_function_calls 0, noop_up_deploys 0")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
