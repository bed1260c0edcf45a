"""Demonstrates client_retries.py against the real client: what it retries, and how many times."""

import modal
import modal._utils.grpc_utils as grpc_utils
import pytest
from grpclib import Status
from modal.exception import InternalError, NotFoundError, ServiceError

from .client_retries import (
    CLIENT_ATTEMPTS,
    CLIENT_MAX_RETRIES,
    CLIENT_RETRIED_STATUSES,
    CLIENT_RETRY_DELAYS_SECONDS,
    IMAGE_JOIN_ATTEMPTS,
)

NON_RETRIED_STATUSES = sorted(set(Status) - CLIENT_RETRIED_STATUSES - {Status.OK}, key=lambda s: s.value)


def _attempts(cp, rpc: str, mark: int) -> int:
    return sum(1 for call in cp.calls_since(mark) if call.rpc == rpc)


def test_documented_policy_matches_the_installed_client():
    """A tripwire for modal upgrades: the constants the facts were read from."""
    assert set(grpc_utils.RETRYABLE_GRPC_STATUS_CODES) == CLIENT_RETRIED_STATUSES
    assert grpc_utils.DEFAULT_MAX_RETRIES == CLIENT_MAX_RETRIES
    default = grpc_utils.Retry()
    delays, delay = [], default.base_delay
    for _ in range(CLIENT_MAX_RETRIES):
        delays.append(delay)
        delay = min(delay * default.delay_factor, default.max_delay)
    assert tuple(delays) == CLIENT_RETRY_DELAYS_SECONDS


@pytest.mark.parametrize("status", sorted(CLIENT_RETRIED_STATUSES, key=lambda s: s.value), ids=lambda s: s.name)
def test_transient_statuses_are_absorbed_by_the_client_up_to_its_retry_budget(modal_control_plane, status):
    cp = modal_control_plane
    cp.create_secret("hf", {"HF_TOKEN": "x"})
    cp.fail_next("SecretGetOrCreate", n=CLIENT_MAX_RETRIES, status=status)
    mark = cp.mark()

    modal.Secret.from_name("hf").hydrate()

    assert _attempts(cp, "SecretGetOrCreate", mark) == CLIENT_ATTEMPTS


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.INTERNAL], ids=lambda s: s.name)
def test_one_more_transient_failure_than_the_budget_reaches_the_caller(modal_control_plane, status):
    cp = modal_control_plane
    cp.create_secret("hf", {"HF_TOKEN": "x"})
    cp.fail_next("SecretGetOrCreate", n=CLIENT_ATTEMPTS, status=status, message="control plane says no")
    mark = cp.mark()

    expected = InternalError if status is Status.INTERNAL else ServiceError
    with pytest.raises(expected, match="control plane says no"):
        modal.Secret.from_name("hf").hydrate()
    assert _attempts(cp, "SecretGetOrCreate", mark) == CLIENT_ATTEMPTS
    assert cp.pending_failures("SecretGetOrCreate") == 0

    # The next operation is unaffected.
    modal.Secret.from_name("hf").hydrate()


@pytest.mark.parametrize("status", NON_RETRIED_STATUSES, ids=lambda s: s.name)
def test_other_statuses_are_raised_on_the_first_attempt(modal_control_plane, status):
    cp = modal_control_plane
    cp.fail_next("SecretGetOrCreate", n=1, status=status)
    mark = cp.mark()

    with pytest.raises(modal.exception.Error):
        modal.Secret.from_name("hf").hydrate()

    assert _attempts(cp, "SecretGetOrCreate", mark) == 1


def test_retries_share_one_idempotency_key_per_operation(modal_control_plane):
    """Seen from the server: the client's attempts are the same operation, numbered."""
    cp = modal_control_plane
    cp.create_secret("hf", {"A": "1"})
    cp.fail_next("SecretGetOrCreate", n=2, status=Status.UNAVAILABLE)
    mark = cp.mark()

    modal.Secret.from_name("hf").hydrate()

    attempts = [call for call in cp.calls_since(mark) if call.rpc == "SecretGetOrCreate"]
    assert [call.metadata["x-retry-attempt"] for call in attempts] == ["0", "1", "2"]
    assert len({call.metadata["x-idempotency-key"] for call in attempts}) == 1


@pytest.mark.parametrize(("version", "listing"), [(1, "VolumeListFiles"), (2, "VolumeListFiles2")])
def test_streaming_rpcs_are_not_retried(modal_control_plane, version, listing):
    cp = modal_control_plane
    cp.create_volume("weights", version=version)
    cp.put_file("weights", "a.txt", b"a")
    volume = modal.Volume.from_name("weights").hydrate()
    cp.fail_next(listing, n=1, status=Status.UNAVAILABLE)
    mark = cp.mark()

    with pytest.raises(ServiceError):
        volume.listdir("/")

    assert _attempts(cp, listing, mark) == 1


def test_image_join_is_rejoined_by_its_caller(modal_control_plane):
    """A deploy survives IMAGE_JOIN_ATTEMPTS - 1 failed image joins, not IMAGE_JOIN_ATTEMPTS."""
    cp = modal_control_plane
    app = modal.App("joins", image=modal.Image.debian_slim().pip_install("requests"), include_source=False)
    app.function()(_noop)

    cp.fail_next("ImageJoinStreaming", n=IMAGE_JOIN_ATTEMPTS - 1, status=Status.UNAVAILABLE)
    app.deploy()
    assert cp.app("joins").deployment_version == 1

    other = modal.App("joins-again", image=modal.Image.debian_slim().pip_install("httpx"), include_source=False)
    other.function()(_noop_again)
    cp.fail_next("ImageJoinStreaming", n=IMAGE_JOIN_ATTEMPTS, status=Status.UNAVAILABLE, message="builder down")
    with pytest.raises(ServiceError, match="builder down"):
        other.deploy()
    with pytest.raises(KeyError):
        cp.app("joins-again")


def test_not_found_is_never_retried_even_for_lookups(modal_control_plane):
    mark = modal_control_plane.mark()

    with pytest.raises(NotFoundError):
        modal.Volume.from_name("absent").hydrate()

    assert _attempts(modal_control_plane, "VolumeGetOrCreate", mark) == 1


def _noop():
    pass


def _noop_again():
    pass
