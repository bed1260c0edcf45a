"""One function of a Modal app module, run once per distinct set of triggers, as a Pulumi resource.

Inputs:  module (e.g. "serving.app"), function, environment, module_env (environment variables the
         module reads at import), triggers (any JSON object; a change re-runs the job), artifact
         ({volume, path} that a successful run leaves behind), record_volume (where the job's run
         record lives; default: the artifact's volume), timeout_seconds, require_ok,
         first_run_note (printed by the preview, and the `up`, that will run the job the first time:
         what a reader should know about that run; never diffed).
Outputs: the inputs, plus artifact_present, function_call_id, run_app_id, duration_seconds,
         completed_at, result (what the function returned, as JSON: it lands in state and outputs
         in plaintext, so a job function returns no secret).
Id:      the function call id of the run that succeeded.

How it runs: `create` runs the function in a DETACHED ephemeral app, so nothing has to be deployed
first and the run does not depend on the process that waits for it (job_runs.py: the runner child
starts it and records it in the job's run record, run_records.py; the provider waits for the call).
Progress lines and a "<function>: running 12m30s" line every 30 s are printed to stdout, which
`pulumi up` shows while it waits. At `timeout_seconds` after its start the run is stopped for good:
its function call is cancelled with its containers, and its app stopped (a run that succeeded just
before is kept). An interrupted `up` (Ctrl-C twice, SIGKILL, a CI time limit) leaves the
run going; the next create or replace with the same triggers re-attaches to it, or takes its result
when it already succeeded (also when Modal no longer has the result, 7 days after it finished: its
artifact, written after the run started, proves it then), and never starts a second run of the job
while one is going or while the app of a stopped one still runs.

How success is proven: the function must return normally (and, with `require_ok`, return a mapping
whose "ok" is true), and then `artifact` must exist in its volume. Only then is the resource
recorded; any failure records nothing, so the next `pulumi up` runs it again (or takes the run that
succeeded, when only a later step failed).

What changes do: triggers, module, function, environment or artifact replace the resource, which
runs the job again (the old one's delete touches nothing on Modal: artifacts stay in their volumes).
module_env, record_volume, timeout_seconds and require_ok only apply to the next run: changing them
records the new values and runs nothing, because e.g. a change of an unrelated config field must not
re-download 700 GB. Put what should re-run the job into `triggers`.

Drift: `read` (pulumi refresh) checks the artifact is still there; when it is gone, the output
artifact_present becomes false and the next diff replaces the resource, i.e. runs the job again.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import pulumi
import pydantic
from modal.exception import NotFoundError
from pulumi.dynamic import CheckResult, CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from providers.base import (
    EnvironmentName,
    InputModel,
    ModalProvider,
    ObjectName,
    PreciseDiff,
    precise_diff,
    strip_internal,
)
from providers.modal_access.lookups import lookup_volume
from providers.modal_access.retry import modal_call
from providers.runs.job_runs import JobRun, run_job
from providers.runs.module_runs import ModuleEnv, ModulePath
from providers.runs.run_records import identity_digest
from providers.runs.supervisor import format_elapsed
from providers.shared import ProviderError, progress, redact

# Every input, in the order a diff reports them.
FIELDS = ("module", "function", "environment", "module_env", "triggers", "artifact", "record_volume", "timeout_seconds",
          "require_ok")  # fmt: skip
# Inputs whose change means another job, hence a new run.
REPLACE_ON = ("module", "function", "environment", "triggers", "artifact")
# Outputs of a run, which an in-place update (no run) carries over unchanged.
RUN_OUTPUTS = ("artifact_present", "function_call_id", "run_app_id", "duration_seconds", "completed_at", "result")
# A Modal function tag: a Python identifier (class methods are not jobs).
FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Long enough for a 700 GB download on a slow day; Modal caps a function at 24 h anyway.
DEFAULT_TIMEOUT_SECONDS = 3 * 3600
MAX_TIMEOUT_SECONDS = 48 * 3600
# How much of a failed `require_ok` result an error message quotes.
RESULT_PREVIEW_CHARS = 1500


class Artifact(pydantic.BaseModel):
    """A file or directory that a successful run leaves in a volume (e.g. a download's sentinel)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    volume: ObjectName
    path: str

    @pydantic.field_validator("path")
    @classmethod
    def _relative_path(cls, path: str) -> str:
        parts = [part for part in path.strip().strip("/").split("/") if part not in ("", ".")]
        if not parts:
            raise ValueError("must name a file or directory in the volume, e.g. 'models/my-model/config.json'")
        if ".." in parts:
            raise ValueError("must not contain '..'")
        return "/".join(parts)


class JobInputs(InputModel):
    module: ModulePath
    function: str
    environment: EnvironmentName
    module_env: ModuleEnv = {}
    triggers: dict[str, Any] = {}
    artifact: Artifact | None = None
    record_volume: ObjectName | None = None
    timeout_seconds: int = pydantic.Field(DEFAULT_TIMEOUT_SECONDS, gt=0, le=MAX_TIMEOUT_SECONDS)
    require_ok: bool = False
    first_run_note: str = ""

    @pydantic.field_validator("function")
    @classmethod
    def _function_name(cls, name: str) -> str:
        if not FUNCTION_NAME.match(name):
            raise ValueError("must be the name of a Modal function of the module, e.g. 'download_model'")
        return name

    @pydantic.model_validator(mode="after")
    def _has_a_record_volume(self) -> JobInputs:
        if self.record_volume is None and self.artifact is None:
            raise ValueError(
                "record_volume: a job without an artifact needs a volume for its run record (record_volume)"
            )
        return self

    @property
    def run_record_volume(self) -> str:
        """Where the job's run record lives (run_records.py)."""
        volume = self.record_volume or (self.artifact.volume if self.artifact is not None else None)
        assert volume is not None  # the validator above
        return volume

    def identity(self) -> dict[str, Any]:
        """What a run of the job is for: the inputs whose change means another job (REPLACE_ON)."""
        return self.model_dump(mode="json", include=set(REPLACE_ON))


def artifact_written_at(environment: str, artifact: Artifact) -> float | None:
    """When `artifact.path` was last written in its volume (Modal's mtime, Unix seconds; 0 when Modal
    gives none, e.g. for a directory), or None when it is not there: one listing of its parent
    directory (never a read of the file itself, which may be large). A missing volume or directory
    means "not there"."""
    parent = artifact.path.rpartition("/")[0] or "/"
    where = f"volume '{artifact.volume}' of environment '{environment}'"
    # The lookup is a unary call, which the modal client retries itself: our layer adds nothing to it.
    volume = lookup_volume(environment, artifact.volume)
    if volume is None:
        return None

    def look() -> float | None:
        try:
            entries = volume.listdir(parent)
        except NotFoundError:
            return None
        return next((float(entry.mtime) for entry in entries if entry.path.strip("/") == artifact.path), None)

    # listdir is a streaming RPC, which the modal client does not retry: our layer retries it.
    return modal_call(look, what=f"look for '{artifact.path}' in {where}", client_retries=False)


def artifact_present(environment: str, artifact: Artifact) -> bool:
    """Whether `artifact.path` exists in its volume (see artifact_written_at)."""
    return artifact_written_at(environment, artifact) is not None


def _describe(inputs: JobInputs) -> str:
    return f"job {inputs.module}.{inputs.function} in environment '{inputs.environment}'"


def _require_ok(inputs: JobInputs, result: Any) -> None:
    if isinstance(result, dict) and result.get("ok") is True:
        return
    # Redacted before it is cut: a cut through a secret value would leave a fragment redaction misses.
    preview = redact(json.dumps(result, sort_keys=True, default=str, ensure_ascii=False))[:RESULT_PREVIEW_CHARS]
    raise ProviderError(
        f'{_describe(inputs)} finished but did not report success (require_ok: its result needs "ok": true): '
        f"{preview}. Fix what it reports, then run `pulumi up` again; nothing was recorded as done."
    )


def _outputs(inputs: JobInputs, run: dict[str, Any]) -> dict[str, Any]:
    return {**inputs.model_dump(mode="json"), **{key: run.get(key) for key in RUN_OUTPUTS}}


class JobProvider(ModalProvider):
    inputs_model = JobInputs

    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        result = super().check(olds, news)
        note = news.get("first_run_note")
        if not strip_internal(olds) and isinstance(note, str) and note and not result.failures:
            progress(f"job {news.get('module')}.{news.get('function')}, first run: {note}")  # a create
        return result

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        diff = precise_diff(olds, news, FIELDS, replace_on=REPLACE_ON, stables=RUN_OUTPUTS[1:])
        if olds.get("artifact_present") is False and "artifact" not in diff.replaces:
            # A refresh found the proof gone (an emptied volume): run the job again.
            changed = [*diff.changed, "artifact"] if "artifact" not in diff.changed else diff.changed
            return PreciseDiff(changed, changes=True, replaces=[*diff.replaces, "artifact"], stables=[])
        return diff

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        assert isinstance(inputs, JobInputs)
        what = _describe(inputs)
        progress(f"{what}: starting (timeout {format_elapsed(inputs.timeout_seconds)})")
        artifact, environment = inputs.artifact, inputs.environment
        run = run_job(
            JobRun(
                module=inputs.module,
                function=inputs.function,
                environment=inputs.environment,
                module_env=inputs.module_env,
                record_volume=inputs.run_record_volume,
                identity_digest=identity_digest(inputs.identity()),
                timeout_seconds=inputs.timeout_seconds,
                what=what,
                proof_written_at=None if artifact is None else lambda: artifact_written_at(environment, artifact),
                judge=(lambda result: _require_ok(inputs, result)) if inputs.require_ok else None,
            )
        )
        present = None
        if artifact is not None:
            present = artifact_present(inputs.environment, artifact)
            if not present:
                raise ProviderError(
                    f"{what} finished, but its artifact '{artifact.path}' is not in volume "
                    f"'{artifact.volume}': the function must write it (and commit the volume). Nothing was "
                    "recorded as done; fix the function or the artifact path and run `pulumi up` again."
                )
        record = run.record
        outputs = {
            "artifact_present": present,
            "function_call_id": record.function_call_id,
            "run_app_id": record.app_id,
            "duration_seconds": run.duration_seconds,
            "completed_at": datetime.fromtimestamp(record.finished_at or time.time(), UTC).isoformat(
                timespec="seconds"
            ),
            "result": run.result,
        }
        took = "" if run.duration_seconds is None else f" in {format_elapsed(run.duration_seconds)}"
        progress(f"{what}: done{took}")
        return CreateResult(record.function_call_id, _outputs(inputs, outputs))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        current = strip_internal(props)
        if not current.get("module"):
            raise ProviderError(
                f"a ModalJob cannot be imported (id {id_!r}): a job is a run, not an object Modal keeps. Declare it "
                "in the program instead; `pulumi up` runs it once (jobs should skip work that is already done)."
            )
        inputs = self.validated(current)
        assert isinstance(inputs, JobInputs)
        if inputs.artifact is None:
            return ReadResult(id_, current)
        present = artifact_present(inputs.environment, inputs.artifact)
        if not present and current.get("artifact_present") is not False:
            progress(
                f"{_describe(inputs)}: artifact '{inputs.artifact.path}' is gone from volume "
                f"'{inputs.artifact.volume}'; the next `pulumi up` runs the job again"
            )
        return ReadResult(id_, {**current, "artifact_present": present})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only module_env, timeout_seconds and require_ok change in place: they apply to the next run.
        inputs = self.validated(news)
        assert isinstance(inputs, JobInputs)
        return UpdateResult(_outputs(inputs, olds))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # A finished run leaves nothing to delete on Modal; its artifact is data, kept in its volume.
        if props.get("module"):
            progress(f"job {props['module']}.{props.get('function')}: forgotten (its artifact stays in its volume)")


class ModalJob(Resource, module="modal", name="Job"):
    """Runs `function` of the Modal app in `module` once per distinct `triggers`, proven by `artifact`."""

    module: pulumi.Output[str]
    function: pulumi.Output[str]
    environment: pulumi.Output[str]
    module_env: pulumi.Output[dict]
    triggers: pulumi.Output[dict]
    artifact: pulumi.Output[dict]
    record_volume: pulumi.Output[str]
    timeout_seconds: pulumi.Output[int]
    require_ok: pulumi.Output[bool]
    first_run_note: pulumi.Output[str]
    artifact_present: pulumi.Output[bool]
    function_call_id: pulumi.Output[str]
    run_app_id: pulumi.Output[str]
    duration_seconds: pulumi.Output[float]
    completed_at: pulumi.Output[str]
    result: pulumi.Output[Any]

    def __init__(
        self,
        resource_name: str,
        *,
        module: pulumi.Input[str],
        function: pulumi.Input[str],
        environment: pulumi.Input[str],
        module_env: pulumi.Input[dict] | None = None,
        triggers: pulumi.Input[dict] | None = None,
        artifact: pulumi.Input[dict] | None = None,
        record_volume: pulumi.Input[str] | None = None,
        timeout_seconds: pulumi.Input[int] = DEFAULT_TIMEOUT_SECONDS,
        require_ok: pulumi.Input[bool] = False,
        first_run_note: pulumi.Input[str] = "",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "module": module,
            "function": function,
            "environment": environment,
            "module_env": module_env if module_env is not None else {},
            "triggers": triggers if triggers is not None else {},
            "artifact": artifact,
            "record_volume": record_volume,
            "timeout_seconds": timeout_seconds,
            "require_ok": require_ok,
            "first_run_note": first_run_note,
            **dict.fromkeys(RUN_OUTPUTS),
        }
        super().__init__(JobProvider(), resource_name, props, opts)
