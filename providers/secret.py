"""A named Modal secret as a Pulumi resource: created, or overwritten when one of that name exists.

Inputs:  name, environment, values (a dict of environment variable name -> value, given as a
         Pulumi secret; `ModalSecret` marks it secret even when a plain dict is passed).
Outputs: name, environment, key_names, values_digest, secret_id. Never the values.
Id:      "<environment>/<name>" (what `pulumi import` takes).

How values are tracked without storing them: `values_digest` is a sha256 of the values; the
resource lists it in `additional_secret_outputs`, so the engine encrypts it like the values (a bare
digest of a short value could be guessed offline). A diff compares the digest of the new values
with it: a value change is an in-place update, which overwrites the secret whole (keys no longer
declared disappear). Modal never hands values back, so `read` notices drift only through the keys
or a different secret id (someone re-created it); either empties the digest, and the next `up`
writes the declared values again (a hand edit that keeps keys and id goes unnoticed: Modal exposes
no update time). An import trusts the declared values when their keys match Modal's, as a refresh
trusts an unchanged secret. Changing name or environment replaces the secret.

What `read` returns is secret by itself (`_as_secret`): the declared values it echoes as inputs
when importing, and the digest. The engine re-marks returned inputs only from the secrets in the
request's own inputs (`annotateSecrets`), which a read need not carry (the declared values may come
as its state alone), and a `pulumi import` has no program to name additional_secret_outputs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

import modal
import pulumi
import pydantic
from modal.exception import AlreadyExistsError
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult
from pulumi.runtime import rpc

from providers.base import EnvironmentName, InputModel, ModalProvider, ObjectName, join_id, precise_diff, split_id
from providers.modal_access.lookups import lookup_secret
from providers.modal_access.retry import modal_call
from providers.modal_internals import remove_secret_keys, secret_key_names
from providers.shared import progress
from serving.modal_rules import check_env_var_name

# Inputs whose change means another secret.
REPLACE_ON = ("name", "environment")
# Every input, in the order a diff reports them.
FIELDS = ("name", "environment", "values")
# Outputs derived from the secret values, which the engine must encrypt in state.
ADDITIONAL_SECRET_OUTPUTS = ("values_digest",)
# Prefix of values_digest, naming the algorithm so it can change without a false "no change".
DIGEST_PREFIX = "sha256:"


# A key of a secret: it becomes an environment variable in the containers that use the secret, so it
# must be a valid variable name.
SecretKey = Annotated[str, pydantic.AfterValidator(check_env_var_name)]


class SecretInputs(InputModel):
    secret_fields = frozenset({"values"})

    name: ObjectName
    environment: EnvironmentName
    values: dict[SecretKey, str]

    @pydantic.field_validator("values")
    @classmethod
    def _not_empty(cls, values: dict[str, str]) -> dict[str, str]:
        if not values:
            raise ValueError("must hold at least one key")
        return values


def values_digest(values: dict[str, str]) -> str:
    """A stable digest of the values (keys sorted), so equal values give equal digests."""
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return DIGEST_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def _values_unchanged(olds: dict[str, Any], new_values: Any) -> bool:
    if not isinstance(new_values, dict):
        return False
    return olds.get("key_names") == sorted(new_values) and olds.get("values_digest") == values_digest(new_values)


def _as_secret(value: Any) -> Any:
    """`value` as a secret in the wire form of the Pulumi protocol.

    The dynamic provider server serializes what a provider returns with `rpc.serialize_properties`,
    which passes this marker through unchanged, and the engine reads it back as a secret. A
    `pulumi.Output.secret` would not do: that process has no resource monitor, so the serializer
    sends an Output's value in plaintext (pulumi 3.272.0, `serialize_property`)."""
    return rpc.wrap_rpc_secret(value)


def _write(inputs: SecretInputs) -> tuple[str, bool]:
    """Create the secret, or make the existing one of that name hold exactly the declared values (keys
    no longer declared are removed; its id stays, so deployed apps keep finding it).
    (its id, whether it existed). Safe to repeat: a retry after a partial write ends the same."""
    values = dict(inputs.values)

    def write() -> tuple[str, bool]:
        try:
            modal.Secret.objects.create(inputs.name, values, environment_name=inputs.environment)
            existed = False
        except AlreadyExistsError:
            existed = True
        secret = modal.Secret.from_name(inputs.name, environment_name=inputs.environment).hydrate()
        if existed:
            undeclared = set(secret_key_names(secret)) - set(values)
            secret.update(values)
            if undeclared:
                remove_secret_keys(secret, undeclared)
        return secret.object_id, existed

    return modal_call(write, what=f"write secret '{inputs.name}' in environment '{inputs.environment}'")


def _outputs(inputs: SecretInputs, secret_id: str) -> dict[str, Any]:
    return {
        "name": inputs.name,
        "environment": inputs.environment,
        "key_names": sorted(inputs.values),
        "values_digest": values_digest(inputs.values),
        "secret_id": secret_id,
    }


class SecretProvider(ModalProvider):
    inputs_model = SecretInputs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return precise_diff(
            olds,
            news,
            FIELDS,
            replace_on=REPLACE_ON,
            stables=("secret_id",),
            compare={"values": _values_unchanged},
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        where = f"secret '{inputs.name}' in environment '{inputs.environment}'"
        secret_id, existed = _write(inputs)
        if existed:
            progress(f"{where} already existed: adopted, its values overwritten with the declared ones")
        progress(f"{where} written ({len(inputs.values)} keys)")
        return CreateResult(join_id(inputs.environment, inputs.name), _outputs(inputs, secret_id))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        environment, name = split_id(id_, "Secret")
        secret = lookup_secret(environment, name)
        if secret is None:
            return ReadResult("", {})  # gone: the engine drops it from state
        keys = secret_key_names(secret)
        importing = "secret_id" not in props  # no outputs yet: `pulumi import` (props are the declared inputs)
        declared = props.get("values") if isinstance(props.get("values"), dict) else None
        if importing:
            # Values cannot be read back: trust the declared ones when their keys are what Modal holds,
            # the same trust a refresh gives an unchanged secret; otherwise the next `up` rewrites them.
            digest = values_digest(declared) if declared is not None and sorted(declared) == keys else ""
        else:
            # Keep the digest only while nothing says the values changed behind our back.
            unchanged = keys == props.get("key_names") and secret.object_id == props.get("secret_id")
            digest = props.get("values_digest", "") if unchanged else ""
        outputs = {
            "name": name,
            "environment": environment,
            "key_names": keys,
            "values_digest": _as_secret(digest),
            "secret_id": secret.object_id,
        }
        inputs = None
        if importing:
            inputs = {"name": name, "environment": environment}
            if declared:
                inputs["values"] = _as_secret(declared)
        return ReadResult(id_, outputs, inputs)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs = self.validated(news)
        secret_id, _existed = _write(inputs)
        progress(f"secret '{inputs.name}' in environment '{inputs.environment}' overwritten")
        return UpdateResult(_outputs(inputs, secret_id))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        environment, name = split_id(id_, "Secret")
        modal_call(
            modal.Secret.objects.delete,
            name,
            environment_name=environment,
            allow_missing=True,
            what=f"delete secret '{name}' in environment '{environment}'",
        )
        progress(f"secret '{name}' in environment '{environment}' deleted")


class ModalSecret(Resource, module="modal", name="Secret"):
    """A named Modal secret holding `values`; the values stay secret in state and never reach outputs."""

    name: pulumi.Output[str]
    environment: pulumi.Output[str]
    key_names: pulumi.Output[list[str]]
    values_digest: pulumi.Output[str]
    secret_id: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        name: pulumi.Input[str],
        environment: pulumi.Input[str],
        values: pulumi.Input[dict[str, str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "name": name,
            "environment": environment,
            "values": pulumi.Output.secret(values),
            "key_names": None,
            "values_digest": None,
            "secret_id": None,
        }
        secret_outputs = pulumi.ResourceOptions(additional_secret_outputs=list(ADDITIONAL_SECRET_OUTPUTS))
        opts = pulumi.ResourceOptions.merge(opts, secret_outputs)
        super().__init__(SecretProvider(), resource_name, props, opts)
