"""Driving our Modal providers the way the Pulumi engine does, against the local control plane.

`serve(cp)` starts the real dynamic-provider gRPC server (`python -u -m pulumi.dynamic`, see
tests/pulumi_engine/provider_server.py) with the modal client in that process pointed at the control
plane `cp`, and our backoff shrunk so injected throttling costs milliseconds. `desired(...)` is a
resource as a program registers it: wire-form inputs plus the serialized provider, which is
exactly what `pulumi.dynamic.Resource` puts in `__provider`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider

from providers.modal_access.retry import RETRY_BASE_SECONDS_ENV
from tests.pulumi_engine import properties as wire
from tests.pulumi_engine.engine import DesiredResource, Engine
from tests.pulumi_engine.provider_server import (
    MUTATING_METHODS,
    ProviderCallError,
    ProviderServer,
    make_urn,
    resource_type,
)

# Our backoff base in tests: 1 ms instead of 2 s, so 3 retries cost nothing noticeable.
FAST_RETRY_ENV = {RETRY_BASE_SECONDS_ENV: "0.001"}

# An import's Read, as the engine sends it: neither state nor inputs, just the id (pulumi v3.277.0, the
# pinned CLI: pkg/resource/deploy/step.go `ImportStep.Apply`, the same in v3.260.0; `pulumi import` and
# `ResourceOptions(import_=...)` alike). The Python SDK's dynamic provider server looks the serialized
# provider up in the properties, else the inputs (pulumi 3.272.0, `pulumi/dynamic/__main__.py`, `Read`),
# so an import fails with KeyError '__provider' before our code runs. tests/stack/test_import.py proves
# it through the real CLI. Our creates adopt existing objects by name, so nothing of ours needs an
# import. Strict: when a bumped SDK finds the provider without them, these tests pass and pytest says so.
IMPORT_READ_HAS_NO_PROVIDER = pytest.mark.xfail(
    strict=True, raises=ProviderCallError,
    reason="an import's Read carries neither state nor inputs (pulumi v3.277.0 engine), so pulumi 3.272.0's "
    "dynamic provider server fails with KeyError: '__provider'",
)  # fmt: skip


def import_read(server: ProviderServer, id_: str, urn: str) -> Any:
    """The Read an import sends (IMPORT_READ_HAS_NO_PROVIDER): the id, no state, no inputs."""
    return server.read(id_, urn, {})


# The mutating gRPC methods of the provider protocol (DeploymentResult.mutating_calls filters by them).
PROVIDER_MUTATIONS = MUTATING_METHODS


@contextmanager
def serve(cp: Any) -> Iterator[ProviderServer]:
    with ProviderServer(extra_env={**cp.client_env, **FAST_RETRY_ENV}) as server:
        yield server


def urn_of(resource_cls: type, name: str) -> str:
    """The URN the SDK gives a dynamic resource of this class (type "pulumi-python:dynamic/modal:X")."""
    return make_urn(name, resource_type(resource_cls))


def desired(
    resource_cls: type,
    provider: ResourceProvider,
    name: str,
    inputs: Mapping[str, Any],
    *,
    secret_inputs: tuple[str, ...] = (),
    additional_secret_outputs: tuple[str, ...] = (),
    **options: Any,
) -> DesiredResource:
    values = {k: (wire.secret(v) if k in secret_inputs else v) for k, v in inputs.items()}
    values["__provider"] = serialize_provider(provider)
    return DesiredResource(
        urn_of(resource_cls, name), values, additional_secret_outputs=list(additional_secret_outputs), **options
    )


def engine(server: ProviderServer) -> Engine:
    return Engine(server)


def mutating_rpcs(cp: Any, since: int) -> list[str]:
    """Names of the mutating Modal RPCs the control plane saw since `since`."""
    return [call.rpc for call in cp.mutating_calls(since)]
