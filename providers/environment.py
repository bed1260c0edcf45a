"""A Modal environment as a Pulumi resource: looked up, created only when missing, deleted only if ours.

Inputs:  name, force_delete (default False: never delete a non-empty environment).
Outputs: name, force_delete, environment_id, created (True: this stack created it; False: it existed
         and was adopted).
Id:      the environment name (what `pulumi import` takes).

Look before you create: 1.6.4's `Environment.objects.create` has no `allow_existing`, and what Modal
answers for a name that exists is unknown (Modal's own test servicer silently succeeds; ALREADY_EXISTS
and, for a token that may use the environment but not create one, PERMISSION_DENIED are as
plausible). So a create is only sent for a name the look-up did not find, and whatever it answers,
a second look-up decides: there now, it is ours (created) or someone else's (adopted); not there, the
create's error is the error.

The stack never deletes an environment it adopted (the workspace's default above all, whatever it is
called): destroy forgets it and says so. An environment it created is deleted, except while it still
holds objects (e.g. volumes kept because they hold data; deleting an environment deletes everything in
it): then it stays on Modal, the resource leaves the stack and the output says what it holds.
Refusing would leave the stack failing the same delete on every `up`. Changing `name` replaces the
environment; changing `force_delete` only records the new value (no Modal call), so set it and run
`pulumi up` before a destroy that should take the contents along.
"""

from __future__ import annotations

from typing import Any

import modal
import pulumi
from modal.exception import AlreadyExistsError, InvalidError, NotFoundError, PermissionDeniedError
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from providers.base import EnvironmentName, InputModel, ModalProvider, precise_diff
from providers.modal_access.lookups import environment_exists, lookup_environment
from providers.modal_access.retry import describe_failure, modal_call
from providers.shared import ProviderError, progress

# Inputs whose change means another environment.
REPLACE_ON = ("name",)
# Every input, in the order a diff reports them.
FIELDS = ("name", "force_delete")


class EnvironmentInputs(InputModel):
    name: EnvironmentName
    force_delete: bool = False


def _create(name: str) -> Exception | None:
    """Send the create; the refusals an existing name may meet are returned for the caller to judge
    (by a look-up) instead of raised."""

    def create() -> Exception | None:
        try:
            modal.Environment.objects.create(name)
        except (AlreadyExistsError, PermissionDeniedError) as refusal:
            return refusal
        return None

    return modal_call(create, what=f"create environment '{name}'")


def _contents(environment: Any) -> dict[str, list[str]]:
    """Names of what the environment holds, by kind: what deleting it would destroy."""
    name = environment.name

    def secrets() -> list[str]:
        return sorted(s.name or s.object_id for s in modal.Secret.objects.list(environment_name=name))

    def volumes() -> list[str]:
        return sorted(v.name or v.object_id for v in modal.Volume.objects.list(environment_name=name))

    def apps() -> list[str]:
        return sorted(app.name or app.app_id for app in environment.apps.list())  # stopped apps left out

    return {
        "secrets": modal_call(secrets, what=f"list secrets of environment '{name}'"),
        "volumes": modal_call(volumes, what=f"list volumes of environment '{name}'"),
        "apps": modal_call(apps, what=f"list apps of environment '{name}'"),
    }


def _outputs(inputs: EnvironmentInputs, environment_id: str, created: bool) -> dict[str, Any]:
    return {**inputs.model_dump(mode="json"), "environment_id": environment_id, "created": created}


class EnvironmentProvider(ModalProvider):
    inputs_model = EnvironmentInputs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return precise_diff(olds, news, FIELDS, replace_on=REPLACE_ON, stables=("environment_id", "created"))

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        name = inputs.name
        environment = lookup_environment(name)
        created = False
        if environment is None:
            refusal = _create(name)
            environment = lookup_environment(name)
            if environment is None:
                if refusal is not None:
                    raise ProviderError(describe_failure(f"create environment '{name}'", refusal, 1))
                raise ProviderError(f"environment '{name}' vanished right after it was created: run `pulumi up` again")
            # Refused, yet there: another client created it meanwhile (or our own first attempt did
            # before its answer was lost). Taking it as adopted means destroy keeps it: the safe side.
            created = refusal is None
        if created:
            progress(f"environment '{name}' created")
        else:
            progress(f"environment '{name}' already exists: adopting it (destroy will keep it)")
        return CreateResult(name, _outputs(inputs, environment.object_id, created))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        environment = lookup_environment(id_)
        if environment is None:
            return ReadResult("", {})  # gone: the engine drops it from state
        importing = "environment_id" not in props  # no outputs yet: `pulumi import`
        inputs = EnvironmentInputs(name=id_, force_delete=bool(props.get("force_delete", False)))
        # An imported environment is one this stack did not create; a refresh keeps what was recorded.
        created = bool(props.get("created", False)) and not importing
        outputs = _outputs(inputs, environment.object_id, created)
        return ReadResult(id_, outputs, inputs.model_dump(mode="json") if importing else None)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only force_delete can change in place, and it lives in our state, not on Modal.
        inputs = self.validated(news)
        return UpdateResult(_outputs(inputs, olds.get("environment_id", ""), bool(olds.get("created", False))))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        name = id_
        environment = lookup_environment(name)
        if environment is None:
            progress(f"environment '{name}' is already gone")
            return
        # A state written before `created` was recorded cannot say: keep it, as for an adopted one.
        if not props.get("created", False):
            progress(
                f"environment '{name}' was adopted, not created by this stack: kept on Modal, no longer managed "
                "by this stack"
            )
            return
        if not props.get("force_delete", False):
            held = {kind: names for kind, names in _contents(environment).items() if names}
            if held:
                listing = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in held.items())
                progress(
                    f"environment '{name}' still holds {listing}: kept on Modal, no longer managed by this "
                    f"stack. Once those are gone, `modal environment delete {name}` removes it."
                )
                return

        def remove() -> Exception | None:
            try:
                modal.Environment.objects.delete(name)
            except (NotFoundError, InvalidError) as answer:
                # What a name that is gone is answered with (an earlier attempt got through before its
                # answer was lost), or a refusal: the look-up below tells them apart.
                return answer
            return None

        answer = modal_call(remove, what=f"delete environment '{name}'")
        if answer is not None and environment_exists(name):
            raise ProviderError(describe_failure(f"delete environment '{name}'", answer, 1))
        progress(f"environment '{name}' deleted")


class ModalEnvironment(Resource, module="modal", name="Environment"):
    """A Modal environment. Destroy deletes it only if this stack created it; `force_delete=True`
    lets it go with its contents."""

    name: pulumi.Output[str]
    force_delete: pulumi.Output[bool]
    environment_id: pulumi.Output[str]
    created: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        name: pulumi.Input[str],
        force_delete: pulumi.Input[bool] = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"name": name, "force_delete": force_delete, "environment_id": None, "created": None}
        super().__init__(EnvironmentProvider(), resource_name, props, opts)
