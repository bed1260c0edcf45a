"""preview / up / up again / refresh / destroy of each stack: preview never calls Modal, a second
`up` does nothing, an emptied volume re-runs its job, destroy keeps what holds data on Modal."""

from __future__ import annotations

import pytest

from serving.config import DOWNLOAD_RECORD, WEIGHT_SENTINEL, DeploymentConfig

from .conftest import rig
from .harness import RESOURCES, STACKS, StackConfig


@pytest.mark.parametrize("stack", STACKS)
def test_preview_never_calls_modal_and_a_second_up_does_nothing(stack: str) -> None:
    config = StackConfig.of(stack)
    with rig() as running:
        harness = running.harness(stack)
        new_preview = harness.preview(diff=True)
        first = harness.up()
        applied_preview = harness.preview(expect_no_changes=True)
        second = harness.up(expect_no_changes=True)
        chat_requests = running.web.chat_requests()

    assert new_preview.ok and first.ok and applied_preview.ok and second.ok, first.text
    # Preview, of a new stack and of an applied one: not one Modal call.
    assert new_preview.modal_calls == [] and applied_preview.modal_calls == []
    assert set(new_preview.ops().values()) == {"create"}
    assert set(applied_preview.ops().values()) == {"same"}

    # The first up runs each job once and deploys once.
    assert (first.function_runs, first.deploys) == (3, 1)
    assert set(first.ops().values()) == {"create"}

    # The second up: nothing to do, so no mutating call, no job, no deploy.
    assert set(second.ops().values()) == {"same"}
    assert second.mutating_modal_calls == []
    assert (second.function_runs, second.deploys) == (0, 0)
    assert second.outputs == first.outputs

    # The smoke test (staging) ran once, after the deployment, with the API key.
    smoke = config.values["glm-modal:smokeTest"]
    assert [authorized for _, _, authorized in chat_requests] == ([True] if smoke else [])


def test_an_emptied_volume_shows_as_drift_and_the_next_up_runs_only_what_it_lost() -> None:
    config = StackConfig.of("staging")
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    with rig() as running:
        harness = running.harness("staging")
        assert harness.up().ok
        for path in running.cp.volume_files(cfg.storage.weights_volume, environment):
            running.cp.remove_file(cfg.storage.weights_volume, path, environment)
        preview = harness.preview(refresh=True)
        up = harness.up(refresh=True)
        files = running.cp.volume_files(cfg.storage.weights_volume, environment)

    # `pulumi up --refresh`, as the README says: the refresh reads the volumes (its only Modal calls
    # are reads), the plan then re-runs exactly what the emptied volume lost.
    assert preview.ok, preview.text
    assert preview.mutating_modal_calls == []
    # The download runs again (it restores the file); the verify follows because a new download ran.
    # The kernels are still there and the app's inputs did not change.
    expected = {"download-weights": "replace", "verify-setup": "replace"}
    assert preview.changed() == expected
    assert up.ok, up.text
    assert {name: op for name, op in up.changed().items() if op != "refresh"} == expected
    assert (up.function_runs, up.deploys) == (2, 0)
    assert {f"{cfg.model.directory}/{WEIGHT_SENTINEL}", f"{cfg.model.directory}/{DOWNLOAD_RECORD}"} <= set(files)


def test_destroy_of_prod_refuses_at_the_protected_volumes_and_exclude_protected_keeps_them() -> None:
    config = StackConfig.of("prod")
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    with rig() as running:
        harness = running.harness("prod")
        assert harness.up().ok
        refused = harness.destroy()
        app_after_refusal = running.cp.app(cfg.app_name, environment).state
        state_after_refusal = set(harness.resources())
        rest = harness.cli("destroy", "--yes", "--exclude-protected")
        app = running.cp.app(cfg.app_name, environment)
        volumes = {name: running.cp.volume_files(name, environment)
                   for name in (cfg.storage.weights_volume, cfg.storage.kernels_volume)}  # fmt: skip
        state = set(harness.resources())

    # The engine refuses the whole plan in its preview phase: nothing is deleted, the app still serves.
    assert refused.outcome.exit_code != 0
    assert "cannot be deleted" in refused.text and "protected" in refused.text and "-volume" in refused.text
    assert refused.mutating_modal_calls == []
    assert app_after_refusal == "deployed" and state_after_refusal == set(harness_resources_of("prod"))
    # --exclude-protected removes everything else: the app stops, the volumes (and the environment
    # they live in) stay, with their data.
    assert rest.ok, rest.text
    assert app.state == "stopped"
    assert all(files for files in volumes.values())
    assert state == {"environment", "weights-volume", "kernels-volume"}


def harness_resources_of(stack: str) -> set[str]:
    smoke = StackConfig.of(stack).values["glm-modal:smokeTest"]
    return set(RESOURCES) - (set() if smoke else {"smoke-test"})


def test_destroy_completes_and_keeps_unprotected_volumes_that_hold_data_on_modal() -> None:
    config = StackConfig.of("staging")
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    assert config.values["glm-modal:protectVolumes"] is False
    with rig() as running:
        harness = running.harness("staging")
        assert harness.up().ok
        result = harness.destroy()
        volumes = {name: running.cp.volume_files(name, environment)
                   for name in (cfg.storage.weights_volume, cfg.storage.kernels_volume)}  # fmt: skip
        state = set(harness.resources())
        again = harness.destroy()

    # Done, nothing left in the stack (a refused delete would fail every later `up` and destroy).
    assert result.ok, result.text
    assert state == set() and again.ok
    # Each volume (both hold data) stays on Modal, named with the command that deletes it.
    assert all(files for files in volumes.values())
    for name in volumes:
        assert f"modal volume delete {name} --env {environment}" in result.text
    assert f"environment '{environment}' still holds" in result.text
