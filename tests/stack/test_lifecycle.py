"""preview / up / up again / refresh / destroy of each stack: preview never calls Modal, a second
`up` does nothing, an emptied volume re-runs its job, destroy keeps what holds data."""

from __future__ import annotations

import pytest

from serving.config import DOWNLOAD_RECORD, WEIGHT_SENTINEL, DeploymentConfig

from .conftest import rig
from .harness import STACKS, StackConfig, urn


@pytest.mark.parametrize("stack", STACKS)
def test_preview_never_calls_modal_and_a_second_up_does_nothing(stack: str) -> None:
    config = StackConfig.of(stack)
    with rig(config) as running:
        harness = running.harness(stack)
        new_preview = harness.preview()
        first = harness.up()
        applied_preview = harness.preview()
        second = harness.up()
        chat_requests = running.web.chat_requests()

    assert new_preview.ok and first.ok and applied_preview.ok and second.ok, first.result.errors
    # Preview, of a new stack and of an applied one: Check and Diff only, and not one Modal call.
    assert new_preview.modal_calls == [] and applied_preview.modal_calls == []
    assert {c.method for c in new_preview.result.calls + applied_preview.result.calls} <= {"Check", "Diff"}
    assert set(applied_preview.ops().values()) == {"same"}

    # The first up runs each job once and deploys once.
    assert (first.function_runs, first.deploys) == (3, 1)
    assert set(first.ops().values()) == {"create"}

    # The second up: nothing to do, so no mutating call, no job, no deploy, no provider write.
    assert set(second.ops().values()) == {"same"}
    assert second.mutating_modal_calls == []
    assert (second.function_runs, second.deploys) == (0, 0)
    assert second.result.mutating_calls == []
    assert second.outputs == first.outputs

    # The smoke test (staging) ran once, after the deployment, with the API key.
    smoke = config.values["glm-modal:smokeTest"]
    assert [authorized for _, _, authorized in chat_requests] == ([True] if smoke else [])


def test_an_emptied_volume_shows_as_drift_and_the_next_up_runs_only_what_it_lost() -> None:
    config = StackConfig.of("staging")
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    with rig(config) as running:
        harness = running.harness("staging")
        assert harness.up().ok
        for path in running.cp.volume_files(cfg.storage.weights_volume, environment):
            running.cp.remove_file(cfg.storage.weights_volume, path, environment)
        refresh = harness.refresh()
        preview = harness.preview()
        up = harness.up()
        files = running.cp.volume_files(cfg.storage.weights_volume, environment)

    assert refresh.ok, refresh.errors
    assert preview.modal_calls == []
    # The download runs again (it restores the file); the verify follows because a new download ran.
    # The kernels are still there and the app's inputs did not change.
    expected = {"download-weights": "replace", "verify-setup": "replace"}
    assert preview.changed() == expected
    assert up.ok, up.result.errors
    assert up.changed() == expected
    assert (up.function_runs, up.deploys) == (2, 0)
    assert {f"{cfg.model.directory}/{WEIGHT_SENTINEL}", f"{cfg.model.directory}/{DOWNLOAD_RECORD}"} <= set(files)


def test_destroy_of_prod_stops_the_app_and_keeps_the_protected_volumes() -> None:
    config = StackConfig.of("prod")
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    with rig(config) as running:
        harness = running.harness("prod")
        assert harness.up().ok
        result = harness.destroy()
        app = running.cp.app(cfg.app_name, environment)
        volumes = {name: running.cp.volume_files(name, environment)
                   for name in (cfg.storage.weights_volume, cfg.storage.kernels_volume)}  # fmt: skip
        state = set(harness.engine.state.resources)

    assert not result.ok
    assert any("cannot be deleted" in error and "protected" in error for error in result.errors)
    assert app.state == "stopped"
    assert all(files for files in volumes.values())  # both volumes still hold their data
    assert {urn("prod", "weights-volume"), urn("prod", "kernels-volume")} <= state
    assert urn("prod", "app") not in state


def test_destroy_refuses_to_delete_an_unprotected_volume_that_holds_data() -> None:
    config = StackConfig.of("staging")
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    assert config.values["glm-modal:protectVolumes"] is False
    with rig(config) as running:
        harness = running.harness("staging")
        assert harness.up().ok
        result = harness.destroy()
        volumes = {name: running.cp.volume_files(name, environment)
                   for name in (cfg.storage.weights_volume, cfg.storage.kernels_volume)}  # fmt: skip
        state = set(harness.engine.state.resources)

    assert not result.ok
    # The first volume destroy reaches (both hold data) refuses, naming itself and the way out.
    refusal = "\n".join(result.errors)
    assert any(name in refusal for name in volumes) and "delete_data" in refusal
    assert all(files for files in volumes.values())  # the data is still there
    assert {urn("staging", "weights-volume"), urn("staging", "kernels-volume")} <= state
    assert urn("staging", "app") not in state
