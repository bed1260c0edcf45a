"""Rotating the API key on staging through the real CLI, on a control plane whose containers read
their secrets once, when they start, and which answers an unchanged deploy as a no-op (as Modal
does): the stack must replace the containers, or the old key would keep working and the new one
would be refused until they happened to cycle."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from serving.config import DeploymentConfig

from .conftest import rig
from .harness import PROJECT, TEST_API_KEY, StackConfig

ROTATED_API_KEY = "canary-rotated-api-key-4d7e90b2c1f35a68"


def chat_status(base_url: str, api_key: str, model: str, edge: dict[str, str]) -> int:
    """The status a client's chat request gets (the OpenAI-compatible endpoint, as a client calls it,
    past Modal's edge with a proxy auth token: the key is SGLang's to check)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json", **edge}
    request = urllib.request.Request(f"{base_url}/chat/completions", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_rotated_api_key_is_served_by_fresh_containers_only() -> None:
    config = StackConfig.of("staging")
    cfg = DeploymentConfig.model_validate(config.deployment)
    with rig() as running:
        harness = running.harness("staging", config)
        first = harness.up()
        assert first.ok, first.text
        base_url, model = first.outputs["openai_base_url"], first.outputs["served_model_name"]
        environment = first.outputs["modal_environment"]
        edge = {"Modal-Key": first.outputs["stack_proxy_token_id"],
                "Modal-Secret": first.outputs["stack_proxy_token_secret"]}  # fmt: skip
        assert chat_status(base_url, TEST_API_KEY, model, edge) == 200
        app = running.cp.app(cfg.app_name, environment)
        before_rotation = list(app.live_containers)
        chats_before, served_before = len(running.web.chat_requests()), len(running.web.served_by)

        rotated_config = StackConfig(config.values, {**config.secrets, f"{PROJECT}:apiKey": ROTATED_API_KEY})
        rotated = harness.up(rotated_config)
        assert rotated.ok, rotated.text
        smoke_chats = running.web.chat_requests()[chats_before:]
        old_key = chat_status(base_url, TEST_API_KEY, model, edge)
        new_key = chat_status(base_url, ROTATED_API_KEY, model, edge)
        again = harness.up(rotated_config, expect_no_changes=True)
        served_by = running.web.served_by[served_before:]

    assert before_rotation, "the first up's smoke test and the client's request started a container"
    assert rotated.changed() == {"api-key-secret": "update", "app": "update", "smoke-test": "update"}
    # Modal found nothing to deploy (same secret object, same code): the stack rolled the app over.
    assert "modal app rollover --strategy rolling" in rotated.text
    assert app.deployment_version == 2 and rotated.outputs["deployment_version"] == 2
    # The smoke test ran against the new version, with the new key, and passed.
    assert [authorized for _, _, authorized in smoke_chats] == [True]
    assert (old_key, new_key) == (401, 200)
    # No container that started before the rotation took a request after it.
    old_ids = {container.task_id for container in before_rotation}
    assert not old_ids & set(served_by)
    assert all(container.state != "running" for container in before_rotation)
    assert again.ok and again.mutating_modal_calls == [], again.text
