"""The post-deploy smoke test: after a deployment that changed (and only then), /health and one chat
request with the API key; a failure fails the `up` with the server's answer, never with the key."""

from __future__ import annotations

import pulumi

from providers.http_check import HttpCheck

from .conftest import rig
from .harness import TEST_API_KEY, StackConfig, set_path


def test_a_failing_chat_request_fails_the_up_with_the_answer_and_a_fixed_server_passes_it() -> None:
    with rig() as running:
        harness = running.harness("staging")
        running.web.chat_status = 500
        failed = harness.up()
        running.web.chat_status = 200
        requests_before_preview = len(running.web.requests)
        preview = harness.preview()
        preview_requests = len(running.web.requests) - requests_before_preview
        fixed = harness.up()
        chats = running.web.chat_requests()

    assert not failed.ok
    error = failed.text
    assert "smoke test failed" in error and "answered 500" in error and "the model is on fire" in error
    assert TEST_API_KEY not in error and "[secret]" in error  # the server echoed the key; we did not
    # Everything before the smoke test was applied; the failed check was not recorded, so it is
    # still to do, and only it.
    assert failed.op("app") == "create" and failed.deploys == 1
    assert preview.changed() == {"smoke-test": "create"}
    assert preview_requests == 0  # a preview never runs the check
    assert fixed.ok and fixed.changed() == {"smoke-test": "create"}
    assert (fixed.function_runs, fixed.deploys) == (0, 0)
    assert [authorized for _, _, authorized in chats] == [True, True]


def test_no_smoke_test_where_the_stack_turns_it_off() -> None:
    config = StackConfig.of("staging")
    config.values["glm-modal:smokeTest"] = False
    with rig() as running:
        run = running.harness("staging", config).up()
        requests = list(running.web.requests)
    assert run.ok and "smoke-test" not in run.ops() and requests == []
    assert run.outputs["smoke_test"] == "off"


def test_a_server_that_never_gets_healthy_fails_the_check_after_its_timeout() -> None:
    """The same resource with a one-second patience, through the real provider process."""
    with rig() as running:
        # A deployed server (Modal answers 404 where no app serves), then one whose /health says 503.
        applied = running.harness("staging").up()
        assert applied.ok, applied.text
        base_url = applied.outputs["openai_base_url"].removesuffix("/v1")
        # Past Modal's edge with the stack's own token, as the stack's smoke test goes.
        edge = {"Modal-Key": applied.outputs["stack_proxy_token_id"],
                "Modal-Secret": applied.outputs["stack_proxy_token_secret"]}  # fmt: skip
        running.web.health_status = 503
        requests_before = len(running.web.requests)

        def program() -> None:
            HttpCheck("probe", base_url=base_url, request_path="/v1/chat/completions", request_body={"model": "m"},
                      bearer_token=pulumi.Output.secret(TEST_API_KEY), secret_headers=edge, trigger="v1",
                      ready_timeout_seconds=1.0, poll_interval_seconds=0.2, request_timeout_seconds=5.0)

        # The program here is the check alone.
        preview = running.world.program_run("preview", "staging", program=program)
        preview_requests = len(running.web.requests) - requests_before
        up = running.world.program_run("up", "staging", program=program)
        requests = running.web.requests[requests_before:]
        health_polls = [r for r in requests if r[1].endswith("/health")]
        chats = [r for r in requests if r[1].endswith("/v1/chat/completions")]

    assert preview.ok and preview_requests == 0
    assert not up.ok
    error = up.text
    assert "did not answer 200 within 1s" in error and "503" in error
    assert len(health_polls) >= 2 and chats == []  # polled, then gave up; never sent the chat
    assert TEST_API_KEY not in error


def test_the_check_runs_again_only_when_the_deployment_changes() -> None:
    with rig() as running:
        harness = running.harness("staging")
        assert harness.up().ok
        same = harness.up()
        edited = StackConfig.of("staging")
        set_path(edited.deployment, "scaling.max_containers", 2)
        changed = harness.up(edited)
        chats = running.web.chat_requests()
    assert same.op("smoke-test") == "same"
    assert changed.op("app") == "update" and changed.op("smoke-test") == "update"
    assert len(chats) == 2


def test_the_check_validates_its_inputs_property_by_property() -> None:
    from providers.http_check import HttpCheckProvider

    result = HttpCheckProvider().check({}, {"base_url": "ftp://x", "request_path": "v1/chat", "request_body": {},
                                            "ready_timeout_seconds": -1, "surprise": 1})  # fmt: skip
    assert {failure.property for failure in result.failures} == {
        "base_url", "request_path", "ready_timeout_seconds", "surprise"
    }


def test_only_what_identifies_the_deployment_re_runs_the_check() -> None:
    from providers.http_check import HttpCheckProvider

    provider = HttpCheckProvider()
    olds = {"base_url": "https://a", "health_path": "/health", "request_path": "/v1/chat/completions",
            "request_body": {"model": "m"}, "expect_json_paths": [], "trigger": "1", "ready_timeout_seconds": 900.0,
            "health_status": 200}  # fmt: skip
    assert provider.diff("id", olds, {**olds, "ready_timeout_seconds": 60.0, "bearer_token": "new"}).changes is False
    diff = provider.diff("id", olds, {**olds, "trigger": "2"})
    assert diff.changes is True and not diff.replaces  # re-run in place, nothing to replace
