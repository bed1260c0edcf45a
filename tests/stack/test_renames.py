"""A change that replaces an object Modal may refuse to delete never leaves the stack stuck.

Renaming a volume (or the Modal environment) replaces it: Pulumi creates the new one, then deletes
the old. A volume that holds data (and an environment that still holds it) is kept on Modal instead
of deleted, said so in the output, and taken out of the stack, so the `up` completes and the next
one has nothing to do. On prod the volumes are protected: the rename is refused at preview, before
anything runs. Each scenario ends in a no-op `up`, through the real CLI.
"""

from __future__ import annotations

import pytest

from serving.config import DeploymentConfig

from .conftest import rig
from .harness import PROJECT, Edit, StackConfig, deployment_edits

ENVIRONMENT_KEY = f"{PROJECT}:modalEnvironment"


def new_environment(config: StackConfig) -> None:
    config.values[ENVIRONMENT_KEY] = "glm-staging-moved"


RENAMES: dict[str, Edit] = {
    "weights-volume": deployment_edits(storage__weights_volume="glm51-staging-weights-v2"),
    "kernels-volume": deployment_edits(storage__kernels_volume="glm51-staging-kernels-v2"),
    "both-volumes": deployment_edits(storage__weights_volume="w-v2", storage__kernels_volume="k-v2"),
    "modal-environment": new_environment,
    "app": deployment_edits(app_name="glm-5.1-staging-v2"),
    "secrets": deployment_edits(secrets__hf_token="hf-v2", secrets__api_key="api-key-v2"),
}


@pytest.mark.parametrize("rename", RENAMES.values(), ids=RENAMES.keys())
def test_a_rename_on_staging_completes_keeps_the_data_and_the_next_up_does_nothing(rename: Edit) -> None:
    before = StackConfig.of("staging")
    after = StackConfig.of("staging")
    rename(after)
    old_cfg = DeploymentConfig.model_validate(before.deployment)
    old_environment = before.values[ENVIRONMENT_KEY]
    with rig() as running:
        harness = running.harness("staging")
        assert harness.up(before).ok
        old_volumes = {name: running.cp.volume_files(name, old_environment)
                       for name in (old_cfg.storage.weights_volume, old_cfg.storage.kernels_volume)}  # fmt: skip
        moved = harness.up(after)
        kept = {name: running.cp.volume_files(name, old_environment) for name in old_volumes}
        settled = harness.up(after, expect_no_changes=True)
        preview = harness.preview(after, expect_no_changes=True)

    assert moved.ok, moved.text
    # Nothing that held data was lost: every old volume still has every file it had (a volume the
    # stack still uses may have gained or rewritten some, e.g. a job's run record).
    assert all(old_volumes.values())
    assert all(set(files) <= set(kept[name]) for name, files in old_volumes.items()), (old_volumes, kept)
    assert settled.ok, settled.text
    assert settled.mutating_modal_calls == [] and settled.function_runs == 0
    assert preview.ok and preview.modal_calls == []


def test_a_volume_rename_on_prod_is_refused_at_preview_because_its_volumes_are_protected() -> None:
    renamed = StackConfig.of("prod")
    deployment_edits(storage__weights_volume="glm51-model-weights-v2")(renamed)
    with rig() as running:
        harness = running.harness("prod")
        assert harness.up().ok
        preview = harness.preview(renamed)
        up = harness.up(renamed)

    for run in (preview, up):
        assert not run.ok
        assert "weights-volume" in run.text and "protect" in run.text
        assert run.mutating_modal_calls == [] and run.function_runs == 0
