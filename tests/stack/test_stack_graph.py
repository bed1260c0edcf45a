"""Both stacks evaluate, and their graphs, dependencies, protect flags, inputs and outputs are right."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.resources import API_KEY_TRIGGER, WEB_ENDPOINT, serving_source_digest
from serving.config import CONFIG_ENV_VAR, DOWNLOAD_RECORD, DeploymentConfig

from .cli import resource_name
from .conftest import rig
from .harness import (
    JOB_FUNCTIONS,
    JOBS,
    RESOURCES,
    STACKS,
    TEST_API_KEY,
    TEST_HF_TOKEN,
    UNKNOWN,
    StackConfig,
    is_secret,
    urn,
)

FOUNDATION = {"environment", "hf-token-secret", "api-key-secret", "weights-volume", "kernels-volume"}

# What each resource must wait for (explicit depends_on and inputs taken from other resources).
EXPECTED_DEPENDENCIES = {
    "environment": set(),
    "hf-token-secret": {"environment"},
    "api-key-secret": {"environment"},
    "weights-volume": {"environment"},
    "kernels-volume": {"environment"},
    "stack-proxy-token": {"environment"},
    "download-weights": FOUNDATION,
    "compile-kernels": FOUNDATION | {"download-weights"},
    "verify-setup": FOUNDATION | {"download-weights", "compile-kernels"},
    "app": FOUNDATION | {"verify-setup"},
    "smoke-test": {"app", "stack-proxy-token"},
}


def expected_resources(stack: str) -> set[str]:
    smoke = StackConfig.of(stack).values["glm-modal:smokeTest"]
    return set(RESOURCES) - (set() if smoke else {"smoke-test"})


def plaintext_strings(value: Any) -> list[str]:
    """Every string outside a secret marker (what a reader of the state or the CLI would see)."""
    if is_secret(value):
        return []
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *plaintext_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in plaintext_strings(v)]
    return [value] if isinstance(value, str) else []


def assert_no_plaintext_secrets(value: Any) -> None:
    leaked = [s for s in plaintext_strings(value) if TEST_API_KEY in s or TEST_HF_TOKEN in s]
    assert leaked == []


@pytest.mark.parametrize("stack", STACKS)
def test_a_new_stack_previews_its_whole_graph_in_order_without_calling_modal(stack: str) -> None:
    config = StackConfig.of(stack)
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    with rig() as running:
        harness = running.harness(stack)
        run = harness.preview(diff=True)
        up = harness.up()
        state = harness.export()["deployment"]["resources"]
        secrets = {name: running.cp.secret_values(name, environment) for name in (cfg.secrets.hf_token,
                                                                                  cfg.secrets.api_key)}  # fmt: skip

    assert run.ok, run.text
    assert run.ops() == dict.fromkeys(expected_resources(stack), "create")
    assert run.modal_calls == []
    assert up.ok, up.text

    # In state, in dependency order, each with exactly the dependencies it needs.
    order = [resource["urn"] for resource in state]
    by_name = {resource_name(resource["urn"]): resource for resource in state}
    for name in expected_resources(stack):
        dependencies = by_name[name].get("dependencies") or []
        assert set(dependencies) == {urn(stack, dep) for dep in EXPECTED_DEPENDENCIES[name]}, name
        assert all(order.index(dep) < order.index(urn(stack, name)) for dep in dependencies)

    # Only the volumes are protected, and only where the stack says so (prod: always).
    protect = config.values["glm-modal:protectVolumes"]
    assert (stack != "prod") or protect
    assert {name: bool(by_name[name].get("protect")) for name in expected_resources(stack)} == {
        name: (protect and name.endswith("-volume")) for name in expected_resources(stack)
    }

    assert run.outcome.inputs("environment")["name"] == environment
    for name, secret_name, key, value in (
        ("hf-token-secret", cfg.secrets.hf_token, cfg.secrets.hf_token_key, TEST_HF_TOKEN),
        ("api-key-secret", cfg.secrets.api_key, cfg.secrets.api_key_key, TEST_API_KEY),
    ):
        inputs = run.outcome.inputs(name)
        assert inputs["name"] == secret_name
        assert is_secret(inputs["values"]) and secrets[secret_name] == {key: value}
    assert run.outcome.inputs("weights-volume")["name"] == cfg.storage.weights_volume
    assert run.outcome.inputs("kernels-volume")["name"] == cfg.storage.kernels_volume

    jobs = {name: run.outcome.inputs(name) for name in JOBS}
    for name, inputs in jobs.items():
        assert (inputs["module"], inputs["function"]) == ("serving.app", JOB_FUNCTIONS[name])
        job_cfg = DeploymentConfig.model_validate_json(inputs["module_env"][CONFIG_ENV_VAR])
        assert job_cfg.weights_inputs() == cfg.weights_inputs()
        if name != "download-weights":
            assert job_cfg.kernel_fingerprint() == cfg.kernel_fingerprint()
        assert job_cfg.scaling.min_containers == 0  # a job never starts warm servers
    # The compile runs with exactly the serving arguments.
    compile_cfg = DeploymentConfig.model_validate_json(jobs["compile-kernels"]["module_env"][CONFIG_ENV_VAR])
    assert compile_cfg.launch == cfg.launch and compile_cfg.model.served_name == cfg.model.served_name
    assert jobs["download-weights"]["triggers"] == {"weights": cfg.weights_inputs()}
    assert jobs["download-weights"]["artifact"] == {
        "volume": cfg.storage.weights_volume,
        "path": f"{cfg.model.directory}/{DOWNLOAD_RECORD}",
    }
    assert jobs["compile-kernels"]["triggers"] == {"kernels": json.loads(json.dumps(cfg.kernel_inputs()))}
    assert jobs["compile-kernels"]["artifact"] == {"volume": cfg.storage.kernels_volume,
                                                    "path": cfg.compile_marker_name}  # fmt: skip
    # The verify runs after each run of the others; their runs are not known before they happen.
    assert jobs["verify-setup"]["triggers"] == {"download_run": UNKNOWN, "compile_run": UNKNOWN}
    assert jobs["verify-setup"]["require_ok"] is True

    app = run.outcome.inputs("app")
    assert (app["module"], app["app_name"], app["web_endpoint"]) == ("serving.app", cfg.app_name, WEB_ENDPOINT)
    assert DeploymentConfig.model_validate_json(app["module_env"][CONFIG_ENV_VAR]) == cfg
    # Only the config: no secret in module_env, so previews and state show it as it is.
    assert set(app["module_env"]) == {CONFIG_ENV_VAR}
    # A new API key redeploys through a digest of the secret's values, known once the secret exists.
    assert app["redeploy_triggers"] == {API_KEY_TRIGGER: UNKNOWN}
    assert app["source_digest"] == serving_source_digest()

    if "smoke-test" in expected_resources(stack):
        check = run.outcome.inputs("smoke-test")
        assert is_secret(check["bearer_token"])
        assert check["trigger"] == UNKNOWN  # the deployment version, known after the deploy
        assert check["request_body"]["model"] == cfg.model.served_name

    for name in expected_resources(stack):
        # Each carries its pickled provider, which the engine's provider process loads.
        assert isinstance(run.outcome.inputs(name)["__provider"], str)
        assert_no_plaintext_secrets(run.outcome.inputs(name))
    assert TEST_API_KEY not in run.text and TEST_HF_TOKEN not in run.text


def readme_outputs() -> set[str]:
    """The names in the README's table of outputs (the one under "Outputs (`pulumi stack output")."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("Outputs (`pulumi stack output", 1)[1].split("\n\n", 2)[1]
    return {name for row in table.splitlines()[2:] for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


@pytest.mark.parametrize("stack", STACKS)
def test_an_applied_stack_exports_its_api_and_how_to_call_it(stack: str) -> None:
    config = StackConfig.of(stack)
    cfg = DeploymentConfig.model_validate(config.deployment)
    environment = config.values["glm-modal:modalEnvironment"]
    with rig() as running:
        harness = running.harness(stack)
        run = harness.up()
        state = harness.resources()
        exported = json.dumps(harness.export())
        web_url = running.web.url_for(environment, f"{cfg.app_name}-{WEB_ENDPOINT}".lower().replace(".", "-"))
        deployed = running.cp.app(cfg.app_name, environment)

    assert run.ok, run.text
    outputs = run.outputs
    assert set(outputs) == readme_outputs()
    assert outputs["openai_base_url"] == web_url + "/v1"
    assert outputs["app_id"] == deployed.id and deployed.state == "deployed"
    assert outputs["deployment_version"] == deployed.deployment_version == 1
    assert outputs["app_name"] == cfg.app_name
    assert outputs["served_model_name"] == cfg.model.served_name
    assert outputs["modal_environment"] == environment
    assert (outputs["weights_volume"], outputs["kernels_volume"]) == (cfg.storage.weights_volume,
                                                                      cfg.storage.kernels_volume)  # fmt: skip
    assert (outputs["hf_token_secret"], outputs["api_key_secret"]) == (cfg.secrets.hf_token, cfg.secrets.api_key)
    assert outputs["smoke_test"] == ("on" if config.values["glm-modal:smokeTest"] else "off")
    assert outputs["smoke_test_setup"].splitlines() == [
        f"export GLM_API_KEY=$(pulumi config get glm-modal:apiKey --stack {stack})",
        f"export GLM_MODAL_KEY=$(pulumi stack output stack_proxy_token_id --stack {stack})",
        f"export GLM_MODAL_SECRET=$(pulumi stack output stack_proxy_token_secret --show-secrets --stack {stack})",
    ]
    for snippet in (outputs["smoke_test_curl"], outputs["smoke_test_openai_python"]):
        assert web_url + "/v1" in snippet and cfg.model.served_name in snippet
        assert all(variable in snippet for variable in ("GLM_API_KEY", "GLM_MODAL_KEY", "GLM_MODAL_SECRET"))
    # What Modal's edge wants: the stack's own token, its secret only as a secret.
    assert outputs["edge_auth"] == "proxy auth" and outputs["stack_proxy_token_id"].startswith("wk-")
    assert outputs["client_proxy_token_ids"] == {} and outputs["client_headers"] == {}
    token_state = state["stack-proxy-token"]["outputs"]
    assert is_secret(token_state["token_secret"]) and token_state["allowed"] is True
    # The Python snippet is valid Python (it is meant to be pasted).
    compile(outputs["smoke_test_openai_python"], "<snippet>", "exec")

    # The API key's digest is a secret trigger; module_env (the config) holds no secret at all, so
    # `pulumi preview --diff` shows which config field changed instead of `[secret]`.
    app_state = state["app"]
    for properties in (app_state["inputs"], app_state["outputs"]):
        assert "ciphertext" not in json.dumps(properties["module_env"])
        assert is_secret(properties["redeploy_triggers"][API_KEY_TRIGGER])

    # Secrets never reach outputs, the CLI's output or the state in plaintext, and the two secret
    # resources hold theirs encrypted (the passphrase secrets provider's ciphertext).
    assert_no_plaintext_secrets(run.outputs)
    assert TEST_API_KEY not in run.text and TEST_HF_TOKEN not in run.text
    assert TEST_API_KEY not in exported and TEST_HF_TOKEN not in exported
    for name in ("hf-token-secret", "api-key-secret"):
        assert is_secret(state[name]["inputs"]["values"])
        assert state[name]["inputs"]["values"]["ciphertext"].startswith("v1:")
