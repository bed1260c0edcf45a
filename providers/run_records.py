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

    python -m providers.run_records list --env E --volume V
    python -m providers.run_records stop --env E --volume V JOB
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

from .base import ProviderError
from .retry import modal_call
from .volume import lookup_volume

RECORD_DIR = ".job-runs"

# How a run ended, as far as a waiter saw it: "succeeded" (returned), "failed" (raised), "cancelled"
# (by an operator, or gone without a result), "timed_out" (cancelled at its deadline by a waiter).
Outcome = Literal["succeeded", "failed", "cancelled", "timed_out"]


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
    """Cancel the job's detached run, if one is going, and record that an operator stopped it."""
    record = read_record(environment, volume, job)
    if record is None:
        return f"{job}: no run recorded in {_where(environment, volume)}; nothing to stop"
    if record.outcome is not None:
        return f"{job}: its last run ({record.function_call_id}) already ended ({record.outcome}); nothing to stop"
    call = modal.FunctionCall.from_id(record.function_call_id)
    modal_call(call.cancel, what=f"cancel function call {record.function_call_id}")
    write_record(environment, volume, record.finished("cancelled", error="stopped by an operator"))
    return f"{job}: cancelled function call {record.function_call_id}; the next `pulumi up` starts a new run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m providers.run_records", description=__doc__.split("\n")[0])
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
