"""Property values as the Pulumi engine holds them, and the engine's secret bookkeeping.

Values are plain Python (dict, list, str, float, bool, None) in the *wire form* of the
Pulumi protocol: a secret is the SDK's own marker object
`{"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": ...}`
(`pulumi.runtime.rpc.wrap_rpc_secret`) and an unknown (a value not known during preview) is
the string `pulumi.runtime.rpc.UNKNOWN`. Tests assert secretness with `is_secret`.

Engine behaviours reproduced here (pulumi/pulumi at commit 1b59498, the newest stored snapshot;
read with SDK 3.272.0, the pinned SDK):

- `strip_secrets` is `plugin.MarshalProperties(..., KeepSecrets: false)`: a provider that
  answered Configure with `acceptSecrets=False` (the Python dynamic provider always does,
  sdk/python/lib/pulumi/dynamic/__main__.py `Configure`) receives the plaintext of every secret
  (pkg/resource/plugin/provider_plugin.go, Check/Diff/Create/Read/Update/Delete all marshal with
  `KeepSecrets: protocol.acceptSecrets`).
- `strip_unknowns` is `MarshalProperties(..., KeepUnknowns: false)`: outside preview unknowns
  are never sent; in preview Check and Diff keep them (`KeepUnknowns: req.AllowUnknowns`).
- `annotate_secrets` is `annotateSecrets(outs, ins)` in pkg/resource/plugin/provider_plugin.go:
  for each key of the inputs present in the outputs, objects recurse, otherwise the output is
  made secret if the input value contains a secret anywhere. Nothing else is re-marked: an
  output derived from a secret under a different key stays plaintext.
- `mark_additional_secret_outputs` is the loop over `AdditionalSecretOutputs` in
  pkg/resource/deploy/step_executor.go (`executeStep`): listed top-level outputs become secret
  ("id" cannot be made secret; missing keys are ignored).
- `input_diff` is the engine's fallback when a provider answers DIFF_UNKNOWN:
  `unwrapResourceSecretsAndOutputs(oldInputs).Diff(unwrap(newInputs))` in `diffResource`
  (pkg/resource/deploy/step_generator.go). It compares every input, `__provider` included.

Numbers: protobuf Struct has only doubles, so every number the provider or the engine sees is a
float (an `int` input comes back as `1.0`), exactly as in a real deployment.
"""

import asyncio
import copy
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi.runtime import rpc

# The SDK's wire markers (pulumi/runtime/rpc.py). A dict carrying SIG_KEY is a special value,
# never a user object; SECRET_SIG marks a secret whose plaintext is under "value".
SIG_KEY = rpc._special_sig_key
SECRET_SIG = rpc._special_secret_sig
# What a value not known during preview looks like on the wire.
UNKNOWN = rpc.UNKNOWN


def secret(value: Any) -> dict:
    """Marks a value secret, as `pulumi.Output.secret` does on the wire."""
    return rpc.wrap_rpc_secret(value)


def is_secret(value: Any) -> bool:
    return rpc.is_rpc_secret(value)


def is_object(value: Any) -> bool:
    """A user object (a dict that is not one of the SDK's special signature values)."""
    return isinstance(value, dict) and SIG_KEY not in value


def contains_secrets(value: Any) -> bool:
    if is_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secrets(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secrets(v) for v in value)
    return False


def outside_secrets(value: Any) -> str:
    """Everything in `value` that is NOT inside a secret marker, as text: what a reader of state or
    outputs sees without the stack's passphrase."""
    if is_secret(value):
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k} {outside_secrets(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(outside_secrets(v) for v in value)
    return str(value)


def contains_unknowns(value: Any) -> bool:
    if value == UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(contains_unknowns(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknowns(v) for v in value)
    return False


def reveal(value: Any) -> Any:
    """The plaintext of a value: every secret marker replaced by what it wraps (deeply)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


# What the engine sends a provider that does not accept secrets: the same, in plaintext.
strip_secrets = reveal


def strip_unknowns(value: Any) -> Any:
    """Drops unknown properties and list elements, as MarshalProperties without KeepUnknowns."""
    if isinstance(value, dict):
        return {k: strip_unknowns(v) for k, v in value.items() if v != UNKNOWN}
    if isinstance(value, list):
        return [strip_unknowns(v) for v in value if v != UNKNOWN]
    return value


def annotate_secrets(outs: dict | None, ins: dict | None) -> None:
    """Copies the secretness of `ins` onto `outs` in place (the engine's annotateSecrets)."""
    if outs is None or ins is None:
        return
    for key, in_value in ins.items():
        if key not in outs:
            continue
        out_value = outs[key]
        if is_object(out_value) and is_object(in_value):
            annotate_secrets(out_value, in_value)
        elif not is_secret(out_value) and contains_secrets(in_value):
            outs[key] = secret(out_value)


def mark_additional_secret_outputs(outs: dict, names: list[str] | tuple[str, ...]) -> None:
    for name in names:
        if name != "id" and name in outs and not is_secret(outs[name]):
            outs[name] = secret(outs[name])


def input_diff(old_inputs: dict, new_inputs: dict) -> list[str]:
    """Top-level keys whose plaintext differs (added, removed or changed), sorted."""
    old, new = reveal(old_inputs or {}), reveal(new_inputs or {})
    return sorted(k for k in set(old) | set(new) if old.get(k, _MISSING) != new.get(k, _MISSING))


_MISSING = object()


def to_struct(props: dict) -> struct_pb2.Struct:
    """Encodes properties with the SDK's own serializer (pulumi.runtime.rpc.serialize_properties).

    Secrets and unknowns are already in wire form, so they pass through unchanged. A fresh event
    loop is used because the SDK serializer is async and callers may run inside another loop's
    executor thread (the mocks monitor does).
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(rpc.serialize_properties(copy.deepcopy(props), {}))
    finally:
        loop.close()


def from_struct(struct: struct_pb2.Struct | None) -> dict:
    """Decodes a Struct losslessly, as the engine's UnmarshalProperties(KeepSecrets, KeepUnknowns).

    Deliberately not `rpc.deserialize_properties`: that is the *language SDK's* view, which lifts
    a nested secret to its parent object and turns unknowns into `Unknown()` objects. The engine
    keeps nested secrets where they are.
    """
    if struct is None:
        return {}
    return json_format.MessageToDict(struct)
