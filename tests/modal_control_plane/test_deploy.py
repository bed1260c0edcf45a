"""Deploying apps end to end with the real client: App.deploy, runner.deploy_app and `modal deploy`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import modal
import modal.runner
import pytest
from modal.exception import NotFoundError
from modal_proto import api_pb2

from . import sample_app
from .fixtures import connect_in_process
from .rpc_apps import NOOP_NEVER
from .server import ControlPlane

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP_FILE = Path(sample_app.__file__)

# The RPCs of a first deploy (besides AppHeartbeat, sent while it runs). The client loads objects
# concurrently, so only some of their order is fixed; see `_assert_first_deploy_sequence`.
FIRST_DEPLOY_RPCS = {
    "AppGetByDeploymentName",
    "AppCreate",
    "EnvironmentGetOrCreate",
    "FunctionPrecreate",
    "SecretGetOrCreate",
    "VolumeGetOrCreate",
    "ImageGetOrCreate",
    "ImageJoinStreaming",
    "MountGetOrCreate",
    "MountBatchedCheckExistence",
    "MountPutFile",
    "FunctionCreate",
    "ClassCreate",
    "AppPublish",
}


def _assert_first_deploy_sequence(called: list[str]) -> None:
    called = [rpc for rpc in called if rpc != "AppHeartbeat"]
    assert set(called) == FIRST_DEPLOY_RPCS
    assert called[0] == "AppGetByDeploymentName"
    assert set(called[1:3]) == {"AppCreate", "EnvironmentGetOrCreate"}  # sent concurrently
    last_precreate = max(i for i, rpc in enumerate(called) if rpc == "FunctionPrecreate")
    assert last_precreate < called.index("FunctionCreate")
    assert called[-1] == "AppPublish"


def _deploy_subprocess(cp: ControlPlane, *target: str, name: str, env: str | None = None, mode: str = "test",
                       options: tuple[str, ...] = ()):  # fmt: skip
    """`modal deploy` in a child; another `mode` is another image, so other function definitions."""
    command = [sys.executable, "-m", "modal", "deploy", *target, "--name", name, *options]
    if env:
        command += ["--env", env]
    environ = cp.subprocess_env()
    environ["PYTHONPATH"] = str(REPO_ROOT)
    environ["SAMPLE_MODE"] = mode
    return subprocess.run(command, env=environ, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cp(modal_control_plane):
    modal_control_plane.create_secret(sample_app.SECRET_NAME, {"TOKEN": "s3cr3t"})
    return modal_control_plane


def test_app_deploy_end_to_end(cp):
    deployed = sample_app.app.deploy(name="sample")

    app = cp.app("sample")
    assert deployed.app_id == app.id
    assert app.state == "deployed" and app.deployment_version == 1
    assert sorted(app.functions) == ["Gateway", "Server.*", "write_marker"]
    assert list(app.classes) == ["Server"]
    assert app.web_urls == {
        "Server.*": "https://control-plane-test--sample-server-serve.modal.run",
        "Gateway": "https://control-plane-test--sample-gateway.modal.run",
    }
    _assert_first_deploy_sequence(cp.rpcs_called())

    # The client sees the same URLs.
    server = modal.Cls.from_name("sample", "Server")()
    assert server.serve.get_web_url() == app.web_urls["Server.*"]
    assert modal.Server.from_name("sample", "Gateway").get_url() == app.web_urls["Gateway"]

    # What each function was created with.
    marker, server = app.functions["write_marker"], app.functions["Server.*"]
    volume_id = cp.state.environments["main"].volumes[sample_app.VOLUME_NAME].id
    secret_id = cp.state.environments["main"].secrets[sample_app.SECRET_NAME].id
    assert marker.volume_mounts == {sample_app.MOUNT_PATH: volume_id} and marker.secret_ids == [secret_id]
    assert server.gpu == "B200" and server.is_class
    assert app.functions["Gateway"].is_server


def test_image_layers_are_recorded(cp):
    sample_app.app.deploy(name="sample")

    app = cp.app("sample")
    layers = app.images
    commands = [command for layer in layers for command in layer.dockerfile_commands]
    assert "FROM python:3.11-slim-trixie" in commands
    assert "RUN apt-get install -y curl" in commands
    assert "RUN python -m pip install requests==2.32.3" in commands
    assert "ENV SAMPLE_MODE=test" in commands
    # Each layer builds on the previous one.
    assert [layer.base_images[0]["image_id"] for layer in layers[1:]] == [layer.id for layer in layers[:-1]]
    assert {layer.builder_version for layer in layers} == {"2026.10"}
    assert app.image_env == {"SAMPLE_MODE": "test"}


def test_an_unchanged_redeploy_is_a_noop_as_modal_answers_it(cp):
    first_id = sample_app.app.deploy(name="sample", tag="v1").app_id
    mark = cp.mark()

    second_id = sample_app.app.deploy(name="sample", tag="v2").app_id

    assert second_id == first_id
    app = cp.app("sample")
    # Same definitions: Modal answers deployed_at = 0, and nothing changes, the tag included.
    assert app.deployment_version == 1 and [d.tag for d in app.history] == ["v1"]
    called = cp.rpcs_called(since=mark)
    assert "AppGetLayout" in called and "AppCreate" not in called
    assert "ImageJoinStreaming" not in called  # identical images are already built


def test_the_modal_cli_says_a_deploy_without_changes_was_skipped(cp):
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    first = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample")
    again = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample")
    changed = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", mode="other")

    assert first.returncode == again.returncode == changed.returncode == 0, first.stderr + again.stderr
    assert "Deployment skipped: no changes detected!" in again.stdout + again.stderr
    assert "skipped" not in changed.stdout + changed.stderr
    assert cp.app("sample").deployment_version == 2  # the changed image made the second version


def test_a_changed_redeploy_keeps_the_app_and_bumps_the_version(cp):
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    first_id = sample_app.app.deploy(name="sample").app_id
    definition = cp.app("sample").functions["write_marker"].definition_id

    changed = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", mode="other")

    assert changed.returncode == 0, changed.stderr
    app = cp.app("sample")
    assert app.id == first_id and app.deployment_version == 2
    assert app.functions["write_marker"].definition_id != definition


def test_without_noop_deploys_every_deploy_is_a_new_version(monkeypatch):
    """The other plausible answer of Modal's server (not documented either way): a new version anyway."""
    with ControlPlane(publish_noop=NOOP_NEVER) as plane, connect_in_process(plane, monkeypatch):
        plane.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
        sample_app.app.deploy(name="sample")
        sample_app.app.deploy(name="sample")
        assert plane.app("sample").deployment_version == 2


def test_runner_deploy_app_into_another_environment(cp):
    cp.create_environment("staging")
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "staging"}, environment="staging")

    modal.runner.deploy_app(sample_app.app, name="sample", environment_name="staging")

    app = cp.app("sample", environment="staging")
    assert app.deployment_version == 1
    assert app.web_urls["Gateway"] == "https://control-plane-test-staging--sample-gateway.modal.run"
    assert "sample" not in cp.state.environments["main"].apps
    assert sample_app.VOLUME_NAME in cp.state.environments["staging"].volumes

    cp.script_function("write_marker", result="staged")
    function = modal.Function.from_name("sample", "write_marker", environment_name="staging")
    assert function.remote("a", "b") == "staged"
    with pytest.raises(NotFoundError):
        modal.Function.from_name("sample", "write_marker").hydrate()  # not in "main"


def test_modal_deploy_cli_in_a_subprocess(cp):
    cp.create_environment("staging")
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"}, environment="staging")

    by_file = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="cli-app", env="staging")
    assert by_file.returncode == 0, by_file.stderr
    assert "App deployed" in by_file.stdout
    by_module = _deploy_subprocess(cp, "-m", "tests.modal_control_plane.sample_app", name="cli-app", env="staging")
    assert by_module.returncode == 0, by_module.stderr

    app = cp.app("cli-app", environment="staging")
    assert app.deployment_version == 2
    assert sorted(app.functions) == ["Gateway", "Server.*", "write_marker"]
    assert "s3cr3t" not in by_file.stdout + by_file.stderr


def test_modal_app_stop_cli_in_a_subprocess(cp):
    sample_app.app.deploy(name="sample")
    environ = cp.subprocess_env()

    done = subprocess.run(
        [sys.executable, "-m", "modal", "app", "stop", "--yes", "sample"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert cp.app("sample").state == "stopped"


def test_deploy_fails_when_a_secret_is_missing(modal_control_plane):
    with pytest.raises(NotFoundError, match=f"Secret '{sample_app.SECRET_NAME}' not found"):
        sample_app.app.deploy(name="sample")

    with pytest.raises(KeyError):
        modal_control_plane.app("sample")


def test_lookup_stop_and_deploy_again(cp):
    first_id = sample_app.app.deploy(name="sample").app_id
    assert modal.App.lookup("sample").app_id == first_id

    modal.App.lookup("sample").stop()

    assert cp.app("sample").state == "stopped"
    with pytest.raises(NotFoundError):
        modal.App.lookup("sample")
    with pytest.raises(NotFoundError):
        modal.Function.from_name("sample", "write_marker").hydrate()
    second_id = sample_app.app.deploy(name="sample").app_id
    assert second_id != first_id
    assert cp.app("sample").deployment_version == 1


def test_module_level_objects_do_not_leak_between_control_planes(monkeypatch):
    """sample_app is imported once per process; each control plane must still see its own objects."""
    for _ in range(2):
        with ControlPlane() as plane, connect_in_process(plane, monkeypatch):
            plane.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
            sample_app.app.deploy(name="sample")
            assert plane.app("sample").deployment_version == 1
            assert plane.server_errors == []


def test_deploy_the_serving_app(modal_control_plane):
    """serving/app.py, deployed the way our provider may do it: `modal deploy` in a subprocess."""
    cp = modal_control_plane
    cp.create_secret("huggingface-secret", {"HF_TOKEN": "hf_x"})
    cp.create_secret("glm51-api-key", {"API_KEY": "sk_x"})

    environ = cp.subprocess_env()
    environ["PYTHONPATH"] = str(REPO_ROOT)
    environ.pop("GLM_DEPLOYMENT_CONFIG", None)  # the production defaults
    done = subprocess.run(
        [sys.executable, "-m", "modal", "deploy", "serving/app.py"],
        env=environ,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    app = cp.app("glm-5.1-production")
    assert {"download_model", "compile_deepgemm", "verify_setup", "Server.*"} <= set(app.functions)
    assert app.web_url == "https://control-plane-test--glm-5-1-production-server-serve.modal.run"
    assert app.functions["Server.*"].gpu == "B200"
    assert {"glm51-model-weights", "glm51-deepgemm-cache"} <= set(cp.state.environments["main"].volumes)
    assert "hf_x" not in done.stdout + done.stderr and "sk_x" not in done.stdout + done.stderr
    # The config travels to the containers in the images' environment.
    assert json.loads(app.image_env["GLM_DEPLOYMENT_CONFIG"])["app_name"] == "glm-5.1-production"


def test_deploy_and_call_the_serving_app_in_process(modal_control_plane):
    """The same app deployed with App.deploy() and one of its jobs called by name."""
    cp = modal_control_plane
    cp.create_secret("huggingface-secret", {"HF_TOKEN": "hf_x"})
    cp.create_secret("glm51-api-key", {"API_KEY": "sk_x"})
    os.environ.pop("GLM_DEPLOYMENT_CONFIG", None)
    from serving import app as serving_app

    serving_app.app.deploy()
    cp.script_function("verify_setup", result={"ok": True, "failures": []})

    verify = modal.Function.from_name(serving_app.cfg.app_name, "verify_setup")
    assert verify.remote() == {"ok": True, "failures": []}


def test_modal_run_cli_in_a_subprocess_runs_the_function_and_ends(cp):
    """`modal run file::function`, as the recipe runs its setup steps: the call runs once, the log
    stream (AppGetLogs) ends when the ephemeral app stops, and the CLI exits."""
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    cp.script_function("write_marker", result="/data/ready")
    command = [sys.executable, "-m", "modal", "run", f"{SAMPLE_APP_FILE}::write_marker", "--name", "a",
               "--contents", "b"]  # fmt: skip
    environ = cp.subprocess_env()
    environ["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(command, env=environ, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout + done.stderr
    assert [(call.tag, call.status) for call in cp.function_calls] == [("write_marker", "succeeded")]
    assert "AppGetLogs" in cp.rpcs_called()
    assert all(app.state == "stopped" for env in cp.state.environments.values() for app in env.apps.values()
               if app.state != "deployed")  # fmt: skip


def _modal_cli(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modal", *args], env=cp.subprocess_env(), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_tagged_deploys_their_history_and_a_rollback(cp):
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", options=("--tag", "v1")).returncode == 0
    first_definition = cp.app("sample").functions["write_marker"].definition_id
    second = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", mode="other", options=("--tag", "v2"))
    assert second.returncode == 0, second.stderr
    assert cp.app("sample").functions["write_marker"].definition_id != first_definition

    rollback = _modal_cli(cp, "app", "rollback", "sample")  # to the version before the current one
    history = _modal_cli(cp, "app", "history", "sample", "--json")

    assert rollback.returncode == 0, rollback.stderr
    app = cp.app("sample")
    # A rollback is a new version, serving the functions (and carrying the tag) of the old one.
    assert app.deployment_version == 3 and app.deployment.rollback_version == 1
    assert app.functions["write_marker"].definition_id == first_definition
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)
    assert [(row["version"], row["tag"]) for row in rows] == [("v3", "v1"), ("v2", "v2"), ("v1", "v1")]
    # The client sends the commit of the repository it deploys from.
    assert app.deployment.commit_info.commit_hash


def _rpc_error(cp: ControlPlane, call) -> str:
    """The modal error an RPC made through the in-process client's stub raises, or "" when it succeeds."""
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    async def run() -> str:
        client = await _Client.from_env()
        try:
            await call(client._stub)
        except modal.exception.Error as error:
            return type(error).__name__
        return ""

    return synchronizer.create_blocking(run)()


@pytest.mark.parametrize(
    ("version", "expected"),
    [(-1, ""), (-2, ""), (-3, "InvalidError"), (0, "InvalidError"), (9, "NotFoundError")],
)  # fmt: skip
def test_a_rollback_resolves_its_version_as_modal_does(cp, version, expected):
    """As Modal's servicer: a negative version counts back from the LIVE version."""
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    for mode in ("a", "b", "c"):
        assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", mode=mode).returncode == 0
    app = cp.app("sample")
    rollback = api_pb2.AppRollbackRequest(app_id=app.id, version=version)

    status = _rpc_error(cp, lambda stub: stub.AppRollback(rollback))

    assert status == expected
    if not status:
        assert app.deployment_version == 4 and app.deployment.rollback_version == 3 + version


def test_a_recreate_deploy_stops_the_old_containers(cp):
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample").returncode == 0
    app = cp.app("sample")
    with cp.state.lock:
        old = cp.containers.start(app, app.functions["write_marker"])
    mark = cp.mark()

    recreated = _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", mode="other",
                                   options=("--strategy", "recreate"))  # fmt: skip

    assert recreated.returncode == 0, recreated.stderr
    called = [rpc for rpc in cp.rpcs_called(since=mark) if rpc != "AppHeartbeat"]
    # After publishing, the client lists the containers started before the deploy and stops them.
    assert called[called.index("AppPublish") + 1 :][:2] == ["TaskList", "ContainerStop"]
    assert old.state == "stopped" and app.live_containers == []


def test_a_rolling_deploy_lets_the_old_containers_drain(cp):
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample").returncode == 0
    app = cp.app("sample")
    with cp.state.lock:
        old = cp.containers.start(app, app.functions["write_marker"])

    assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", mode="other").returncode == 0

    # Outdated, still there (and still holding its hardware), never given a new request.
    assert old.state == "draining" and app.live_containers == [old]


@pytest.mark.parametrize("strategy", ["rolling", "recreate"])
def test_a_rollover_is_a_new_version_with_fresh_containers(cp, strategy):
    """`modal app rollover`: new containers of the same code, a new history entry with the same tag."""
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "old"})
    assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample", options=("--tag", "t1")).returncode == 0
    app = cp.app("sample")
    with cp.state.lock:
        old = cp.containers.start(app, app.functions["write_marker"])
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "new"})  # a secret rotated on Modal

    rolled = _modal_cli(cp, "app", "rollover", "sample", "--strategy", strategy)

    assert rolled.returncode == 0, rolled.stderr
    assert app.deployment_version == 2 and [d.tag for d in app.history] == ["t1", "t1"]
    assert old.state == ("stopped" if strategy == "recreate" else "draining")
    with cp.state.lock:
        fresh = cp.containers.start(app, app.functions["write_marker"])
    assert old.secret_values == {"TOKEN": "old"}  # read once, at its start
    assert fresh.version == 2


def test_a_stopped_app_reports_stopping_then_stopped_and_is_never_found_by_name(cp):
    cp.create_secret(sample_app.SECRET_NAME, {"TOKEN": "x"})
    assert _deploy_subprocess(cp, str(SAMPLE_APP_FILE), name="sample").returncode == 0
    app_id = cp.app("sample").id
    # Right after the stop, however long the CLI subprocesses take to start on a loaded machine.
    cp.stopping_seconds = cp.rpcs.stopping_seconds = 600.0
    stopped = _modal_cli(cp, "app", "stop", "sample", "--yes")
    assert stopped.returncode == 0, stopped.stderr

    with pytest.raises(NotFoundError):
        modal.App.lookup("sample")
    listed = _modal_cli(cp, "app", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [row["state"] for row in json.loads(listed.stdout) if row["app_id"] == app_id] == ["stopping..."]
    cp.stopping_seconds = cp.rpcs.stopping_seconds = 0.0  # as much later
    listed = _modal_cli(cp, "app", "list", "--json")
    assert [row["state"] for row in json.loads(listed.stdout) if row["app_id"] == app_id] == ["stopped"]
