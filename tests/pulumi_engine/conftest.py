"""Fixtures for the harness's own tests: a fresh provider server per test and file resources."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from . import properties as props
from .engine import DesiredResource, Engine, State
from .provider_server import ProviderServer, make_urn
from .sample_provider import FileProvider, UnknownDiffFileProvider

FILE_TYPE = "pulumi-python:dynamic/sample:File"
# What a program would send as `__provider`: the pickled provider, secret (the SDK default).
FILE_PROVIDER = props.secret(serialize_provider(FileProvider()))
UNKNOWN_DIFF_PROVIDER = props.secret(serialize_provider(UnknownDiffFileProvider()))
# A value that must never show up in plaintext where the engine would not show a secret.
CANARY = "canary-7d1f0c2e"


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as running:
        yield running


@pytest.fixture
def engine(server: ProviderServer) -> Engine:
    return Engine(server, State())


@pytest.fixture
def files(tmp_path: Path) -> Path:
    directory = tmp_path / "files"
    directory.mkdir()
    return directory


def file_resource(name: str, directory: Path, content: Any = "hello", *, filename: str | None = None,
                  token: Any = None, provider: dict = FILE_PROVIDER, extra: dict | None = None,
                  **options: Any) -> DesiredResource:
    inputs = {"__provider": provider, "directory": str(directory), "filename": filename or f"{name}.txt",
              "content": content, **(extra or {})}
    if token is not None:
        inputs["token"] = token
    return DesiredResource(urn=make_urn(name, FILE_TYPE), inputs=inputs, **options)


def urn_of(name: str) -> str:
    return make_urn(name, FILE_TYPE)
