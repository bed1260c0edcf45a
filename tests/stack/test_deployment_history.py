"""Tagged deployments and drift, through the real CLI: each deploy carries the checkout's commit (or
the stack's deployTag) and its strategy; a `modal deploy` by hand or a `modal app rollback` shows up
in `pulumi refresh`, and the next `pulumi up` deploys the declared config again."""

from __future__ import annotations

import re
import subprocess
import sys

from serving.config import CONFIG_ENV_VAR, DeploymentConfig
from tests.modal_control_plane import ControlPlane

from .conftest import rig
from .harness import PROJECT, REPO_ROOT, StackConfig, deployment_edits, image_env

STACK = "staging"


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def modal_cli(cp: ControlPlane, *args: str, environment: str, extra_env: dict[str, str] | None = None) -> None:
    """What an operator types at a shell with Modal set up: `modal <args>`."""
    env = {**cp.subprocess_env(environment=environment), **(extra_env or {})}
    done = subprocess.run([sys.executable, "-m", "modal", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def refreshed_app(text: str) -> list[str]:
    """What `pulumi refresh` printed for the app besides "refreshing": ["updated"] for a drift."""
    return re.findall(r"^ ~  \S+:AppDeployment app (updated)", text, flags=re.MULTILINE)


def serving_config(cp: ControlPlane, app_name: str, environment: str) -> DeploymentConfig:
    """The config the live deployment's server containers start with (their image environment)."""
    record = cp.app(app_name, environment).functions["Server.*"]
    return DeploymentConfig.model_validate_json(image_env(cp, record.image_id)[CONFIG_ENV_VAR])


def test_a_deploy_by_hand_shows_as_drift_and_the_next_up_deploys_the_declared_config() -> None:
    config = StackConfig.of(STACK)
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values[f"{PROJECT}:modalEnvironment"]
    by_hand = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"max_containers": 3})})
    with rig() as running:
        harness = running.harness(STACK)
        first = harness.up()
        live_tag = running.cp.app(cfg.app_name, environment).deployment.tag
        modal_cli(running.cp, "deploy", "-m", "serving.app", "--name", cfg.app_name, environment=environment,
                  extra_env={CONFIG_ENV_VAR: by_hand.to_json()})  # fmt: skip
        hand_config = serving_config(running.cp, cfg.app_name, environment)
        refresh = harness.refresh()
        preview = harness.preview()
        up = harness.up()
        restored = serving_config(running.cp, cfg.app_name, environment)
        again = harness.up(expect_no_changes=True)

    assert first.ok, first.text
    # The deploy carried the checkout's commit, "-dirty" when the tree has uncommitted changes.
    assert live_tag == first.outputs["deployment_tag"]
    assert live_tag in (head_commit(), head_commit() + "-dirty")
    assert first.outputs["deployment_commit"] == head_commit()
    assert first.outputs["deployment_version"] == 1 and first.outputs["deployed_at"]
    assert hand_config.scaling.max_containers == 3

    # The refresh reads the app (reads only) and records the hand deploy as a change of the app.
    assert refresh.ok, refresh.text
    assert refresh.mutating_modal_calls == []
    assert refreshed_app(refresh.text) == ["updated"]
    assert "version 2 is live, not version 1 that this stack deployed" in refresh.text
    # The plan: deploy the app again (and smoke-test it, on staging), nothing else: no job, no secret.
    assert preview.changed() == {"app": "update", "smoke-test": "update"}
    assert up.ok, up.text
    assert (up.deploys, up.function_runs) == (1, 0)
    assert up.outputs["deployment_version"] == 3
    assert restored == cfg
    assert again.ok and (again.deploys, again.function_runs) == (0, 0)


def test_a_rollback_shows_as_drift_and_the_next_up_deploys_the_declared_config() -> None:
    config = StackConfig.of(STACK)
    config.values[f"{PROJECT}:deployTag"] = "release-1"
    config.values[f"{PROJECT}:deployStrategy"] = "recreate"
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values[f"{PROJECT}:modalEnvironment"]
    with rig() as running:
        harness = running.harness(STACK, config)
        assert harness.up().ok
        config.values[f"{PROJECT}:deployTag"] = "release-2"
        deployment_edits(scaling__max_containers=2)(config)
        second = harness.up(config)
        modal_cli(running.cp, "app", "rollback", cfg.app_name, environment=environment)
        rolled_back = running.cp.app(cfg.app_name, environment).deployment
        rolled_back_config = serving_config(running.cp, cfg.app_name, environment)
        refresh = harness.refresh()
        up = harness.up(config)
        live = running.cp.app(cfg.app_name, environment).deployment
        restored = serving_config(running.cp, cfg.app_name, environment)

    assert second.ok, second.text
    assert (second.outputs["deployment_tag"], second.outputs["deployment_version"]) == ("release-2", 2)
    # `modal app rollback` brought version 1 back, as version 3.
    assert (rolled_back.version, rolled_back.rollback_version, rolled_back.tag) == (3, 1, "release-1")
    assert rolled_back_config.scaling.max_containers == cfg.scaling.max_containers != 2
    assert refresh.ok and refreshed_app(refresh.text) == ["updated"], refresh.text
    assert up.ok, up.text
    assert up.changed() == {"app": "update", "smoke-test": "update"} and up.deploys == 1
    assert (live.version, live.tag) == (4, "release-2")
    assert restored.scaling.max_containers == 2
    # recreate: the client stopped the containers of the old version after publishing.
    assert "TaskList" in [call.rpc for call in up.modal_calls]
