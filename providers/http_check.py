"""HttpCheck: a post-deploy smoke test as a Pulumi resource.

It waits until `GET <base_url><health_path>` answers 200, then sends one JSON `POST
<base_url><request_path>` with an optional bearer token and requires a 200 whose JSON body has a
non-empty value at each of `expect_json_paths` (dotted, list indexes as numbers:
"choices.0.message"). Both requests carry `secret_headers` too (e.g. the proxy auth token an edge
wants). If either step fails, `pulumi up` fails with the status and the start of the response body.

When it runs: on create, and on update when `trigger` (e.g. the app's deployment version), the URL,
the paths, the body or the expectations change. Never in `pulumi preview` (the engine does not call
create/update then) and never when nothing changed (the diff is empty). Changing only a timeout or
the token does not re-run it; a new token comes with a new deployment anyway. `read` and `delete`
touch nothing: a check is a record of the last successful run, not an object somewhere.

Generic on purpose: it knows HTTP and JSON, nothing about models or Modal. HTTP goes through the
standard library, so it needs nothing beyond what the dynamic-provider process already loads.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, ResourceProvider, UpdateResult
from pydantic import Field, field_validator

from providers.base import InputModel, check_inputs, precise_diff, validate_inputs
from providers.shared import ProviderError, progress, redact

# Prefix of every progress line, so a reader of `pulumi up` sees which resource is talking.
PROGRESS_PREFIX = "[http-check] "

# Characters of a failing response body quoted in the error: enough to recognise an error payload.
BODY_EXCERPT_CHARS = 500

# Inputs whose change re-runs the check (all in place: there is nothing to replace).
RERUN_ON = ("base_url", "health_path", "request_path", "request_body", "expect_json_paths", "trigger")

Seconds = Annotated[float, Field(gt=0)]


class HttpCheckInputs(InputModel):
    secret_fields = frozenset({"bearer_token", "secret_headers"})

    base_url: str
    health_path: str = "/health"
    request_path: str
    request_body: dict[str, Any]
    # Sent as `Authorization: Bearer <token>` on both requests; never stored in outputs.
    bearer_token: str | None = None
    # More headers sent on both requests whose values are secret (e.g. an edge's proxy auth token);
    # never stored in outputs.
    secret_headers: dict[str, str] = {}
    expect_json_paths: list[str] = []
    # Any change re-runs the check: pass what identifies the thing under test (a deployment version).
    trigger: str = ""
    # How long to keep polling the health path: a cold start of a large model takes minutes.
    ready_timeout_seconds: Seconds = 900.0
    poll_interval_seconds: Seconds = 10.0
    # One HTTP request's limit (the chat request may include a cold start of its own).
    request_timeout_seconds: Seconds = 300.0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("health_path", "request_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value


class HttpCheckFailed(ProviderError):
    """The smoke test failed; the message quotes what the server answered (redacted)."""


def _request(
    url: str, *, token: str | None, body: dict | None, timeout: float, extra_headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """(status, body text) of one request; a transport failure is status 0 with the reason."""
    headers = {"Accept": "application/json", **(extra_headers or {})}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return 0, f"{type(error).__name__}: {reason}"


def _json_path(document: Any, path: str) -> Any:
    value = document
    for part in path.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return value


def _excerpt(text: str) -> str:
    # Redact before cutting: a token the body echoes across the cut would otherwise leave a fragment
    # that the error's own redaction no longer recognises.
    text = " ".join(redact(text).split())
    return text if len(text) <= BODY_EXCERPT_CHARS else text[:BODY_EXCERPT_CHARS] + "..."


def run_check(inputs: HttpCheckInputs, *, sleep=time.sleep, monotonic=time.monotonic) -> dict[str, Any]:
    """Wait for health, send the request, return what was observed; raise HttpCheckFailed otherwise."""
    token = inputs.bearer_token
    health_url = f"{inputs.base_url}{inputs.health_path}"
    started = monotonic()
    deadline = started + inputs.ready_timeout_seconds
    attempts = 0
    progress(f"waiting for {health_url} (up to {inputs.ready_timeout_seconds:.0f}s)", prefix=PROGRESS_PREFIX)
    while True:
        attempts += 1
        remaining = max(deadline - monotonic(), 1.0)
        status, text = _request(
            health_url,
            token=token,
            body=None,
            timeout=min(inputs.request_timeout_seconds, remaining),
            extra_headers=inputs.secret_headers,
        )
        if status == 200:
            break
        if monotonic() + inputs.poll_interval_seconds > deadline:
            raise HttpCheckFailed(
                f"smoke test failed: GET {health_url} did not answer 200 within "
                f"{inputs.ready_timeout_seconds:.0f}s ({attempts} attempts); last answer: "
                f"{status or 'no response'} {_excerpt(text)}"
            )
        if attempts == 1 or attempts % 6 == 0:
            waited = f"{monotonic() - started:.0f}s"
            progress(f"{health_url}: {status or 'no response'}; still waiting ({waited})", prefix=PROGRESS_PREFIX)
        sleep(inputs.poll_interval_seconds)
    healthy_after = monotonic() - started
    progress(f"healthy after {healthy_after:.0f}s; POST {inputs.request_path}", prefix=PROGRESS_PREFIX)

    request_url = f"{inputs.base_url}{inputs.request_path}"
    status, text = _request(
        request_url,
        token=token,
        body=inputs.request_body,
        timeout=inputs.request_timeout_seconds,
        extra_headers=inputs.secret_headers,
    )
    if status != 200:
        raise HttpCheckFailed(f"smoke test failed: POST {request_url} answered {status or 'nothing'}: {_excerpt(text)}")
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        raise HttpCheckFailed(f"smoke test failed: POST {request_url} answered non-JSON: {_excerpt(text)}") from None
    missing = [path for path in inputs.expect_json_paths if not _json_path(document, path)]
    if missing:
        raise HttpCheckFailed(
            f"smoke test failed: POST {request_url} answer lacks {', '.join(missing)}: {_excerpt(text)}"
        )
    expected = ", ".join(inputs.expect_json_paths) or "a JSON body"
    progress(f"POST {inputs.request_path}: 200 with {expected}", prefix=PROGRESS_PREFIX)
    return {
        "health_status": 200,
        "response_status": status,
        "healthy_after_seconds": round(healthy_after, 1),
    }


def _outputs(inputs: HttpCheckInputs, observed: dict[str, Any]) -> dict[str, Any]:
    # Every input a later diff compares, never a secret one (the token, the secret headers).
    return {**inputs.model_dump(mode="json", exclude=set(inputs.secret_fields)), **observed}


class HttpCheckProvider(ResourceProvider):
    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]):
        return check_inputs(HttpCheckInputs, news)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]):
        return precise_diff(olds, news, RERUN_ON)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self._inputs(props)
        return CreateResult(f"http-check-{inputs.trigger or 'once'}", _outputs(inputs, run_check(inputs)))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs = self._inputs(news)
        return UpdateResult(_outputs(inputs, run_check(inputs)))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    @staticmethod
    def _inputs(props: dict[str, Any]) -> HttpCheckInputs:
        return validate_inputs(HttpCheckInputs, props)


class HttpCheck(pulumi.dynamic.Resource, module="http", name="HttpCheck"):
    """Pulumi resource: see the module docstring. `bearer_token` and `secret_headers` are made secret."""

    health_status: pulumi.Output[int]
    response_status: pulumi.Output[int]
    healthy_after_seconds: pulumi.Output[float]

    def __init__(
        self,
        resource_name: str,
        *,
        base_url: pulumi.Input[str],
        request_path: pulumi.Input[str],
        request_body: pulumi.Input[dict],
        bearer_token: pulumi.Input[str] | None = None,
        secret_headers: pulumi.Input[dict[str, str]] | None = None,
        health_path: pulumi.Input[str] = "/health",
        expect_json_paths: pulumi.Input[list[str]] | None = None,
        trigger: pulumi.Input[str] = "",
        ready_timeout_seconds: pulumi.Input[float] = 900.0,
        poll_interval_seconds: pulumi.Input[float] = 10.0,
        request_timeout_seconds: pulumi.Input[float] = 300.0,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "base_url": base_url,
            "health_path": health_path,
            "request_path": request_path,
            "request_body": request_body,
            "bearer_token": pulumi.Output.secret(bearer_token) if bearer_token is not None else None,
            "secret_headers": pulumi.Output.secret(secret_headers) if secret_headers is not None else {},
            "expect_json_paths": expect_json_paths or [],
            "trigger": trigger,
            "ready_timeout_seconds": ready_timeout_seconds,
            "poll_interval_seconds": poll_interval_seconds,
            "request_timeout_seconds": request_timeout_seconds,
            # Outputs only (None declares them).
            "health_status": None,
            "response_status": None,
            "healthy_after_seconds": None,
        }
        super().__init__(HttpCheckProvider(), resource_name, props, opts)
