"""The durable record of a job's run: a small JSON file in a volume of the job, naming its function call.

Why: a job runs on Modal detached from the process that waits for it (job_runs.py), so a `pulumi up`
that dies (Ctrl-C twice, a CI time limit, a closed laptop) does not take the run with it. Pulumi's
state then holds at most a pending operation; this record is what the next `up` finds instead.

Where: `.job-runs/<module>.<function>.json` in the job's record volume (its artifact's volume by
default). One file per job, overwritten by each new run, so it always describes the LAST run of the
job: a finished run may only be trusted when nothing ran after it (a later run with other triggers
may have replaced its artifact in place).

What: the job, the digest of what the run was started for (`identity_digest`: module, function,
triggers, artifact), its function call and ephemeral app, when it started, the deadline at which any
waiter cancels it (its timeout), and, once a waiter saw it end, its outcome and result.

The runner child writes the first version right after it spawned the call (runner.py); whoever waits
writes the outcome. Both writes replace the whole file (a volume has no partial writes to fear).

Operators stop a detached run on purpose with this module's command line (the README shows it):

    python -m providers.runs.run_records list --env E --volume V
    python -m providers.runs.run_records stop --env E --volume V JOB
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from collections.abc import Mapping
from typing import Any, Literal

import modal
import pydantic
from modal.exception import NotFoundError

from providers.modal_access.function_calls import json_safe, stop_run
from providers.modal_access.lookups import lookup_volume
from providers.modal_access.retry import modal_call
from providers.shared import ProviderError

RECORD_DIR = ".job-runs"

# How a run ended, as far as a waiter saw it: "succeeded" (returned), "failed" (raised), "cancelled"
# (stopped by an operator: `error` is OPERATOR_STOP; or ended without a result of its own), "timed_out"
# (stopped at its deadline by a waiter).
Outcome = Literal["succeeded", "failed", "cancelled", "timed_out"]

# The `error` of a run an operator stopped with this module's command line.
OPERATOR_STOP = "stopped by an operator"


class RunRecord(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")

    job: str  # "<module>.<function>"
    identity_digest: str
    function_call_id: str
    app_id: str | None = None
    started_at: float  # Unix seconds: it crosses processes and machines
    deadline_at: float
    outcome: Outcome | None = None  # None: nobody has seen it end yet
    finished_at: float | None = None
    result: Any = None
    error: str | None = None

    def finished(self, outcome: Outcome, *, result: Any = None, error: str | None = None) -> RunRecord:
        return self.model_copy(update={"outcome": outcome, "finished_at": time.time(), "result": result,
                                       "error": error})  # fmt: skip


def identity_digest(identity: Mapping[str, Any]) -> str:
    """What a run is FOR, in 16 hex digits: the same job with the same triggers has the same digest."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_path(job: str) -> str:
    return f"{RECORD_DIR}/{job}.json"


def _where(environment: str, volume: str) -> str:
    return f"volume '{volume}' of environment '{environment}'"


def read_record(environment: str, volume: str, job: str) -> RunRecord | None:
    """The job's last run, or None when it never ran (or its volume does not exist)."""
    found = lookup_volume(environment, volume)
    if found is None:
        return None
    path = record_path(job)

    def read() -> bytes | None:
        try:
            return b"".join(found.read_file(path))
        except (NotFoundError, FileNotFoundError):
            return None

    data = modal_call(read, what=f"read the run record '{path}' in {_where(environment, volume)}")
    if data is None:
        return None
    try:
        return RunRecord.model_validate_json(data)
    except pydantic.ValidationError:
        return None  # not ours, or from an incompatible version: as if the job never ran


def write_record(environment: str, volume: str, record: RunRecord) -> None:
    path = record_path(record.job)
    data = record.model_dump_json(indent=2).encode()

    def write() -> None:
        target = modal.Volume.from_name(volume, environment_name=environment)
        with target.batch_upload(force=True) as batch:
            batch.put_file(io.BytesIO(data), path)

    modal_call(write, what=f"write the run record '{path}' in {_where(environment, volume)}")


def list_records(environment: str, volume: str) -> list[RunRecord]:
    found = lookup_volume(environment, volume)
    if found is None:
        return []

    def names() -> list[str]:
        try:
            return [entry.path for entry in found.listdir(RECORD_DIR)]
        except (NotFoundError, FileNotFoundError):
            return []

    paths = modal_call(names, what=f"list the run records in {_where(environment, volume)}", client_retries=False)
    jobs = sorted(path.rstrip("/").rpartition("/")[2].removesuffix(".json") for path in paths)
    return [record for job in jobs if (record := read_record(environment, volume, job)) is not None]


# ---------------------------------------------------------------------------------------------
# The operator's command line.
# ---------------------------------------------------------------------------------------------


def _describe(record: RunRecord) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.started_at))
    state = record.outcome or "running or ended unseen"
    return (f"{record.job}: function call {record.function_call_id} in app {record.app_id}, started {started}, "
            f"{state}")  # fmt: skip


def stop(environment: str, volume: str, job: str) -> str:
    """Stop the job's detached run for good, if one is going (function_calls.stop_run: its containers and
    app end), and record that an operator stopped it. The record says so BEFORE the stop, so that an
    `up` waiting for the run reports a stop and not some failure; a run that turns out to have ended
    by itself is recorded as it ended."""
    record = read_record(environment, volume, job)
    if record is None:
        return f"{job}: no run recorded in {_where(environment, volume)}; nothing to stop"
    if record.outcome is not None:
        return f"{job}: its last run ({record.function_call_id}) already ended ({record.outcome}); nothing to stop"
    write_record(environment, volume, record.finished("cancelled", error=OPERATOR_STOP))
    try:
        result = modal_call(stop_run, record.function_call_id, record.app_id,
                            what=f"stop function call {record.function_call_id}")  # fmt: skip
    except ProviderError:
        write_record(environment, volume, record)  # not stopped: it still runs, as the record said before
        raise
    seen = result.look
    if not result.cancelled:
        if seen.state == "gone":  # how it ended is unknown: the next `up` judges it by its artifact
            write_record(environment, volume, record)
        else:
            ended = {"succeeded": "succeeded", "failed": "failed"}.get(seen.state, "cancelled")
            write_record(environment, volume, record.finished(ended, result=json_safe(seen.result), error=seen.error))
        return (f"{job}: its run {record.function_call_id} had already ended ({seen.state}"
                f"{': ' + seen.error if seen.error else ''}); nothing was stopped")  # fmt: skip
    if not result.confirmed:
        return (f"{job}: asked Modal to stop function call {record.function_call_id}, but it has not confirmed that "
                f"app {record.app_id} stopped; check with `modal app list` (the next `pulumi up` stops that app "
                "before it starts a new run)")  # fmt: skip
    return (f"{job}: stopped function call {record.function_call_id} (its containers and app {record.app_id} "
            "ended); the next `pulumi up` starts a new run")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m providers.runs.run_records", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb, text in (("list", "show the last run of each job recorded in the volume"),
                       ("stop", "cancel a job's detached run")):  # fmt: skip
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("--env", required=True, help="the Modal environment")
        sub.add_argument("--volume", required=True, help="the volume holding the job's run records")
        if verb == "stop":
            sub.add_argument("job", help="the job as <module>.<function>, e.g. serving.app.download_model")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.verb == "stop":
            print(stop(args.env, args.volume, args.job))
            return 0
        records = list_records(args.env, args.volume)
    except ProviderError as error:
        print(error, file=sys.stderr)
        return 1
    for record in records:
        print(_describe(record))
    if not records:
        print(f"no run recorded in {_where(args.env, args.volume)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
