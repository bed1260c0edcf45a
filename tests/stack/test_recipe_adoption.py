"""Moving from the reference recipe to this project, through the real CLI, on a control plane seeded
with exactly what the recipe leaves in a Modal environment: the first `up` adopts the secrets,
volumes and app, downloads nothing, compiles the kernels and redeploys the same app; the second `up`
does nothing. An incomplete snapshot is completed, not restarted. The recipe's volumes are v1 (its
`Volume.from_name(..., create_if_missing=True)` asks for no version): adopted, they stay v1, and every
file the stack reads or writes in them goes through v1's RPCs."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from serving.config import CONFIG_ENV_VAR, DOWNLOAD_RECORD, DeploymentConfig
from tests.modal_control_plane import ControlPlane

from .conftest import rig
from .harness import JOB_FUNCTIONS, PROJECT, REPO_ROOT, SHARDS, HubStandIn, StackConfig

# The recipe's environment is the workspace's default one.
RECIPE_ENVIRONMENT = "main"
RECIPE_MARKER = ".compiled-GLM-5.1-FP8"
# The file RPCs only a v2 volume is served with (modal/volume.py): never used on the recipe's volumes.
V2_ONLY_FILE_RPCS = {"VolumeListFiles2", "VolumeRemoveFile2"}


def recipe_config() -> StackConfig:
    """The prod stack file, pointed at the recipe's environment (its names already are the recipe's)."""
    config = StackConfig.of("prod")
    config.values[f"{PROJECT}:modalEnvironment"] = RECIPE_ENVIRONMENT
    return config


def seed_recipe_deployment(cp: ControlPlane, cfg: DeploymentConfig, *, drop_shard: str | None = None) -> None:
    """What following the recipe leaves behind: its two secrets, the snapshot_download of the weights
    under GLM-5.1-FP8/ (index, shards, Hub metadata), the kernels with the recipe's marker, the app."""
    env = RECIPE_ENVIRONMENT
    for volume in (cfg.storage.weights_volume, cfg.storage.kernels_volume):
        cp.create_volume(volume, env, version=1)  # what the recipe's from_name(create_if_missing=True) made
    cp.create_secret(cfg.secrets.hf_token, {"HF_TOKEN": "hf_recipeToken0000"}, env)
    cp.create_secret(cfg.secrets.api_key, {"API_KEY": "recipe-production-key"}, env)
    with tempfile.TemporaryDirectory() as scratch:
        snapshot = Path(scratch, cfg.model.directory)
        HubStandIn()(local_dir=str(snapshot), revision="main")  # the recipe's own download
        for path in sorted(p for p in Path(scratch).rglob("*") if p.is_file()):
            relative = path.relative_to(scratch).as_posix()
            if drop_shard is None or not relative.endswith(drop_shard):
                cp.put_file(cfg.storage.weights_volume, relative, path.read_bytes(), env)
    cp.put_file(cfg.storage.kernels_volume, RECIPE_MARKER, b"", env)
    cp.put_file(cfg.storage.kernels_volume, "cache/kernel-sm100-recipe.cubin", b"old kernels", env)
    deploy = subprocess.run(
        [sys.executable, "-m", "modal", "deploy", "-m", "serving.app", "--name", cfg.app_name],
        env={**cp.subprocess_env(environment=env), CONFIG_ENV_VAR: cfg.to_json()},
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr


def deployed_apps(cp: ControlPlane) -> list[str]:
    with cp.state.lock:
        return [app.name for app in cp.state.all_apps() if app.state == "deployed"]


def test_the_first_up_adopts_a_recipe_deployment_downloads_nothing_and_redeploys_in_place() -> None:
    config = recipe_config()
    cfg = DeploymentConfig.model_validate(config.deployment)
    with rig() as running:
        cp = running.cp
        seed_recipe_deployment(cp, cfg)
        recipe_app = cp.app(cfg.app_name, RECIPE_ENVIRONMENT)
        harness = running.harness("prod", config)
        preview = harness.preview()
        first = harness.up()
        ran = [call.tag for call in cp.function_calls]
        weights = cp.volume_files(cfg.storage.weights_volume, RECIPE_ENVIRONMENT)
        kernels = cp.volume_files(cfg.storage.kernels_volume, RECIPE_ENVIRONMENT)
        app = cp.app(cfg.app_name, RECIPE_ENVIRONMENT)
        apps = deployed_apps(cp)
        versions = {name: volume.version for name, volume in cp.state.environments[RECIPE_ENVIRONMENT].volumes.items()}
        rpcs = set(cp.rpcs_called())
        second = harness.up(config, expect_no_changes=True)
        hub_requests = list(running.hub.requests)

    assert preview.ok and preview.modal_calls == [], preview.text
    # The preview cannot see the volumes, but says why the compile runs over kernels already there.
    assert f"'.compiled-GLM-5.1-FP8' marker) prove nothing about SGLang {cfg.sglang.version}" in preview.text
    assert first.ok, first.text
    # Adopted, not duplicated: every object is the recipe's, under its name.
    assert set(first.ops().values()) == {"create"}
    assert "already existed: adopted" in first.text  # the secrets, rewritten with the stack's values
    # The workspace's default environment, adopted: this stack will never delete it.
    assert f"environment '{RECIPE_ENVIRONMENT}' already exists: adopting it (destroy will keep it)" in first.text
    # The recipe's v1 volumes stay v1, and nothing used a v2-only RPC on them.
    assert versions == {cfg.storage.weights_volume: 1, cfg.storage.kernels_volume: 1}
    weights_volume = f"volume '{cfg.storage.weights_volume}' in environment '{RECIPE_ENVIRONMENT}'"
    assert f"{weights_volume} already exists (v1): adopting it with its contents" in first.text
    assert "VolumePutFiles" in rpcs and "VolumeListFiles" in rpcs and not rpcs & V2_ONLY_FILE_RPCS
    # Downloaded nothing: the job recognised the snapshot from its index and shards and only wrote its
    # own completion record; the Hub stand-in saw no request at all.
    assert hub_requests == []
    assert f"{cfg.model.directory}/{DOWNLOAD_RECORD}" in weights
    assert all(f"{cfg.model.directory}/{name}" in weights for name in SHARDS)
    assert first.outputs["model_commit"]  # read from the recipe snapshot's Hub metadata
    # Compiled: the recipe's marker proves nothing about the pinned SGLang.
    assert sorted(ran) == sorted(JOB_FUNCTIONS.values())
    assert cfg.compile_marker_name in kernels and RECIPE_MARKER in kernels
    # The recipe's app, redeployed in place: same id, the next version, still one app.
    assert app.id == recipe_app.id and app.deployment_version == 2
    assert first.outputs["app_id"] == recipe_app.id
    assert apps == [cfg.app_name]
    # The second up is a no-op.
    assert second.ok and set(second.ops().values()) == {"same"}
    assert second.mutating_modal_calls == [] and (second.function_runs, second.deploys) == (0, 0)


def test_an_incomplete_recipe_snapshot_is_completed_not_restarted() -> None:
    config = recipe_config()
    cfg = DeploymentConfig.model_validate(config.deployment)
    missing = sorted(SHARDS)[-1]
    with rig() as running:
        seed_recipe_deployment(running.cp, cfg, drop_shard=missing)
        up = running.harness("prod", config).up()
        weights = running.cp.volume_files(cfg.storage.weights_volume, RECIPE_ENVIRONMENT)
        hub_requests = list(running.hub.requests)

    assert up.ok, up.text
    # One resumed download: the revision lookup and the one missing shard, nothing else fetched again.
    assert hub_requests == ["revision main", missing]
    assert f"{cfg.model.directory}/{missing}" in weights and f"{cfg.model.directory}/{DOWNLOAD_RECORD}" in weights
