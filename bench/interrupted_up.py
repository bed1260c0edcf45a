# # What an interrupted `pulumi up` costs: runs lost, runs repeated, commands to recover
#
# For each job of the staging stack in turn (download, compile, verify) and each way the waiting side
# dies (one Ctrl-C of `pulumi`, SIGKILL of `pulumi`, SIGKILL of the provider process), on a fresh
# stack: a first `pulumi up` is interrupted while that job runs (its Modal function is held until
# the bench lets it go), then the README's recovery is run, through the real Pulumi CLI against the
# local Modal control plane (tests/stack). Counted from the control plane's function calls:
#
#   reattached      recoveries whose `up` took the interrupted job's run instead of starting one
#                   (it re-attached to it while it ran, or recorded it once it had succeeded); after
#                   one Ctrl-C there is nothing to take: the interrupted `up` recorded the run itself
#   duplicate_runs  function calls beyond one per job (a job run twice)
#   lost_runs       function calls cancelled (a run the interruption threw away)
#
# The SIGKILL cases let the held run go once the recovering `up` waits for it; the one-Ctrl-C case
# lets it go while the interrupted `up` still waits (the CLI waits for steps in flight).
#
#     .venv/bin/python bench/interrupted_up.py
#
# The last line is one JSON object: {"interrupted_jobs", "reattached", "duplicate_runs", "lost_runs",
# "recovery_commands": {mode: [commands]}, "cases": [...]}.

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

# Run as a script, Python puts bench/ first on sys.path; the harness lives under tests/ at the root.
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.stack.conftest import rig  # noqa: E402
from tests.stack.harness import JOB_FUNCTIONS  # noqa: E402
from tests.stack.test_interrupted_up import (  # noqa: E402
    WAIT_SECONDS,
    gate_function,
    provider_process,
    provider_running,
    pulumi_process,
    runs_by_function,
    up_in_background,
    wait_until,
    waiting_for,
)

# How the waiting side dies, and what the README says to run afterwards.
MODES = {
    "ctrl-c pulumi": ("pulumi", signal.SIGINT, ["pulumi up"]),
    "kill pulumi": ("pulumi", signal.SIGKILL,
                    ["pulumi cancel --yes", "pulumi refresh --yes --clear-pending-creates", "pulumi up"]),
    "kill provider": ("provider", signal.SIGKILL,
                      ["pulumi cancel --yes", "pulumi refresh --yes --clear-pending-creates", "pulumi up"]),
}  # fmt: skip


def interrupt_and_recover(function: str, mode: str) -> dict:
    target, sig, recovery = MODES[mode]
    started = time.monotonic()
    with rig() as running:
        harness = running.harness("staging")
        gate = gate_function(running, function)
        with up_in_background(harness):
            if not gate.started.wait(WAIT_SECONDS):
                raise SystemExit(f"{function} never started")
            victim = pulumi_process() if target == "pulumi" else provider_process(running.world.project)
            victim.send_signal(sig)
            if sig == signal.SIGINT:
                time.sleep(2)
                gate.open()  # the CLI waits for the step in flight
        wait_until(lambda: not provider_running(running.world.project), "the provider process is gone")
        [call] = [call for call in running.cp.function_calls if call.tag == function]
        mark = running.cp.mark()
        outcomes = []
        for command in recovery:
            words = command.split()[1:]
            if words == ["up"]:
                with up_in_background(harness) as result:
                    if not gate.opened.is_set():
                        wait_until(lambda: waiting_for(running, call.id, mark), "the recovering `up` waits")
                        gate.open()
                outcomes.append(result["up"])
            else:
                outcomes.append(harness.cli(*words))
        settled = harness.up(expect_no_changes=True)
        runs = runs_by_function(running)
        statuses = [c.status for c in running.cp.function_calls]
    final = outcomes[-1]
    took_the_run = "re-attached to its run" in final.text or "already succeeded; recording it" in final.text
    return {
        "job": function,
        "mode": mode,
        "recovered": all(outcome.ok for outcome in outcomes) and settled.ok and settled.function_runs == 0,
        "reattached": took_the_run,
        "duplicate_runs": sum(count - 1 for count in runs.values() if count > 1),
        "lost_runs": statuses.count("cancelled"),
        "runs": sum(runs.values()),
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    cases = [interrupt_and_recover(function, mode) for function in JOB_FUNCTIONS.values() for mode in MODES]
    header = f"{'job':18} {'interrupted by':15} {'recovered':>9} {'took run':>9} {'runs':>5} {'duplicates':>10} " \
             f"{'lost':>5} {'seconds':>8}"  # fmt: skip
    print(header)
    print("-" * len(header))
    for case in cases:
        print(
            f"{case['job']:18} {case['mode']:15} {str(case['recovered']):>9} {str(case['reattached']):>9} "
            f"{case['runs']:5d} {case['duplicate_runs']:10d} {case['lost_runs']:5d} {case['seconds']:8.1f}"
        )
    print()
    for mode, (_, _, recovery) in MODES.items():
        print(f"recovery after '{mode}': " + "; ".join(recovery))
    print("goals: every case recovered; reattached = the kill cases (a Ctrl-C lets the `up` record the run itself); "
          "duplicate_runs 0, lost_runs 0")  # fmt: skip
    summary = {
        "interrupted_jobs": len(cases),
        "reattached": sum(case["reattached"] for case in cases),
        "duplicate_runs": sum(case["duplicate_runs"] for case in cases),
        "lost_runs": sum(case["lost_runs"] for case in cases),
        "recovery_commands": {mode: recovery for mode, (_, _, recovery) in MODES.items()},
        "cases": cases,
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
