"""The optional post-deploy smoke test: one `HttpCheck` after the app deployment.

Switched per stack by `glm-modal:smokeTest` (on for staging; off for prod, where the cold start it
causes costs 8 B200s for minutes). Its trigger is the app's deployment version, so it runs after a
deployment that changed and at no other time: not in `pulumi preview` (the engine never creates or
updates in a preview) and not in an `up` that changed nothing (same version, empty diff). It waits
for /health, sends one chat request with the stack's API key and fails the `up` with the response
if either fails. Both requests carry the stack's own proxy auth token, which Modal's edge wants first
(infra/edge.py).
"""

from __future__ import annotations

import pulumi

from providers.http_check import HttpCheck
from serving.config import DeploymentConfig

# Modal may need a few minutes to schedule 8 B200s before the container's own start-up (weight
# load, health, warmup: cfg.timeouts.startup) even begins.
SCHEDULING_MARGIN_SECONDS = 600

# Between /health polls: a cold start takes minutes, so polling faster only adds log noise.
POLL_INTERVAL_SECONDS = 10.0

# A prompt any model answers in a few tokens.
SMOKE_PROMPT = "Reply with the single word: ready"

# The chat answer must contain an assistant message (content is random in dummy-weights mode).
EXPECTED_JSON_PATHS = ["choices.0.message"]


def deployment_version_number(version: float | int | None) -> int | float | None:
    """Numbers cross the engine as floats; a version reads better as 3 than 3.0."""
    return int(version) if isinstance(version, float) and version.is_integer() else version


def smoke_request_body(served_name: str) -> dict:
    """One short chat request with thinking off, so a few tokens give visible content."""
    return {
        "model": served_name,
        "messages": [{"role": "user", "content": SMOKE_PROMPT}],
        "max_tokens": 16,
        "chat_template_kwargs": {"enable_thinking": False},
    }


def declare_smoke_test(
    cfg: DeploymentConfig,
    *,
    web_url: pulumi.Output[str],
    deployment_version: pulumi.Output[str],
    api_key: pulumi.Output[str],
    edge_headers: pulumi.Output[dict[str, str]] | None,
    depends_on: list[pulumi.Resource],
) -> HttpCheck:
    return HttpCheck(
        "smoke-test",
        base_url=web_url,
        health_path="/health",
        request_path="/v1/chat/completions",
        request_body=smoke_request_body(cfg.model.served_name),
        bearer_token=api_key,
        secret_headers=edge_headers,
        expect_json_paths=EXPECTED_JSON_PATHS,
        trigger=deployment_version.apply(lambda version: str(deployment_version_number(version))),
        ready_timeout_seconds=float(cfg.timeouts.startup + SCHEDULING_MARGIN_SECONDS),
        poll_interval_seconds=POLL_INTERVAL_SECONDS,
        request_timeout_seconds=float(cfg.timeouts.warmup_request),
        opts=pulumi.ResourceOptions(depends_on=depends_on),
    )
