"""A small deployment engine that drives dynamic resources through the real provider server.

`Engine` plays the part of `pulumi preview / up / refresh / destroy` for dynamic resources only
(one default provider, no component resources, no aliases/ignoreChanges/targets). It keeps a state
of urn -> {id, inputs, outputs, protect, dependencies, ...} between runs (in memory, optionally
a JSON file) and returns a `DeploymentResult` with every step, the outputs the program would see
(secrets marked) and the gRPC calls made, so tests can count what a run would cost.

Two ways in: `engine.up(resources)` for a list of `DesiredResource`s, or
`deployment = engine.begin("up")` + `deployment.register(resource)` per resource + `deployment.finish()`.

What the real engine does and this one reproduces (pulumi/pulumi at commit 1b59498, the newest
stored snapshot; read with SDK 3.272.0, the pinned SDK). Step generation is in
pkg/resource/deploy/step_generator.go, step execution in pkg/resource/deploy/step.go and step_executor.go:

1. Check: with no old state, Check(news) only; otherwise Check(olds = OLD INPUTS, news)
   (`continueStepsFromImport`). Unknowns are allowed only in preview (`allowUnknowns :=
   opts.DryRun`). Any failure makes the resource invalid and the deployment bails, preview included;
   each failure is printed as "<type> resource '<name>': property <p> value {<v>} has a problem:
   <reason>" (`issueCheckFailures`, sdk/go/common/diag/errors.go 2003) where <v> is the PROGRAM's
   input value printed with Go's %v. A secret there is a *Secret, which has no String method, so
   Go prints `{&{{plaintext}}}`: naming a secret top-level property in a CheckFailure puts its
   plaintext in the CLI output (read from the code, not executed). `check_failure_message` mimics it.
2. No old state -> CreateStep. Old state -> Diff(id, olds = OLD OUTPUTS, news = checked inputs,
   old_inputs) (`diffResource`); DIFF_UNKNOWN falls back to the engine's own diff of old inputs vs
   new inputs, secrets unwrapped, `__provider` included; replace keys are kept either way.
3. Diff "none" -> SameStep: ID and outputs carried over, but the state's inputs become the new
   checked inputs (`SameStep.Apply`).
4. Diff "some" without replaces -> UpdateStep: Update(id, olds = OLD OUTPUTS, news, old_inputs).
5. Diff with replaces -> replacement. Refused if the resource is protected in both old state and
   program ("unable to replace resource ... marked for protection"): preview records the error and
   goes on, up bails before doing anything. Inputs are re-Checked WITHOUT olds. Create-before-delete
   unless the program's deleteBeforeReplace option, or else the provider's diff, says otherwise:
   Create(new) now, Delete(old) after the whole program has registered (`continueStepsFromDiff`).
   Delete-before-replace deletes first. (Replacing dependents of a DBR resource is not modelled.)
6. Preview: CreateStep/UpdateStep call the plugin with Preview=true and the plugin client answers
   itself with outputs = inputs because the dynamic server does not support preview
   (provider_plugin.go Create/Update); DeleteStep does nothing in preview (step.go
   `DeleteStep.Apply`). So a preview makes only Check and Diff calls.
7. After each step the outputs listed in additionalSecretOutputs are made secret
   (step_executor.go `executeStep`).
8. Deletes happen only after the program finished without error, in reverse dependency order
   (`GenerateDeletes`/`ScheduleDeletes`). Deleting a protected resource fails with "resource ...
   cannot be deleted because it is protected" -- checked before the DryRun test, so preview fails
   too (`DeleteStep.Apply`); a replacement's delete is exempt. retainOnDelete skips the provider.
9. Refresh: Read(id, properties = old outputs, inputs = old inputs); an empty ID removes the
   resource from state; returned inputs replace the stored inputs; then the engine Diffs with the
   roles inverted (old inputs = refreshed inputs, olds = refreshed outputs, news = stored inputs) to
   show drift (`RefreshStep.Apply`).
10. Destroy deletes everything in state in reverse dependency order, protect rules as above.
"""

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.waiting import wait_until

from . import properties as props
from .provider_server import MUTATING_METHODS, Call, CheckFailure, ProviderCallError, ProviderServer, urn_name_type

# Step operation names, as the engine's display and event stream spell them.
SAME, CREATE, UPDATE, DELETE = "same", "create", "update", "delete"
REPLACE, CREATE_REPLACEMENT, DELETE_REPLACED = "replace", "create-replacement", "delete-replaced"
REFRESH = "refresh"
# The logical operations the CLI summary counts ("+ 1 to create, ~ 1 to update, +-1 to replace").
SUMMARY_OPS = (CREATE, UPDATE, REPLACE, DELETE, SAME)


@dataclass
class DesiredResource:
    """A dynamic resource as a program registers it (a RegisterResourceRequest, reduced)."""

    urn: str
    inputs: dict  # wire form, `__provider` included, secrets marked
    dependencies: list[str] = field(default_factory=list)
    protect: bool = False
    additional_secret_outputs: list[str] = field(default_factory=list)
    delete_before_replace: bool | None = None  # None: not set in the program, the provider decides
    retain_on_delete: bool = False
    custom_timeouts: dict[str, float] = field(default_factory=dict)  # create/update/delete seconds

    @property
    def type(self) -> str:
        return urn_name_type(self.urn)[1]

    @property
    def name(self) -> str:
        return urn_name_type(self.urn)[0]


@dataclass
class ResourceState:
    urn: str
    type: str
    id: str
    inputs: dict
    outputs: dict
    protect: bool = False
    dependencies: list[str] = field(default_factory=list)
    additional_secret_outputs: list[str] = field(default_factory=list)
    retain_on_delete: bool = False
    custom_timeouts: dict[str, float] = field(default_factory=dict)


class State:
    """The checkpoint: resources in the order they were (last) registered, so dependencies first.

    Secrets are kept in wire form, NOT encrypted as Pulumi's real state would be: a test that scans
    the state file for a canary must look at values outside secret markers (properties.reveal shows
    what a reader of the real state file with the passphrase would see).
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self.resources: dict[str, ResourceState] = {}
        # Olds of create-before-delete replacements whose delete did not happen yet.
        self.pending_deletes: list[ResourceState] = []
        if path is not None and path.exists():
            data = json.loads(path.read_text())
            self.resources = {r["urn"]: ResourceState(**r) for r in data["resources"]}
            self.pending_deletes = [ResourceState(**r) for r in data.get("pending_deletes", [])]

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "resources": [asdict(r) for r in self.resources.values()],
            "pending_deletes": [asdict(r) for r in self.pending_deletes],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)

    def get(self, urn: str) -> ResourceState | None:
        return self.resources.get(urn)


@dataclass(frozen=True)
class Step:
    urn: str
    op: str
    keys: tuple[str, ...] = ()  # changed keys (update), replace keys (replace), drift keys (refresh)
    detail: str = ""


@dataclass(frozen=True)
class RegisterResult:
    """What the engine answers the program: the ID ("" for a preview create) and the outputs."""

    urn: str
    id: str
    outputs: dict


class DeploymentError(Exception):
    """The deployment bailed (invalid resource, provider error, protect violation)."""


@dataclass
class DeploymentResult:
    operation: str
    preview: bool
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, dict] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    check_failures: list[tuple[str, CheckFailure]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)
    stderr_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SUMMARY_OPS, 0)
        for step in self.steps:
            if step.op in counts:
                counts[step.op] += 1
        return counts

    def ops(self, op: str) -> list[str]:
        return [s.urn for s in self.steps if s.op == op]

    def step(self, urn: str) -> Step:
        """The logical step of a resource (replace wins over its create/delete halves)."""
        mine = [s for s in self.steps if s.urn == urn]
        for op in (REPLACE, CREATE, UPDATE, DELETE, REFRESH, SAME):
            for s in mine:
                if s.op == op:
                    return s
        raise KeyError(urn)

    def calls_of(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods]

    @property
    def mutating_calls(self) -> list[Call]:
        return self.calls_of(*MUTATING_METHODS)

    def raise_on_error(self) -> "DeploymentResult":
        if self.errors:
            raise DeploymentError("\n".join(self.errors))
        return self


def check_failure_message(desired: DesiredResource, failure: CheckFailure) -> str:
    """The engine's diagnostic for one failure, value printed as Go's `{%v}` would print it."""
    if not failure.property:
        return f"{desired.type} resource '{desired.name}' has a problem: {failure.reason}"
    value = desired.inputs.get(failure.property)
    return (
        f"{desired.type} resource '{desired.name}': property {failure.property} value "
        f"{{{_go_format(value)}}} has a problem: {failure.reason}"
    )


def _go_format(value: Any) -> str:
    if value is None:
        return "<nil>"
    if value == props.UNKNOWN:
        return "{{}}"  # resource.Computed{Element: ""} under %v
    if props.is_secret(value):
        return "&{{" + _go_format(value["value"]) + "}}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{{{_go_format(v)}}}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join("{" + _go_format(v) + "}" for v in value) + "]"
    return str(value)


class Engine:
    def __init__(self, server: ProviderServer, state: State | None = None):
        self.server = server
        self.state = state if state is not None else State()

    def begin(self, operation: str) -> "Deployment":
        if operation not in ("preview", "up"):
            raise ValueError(f"unknown operation {operation!r}")
        return Deployment(self, preview=operation == "preview")

    def preview(self, resources: Iterable[DesiredResource]) -> DeploymentResult:
        return self._run("preview", resources)

    def up(self, resources: Iterable[DesiredResource]) -> DeploymentResult:
        return self._run("up", resources)

    def _run(self, operation: str, resources: Iterable[DesiredResource]) -> DeploymentResult:
        deployment = self.begin(operation)
        for resource in resources:
            try:
                deployment.register(resource)
            except DeploymentError:
                break
        return deployment.finish()

    def destroy(self, *, preview: bool = False) -> DeploymentResult:
        deployment = Deployment(self, preview=preview, operation="destroy")
        return deployment.finish()

    def refresh(self, *, preview: bool = False) -> DeploymentResult:
        result = DeploymentResult("refresh", preview)
        mark = _Mark(self.server)
        for urn, old in list(self.state.resources.items()):
            try:
                read = self.server.read(old.id, urn, old.outputs, old.inputs)
            except ProviderCallError as err:
                result.errors.append(f"{urn}: {err.details}")
                break
            if not read.id:
                result.steps.append(Step(urn, REFRESH, detail="deleted"))
                if not preview:
                    del self.state.resources[urn]
                    self.state.save()
                continue
            outputs = read.properties
            props.mark_additional_secret_outputs(outputs, old.additional_secret_outputs)
            inputs = read.inputs if read.inputs is not None else old.inputs
            drift: tuple[str, ...] = ()
            try:
                diff = self.server.diff(read.id, urn, outputs, old.inputs, inputs)
            except ProviderCallError as err:
                result.errors.append(f"{urn}: {err.details}")
                break
            if diff.changes == "unknown":
                drift = tuple(props.input_diff(inputs, old.inputs))
            elif diff.changes == "some":
                drift = tuple(diff.diffs or diff.replaces) or ("*",)
            changed = outputs != old.outputs or inputs != old.inputs
            result.steps.append(Step(urn, REFRESH, drift, detail="changed" if changed else ""))
            result.outputs[urn] = outputs
            result.ids[urn] = read.id
            if not preview:
                old.id, old.outputs, old.inputs = read.id, outputs, inputs
                self.state.save()
        mark.finish(result)
        return result


class _Mark:
    """Remembers where the server's call and output logs stood when an operation began."""

    def __init__(self, server: ProviderServer):
        self.server = server
        self.calls = len(server.calls)
        self.stdout = len(server.stdout_lines)
        self.stderr = len(server.stderr_lines)

    def finish(self, result: DeploymentResult) -> None:
        # What the provider printed while answering may still be in its pipes.
        wait_until(self.server.output_read, "the provider's output so far has been read")
        result.calls = self.server.calls[self.calls:]
        result.stdout_lines = self.server.stdout_lines[self.stdout:]
        result.stderr_lines = self.server.stderr_lines[self.stderr:]


class Deployment:
    """One preview or up in progress: resources are registered one by one, then `finish`."""

    def __init__(self, engine: Engine, *, preview: bool, operation: str | None = None):
        self.engine = engine
        self.server = engine.server
        self.state = engine.state
        self.preview = preview
        self.result = DeploymentResult(operation or ("preview" if preview else "up"), preview)
        self.registered: dict[str, DesiredResource] = {}
        self._replaced: list[ResourceState] = []
        self._mark = _Mark(self.server)
        self._finished = False
        # Set when the engine would stop the deployment; later registrations fail like the program's
        # RegisterResource calls would, and no deletes run.
        self._bailed = False

    # ---- registration ----------------------------------------------------------------------

    def register(self, desired: DesiredResource) -> RegisterResult:
        if self._finished:
            raise RuntimeError("deployment already finished")
        if self._bailed:
            raise DeploymentError("the deployment already failed: " + self.result.errors[0])
        if desired.urn in self.registered:
            return self._fail(f"Duplicate resource URN '{desired.urn}'; try giving it a unique name")
        for dep in desired.dependencies:
            if dep not in self.registered:
                return self._fail(f"{desired.urn} depends on {dep}, which was not registered before it")
        self.registered[desired.urn] = desired
        old = self.state.get(desired.urn)
        try:
            return self._steps(desired, old)
        except ProviderCallError as err:
            return self._fail(f"{desired.urn}: {err.details}")

    def abort(self, message: str) -> None:
        """The program failed outside a registration: record it; finish() will delete nothing."""
        if message not in self.result.errors:
            self.result.errors.append(message)
        self._bailed = True

    def _fail(self, message: str) -> RegisterResult:
        self.result.errors.append(message)
        self._bailed = True
        raise DeploymentError(message)

    def _check(self, desired: DesiredResource, olds: dict | None) -> dict:
        checked = self.server.check(desired.urn, desired.inputs, olds, allow_unknowns=self.preview)
        if checked.failures:
            messages = [check_failure_message(desired, failure) for failure in checked.failures]
            self.result.check_failures.extend((desired.urn, failure) for failure in checked.failures)
            self.result.errors.extend(messages)
            self._bailed = True
            raise DeploymentError(f"resource {desired.urn} is invalid:\n" + "\n".join(messages))
        return checked.inputs

    def _steps(self, desired: DesiredResource, old: ResourceState | None) -> RegisterResult:
        inputs = self._check(desired, old.inputs if old is not None else None)
        try:
            return self._steps_after_check(desired, old, inputs)
        except DeploymentError:
            self._bailed = True
            raise

    def _steps_after_check(self, desired: DesiredResource, old: ResourceState | None, inputs: dict) -> RegisterResult:
        if old is None:
            created = self.server.create(desired.urn, inputs, timeout=desired.custom_timeouts.get("create", 0),
                                         preview=self.preview)
            self.result.steps.append(Step(desired.urn, CREATE))
            return self._record(desired, created.id, inputs, created.properties)

        diff = self.server.diff(old.id, desired.urn, old.outputs, inputs, old.inputs, allow_unknowns=self.preview)
        changes, changed = diff.changes, tuple(diff.diffs)
        if changes == "unknown":
            changed = tuple(props.input_diff(old.inputs, inputs))
            changes = "some" if changed else "none"
        if changes == "none":
            self.result.steps.append(Step(desired.urn, SAME))
            return self._record(desired, old.id, inputs, old.outputs)
        if not diff.replace:
            outputs = self.server.update(old.id, desired.urn, old.outputs, inputs, old.inputs,
                                         timeout=desired.custom_timeouts.get("update", 0), preview=self.preview)
            self.result.steps.append(Step(desired.urn, UPDATE, changed))
            return self._record(desired, old.id, inputs, outputs)
        return self._replace(desired, old, diff)

    def _replace(self, desired: DesiredResource, old: ResourceState, diff: Any) -> RegisterResult:
        keys = tuple(diff.replaces)
        if desired.protect and old.protect:
            message = (f"unable to replace resource \"{desired.urn}\"\nas it is currently marked for protection. "
                       "To unprotect the resource, remove the `protect` flag from the resource in your Pulumi "
                       "program and run `pulumi up`")
            self.result.errors.append(message)
            if not self.preview:
                raise DeploymentError(message)
        inputs = self._check(desired, None)
        delete_before_replace = diff.delete_before_replace
        if desired.delete_before_replace is not None:
            delete_before_replace = desired.delete_before_replace
        if delete_before_replace:
            self._delete(old, replacing=True)
        self.result.steps.append(Step(desired.urn, REPLACE, keys))
        created = self.server.create(desired.urn, inputs, timeout=desired.custom_timeouts.get("create", 0),
                                     preview=self.preview)
        self.result.steps.append(Step(desired.urn, CREATE_REPLACEMENT, keys))
        if not delete_before_replace:
            self._replaced.append(old)
            if not self.preview:
                self.state.pending_deletes.append(old)
        return self._record(desired, created.id, inputs, created.properties)

    def _record(self, desired: DesiredResource, id_: str, inputs: dict, outputs: dict) -> RegisterResult:
        outputs = dict(outputs)
        props.mark_additional_secret_outputs(outputs, desired.additional_secret_outputs)
        self.result.outputs[desired.urn] = outputs
        self.result.ids[desired.urn] = id_
        if not self.preview:
            self.state.resources.pop(desired.urn, None)
            self.state.resources[desired.urn] = ResourceState(
                urn=desired.urn, type=desired.type, id=id_, inputs=inputs, outputs=outputs,
                protect=desired.protect, dependencies=list(desired.dependencies),
                additional_secret_outputs=list(desired.additional_secret_outputs),
                retain_on_delete=desired.retain_on_delete, custom_timeouts=dict(desired.custom_timeouts),
            )
            self.state.save()
        return RegisterResult(desired.urn, id_, outputs)

    # ---- deletes ---------------------------------------------------------------------------

    def finish(self) -> DeploymentResult:
        """Runs the deletes the program implied (none if it failed) and closes the result."""
        if self._finished:
            return self.result
        self._finished = True
        if not self._bailed:
            try:
                self._run_deletes()
            except (DeploymentError, ProviderCallError):
                pass
        self._mark.finish(self.result)
        return self.result

    def _run_deletes(self) -> None:
        # Leftover olds of earlier create-before-delete replacements, then this run's olds, then
        # everything in state that the program no longer declares.
        this_run = {id(r) for r in self._replaced}
        replaced = [r for r in self.state.pending_deletes if id(r) not in this_run] + self._replaced
        condemned = [r for urn, r in self.state.resources.items() if urn not in self.registered]
        for resource, replacing in _reverse_dependency_order(replaced, condemned):
            self._delete(resource, replacing=replacing)

    def _delete(self, old: ResourceState, *, replacing: bool) -> None:
        if not replacing and old.protect:
            message = (f"resource \"{old.urn}\" cannot be deleted\nbecause it is protected. To unprotect the "
                       "resource, either remove the `protect` flag from the resource in your Pulumi program "
                       f"and run `pulumi up`, or use the command:\n`pulumi state unprotect '{old.urn}'`")
            self.result.errors.append(message)
            raise DeploymentError(message)
        op = DELETE_REPLACED if replacing else DELETE
        if not self.preview and not old.retain_on_delete:
            try:
                self.server.delete(old.id, old.urn, old.outputs, old.inputs,
                                   timeout=old.custom_timeouts.get("delete", 0))
            except ProviderCallError as err:
                self.result.errors.append(f"{old.urn}: {err.details}")
                raise
        self.result.steps.append(Step(old.urn, op))
        if self.preview:
            return
        self.state.pending_deletes = [r for r in self.state.pending_deletes if r is not old]
        if self.state.resources.get(old.urn) is old:
            del self.state.resources[old.urn]
        self.state.save()


def _reverse_dependency_order(replaced: list[ResourceState], condemned: list[ResourceState]):
    """Dependents before their dependencies; among independent ones, latest registered first."""
    pending = [(r, True) for r in replaced] + [(r, False) for r in condemned]
    ordered = []
    while pending:
        for i in range(len(pending) - 1, -1, -1):
            resource = pending[i][0]
            depended_on = any(resource.urn in other.dependencies for other, _ in pending if other is not resource)
            if not depended_on:
                ordered.append(pending.pop(i))
                break
        else:
            ordered.extend(reversed(pending))  # a cycle cannot come from a real program; keep going
            break
    return ordered


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def parse_timeout(text: str) -> float:
    """Go duration strings as custom timeouts use them ("5m", "1h30m", "90s") -> seconds."""
    if not text:
        return 0.0
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * scale[u] for n, u in parts)
