"""No request without credentials reaches a GPU: the stack's proxy auth tokens at Modal's edge, through
the real CLI and the control plane's edge (tests/modal_control_plane/edge.py), which answers 401 and
starts nothing for a request without a token valid in the app's environment, as Modal's does."""

from __future__ import annotations

from infra.smoke import smoke_request_body
from tests.modal_control_plane.edge import requires_proxy_auth

from .conftest import Rig, rig
from .edge_requests import hostile_requests, http_status
from .harness import TEST_API_KEY, StackConfig

CLIENTS = ["search", "batch-eval"]


def tokens_on_modal(running: Rig) -> dict[str, object]:
    with running.cp.state.lock:
        return {token.id: token for token in running.cp.state.proxy_tokens.values()}


def allowed_in(running: Rig, environment: str) -> set[str]:
    with running.cp.state.lock:
        env_id = running.cp.state.environments[environment].id
        return {token.id for token in running.cp.state.proxy_tokens.values() if env_id in token.environment_ids}


def prod_with_clients(clients: list[str]) -> StackConfig:
    config = StackConfig.of("prod")
    config.values["glm-modal:clientTokens"] = clients
    return config


def test_an_up_makes_scoped_tokens_and_nothing_without_one_starts_a_container() -> None:
    with rig() as running:
        harness = running.harness("prod")
        applied = harness.up(prod_with_clients(CLIENTS))
        assert applied.ok, applied.text
        outputs = applied.outputs
        environment = outputs["modal_environment"]
        base = outputs["openai_base_url"].removesuffix("/v1")
        app_name = outputs["app_name"]
        tokens = tokens_on_modal(running)

        # One token per client plus the stack's own, each scoped to prod's environment and allowed there.
        ids = {**outputs["client_proxy_token_ids"], "stack": outputs["stack_proxy_token_id"]}
        assert set(ids) == {*CLIENTS, "stack"} and set(ids.values()) == set(tokens)
        assert all(token.scoped for token in tokens.values()) and allowed_in(running, environment) == set(tokens)
        headers = outputs["client_headers"]
        assert set(headers) == set(CLIENTS)
        search = headers["search"]
        assert search["Modal-Key"] == ids["search"] and search["Modal-Secret"] == tokens[ids["search"]].secret

        # What anyone could send, a token of another environment included (a staging token must never
        # open prod), and one revoked by hand.
        hostile = hostile_requests(running.cp, outputs, "search")
        bearer = {"Authorization": f"Bearer {TEST_API_KEY}"}
        chat = smoke_request_body(outputs["served_model_name"])
        answers = {name: http_status(url, hdrs, body) for name, (url, hdrs, body) in hostile.items()}
        started_while_hostile = running.cp.containers_started(app_name, environment)
        gpu_seconds_while_hostile = running.cp.gpu_seconds(app_name, environment)

        # Nothing else is reachable without the edge: every web URL on Modal after the up (job runs'
        # apps included) is the Server's, and it requires proxy auth.
        with running.cp.state.lock:
            endpoints = {(app.name, record.web_url): requires_proxy_auth(record, record.web_url)
                         for app in running.cp.state.all_apps() for record in app.functions.values()
                         if record.web_url}  # fmt: skip

        # A client with its pair and the API key gets an answer; without the key, SGLang refuses it.
        answered = http_status(f"{base}/v1/chat/completions", {**search, **bearer}, chat)
        started_after = running.cp.containers_started(app_name, environment)

    assert endpoints == {(app_name, base): True}, endpoints
    assert answers == dict.fromkeys(hostile, 401), answers
    assert (started_while_hostile, gpu_seconds_while_hostile) == (0, 0.0)
    assert answered == 200 and started_after == 1
    # The secrets are outputs only as secrets, and never in what the CLI printed.
    assert all(tokens[token_id].secret not in applied.text for token_id in ids.values())


def test_removing_a_client_token_revokes_it_while_the_others_keep_working() -> None:
    with rig() as running:
        harness = running.harness("prod")
        first = harness.up(prod_with_clients(CLIENTS))
        assert first.ok, first.text
        outputs = first.outputs
        base = outputs["openai_base_url"].removesuffix("/v1")
        headers = outputs["client_headers"]
        bearer = {"Authorization": f"Bearer {TEST_API_KEY}"}
        chat = smoke_request_body(outputs["served_model_name"])

        preview = harness.preview(prod_with_clients(["search"]))
        second = harness.up(prod_with_clients(["search"]))
        removed_id = headers["batch-eval"]["Modal-Key"]
        still_there = tokens_on_modal(running)
        chat_url = f"{base}/v1/chat/completions"
        after = {name: http_status(chat_url, {**pair, **bearer}, chat) for name, pair in headers.items()}

    assert preview.ok and preview.changed() == {"client-proxy-token-batch-eval": "delete"}, preview.text
    assert preview.modal_calls == []
    assert second.ok, second.text
    assert removed_id not in still_there and set(second.outputs["client_headers"]) == {"search"}
    assert after == {"search": 200, "batch-eval": 401}


def test_a_token_revoked_by_hand_is_drift_that_the_next_up_repairs_and_destroy_removes_them_all() -> None:
    with rig() as running:
        harness = running.harness("staging")
        config = StackConfig.of("staging")
        config.values["glm-modal:clientTokens"] = ["search"]
        applied = harness.up(config)
        assert applied.ok, applied.text
        environment = applied.outputs["modal_environment"]
        token_id = applied.outputs["client_proxy_token_ids"]["search"]
        running.cp.revoke_proxy_token(token_id, environment)

        drift = harness.preview(config, refresh=True)
        # A preview's refresh is not kept: the repairing `up` refreshes too (as the README says).
        repaired = harness.up(config, refresh=True)
        allowed_after_repair = token_id in allowed_in(running, environment)
        settled = harness.preview(config, expect_no_changes=True)
        destroyed = harness.destroy()
        left = tokens_on_modal(running)

    assert drift.ok and drift.changed().get("client-proxy-token-search") == "update", drift.text
    assert repaired.ok and allowed_after_repair, repaired.text
    assert settled.ok, settled.text
    assert destroyed.ok, destroyed.text
    assert left == {}
