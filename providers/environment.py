"""A Modal environment as a Pulumi resource: created or adopted, never deleted while it holds objects.

Inputs:  name, force_delete (default False: never delete a non-empty environment).
Outputs: name, force_delete, environment_id.
Id:      the environment name (what `pulumi import` takes).

Deleting Modal environment deletes everything in it, so a delete of one that still holds objects
(e.g. volumes kept because they hold data) keeps it on Modal: the resource leaves the stack and the
output says what it holds. Refusing would leave the stack failing the same delete on every `up`.
Changing `name` replaces the environment; changing `force_delete` only records the new value (no
Modal call), so set it and run `pulumi up` before a destroy that should take the contents along.
"""

from __future__ import annotations

from typing import Any

import modal
import pulumi
from modal.exception import AlreadyExistsError, NotFoundError
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from .base import EnvironmentName, InputModel, ModalProvider, ProviderError, precise_diff, progress
from .retry import modal_call

# Inputs whose change means another environment.
REPLACE_ON = ("name",)
# Every input, in the order a diff reports them.
FIELDS = ("name", "force_delete")


class EnvironmentInputs(InputModel):
    name: EnvironmentName
    force_delete: bool = False


def _lookup(name: str) -> Any | None:
    """The hydrated environment, or None when Modal has none of that name (a read-only call)."""

    def get() -> Any | None:
        try:
            return modal.Environment.from_name(name).hydrate()
        except NotFoundError:
            return None

    return modal_call(get, what=f"look up environment '{name}'")


def _create_new(name: str) -> bool:
    """Create the environment; False when one of that name already exists (it is then adopted).

    A retry of a create whose answer was lost also lands here as "exists", which is just as right."""

    def create() -> bool:
        try:
            modal.Environment.objects.create(name)
        except AlreadyExistsError:
            return False
        return True

    return modal_call(create, what=f"create environment '{name}'")


def _contents(name: str) -> dict[str, list[str]]:
    """Names of what the environment holds, by kind: what deleting it would destroy."""

    def secrets() -> list[str]:
        return sorted(s.name or s.object_id for s in modal.Secret.objects.list(environment_name=name))

    def volumes() -> list[str]:
        return sorted(v.name or v.object_id for v in modal.Volume.objects.list(environment_name=name))

    def apps() -> list[str]:
        live = modal.Environment.from_name(name).apps.list()  # stopped apps are already left out
        return sorted(app.name or app.app_id for app in live)

    return {
        "secrets": modal_call(secrets, what=f"list secrets of environment '{name}'"),
        "volumes": modal_call(volumes, what=f"list volumes of environment '{name}'"),
        "apps": modal_call(apps, what=f"list apps of environment '{name}'"),
    }


def _outputs(inputs: EnvironmentInputs, environment_id: str) -> dict[str, Any]:
    return {**inputs.model_dump(mode="json"), "environment_id": environment_id}


class EnvironmentProvider(ModalProvider):
    inputs_model = EnvironmentInputs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return precise_diff(olds, news, FIELDS, replace_on=REPLACE_ON, stables=("environment_id",))

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        # Create first (the one mutating call), so a name that exists shows up as AlreadyExists.
        if _create_new(inputs.name):
            progress(f"environment '{inputs.name}' created")
        else:
            progress(f"environment '{inputs.name}' already exists: adopting it")
        environment = _lookup(inputs.name)
        if environment is None:
            raise ProviderError(
                f"environment '{inputs.name}' vanished right after it was created or found: run `pulumi up` again"
            )
        return CreateResult(inputs.name, _outputs(inputs, environment.object_id))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        environment = _lookup(id_)
        if environment is None:
            return ReadResult("", {})  # gone: the engine drops it from state
        importing = "environment_id" not in props  # no outputs yet: `pulumi import`
        inputs = EnvironmentInputs(name=id_, force_delete=bool(props.get("force_delete", False)))
        outputs = _outputs(inputs, environment.object_id)
        return ReadResult(id_, outputs, inputs.model_dump(mode="json") if importing else None)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only force_delete can change in place, and it lives in our state, not on Modal.
        inputs = self.validated(news)
        return UpdateResult(_outputs(inputs, olds.get("environment_id", "")))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        name = id_
        if _lookup(name) is None:
            progress(f"environment '{name}' is already gone")
            return
        if not props.get("force_delete", False):
            held = {kind: names for kind, names in _contents(name).items() if names}
            if held:
                listing = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in held.items())
                progress(
                    f"environment '{name}' still holds {listing}: kept on Modal, no longer managed by this "
                    f"stack. Once those are gone, `modal environment delete {name}` removes it."
                )
                return

        def remove() -> None:
            try:
                modal.Environment.objects.delete(name)
            except NotFoundError:
                pass  # an earlier attempt got through before its answer was lost

        modal_call(remove, what=f"delete environment '{name}'")
        progress(f"environment '{name}' deleted")


class ModalEnvironment(Resource, module="modal", name="Environment"):
    """A Modal environment. `force_delete=True` lets `pulumi destroy` delete it with its contents."""

    name: pulumi.Output[str]
    force_delete: pulumi.Output[bool]
    environment_id: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        name: pulumi.Input[str],
        force_delete: pulumi.Input[bool] = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"name": name, "force_delete": force_delete, "environment_id": None}
        super().__init__(EnvironmentProvider(), resource_name, props, opts)
