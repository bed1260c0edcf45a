"""No message of the Pulumi program repeats a secret of its stack (infra/messages.py).

`infra.settings.load` runs in-process on the runtime config the language host would hand it (the
committed prod stack file's values, as strings, and secret values with their keys marked secret).
Every secret here is a fresh value that only `load` can have handed to infra/messages.py: each test
shows that `load` did so before building the message that quotes it.
"""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pulumi
import pytest
from pulumi.runtime import config as runtime_config

from infra import messages, revision_pin
from infra.settings import InvalidStackConfig, load
from providers.shared import REDACTED
from serving.config import DeploymentConfig
from serving.log_redaction import MIN_HIDDEN_PIECE, secret_spellings
from serving.stack_file import load_yaml

REPO = Path(__file__).resolve().parents[2]
SERVED_NAME = "glm-modal:deployment.model.served_name"

# A key as `openssl rand -base64 32` makes one: `/` and `+` take other spellings in URLs and JSON.
API_KEY = "q3Zr8/Kc+1vW0pX9yT2mLb7Gh4Nf6Js5Ae0Dk3Ro1U="
HF_TOKEN = "hf_redactionTestToken0123456789"


def as_the_cli_passes_it(value: Any) -> str:
    """Config values reach the program as strings: objects and lists as JSON, booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


@pytest.fixture
def stack_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Sets the runtime config to the prod stack file's, edited: `deployment` paths, plain `values`
    and `secrets` (their keys marked secret) of any namespace, by full key."""
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    before, before_secret = dict(runtime_config.CONFIG.get()), list(runtime_config._SECRET_KEYS.get())

    def set_config(
        deployment: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        config = load_yaml((REPO / "Pulumi.prod.yaml").read_text())["config"]
        for path, value in (deployment or {}).items():
            *parents, last = path.split(".")
            node = config["glm-modal:deployment"]
            for part in parents:
                node = node[part]
            node[last] = value
        config.update(values or {})
        # The stack's two secrets unless `values` holds one in plaintext.
        defaults = {"glm-modal:hfToken": HF_TOKEN, "glm-modal:apiKey": API_KEY}
        secrets = {key: value for key, value in defaults.items() if key not in (values or {})} | (secrets or {})
        config.update(secrets)
        runtime_config.set_all_config({k: as_the_cli_passes_it(v) for k, v in config.items()}, list(secrets))

    # A valid config makes `load` build its secrets as Outputs, which need an event loop (a test that
    # ran before in this process may have left the thread without one).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield set_config
    asyncio.set_event_loop(None)
    loop.close()
    runtime_config.set_all_config(before, before_secret)


def refused(stack: str = "prod") -> InvalidStackConfig:
    with pytest.raises(InvalidStackConfig) as raised:
        load(stack)
    return raised.value


def assert_hidden(secret: str, text: str) -> None:
    """Neither the secret, in any spelling, nor a piece of it long enough to matter is in `text`."""
    assert not [spelling for spelling in secret_spellings(secret) if spelling in text]
    assert not [secret[i : i + MIN_HIDDEN_PIECE] for i in range(len(secret) - 7) if secret[i : i + 8] in text]


def test_a_rejected_value_holding_the_api_key_is_not_quoted(stack_config) -> None:
    stack_config(deployment={"model.served_name": f" --api-key {API_KEY}"})
    error = refused()

    assert any(problem.startswith(f"{SERVED_NAME}: ") for problem in error.problems), error.problems
    assert f"--api-key {REDACTED}" in str(error)
    assert_hidden(API_KEY, str(error))
    assert_hidden(API_KEY, "\n".join(error.problems))


def test_secrets_of_any_namespace_and_their_parts_are_hidden(stack_config) -> None:
    # A secret of another namespace, and one part of a secret object (`pulumi config set --secret --path`).
    region = "canary-secret-region-9d41e7"
    external_id = "canary-external-id-0b52c3"
    stack_config(
        deployment={"model.served_name": f"{region} {external_id}"},
        secrets={"othercloud:region": region, "aws:assumeRole": json.dumps({"externalId": external_id, "n": 3})},
    )
    error = refused()

    assert any(problem.startswith(f"{SERVED_NAME}: ") for problem in error.problems)
    assert_hidden(region, str(error))
    assert_hidden(external_id, str(error))


def test_our_secrets_stored_in_plaintext_are_hidden_too(stack_config) -> None:
    token = "hf_Q7vXk2pLm9RtW4zN8cJ5bY3dF6gH"
    # `pulumi config set` without --secret: the value is in the stack file, the key not marked secret.
    stack_config(deployment={"model.served_name": f"glm {token}"}, values={"glm-modal:hfToken": token})
    error = refused()

    assert "glm-modal:hfToken: stored in plaintext" in "\n".join(error.problems)
    assert any(problem.startswith(f"{SERVED_NAME}: ") for problem in error.problems)
    assert_hidden(token, str(error))


def test_plain_settings_stay_readable(stack_config) -> None:
    # requireApiKey and clientTokens have credential-like names but are plain settings: not secrets.
    stack_config(values={"glm-modal:smokeTest": "yes", "glm-modal:clientTokens": ["search-team"]})
    error = refused()
    assert error.problems == ["glm-modal:smokeTest: expected true or false, got 'yes'"]


def test_the_secrets_hidden_are_the_loaded_stacks_own(stack_config) -> None:
    # The stack tests run the program inline, one stack after another, in one process.
    first, second = "Qm4vT8zK1pXw6RjN", "bY7cW2hL9sD3fG5k"
    stack_config(secrets={"othercloud:first": first})
    load("staging")
    assert messages.redact(f"{first} {second}") == f"{REDACTED} {second}"

    stack_config(secrets={"othercloud:second": second})
    load("staging")
    assert messages.redact(f"{first} {second}") == f"{first} {REDACTED}"


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """pulumi.log's functions (and pulumi's names for them) replaced by recorders, then wrapped by
    `redact_program_log` as infra/__main__.py does; all restored afterwards."""
    records: list[tuple[str, str]] = []
    for name in messages.LOG_FUNCTIONS:
        recorder = lambda msg, *args, _name=name, **kwargs: records.append((_name, msg))  # noqa: E731
        monkeypatch.setattr(pulumi.log, name, recorder)
        monkeypatch.setattr(pulumi, name, recorder)
    messages.redact_program_log()
    messages.redact_program_log()  # idempotent: wrapped once
    return records


def test_every_program_log_message_is_redacted(stack_config, logged) -> None:
    key = "canary-logged-secret-3f8e2d1c-long-enough"
    stack_config(secrets={"glm-modal:apiKey": key})
    load("staging")  # registers the stack's secrets; a valid config: no error

    pulumi.log.info(f"[cost] a line quoting {key}")
    pulumi.log.warn(f"a warning quoting {json.dumps({'key': key})}")
    pulumi.warn(f"pulumi.warn quoting {key}")
    # What the language host logs of a failed program: a RunError's text, or a traceback.
    pulumi.log.error(f"Program failed with an unhandled exception:\nValueError: {key!r}")
    pulumi.log.debug(key)

    assert [level for level, _ in logged] == ["info", "warn", "warn", "error", "debug"]
    assert all(REDACTED in message for _, message in logged)
    for _, message in logged:
        assert_hidden(key, message)


def test_the_infra_warnings_go_through_the_redacted_log(stack_config, logged) -> None:
    # A branch name that holds a secret value of the stack (a hostile stack file's revision).
    branch = "canary-branch-secret-7c1d0e"
    stack_config(secrets={"othercloud:branchSecret": branch})
    load("prod")
    settings = SimpleNamespace(
        stack="prod", deployment=DeploymentConfig.model_validate({"model": {"revision": branch}})
    )

    revision_pin.warn_if_unpinned(settings)  # type: ignore[arg-type]

    ((level, message),) = logged
    assert level == "warn" and "model.revision is '[secret]', a branch or tag" in message
    assert_hidden(branch, message)


def _bypasses_the_log(node: ast.AST) -> str | None:
    if isinstance(node, ast.ImportFrom) and node.module in ("pulumi", "pulumi.log"):
        bound = [alias.name for alias in node.names if alias.name in messages.LOG_FUNCTIONS]
        return f"binds pulumi.log's {bound} before they are wrapped" if bound else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
        return "prints"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys":
        return f"writes to sys.{node.attr}" if node.attr in ("stdout", "stderr") else None
    return None


def test_no_infra_module_sends_a_message_past_the_redacted_log() -> None:
    """The program's messages leave through pulumi.log only, so `redact_program_log` sees each one."""
    found = [
        f"{path.name}:{node.lineno}: {why}"
        for path in sorted((REPO / "infra").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if (why := _bypasses_the_log(node))
    ]
    assert found == []
