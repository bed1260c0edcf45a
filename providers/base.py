"""What every resource of providers/ is built on: input checks, precise diffs, resource ids and the
provider base class. (Errors, progress lines and redaction: providers/shared/; retries of Modal calls:
providers/modal_access/retry.py.)

How this code runs: the Pulumi engine starts `python -u -m pulumi.dynamic` (from the venv named in
Pulumi.yaml, with the program directory `infra/` as working directory and no PYTHONPATH). That process gets each
resource's provider object from state as a dill pickle; a provider class that lives in this installed
package is pickled *by reference* ("providers.secret.SecretProvider"), so the pickle stays tens of
bytes and the process imports the current code. Keep every provider class in `providers/`.

What the engine hands us (CLI v3.277.0, SDK 3.272.0; tests/stack runs it through the real CLI):
- `check(olds, news)`: olds are the old *inputs*; values not yet known in a preview are `UNKNOWN`.
- `diff(id, olds, news)` and `update(id, olds, news)`: olds are the old *outputs*, so every output
  echoes the inputs a diff needs (never a secret value). Answer precisely: "unknown" makes the
  engine diff inputs itself, `__provider` included.
- Secret inputs arrive in plaintext (the server answers `acceptSecrets=False`). Outputs derived from
  them must be listed in the resource's `additional_secret_outputs`.
- Each line printed to stdout shows as info during `pulumi up`; an exception becomes an error whose
  text is a traceback, so our errors carry one clear, redacted message and no chained cause.

Credentials come from the normal Modal sources (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET, ~/.modal.toml,
MODAL_SERVER_URL) or the stack's secret config `modal:tokenId`/`modal:tokenSecret`, read in
`configure` into this process's environment; nothing credential-like is put in inputs or outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

import pydantic
from pulumi.dynamic import CheckFailure, CheckResult, ConfigureRequest, DiffResult, ResourceProvider
from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from providers.shared import ProviderError, redact, register_secrets
from providers.shared.engine_watch import watch_engine
from serving.modal_rules import check_environment_name, check_object_name

__all__ = [
    "UNKNOWN",
    "InputModel",
    "EnvironmentName",
    "ModalProvider",
    "ObjectName",
    "PreciseDiff",
    "check_inputs",
    "contains_unknown",
    "join_id",
    "precise_diff",
    "split_id",
    "strip_internal",
    "validate_inputs",
]

# Pulumi stack config keys for Modal credentials, as an alternative to env vars/~/.modal.toml.
TOKEN_ID_CONFIG_KEY = "modal:tokenId"
TOKEN_SECRET_CONFIG_KEY = "modal:tokenSecret"


# ---------------------------------------------------------------------------------------------
# Inputs: one pydantic model per resource; `check` turns its errors into per-property failures.
# ---------------------------------------------------------------------------------------------


class InputModel(pydantic.BaseModel):
    """Base of every resource's inputs: unknown properties are errors, not silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    # Fields holding secret values (any string inside them): registered for redaction on check,
    # never echoed into outputs.
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    # Fields that MAY hold Pulumi secrets among plain values (e.g. a secret digest in a dict of
    # triggers). The provider cannot tell which (it gets plaintext), and redacting every string in
    # them would garble messages with common short values; but a failure about the whole field is
    # named like one about a secret field (see `_failure_property`).
    secret_capable_fields: ClassVar[frozenset[str]] = frozenset()


InputModelT = TypeVar("InputModelT", bound=InputModel)

# A Modal object name (secret, volume, app) and an environment name, as pydantic field types.
# Checked here, with Modal's own rules (serving/modal_rules.py), so `pulumi preview` rejects a bad
# name without asking Modal.
ObjectName = Annotated[str, pydantic.AfterValidator(check_object_name)]
EnvironmentName = Annotated[str, pydantic.AfterValidator(check_environment_name)]


def strip_internal(props: Mapping[str, Any]) -> dict[str, Any]:
    """The resource's own properties: without `__provider` and other engine-internal keys."""
    return {k: v for k, v in props.items() if not k.startswith("__")}


def contains_unknown(value: Any) -> bool:
    """Whether a value (or anything inside it) is not known yet, as in a preview."""
    # The dynamic provider server deserializes Check/Diff inputs with keep_unknowns=True, which turns
    # the wire sentinel into `pulumi.output.Unknown` objects (pulumi/runtime/rpc.py deserialize_property).
    if isinstance(value, Unknown):
        return True
    if isinstance(value, str):
        return value == UNKNOWN
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_unknown(v) for v in value)
    return False


def _strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings_in(v)


def secret_values_of(model_cls: type[InputModel], props: Mapping[str, Any]) -> list[str]:
    """Every string inside the secret fields of `props` (validated or not)."""
    return [s for name in model_cls.secret_fields for s in _strings_in(props.get(name))]


def _property_path(loc: Sequence[Any]) -> str:
    """pydantic's error location as a Pulumi property path: values.HF_TOKEN, triggers.list[0]."""
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic marks an invalid dict key this way; the key itself is the path
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _failure_property(model_cls: type[InputModel], loc: Sequence[Any]) -> str:
    """The property a CheckFailure names. The engine prints the program's value of a failure's
    property when that is a top-level key, secrets in plaintext (pkg/resource/deploy/step_generator.go
    `issueCheckFailures`), so a failure about a whole secret field names it in a form that is not a key."""
    path = _property_path(loc)
    return f"{path} (secret)" if path in model_cls.secret_fields | model_cls.secret_capable_fields else path


def check_inputs(model_cls: type[InputModel], news: Mapping[str, Any]) -> CheckResult:
    """Validate `news` with `model_cls`; one CheckFailure per offending property, never an exception.

    Properties not known yet (preview) are left out of validation and passed through unchanged; the
    rest come back normalized (defaults filled in) so state records exactly what was applied."""
    props = strip_internal(news)
    register_secrets(secret_values_of(model_cls, props))
    pending = {name for name, value in props.items() if contains_unknown(value)}
    known = {name: value for name, value in props.items() if name not in pending}
    try:
        model = model_cls.model_validate(known)
    except pydantic.ValidationError as error:
        failures = [
            CheckFailure(_failure_property(model_cls, item["loc"]), redact(item["msg"]))
            for item in error.errors(include_url=False, include_input=False, include_context=False)
            if not (item["type"] == "missing" and item["loc"] and item["loc"][0] in pending)
        ]
        # Only "missing" errors for properties that are merely unknown yet: fine for now.
        return CheckResult(dict(props), failures)
    except Exception as error:  # a validator raising something else must still not become a traceback
        return CheckResult(dict(props), [CheckFailure("", redact(f"{type(error).__name__}: {error}"))])
    inputs = model.model_dump(mode="json")
    inputs.update({name: props[name] for name in pending})
    return CheckResult(inputs, [])


def validate_inputs(model_cls: type[InputModelT], props: Mapping[str, Any]) -> InputModelT:
    """`props` (create/update get checked inputs) re-typed as `model_cls`; outputs beside them are
    ignored. A failure is a ProviderError naming each property, never quoting its value."""
    register_secrets(secret_values_of(model_cls, props))
    fields = set(model_cls.model_fields)
    try:
        return model_cls.model_validate({k: v for k, v in strip_internal(props).items() if k in fields})
    except pydantic.ValidationError as error:
        # str(error) would quote each offending input (`input_value=`), secrets included.
        problems = "; ".join(
            f"{_property_path(item['loc'])}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False, include_context=False)
        )
        raise ProviderError(f"invalid inputs: {problems}") from None


# ---------------------------------------------------------------------------------------------
# Diffs: exactly the changed properties, which of them replace, and the stables. Never calls Modal.
# ---------------------------------------------------------------------------------------------


class PreciseDiff(DiffResult):
    """A DiffResult that also names the changed properties (`changed`), for tests and messages.

    (The dynamic provider server forwards only changes/replaces/deleteBeforeReplace.)"""

    def __init__(self, changed: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.changed = changed


# compare(old_outputs, new_value) -> True when the new value is what the old outputs record.
Comparer = Callable[[Mapping[str, Any], Any], bool]


def precise_diff(
    olds: Mapping[str, Any],
    news: Mapping[str, Any],
    fields: Iterable[str],
    *,
    replace_on: Iterable[str] = (),
    stables: Iterable[str] = (),
    compare: Mapping[str, Comparer] | None = None,
    delete_before_replace: bool = False,
) -> PreciseDiff:
    """Compare the input `fields` of `news` with the old outputs `olds`.

    A field whose new value is not known yet counts as changed. `compare` overrides equality for a
    field whose old value is not stored as such (e.g. secret values kept only as a digest).
    `stables` are properties that never change in an update (outputs like ids); they are reported
    unless they are themselves changed (then they replace)."""
    compare = compare or {}
    changed = []
    for name in fields:
        new = news.get(name)
        if contains_unknown(new):
            changed.append(name)
        elif name in compare:
            if not compare[name](olds, new):
                changed.append(name)
        elif olds.get(name) != new:
            changed.append(name)
    replaces = [name for name in changed if name in set(replace_on)]
    return PreciseDiff(
        changed,
        changes=bool(changed),
        replaces=replaces,
        stables=[name for name in stables if name not in changed],
        delete_before_replace=delete_before_replace if replaces else None,
    )


# ---------------------------------------------------------------------------------------------
# Resource ids: "<environment>/<name>" for objects scoped to an environment (what `pulumi import`
# takes), the bare name for environments themselves.
# ---------------------------------------------------------------------------------------------

_ID_PART = re.compile(r"^[^/]+$")


def join_id(environment: str, name: str) -> str:
    return f"{environment}/{name}"


def split_id(resource_id: str, kind: str) -> tuple[str, str]:
    """(environment, name) from an id "<environment>/<name>"; a clear error for anything else."""
    environment, sep, name = resource_id.partition("/")
    if not sep or not _ID_PART.match(environment) or not _ID_PART.match(name):
        raise ProviderError(
            f"invalid {kind} id {resource_id!r}: expected '<environment>/<name>', e.g. 'main/my-{kind.lower()}'"
        )
    return environment, name


# ---------------------------------------------------------------------------------------------
# The provider base class.
# ---------------------------------------------------------------------------------------------


class ModalProvider(ResourceProvider):
    """Base of our providers: stateless (so pickled by reference, tiny), checks with `inputs_model`,
    and takes Modal credentials from stack config when given there."""

    # Nothing secret is captured in the pickle, so there is no reason to encrypt it in state.
    serialize_as_secret_always = False

    inputs_model: ClassVar[type[InputModel]] = InputModel

    def configure(self, req: ConfigureRequest) -> None:
        # The engine configures each provider once per process, before any other call.
        watch_engine()
        for config_key, env_var in (
            (TOKEN_ID_CONFIG_KEY, "MODAL_TOKEN_ID"),
            (TOKEN_SECRET_CONFIG_KEY, "MODAL_TOKEN_SECRET"),
        ):
            value = req.config.get(config_key)
            if isinstance(value, str) and value and not os.environ.get(env_var):
                os.environ[env_var] = value
                if env_var == "MODAL_TOKEN_SECRET":
                    register_secrets([value])

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return check_inputs(self.inputs_model, news)

    def validated(self, props: Mapping[str, Any]) -> InputModel:
        """The inputs model of `props` (create/update get checked inputs; this re-types them)."""
        return validate_inputs(self.inputs_model, props)
