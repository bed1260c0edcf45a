"""A named Modal volume as a Pulumi resource: created, or adopted when one of that name exists.

Inputs:  name, environment, delete_data (default False: never delete a volume holding files).
Outputs: name, environment, delete_data, volume_id, version (1 or 2: Modal's VolumeFS version).
Id:      "<environment>/<name>" (what `pulumi import` takes).

A new volume is v1 (NEW_VOLUME_VERSION says why); an adopted one keeps the version it has. The
modal client picks the file RPCs of each version itself, so everything here works on both.

A weights volume holds hundreds of GB that take up to an hour to download again, so a delete of one
with files in it (a destroy, or the old volume of a rename) keeps it on Modal: the resource leaves
the stack, the volume stays, and the output says so and how to delete it by hand. Refusing instead
would leave the stack stuck, failing the same delete on every later `up`. `delete_data=True`,
recorded first (set it and `pulumi up`; changing it alone calls nothing on Modal), deletes the data
along. Use Pulumi's `protect` on top to make a destroy or rename refuse at preview.
"""

from __future__ import annotations

from typing import Any

import modal
import pulumi
from modal.exception import AlreadyExistsError
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult

from providers.base import EnvironmentName, InputModel, ModalProvider, ObjectName, join_id, precise_diff, split_id
from providers.modal_access.lookups import lookup_volume
from providers.modal_access.retry import modal_call
from providers.modal_internals import volume_version
from providers.shared import ProviderError, progress

# Inputs whose change means another volume.
REPLACE_ON = ("name", "environment")
# Every input, in the order a diff reports them.
FIELDS = ("name", "environment", "delete_data")
# How many top-level entries a refusal names, so a full volume gives a readable message.
LISTED_ENTRIES = 5
# The VolumeFS version a new volume gets. v1: what `Volume.objects.create(name)`, `modal volume create`
# and the reference recipe make, and what Modal's client does not call experimental. Its limits do not
# bind us: 500,000 files (the weights are a few hundred files, ~700 GB; kernels and JIT caches far
# fewer), and Modal's advice of at most 5 concurrent writers (the jobs write one at a time; a starting
# server only adds the JIT-cache files the compile skipped). v2 (beta) would lift both. Asked for
# explicitly, so a change of Modal's default cannot change what `up` creates.
NEW_VOLUME_VERSION = 1


class VolumeInputs(InputModel):
    name: ObjectName
    environment: EnvironmentName
    delete_data: bool = False


def _create_new(inputs: VolumeInputs) -> bool:
    """Create the volume; False when one of that name already exists (it is then adopted as it is).

    A retry of a create whose answer was lost also lands here as "exists", which is just as right."""

    def create() -> bool:
        try:
            modal.Volume.objects.create(inputs.name, environment_name=inputs.environment, version=NEW_VOLUME_VERSION)
        except AlreadyExistsError:
            return False
        return True

    return modal_call(create, what=f"create volume '{inputs.name}' in environment '{inputs.environment}'")


def _top_level_entries(volume: Any, where: str) -> list[str]:
    # listdir is a streaming RPC, which the modal client does not retry: we retry its transport errors.
    entries = modal_call(volume.listdir, "/", what=f"list files of {where}", client_retries=False)
    return sorted(entry.path for entry in entries)


def _outputs(inputs: VolumeInputs, volume: Any) -> dict[str, Any]:
    return {**inputs.model_dump(mode="json"), "volume_id": volume.object_id, "version": volume_version(volume)}


class VolumeProvider(ModalProvider):
    inputs_model = VolumeInputs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return precise_diff(olds, news, FIELDS, replace_on=REPLACE_ON, stables=("volume_id", "version"))

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        where = f"volume '{inputs.name}' in environment '{inputs.environment}'"
        # Create first (the one mutating call), so a name that exists shows up as AlreadyExists.
        created = _create_new(inputs)
        volume = lookup_volume(inputs.environment, inputs.name)
        if volume is None:
            raise ProviderError(f"{where} vanished right after it was created or found: run `pulumi up` again")
        version = volume_version(volume)
        if created:
            progress(f"{where} created (v{version})")
        else:
            progress(f"{where} already exists (v{version}): adopting it with its contents")
        return CreateResult(join_id(inputs.environment, inputs.name), _outputs(inputs, volume))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        environment, name = split_id(id_, "Volume")
        volume = lookup_volume(environment, name)
        if volume is None:
            return ReadResult("", {})  # gone: the engine drops it from state, the next `up` creates it
        importing = "volume_id" not in props  # no outputs yet: `pulumi import` (props are the declared inputs)
        inputs = VolumeInputs(name=name, environment=environment, delete_data=bool(props.get("delete_data", False)))
        imported = inputs.model_dump(mode="json") if importing else None
        return ReadResult(id_, _outputs(inputs, volume), imported)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Only delete_data can change in place, and it lives in our state, not on Modal.
        inputs = self.validated(news)
        outputs = {**inputs.model_dump(mode="json"), "volume_id": olds.get("volume_id", "")}
        return UpdateResult({**outputs, "version": olds.get("version")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        environment, name = split_id(id_, "Volume")
        where = f"volume '{name}' in environment '{environment}'"
        volume = lookup_volume(environment, name)
        if volume is None:
            progress(f"{where} is already gone")
            return
        if not props.get("delete_data", False):
            entries = _top_level_entries(volume, where)
            if entries:
                shown = ", ".join(entries[:LISTED_ENTRIES]) + (", ..." if len(entries) > LISTED_ENTRIES else "")
                progress(
                    f"{where} holds data ({shown}): kept on Modal, no longer managed by this stack. "
                    f"Delete it by hand once nothing needs it: `modal volume delete {name} --env {environment}`"
                )
                return
        modal_call(
            modal.Volume.objects.delete,
            name,
            environment_name=environment,
            allow_missing=True,
            what=f"delete {where}",
        )
        progress(f"{where} deleted")


class ModalVolume(Resource, module="modal", name="Volume"):
    """A named Modal volume. Deleting it while it holds files keeps it on Modal unless `delete_data=True`."""

    name: pulumi.Output[str]
    environment: pulumi.Output[str]
    delete_data: pulumi.Output[bool]
    volume_id: pulumi.Output[str]
    version: pulumi.Output[int]

    def __init__(
        self,
        resource_name: str,
        *,
        name: pulumi.Input[str],
        environment: pulumi.Input[str],
        delete_data: pulumi.Input[bool] = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"name": name, "environment": environment, "delete_data": delete_data,
                 "volume_id": None, "version": None}  # fmt: skip
        super().__init__(VolumeProvider(), resource_name, props, opts)
