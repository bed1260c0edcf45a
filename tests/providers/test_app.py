"""ModalAppDeployment through the real dynamic-provider gRPC server, the real modal client (in the
provider's runner subprocess) and the local control plane: deploy, redeploy in place, replace,
stop, refresh/import, adoption, retries, failures, and what check/diff may (not) do."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import modal
import pytest
from grpclib import Status

from providers.app import AppProvider, ModalAppDeployment
from providers.runs.supervisor import PROGRESS_SECONDS_ENV
from tests.modal_control_plane.rpc_apps import NOOP_NEVER, NOOP_WHEN_UNCHANGED
from tests.providers.grpc_harness import FAST_RETRY_ENV, PROVIDER_MUTATIONS, desired, engine, urn_of
from tests.pulumi_engine import properties as wire
from tests.pulumi_engine.provider_server import ProviderServer

ENV = "main"
APP = "sample-web"
URN = urn_of(ModalAppDeployment, "web")
# Where sample_modal_app.py lives: put on PYTHONPATH through module_env (see that module).
SAMPLE_DIR = str(Path(__file__).resolve().parent)
# The URL the control plane gives the sample's `Web.serve` (Modal's scheme: <workspace>--<app>-<label>).
WEB_URL = f"https://control-plane-test--{APP}-web-serve.modal.run"


@contextmanager
def serve(cp) -> Iterator[ProviderServer]:
    with ProviderServer(extra_env={**cp.client_env, **FAST_RETRY_ENV, PROGRESS_SECONDS_ENV: "0.2"}) as server:
        yield server


def module_env(**config: object) -> dict[str, str]:
    return {"PYTHONPATH": SAMPLE_DIR, "SAMPLE_APP_CONFIG": json.dumps({"volume": "web-data", **config})}


def app(**inputs: object):
    props = {
        "module": "sample_modal_app",
        "app_name": APP,
        "environment": ENV,
        "module_env": module_env(),
        "source_digest": "sha256:one",
        **inputs,
    }
    return desired(ModalAppDeployment, AppProvider(), "web", props)


def deploy_by_hand(cp, name: str = APP, **config: object) -> None:
    """What an operator's `modal deploy` (or an earlier, interrupted `pulumi up`) leaves behind; with
    `config`, of another config than the stack's (another image: other function definitions)."""
    env = {**cp.subprocess_env(), **module_env(**config)}
    argv = [sys.executable, "-m", "providers.runs.runner", "deploy", "--module", "sample_modal_app",
            "--app-name", name, "--environment", ENV]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def last_error_line(errors: list[str]) -> str:
    return errors[-1].strip().splitlines()[-1]


def test_lifecycle_deploy_redeploy_replace_stop(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)

        preview = eng.preview([app()])
        assert preview.ok, preview.errors
        assert cp.calls == []

        up = eng.up([app()])
        assert up.ok, up.errors
        deployed = cp.app(APP)
        assert deployed.state == "deployed" and deployed.deployment_version == 1
        outputs = up.outputs[URN]
        assert outputs["app_id"] == deployed.id
        assert outputs["deployment_version"] == 1
        assert outputs["web_url"] == WEB_URL
        assert outputs["web_urls"] == {"Web.serve": WEB_URL}
        assert up.ids[URN] == f"{ENV}/{APP}"
        assert any(line.startswith(f"[modal] deploy {APP}: deploying app") for line in up.stdout_lines)
        # module_env reached the module: its config named the volume the app mounts.
        assert "web-data" in cp.state.environments[ENV].volumes

        mark = cp.mark()
        again = eng.up([app()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == []  # a second identical apply: no Modal call, no deploy
        assert again.calls_of(*PROVIDER_MUTATIONS) == []

        # A new digest of a source that deploys the same definitions: Modal answers the deploy as a
        # no-op, and the stack records just that (no version Modal did not make).
        source = eng.up([app(source_digest="sha256:two")])
        assert source.ok and source.counts["update"] == 1
        assert source.outputs[URN]["deployment_version"] == source.outputs[URN]["stack_deployment_version"] == 1
        assert cp.app(APP).deployment_version == 1
        assert any("Modal found nothing to deploy; version 1 stays live" in line for line in source.stdout_lines)

        config = eng.up([app(source_digest="sha256:two", module_env=module_env(note="new"))])
        assert config.ok and config.counts["update"] == 1
        assert config.outputs[URN]["deployment_version"] == 2
        assert config.outputs[URN]["app_id"] == deployed.id  # the same app, a new deployment
        assert cp.app(APP).deployment_version == 2

        mark = cp.mark()
        local_only = eng.up([app(source_digest="sha256:two", module_env=module_env(note="new"),
                                 web_endpoint="Web.serve", timeout_seconds=600)])  # fmt: skip
        assert local_only.ok and local_only.counts["update"] == 1
        assert cp.calls_since(mark) == []  # web_endpoint/timeout change nothing on Modal
        assert local_only.outputs[URN]["web_url"] == WEB_URL

        renamed = eng.up([app(app_name="sample-web-2")])
        assert renamed.ok, renamed.errors
        assert renamed.counts["replace"] == 1
        assert renamed.step(URN).keys == ("app_name",)
        assert cp.app("sample-web-2").state == "deployed"
        assert cp.state.by_id[deployed.id].state == "stopped"  # the old name was stopped after

        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.app("sample-web-2").state == "stopped"
        assert "AppStop" in cp.rpcs_called()


def test_create_adopts_an_app_deployed_by_hand(modal_control_plane):
    cp = modal_control_plane
    deploy_by_hand(cp)
    existing = cp.app(APP)
    with serve(cp) as server:
        up = engine(server).up([app()])
        assert up.ok, up.errors
        assert up.outputs[URN]["app_id"] == existing.id  # the same app, not a duplicate
        assert up.outputs[URN]["deployment_version"] == 2


def test_refresh_sees_redeploys_and_stops(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([app()]).ok

        mark = cp.mark()
        unchanged = eng.refresh()
        assert unchanged.ok and unchanged.step(URN).detail == ""
        assert cp.mutating_calls(mark) == []

        deploy_by_hand(cp, note="by hand")
        redeployed = eng.refresh()
        assert redeployed.ok, redeployed.errors
        assert redeployed.outputs[URN]["deployment_version"] == 2
        assert redeployed.outputs[URN]["stack_deployment_version"] == 1
        server.wait_for_stdout(lambda line: "version 2 is live, not version 1 that this stack deployed" in line)

        # The next up deploys the declared config again, in place.
        mark = cp.mark()
        restored = eng.up([app()])
        assert restored.ok and restored.counts["update"] == 1, restored.errors
        assert restored.outputs[URN]["deployment_version"] == restored.outputs[URN]["stack_deployment_version"] == 3
        assert cp.rpcs_called(mark).count("AppPublish") == 1
        assert eng.up([app()]).counts["same"] == 1

        modal.App.lookup(APP, environment_name=ENV).stop()
        stopped = eng.refresh()
        assert stopped.ok and stopped.step(URN).detail == "deleted"
        assert eng.state.get(URN) is None

        back = eng.up([app()])
        assert back.ok and back.counts["create"] == 1
        assert cp.app(APP).state == "deployed"


def test_each_deploy_carries_the_tag_and_strategy_and_a_new_tag_alone_deploys_nothing(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        mark = cp.mark()
        up = eng.up([app(tag="abc123-dirty", commit="abc123", strategy="recreate")])
        assert up.ok, up.errors
        deployed = cp.app(APP)
        assert deployed.deployment.tag == "abc123-dirty"
        outputs = up.outputs[URN]
        assert (outputs["tag"], outputs["commit"], outputs["strategy"]) == ("abc123-dirty", "abc123", "recreate")
        assert outputs["deployed_at"] == datetime.fromtimestamp(deployed.deployed_at, UTC).isoformat(timespec="seconds")
        # recreate: after publishing, the client looks for the old containers to stop them.
        called = [rpc for rpc in cp.rpcs_called(mark) if rpc != "AppHeartbeat"]
        assert "TaskList" in called[called.index("AppPublish") :]

        mark = cp.mark()
        new_commit = eng.up([app(tag="def456", commit="def456", strategy="recreate")])
        assert new_commit.ok and new_commit.counts["same"] == 1
        assert cp.calls_since(mark) == []
        assert new_commit.outputs[URN]["tag"] == "abc123-dirty"  # still the deployment made with it

        mark = cp.mark()
        rolling = eng.up([app(tag="def456", commit="def456", strategy="rolling")])
        assert rolling.ok and rolling.counts["same"] == 1
        assert cp.calls_since(mark) == []  # the strategy is how the next deploy goes, not a reason for one
        assert rolling.outputs[URN]["strategy"] == "recreate"  # the live deployment's

        mark = cp.mark()
        redeploy = eng.up([app(tag="def456", commit="def456", source_digest="sha256:two",
                               module_env=module_env(note="two"))])  # fmt: skip
        assert redeploy.ok, redeploy.errors
        assert cp.app(APP).deployment.tag == "def456" and redeploy.outputs[URN]["tag"] == "def456"
        assert redeploy.outputs[URN]["strategy"] == "rolling"
        assert "TaskList" not in cp.rpcs_called(mark)  # rolling: the old containers drain


def test_a_rollback_shows_as_drift_and_the_next_up_deploys_the_declared_config(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        two = {"tag": "two", "source_digest": "sha256:two", "module_env": module_env(note="two")}
        assert eng.up([app(tag="one")]).ok
        assert eng.up([app(**two)]).ok
        declared = cp.app(APP).functions["Web.*"].definition_id
        rolled_back = subprocess.run([sys.executable, "-m", "modal", "app", "rollback", APP, "--env", ENV],
                                     env=cp.subprocess_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert cp.app(APP).functions["Web.*"].definition_id != declared

        refreshed = eng.refresh()
        assert refreshed.ok and refreshed.outputs[URN]["deployment_version"] == 3
        assert eng.preview([app(**two)]).counts["update"] == 1

        up = eng.up([app(**two)])
        assert up.ok and up.counts["update"] == 1, up.errors
        assert cp.app(APP).deployment_version == 4 and cp.app(APP).deployment.tag == "two"
        assert up.outputs[URN]["stack_deployment_version"] == 4


def test_import_reads_an_existing_deployment(modal_control_plane):
    cp = modal_control_plane
    deploy_by_hand(cp)
    mark = cp.mark()
    with serve(cp) as server:
        provider = app().inputs["__provider"]
        read = server.read(f"{ENV}/{APP}", URN, {"__provider": provider})
        assert read.id == f"{ENV}/{APP}"
        assert read.inputs == {"app_name": APP, "environment": ENV, "__provider": provider}
        assert read.properties["app_id"] == cp.app(APP).id
        assert read.properties["web_url"] == WEB_URL

        missing = server.read(f"{ENV}/nothing-here", URN, {"__provider": provider})
        assert missing.id == ""
    assert cp.mutating_calls(mark) == []


def test_deploy_survives_two_transient_failures(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("AppPublish", 2, Status.UNAVAILABLE)  # the modal client retries these itself
        cp.fail_next("FunctionCreate", 2, Status.UNAVAILABLE)
        assert eng.up([app()]).ok

        cp.fail_next("AppPublish", 2, Status.RESOURCE_EXHAUSTED, "rate limited")  # ours: deploy again
        redeploy = eng.up([app(source_digest="sha256:two", module_env=module_env(note="two"))])
        assert redeploy.ok, redeploy.errors
        assert cp.pending_failures("AppPublish") == 0
        assert len([line for line in redeploy.stdout_lines if "transient failure" in line]) == 2
        assert cp.app(APP).deployment_version == 2

        cp.fail_next("AppGetOrCreate", 2, Status.RESOURCE_EXHAUSTED, "rate limited")  # App.lookup
        assert eng.refresh().ok
        assert cp.pending_failures("AppGetOrCreate") == 0

        cp.fail_next("AppStop", 2, Status.RESOURCE_EXHAUSTED, "rate limited")
        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert cp.app(APP).state == "stopped"


def test_permanent_failure_leaves_nothing_a_rerun_does_not_converge(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("AppPublish", 1, Status.PERMISSION_DENIED, "token may not deploy here")
        failed = eng.up([app()])
        assert not failed.ok
        message = last_error_line(failed.errors)
        assert f"deploy of app '{APP}' in environment '{ENV}' failed (deploy)" in message
        assert "PermissionDeniedError: token may not deploy here" in message
        assert eng.state.get(URN) is None

        retried = eng.up([app()])
        assert retried.ok, retried.errors
        assert cp.app(APP).state == "deployed"


def test_a_secret_redeploy_trigger_redeploys_and_stays_secret_alone(modal_control_plane):
    """A secret trigger (e.g. a digest of an API key secret's values, as the program wires it) redeploys
    the app in place when it changes, is marked secret in state on its own, is never printed, and
    leaves module_env and every other output plain."""
    cp = modal_control_plane
    canary, rotated = "canary-trigger-5d1f0a", "canary-trigger-rotated-77c2e9"

    def with_trigger(value: str):
        # As the SDK sends a dict holding one secret Output: only that value carries the secret marker.
        return app(redeploy_triggers={"api_key": wire.secret(value), "plain": "kept"})

    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([with_trigger(canary)])
        assert up.ok, up.errors
        for properties in (eng.state.resources[URN].inputs, up.outputs[URN]):
            assert wire.is_secret(properties["redeploy_triggers"]["api_key"])
            assert properties["redeploy_triggers"]["plain"] == "kept"
            assert not wire.contains_secrets(properties["module_env"])
            assert not any(canary in json.dumps(value) for key, value in properties.items()
                           if key != "redeploy_triggers")  # fmt: skip

        mark = cp.mark()
        same = eng.up([with_trigger(canary)])
        assert same.ok and same.counts["same"] == 1 and cp.calls_since(mark) == []

        rotate = eng.up([with_trigger(rotated)])
        assert rotate.ok and rotate.counts["update"] == 1
        assert rotate.outputs[URN]["deployment_version"] == 2
        assert rotate.outputs[URN]["app_id"] == up.outputs[URN]["app_id"]  # the same app, redeployed
        assert wire.reveal(rotate.outputs[URN]["redeploy_triggers"]) == {"api_key": rotated, "plain": "kept"}

        seen = up.stdout_lines + up.stderr_lines + rotate.stdout_lines + rotate.stderr_lines
        assert not any(value in line for line in seen for value in (canary, rotated))

        # A malformed trigger set is named without being a bare top-level key, which would make the
        # engine print the program's (secret) value next to the failure.
        refused = eng.preview([desired(ModalAppDeployment, AppProvider(), "web",
                                       {**app().inputs, "redeploy_triggers": canary},
                                       secret_inputs=("redeploy_triggers",))])  # fmt: skip
        assert [failure.property for _, failure in refused.check_failures] == ["redeploy_triggers (secret)"]
        assert not any(canary in error for error in refused.errors)


@pytest.mark.parametrize(
    "modal_control_plane", [{"publish_noop": NOOP_WHEN_UNCHANGED}, {"publish_noop": NOOP_NEVER}], indirect=True
)
@pytest.mark.parametrize("strategy", ["rolling", "recreate"])
def test_a_rotated_secret_reaches_every_container_that_serves_after_the_up(modal_control_plane, strategy):
    """A secret updated in place (same Modal object: the app's definitions do not change) plus a new
    redeploy trigger: whether Modal answers the deploy as a no-op or not, no container that started
    before the rotation takes a request afterwards, and the one that does read the new value."""
    cp = modal_control_plane
    cp.create_secret("web-key", {"API_KEY": "old"}, environment=ENV)
    inputs = {"module_env": module_env(secret="web-key"), "strategy": strategy}
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([app(**inputs, redeploy_triggers={"key": "digest-old"})]).ok
        with cp.state.lock:
            before = cp.containers.for_web_request(WEB_URL)
            cp.state.environments[ENV].secrets["web-key"].values = {"API_KEY": "new"}  # what the secret's update does

        rotate = eng.up([app(**inputs, redeploy_triggers={"key": "digest-new"})])

        assert rotate.ok and rotate.counts["update"] == 1, rotate.errors
        with cp.state.lock:
            after = cp.containers.for_web_request(WEB_URL)
        assert before.secret_values == {"API_KEY": "old"} and after.secret_values == {"API_KEY": "new"}
        assert before.state == ("stopped" if strategy == "recreate" else "draining")
        live = cp.app(APP)
        assert rotate.outputs[URN]["deployment_version"] == rotate.outputs[URN]["stack_deployment_version"] == 2
        assert live.deployment_version == 2 and after.version == 2
        rolled_over = any("rolling them over" in line for line in rotate.stdout_lines)
        assert rolled_over == (cp.publish_noop == NOOP_WHEN_UNCHANGED)
        assert eng.up([app(**inputs, redeploy_triggers={"key": "digest-new"})]).counts["same"] == 1


def test_a_secret_in_module_env_stays_secret(modal_control_plane):
    """A program may still put a secret Output into module_env (a trigger belongs in redeploy_triggers):
    the whole module_env is then secret, and must stay so in outputs, logs and errors."""
    cp = modal_control_plane
    canary = "canary-module-env-1b9e"
    secret_env = {**module_env(), "API_KEY_VERSION": canary}
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([desired(ModalAppDeployment, AppProvider(), "web", {**app().inputs, "module_env": secret_env},
                             secret_inputs=("module_env",))])  # fmt: skip
        assert up.ok, up.errors
        outputs = up.outputs[URN]
        assert wire.is_secret(outputs["module_env"])
        assert not any(canary in json.dumps(value) for key, value in outputs.items() if key != "module_env")
        assert not any(canary in line for line in up.stdout_lines + up.stderr_lines)

        bad = desired(ModalAppDeployment, AppProvider(), "web",
                      {**app().inputs, "module_env": {**secret_env, "MODAL_TOKEN_ID": "x"}},
                      secret_inputs=("module_env",))  # fmt: skip
        refused = eng.preview([bad])
        assert [failure.property for _, failure in refused.check_failures] == ["module_env.MODAL_TOKEN_ID"]
        assert not any(canary in error for error in refused.errors)  # the engine prints no value for it


def test_unknown_web_endpoint_is_reported(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        failed = engine(server).up([app(web_endpoint="Web.missing")])
        assert not failed.ok
        assert "no web endpoint 'Web.missing' (web endpoints: Web.serve)" in last_error_line(failed.errors)


def test_check_rejects_bad_inputs_per_property(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        good = app().inputs

        def failures(**changes: object) -> set[str]:
            return {failure.property for failure in server.check(URN, {**good, **changes}).failures}

        assert failures() == set()
        assert failures(module="serving/app.py") == {"module"}
        assert failures(app_name="no spaces allowed") == {"app_name"}
        assert failures(environment="") == {"environment"}
        assert failures(module_env={"MODAL_SERVER_URL": "http://elsewhere"}) == {"module_env.MODAL_SERVER_URL"}
        assert failures(source_digest=3.0) == {"source_digest"}
        assert failures(redeploy_triggers=["not", "a", "dict"]) == {"redeploy_triggers (secret)"}
        assert failures(timeout_seconds=-1.0) == {"timeout_seconds"}
        assert failures(surprise="x") == {"surprise"}
    assert cp.calls == []


def test_diff_is_precise_and_never_calls_modal(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([app()]).ok
        state = eng.state.resources[URN]
        mark = cp.mark()

        def diff(**changes: object):
            checked = server.check(URN, {**app().inputs, **changes})
            assert checked.failures == [], changes
            return server.diff(state.id, URN, state.outputs, checked.inputs, state.inputs)

        assert diff().changes == "none"
        assert diff(app_name="other").replaces == ["app_name"]
        assert diff(environment="staging").replaces == ["environment"]
        for in_place, value in [
            ("module", "other_module"),
            ("module_env", module_env(extra="x")),
            ("source_digest", "sha256:two"),
            ("redeploy_triggers", {"api_key": "sha256:new"}),
            ("web_endpoint", "Web.serve"),
            ("timeout_seconds", 60.0),
        ]:
            result = diff(**{in_place: value})
            assert (result.changes, result.replaces) == ("some", []), in_place
        assert cp.calls_since(mark) == []


@pytest.mark.parametrize("status", [Status.INVALID_ARGUMENT, Status.NOT_FOUND])
def test_refresh_and_destroy_after_its_environment_was_deleted_by_hand(modal_control_plane, status):
    """Whichever of its two plausible answers Modal gives a missing environment, the app is gone."""
    cp = modal_control_plane
    cp.environment_answers.missing_status = status
    cp.create_environment("doomed")
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([app(environment="doomed")]).ok
        cp.delete_environment("doomed")

        refreshed = eng.refresh()
        assert refreshed.ok and refreshed.step(URN).detail == "deleted", refreshed.errors
        assert eng.up([app(environment="doomed")]).ok is False  # nothing to deploy into: said, not hidden
        assert eng.destroy().ok
