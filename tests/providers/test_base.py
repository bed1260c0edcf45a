"""providers/base.py and retry.py: input checks, precise diffs, the retry policy against the real modal
client and the local control plane, redaction, the serialized providers, and the resource classes in a program."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from typing import Any

import dill
import grpclib
import modal
import pydantic
import pytest
from grpclib import Status
from modal._grpc_client import grpc_error_to_modal_exception
from pulumi.dynamic import Config, ConfigureRequest
from pulumi.dynamic.dynamic import serialize_provider

from providers import ModalVolume
from providers.base import UNKNOWN, EnvironmentName, InputModel, ModalProvider, ObjectName, check_inputs, precise_diff
from providers.environment import EnvironmentProvider
from providers.modal_access.retry import (
    MAX_ATTEMPTS,
    RETRY_BASE_SECONDS_ENV,
    is_transient,
    modal_call,
    retry_settings,
)
from providers.secret import SecretProvider
from providers.shared import ProviderError, redact, register_secrets
from providers.volume import VolumeProvider
from tests.modal_control_plane import TOKEN_ID, TOKEN_SECRET
from tests.providers.grpc_harness import FAST_RETRY_ENV, desired
from tests.pulumi_engine import properties as wire
from tests.pulumi_engine.engine import Engine
from tests.pulumi_engine.provider_server import ProviderServer

PROVIDERS = (EnvironmentProvider, SecretProvider, VolumeProvider)
# The goal is < 16 KiB per resource; pickled by reference, ours are ~100 bytes.
SERIALIZED_LIMIT = 512


class Sample(InputModel):
    secret_fields = frozenset({"token"})

    name: ObjectName
    environment: EnvironmentName
    replicas: int = 1
    token: dict[str, str] = {}


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RETRY_BASE_SECONDS_ENV, "0.001")


# ---- check -------------------------------------------------------------------------------------


def test_check_reports_one_failure_per_property_and_never_raises():
    result = check_inputs(
        Sample, {"name": "bad name", "environment": "en-1", "replicas": "many", "extra": 1, "__provider": "p"}
    )
    failures = {f.property: f.reason for f in result.failures}
    assert set(failures) == {"name", "environment", "replicas", "extra"}
    assert failures["replicas"] == "Input should be a valid integer, unable to parse string as an integer"
    assert failures["extra"] == "Extra inputs are not permitted"


def test_check_normalizes_and_leaves_unknowns_for_later():
    ok = check_inputs(Sample, {"name": "a", "environment": "main", "replicas": 2.0, "__provider": "p"})
    assert ok.failures == []
    assert ok.inputs == {"name": "a", "environment": "main", "replicas": 2, "token": {}}

    preview = check_inputs(Sample, {"name": "a", "environment": UNKNOWN})
    assert preview.failures == [] and preview.inputs["environment"] == UNKNOWN
    nested = check_inputs(Sample, {"name": "a", "environment": "main", "token": {"K": UNKNOWN}})
    assert nested.failures == [] and nested.inputs["token"] == {"K": UNKNOWN}
    assert check_inputs(Sample, {"name": UNKNOWN}).failures[0].property == "environment"  # still required


def test_check_never_names_a_whole_secret_field_and_redacts_its_values():
    class Picky(InputModel):
        secret_fields = frozenset({"token"})
        token: str

        @pydantic.field_validator("token")
        @classmethod
        def _reject(cls, value: str) -> str:
            raise ValueError(f"{value} is too short")

    failures = check_inputs(Picky, {"token": "hunter2-canary"}).failures
    assert [(f.property, f.reason) for f in failures] == [("token (secret)", "Value error, [secret] is too short")]


def test_check_turns_an_unexpected_validator_error_into_a_failure():
    class Broken(InputModel):
        value: str

        @pydantic.field_validator("value")
        @classmethod
        def _boom(cls, value: str) -> str:
            raise ZeroDivisionError("bug in a validator")

    # pydantic only wraps ValueError/AssertionError; anything else must still not escape check.
    result = check_inputs(Broken, {"value": "x"})
    assert [(f.property, f.reason) for f in result.failures] == [("", "ZeroDivisionError: bug in a validator")]


# ---- diff --------------------------------------------------------------------------------------


def test_precise_diff_names_exactly_what_changed():
    olds = {"name": "a", "environment": "main", "replicas": 1, "volume_id": "vo-1", "__provider": "old"}
    same = precise_diff(olds, {"name": "a", "environment": "main", "replicas": 1.0, "__provider": "new"},
                        ("name", "environment", "replicas"), replace_on=("name",), stables=("volume_id",))
    assert (same.changes, same.changed, same.replaces) == (False, [], [])  # __provider is not ours to diff
    assert same.stables == ["volume_id"]

    both = precise_diff(olds, {"name": "b", "environment": "main", "replicas": 3}, ("name", "environment", "replicas"),
                        replace_on=("name", "environment"))
    assert (both.changes, both.changed, both.replaces) == (True, ["name", "replicas"], ["name"])
    assert both.delete_before_replace is False

    in_place = precise_diff(olds, {"name": "a", "environment": "main", "replicas": 2}, ("name", "replicas"),
                            replace_on=("name",))
    assert (in_place.changed, in_place.replaces, in_place.delete_before_replace) == (["replicas"], [], None)


def test_precise_diff_counts_unknowns_as_changes_and_uses_comparers():
    olds = {"name": "a", "digest": "d1"}
    unknown = precise_diff(olds, {"name": UNKNOWN}, ("name",), replace_on=("name",))
    assert (unknown.changes, unknown.replaces) == (True, ["name"])
    comparer = {"values": lambda old, new: old["digest"] == f"d{len(new)}"}
    same = precise_diff(olds, {"name": "a", "values": {"K": "v"}}, ("name", "values"), compare=comparer)
    assert same.changes is False
    changed = precise_diff(olds, {"name": "a", "values": {"K": "v", "L": "w"}}, ("name", "values"), compare=comparer)
    assert changed.changed == ["values"]


# ---- retry policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "client_retried", "ours"),
    [
        (Status.RESOURCE_EXHAUSTED, True, True),  # throttling: the client never retries it
        (Status.ABORTED, True, True),  # a concurrent change won: try again
        (Status.FAILED_PRECONDITION, True, False),  # same exception class as ABORTED, but permanent
        (Status.UNAVAILABLE, True, False),  # already retried 3 times by the client
        (Status.INTERNAL, True, False),
        (Status.DEADLINE_EXCEEDED, True, False),
        (Status.UNAVAILABLE, False, True),  # ...but not on streaming calls, which it never retries
        (Status.INTERNAL, False, True),
        (Status.PERMISSION_DENIED, False, False),
        (Status.NOT_FOUND, False, False),
        (Status.INVALID_ARGUMENT, True, False),
        (Status.UNAUTHENTICATED, True, False),
    ],
)
def test_which_errors_we_retry(status, client_retried, ours):
    error = grpc_error_to_modal_exception(grpclib.GRPCError(status, "x"))
    assert is_transient(error, client_retried=client_retried) is ours


def test_retry_settings_come_from_the_environment(monkeypatch):
    monkeypatch.delenv(RETRY_BASE_SECONDS_ENV, raising=False)
    assert retry_settings() == (4, 2.0, 30.0)
    monkeypatch.setenv(RETRY_BASE_SECONDS_ENV, "0.5")
    assert retry_settings()[1] == 0.5
    monkeypatch.setenv(RETRY_BASE_SECONDS_ENV, "not a number")
    assert retry_settings()[1] == 2.0


def lookup_main() -> Any:
    return modal.Environment.from_name("main").hydrate()


def test_throttling_is_retried_by_us_and_announced(modal_control_plane, fast_retries, capsys):
    cp = modal_control_plane
    cp.fail_next("EnvironmentGetOrCreate", 3, Status.RESOURCE_EXHAUSTED)
    assert modal_call(lookup_main, what="look up main").object_id == cp.state.environments["main"].id
    assert cp.rpcs_called() == ["EnvironmentGetOrCreate"] * 4
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"[modal] look up main: transient ResourceExhaustedError, retry {n}/3 in 0.0s" for n in (1, 2, 3)]


def test_what_the_client_retries_is_not_retried_again(modal_control_plane, fast_retries, capsys):
    """Two UNAVAILABLE are absorbed by the modal client (we print nothing); four exhaust its four
    attempts and we give up at once instead of multiplying them."""
    cp = modal_control_plane
    cp.fail_next("EnvironmentGetOrCreate", 2, Status.UNAVAILABLE)
    modal_call(lookup_main, what="look up main")
    assert cp.rpcs_called() == ["EnvironmentGetOrCreate"] * 3
    assert capsys.readouterr().out == ""

    cp.clear_calls()
    cp.fail_next("EnvironmentGetOrCreate", 4, Status.UNAVAILABLE, "load balancer says no")
    with pytest.raises(ProviderError) as failure:
        modal_call(lookup_main, what="look up main")
    assert cp.rpcs_called() == ["EnvironmentGetOrCreate"] * 4
    assert str(failure.value).startswith("look up main failed: ServiceError: load balancer says no. Modal stayed")


def test_our_retries_are_bounded(modal_control_plane, fast_retries):
    cp = modal_control_plane
    cp.fail_next("EnvironmentGetOrCreate", MAX_ATTEMPTS, Status.RESOURCE_EXHAUSTED, "rate limited")
    with pytest.raises(ProviderError) as failure:
        modal_call(lookup_main, what="look up main")
    assert cp.rpcs_called() == ["EnvironmentGetOrCreate"] * MAX_ATTEMPTS
    assert "failed after 4 attempts: ResourceExhaustedError: rate limited" in str(failure.value)
    assert "wait a minute and run `pulumi up` again" in str(failure.value)


def test_a_permanent_error_is_not_retried_and_says_what_to_do(modal_control_plane, fast_retries):
    cp = modal_control_plane
    cp.fail_next("EnvironmentGetOrCreate", 1, Status.PERMISSION_DENIED, "no access to main")
    with pytest.raises(ProviderError) as failure:
        modal_call(lookup_main, what="look up main")
    assert cp.rpcs_called() == ["EnvironmentGetOrCreate"]
    error = failure.value
    assert str(error) == (
        "look up main failed: PermissionDeniedError: no access to main. "
        "The Modal token lacks permission for this: use a token of the right workspace/environment role."
    )
    assert error.__suppress_context__ and error.__cause__ is None  # the engine prints one clean line


def test_streaming_calls_get_transport_retries_from_us(modal_control_plane, fast_retries):
    cp = modal_control_plane
    cp.put_file("data", "a.txt", b"a")
    volume = modal.Volume.from_name("data").hydrate()
    cp.clear_calls()
    cp.fail_next("VolumeListFiles", 2, Status.UNAVAILABLE)
    entries = modal_call(volume.listdir, "/", what="list data", client_retries=False)
    assert [e.path for e in entries] == ["a.txt"]
    assert cp.rpcs_called() == ["VolumeListFiles"] * 3


def test_errors_are_redacted_of_every_registered_secret(modal_control_plane, fast_retries):
    cp = modal_control_plane
    register_secrets(["s3cr3t-value-1", "s3cr3t"])
    assert redact("a s3cr3t-value-1 and s3cr3t") == "a [secret] and [secret]"  # longest first
    cp.fail_next("EnvironmentGetOrCreate", 1, Status.INVALID_ARGUMENT, "s3cr3t-value-1 is malformed")
    with pytest.raises(ProviderError, match=r"InvalidError: \[secret\] is malformed"):
        modal_call(lookup_main, what="look up main")


# ---- the provider classes ----------------------------------------------------------------------


@pytest.mark.parametrize("provider_cls", PROVIDERS)
def test_providers_are_pickled_by_reference_and_tiny(provider_cls, tmp_path):
    serialized = serialize_provider(provider_cls())
    assert len(serialized) < SERIALIZED_LIMIT
    # The engine runs the provider process from the program directory with no PYTHONPATH: the
    # classes must come from the installed package, not from the working directory.
    script = (
        "import base64, sys, dill; "
        f"p = dill.loads(base64.b64decode({serialized!r})); "
        "print(type(p).__module__, type(p).__name__)"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert loaded.stdout.split() == [provider_cls.__module__, provider_cls.__name__]
    assert dill.loads(base64.b64decode(serialized)).__class__ is provider_cls


def test_configure_takes_credentials_from_stack_config_without_overriding_the_environment(monkeypatch):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    config = Config({"modal:tokenId": "ak-from-config", "modal:tokenSecret": "as-from-config-123"}, "project")
    ModalProvider().configure(ConfigureRequest(config))

    assert (os.environ["MODAL_TOKEN_ID"], os.environ["MODAL_TOKEN_SECRET"]) == ("ak-from-config", "as-from-config-123")
    assert redact("token as-from-config-123") == "token [secret]"

    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-env")
    ModalProvider().configure(ConfigureRequest(config))
    assert os.environ["MODAL_TOKEN_ID"] == "ak-env"


def test_credentials_can_come_from_stack_secrets(modal_control_plane):
    """No MODAL_TOKEN_* in the provider's environment: Configure's stack config supplies them."""
    cp = modal_control_plane
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_TOKEN_")}
    config = {"modal:tokenId": TOKEN_ID, "modal:tokenSecret": wire.secret(TOKEN_SECRET)}
    with ProviderServer(base_env=base_env, extra_env={**without_tokens(cp.client_env), **FAST_RETRY_ENV},
                        config=config) as server:
        result = Engine(server).up([desired(ModalVolume, VolumeProvider(), "v", {"name": "v", "environment": "main"})])
        assert result.ok, result.errors
    assert TOKEN_SECRET not in "\n".join(server.stdout_lines + server.stderr_lines)  # all read after stop()
    assert "v" in cp.state.environments["main"].volumes


def without_tokens(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("MODAL_TOKEN_")}


def test_validated_inputs_fail_with_a_provider_error():
    with pytest.raises(ProviderError, match="invalid inputs: name: Value error"):
        VolumeProvider().validated({"name": "no spaces", "environment": "main"})
