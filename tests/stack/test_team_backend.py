"""A team backend: the same stack flow with its state in an S3 bucket instead of a local directory.

The bucket is served by moto's S3 server (`moto[server]`, pinned in pyproject.toml), started in this
process on 127.0.0.1 at a free port. The CLI reaches it through the DIY backend's s3:// URL and its
endpoint options (gocloud.dev s3blob, AWS SDK v2):

    s3://<bucket>?endpoint=http://127.0.0.1:<port>&use_path_style=true&region=us-east-1
                 &response_checksum_validation=when_required

`use_path_style=true` (or its legacy name `s3ForcePathStyle=true`) is what keeps every request on
loopback: without it the SDK addresses `<bucket>.127.0.0.1`, a DNS lookup that leaves the machine.
`response_checksum_validation=when_required` only quiets the SDK's warning about responses without a
checksum. Credentials are dummies from the environment; the shared AWS config files, profiles and the
EC2 metadata service are switched off, and a dead proxy catches any request that is not for loopback.
"""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.pulumi_engine import properties as props

from .cli import resource_name
from .conftest import rig
from .harness import PROJECT, TEST_API_KEY, TEST_HF_TOKEN

BUCKET = "glm-modal-state"
REGION = "us-east-1"
STACK = "staging"
STACK_KEY = f".pulumi/stacks/{PROJECT}/{STACK}.json"
LOCKS = ".pulumi/locks/"


def _dead_port() -> int:
    """A loopback port nothing listens on: the proxy that any non-loopback request would hit."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Dummy credentials, nothing read from ~/.aws, no metadata service, and nothing off loopback."""
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    proxy = f"http://127.0.0.1:{_dead_port()}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto accepts any key
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "NO_PROXY": "127.0.0.1,localhost",
        # modal's blob transfers (a job's run record in its volume) use a proxy whenever one is set,
        # ignoring NO_PROXY (modal/_utils/http_utils.py); its control plane and blob server are loopback.
        "MODAL_DISABLE_API_PROXY": "1",
    }.items():
        monkeypatch.setenv(key, value)
        if key.endswith("PROXY"):
            monkeypatch.setenv(key.lower(), value)


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 at a free port; yields its endpoint."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def backend_url(endpoint: str) -> str:
    return (f"s3://{BUCKET}?endpoint={endpoint}&use_path_style=true&region={REGION}"
            "&response_checksum_validation=when_required")  # fmt: skip


def keys(s3, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def read(s3, key: str) -> str:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return (gzip.decompress(body) if key.endswith(".gz") else body).decode()


@pytest.mark.usefixtures("aws_env")
def test_the_stack_flow_keeps_its_state_and_its_lock_in_an_s3_bucket() -> None:
    with s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        url = backend_url(endpoint)
        with rig(backend_url=url) as running:
            # `pulumi login` with the endpoint options, as a team member would run it once.
            login = running.world.run("login", url)
            whoami = running.world.run("whoami", "-v")
            credentials = json.loads((running.world.root / "home" / "credentials.json").read_text())

            harness = running.harness(STACK)
            locks_during_up: list[list[str]] = []
            first = harness.up(on_output=lambda _line: locks_during_up.append(keys(s3, LOCKS)))
            locks_after_first = keys(s3, LOCKS)
            second = harness.up(expect_no_changes=True)
            stack_ls = running.world.run("stack", "ls")
            objects = {key: read(s3, key) for key in keys(s3)}

        assert login.ok, login.text
        assert "Logged in to" in login.text and url in login.text
        assert whoami.ok and f"Backend URL: {url}" in whoami.stdout, whoami.text
        assert credentials["current"] == url
        assert stack_ls.ok and STACK in stack_ls.stdout, stack_ls.text

        # The flow: the first up applies, the second finds nothing to do and changes nothing on Modal.
        assert first.ok, first.text
        assert set(first.ops().values()) == {"create"}
        assert (first.function_runs, first.deploys) == (3, 1)
        assert second.ok, second.text
        assert set(second.ops().values()) == {"same"}
        assert second.mutating_modal_calls == []
        assert second.outputs == first.outputs

        # The state lives in the bucket: the stack's checkpoint holds every resource of the up.
        assert STACK_KEY in objects, sorted(objects)
        assert any(key.startswith(f".pulumi/history/{PROJECT}/{STACK}/") for key in objects), sorted(objects)
        checkpoint = json.loads(objects[STACK_KEY])["checkpoint"]
        in_state = {resource_name(r["urn"]) for r in checkpoint["latest"]["resources"]}
        assert set(first.ops()) <= in_state

        # Its secrets are stored encrypted: secret markers, and no canary in any object of the bucket.
        assert props.SIG_KEY in objects[STACK_KEY]
        for key, text in objects.items():
            assert TEST_API_KEY not in text and TEST_HF_TOKEN not in text, f"secret in plaintext in s3://{BUCKET}/{key}"

        # Locking goes through the bucket too: the up held a lock object there, released when it ended;
        # with nothing running there is none.
        held = {key for seen in locks_during_up for key in seen}
        assert held and all(key.startswith(f"{LOCKS}organization/{PROJECT}/{STACK}/") for key in held), held
        assert locks_after_first == []
        assert not [key for key in objects if key.startswith(LOCKS)]
