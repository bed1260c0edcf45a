"""The parts of the modal client that are not its public API, all in one place, written against
modal 1.6.4 (the version pinned in pyproject.toml).

Everything else in providers/ uses modal's public API: `Secret.objects.create` and `Secret.update`,
`App.lookup(...).stop()`, `modal.experimental.get_app_lifecycle`, `App.deploy(tag=, strategy=)`.
modal 1.6.4 has no public call for these:
- the gRPC status of an error: modal sets `_grpc_status` on its exceptions; the public `.status`
  warns about its deprecation;
- a secret's key names, and removing a key: `SecretInfo` carries no keys (`Secret._get_keys` reads
  them from the metadata hydration fetched), and the public `Secret.update` only adds or overwrites
  keys (its request can also remove one; the method refuses a value that is not a string);
- the web URLs of a deployed class's methods: `modal.experimental.get_app_objects` hands back
  unhydrated handles, and a `Cls` lists its methods only privately, so this asks the control-plane
  RPC AppGetLayout through the client's own retrying stub `_Client._stub` (run blocking with
  modal's `synchronizer`), as get_app_objects itself does.

- a volume's VolumeFS version (1 or 2): only in the metadata hydration fetched
  (`Volume._get_metadata().version`; `VolumeInfo` has no version), where UNSPECIFIED means v1 as the
  client's own `_is_v1` reads it;
- what an App holds before it runs: `App.registered_functions` / `registered_classes` are deprecated
  in 1.6.4 (to be removed in 1.7.0) with no public successor; the runner needs them to start a
  function in the smallest App that holds it;
- an environment looked up before an app runs: `app.run()` creates the app (AppCreate) while it looks
  its environment up (`_init_local_app_new`), and when the look-up fails the app is left behind on
  Modal, never published nor stopped. The client caches what it looked up
  (`modal._environments._get_environment_cached`); filled first, with our retries, the look-up in
  `app.run()` makes no call that could fail.

tests/providers/test_modal_internals.py checks that the installed client still has each of these and
names the one that is gone, so a modal upgrade starts there.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import grpclib
from modal._utils.async_utils import synchronizer
from modal.client import _Client
from modal_proto import api_pb2


def grpc_status(error: BaseException) -> grpclib.Status | None:
    """The gRPC status a modal exception came from, if any."""
    return getattr(error, "_grpc_status", None)


def secret_key_names(secret: Any) -> list[str]:
    """The keys Modal returned when the secret handle was hydrated (no extra call), sorted."""
    return sorted(secret._get_keys())


def remove_secret_keys(secret: Any, keys: Iterable[str]) -> None:
    """Remove `keys` from a hydrated secret, in one SecretUpdate (an update without a value removes
    its key); what `Secret.update` would send for them if it took `None`."""
    updates = [api_pb2.SecretUpdateRequest.Update(key=key) for key in sorted(keys)]
    synchronizer.create_blocking(_update_secret)(secret.object_id, updates)


async def _update_secret(secret_id: str, updates: list[Any]) -> None:
    client = await _Client.from_env()
    await client._stub.SecretUpdate(api_pb2.SecretUpdateRequest(secret_id=secret_id, updates=updates))


def web_urls(app_id: str) -> dict[str, str]:
    """{endpoint: url} of a deployed app's web endpoints, endpoints named "function" or "Class.method"."""
    return synchronizer.create_blocking(_web_urls)(app_id)


async def _web_urls(app_id: str) -> dict[str, str]:
    client = await _Client.from_env()
    layout = await client._stub.AppGetLayout(api_pb2.AppGetLayoutRequest(app_id=app_id))
    app_layout = layout.app_layout
    tags = {object_id: tag for tag, object_id in app_layout.function_ids.items()}
    urls: dict[str, str] = {}
    for obj in app_layout.objects:
        if not obj.HasField("function_handle_metadata"):
            continue
        metadata = obj.function_handle_metadata
        tag = tags.get(obj.object_id, metadata.function_name)
        class_name = tag.removesuffix(".*")
        methods = {m: meta.web_url for m, meta in metadata.method_handle_metadata.items() if meta.web_url}
        for method_name, url in methods.items():
            urls[f"{class_name}.{method_name}"] = url
        if metadata.web_url and not methods:
            urls[class_name] = metadata.web_url  # a web function, or an `app.server` class
    return dict(sorted(urls.items()))


def app_objects(app: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """({tag: Function}, {tag: Cls}) registered on a local `modal.App` (before it runs): the deprecated
    `App.registered_functions` / `registered_classes`, with their deprecation warning silenced (the
    child's stderr is quoted to operators, and this is known, tested, and pinned)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(app.registered_functions), dict(app.registered_classes)


def volume_version(volume: Any) -> int:
    """The VolumeFS version of a hydrated volume: 2 for v2, else 1 (UNSPECIFIED is v1 to the client)."""
    return 2 if volume._get_metadata().version == api_pb2.VOLUME_FS_VERSION_V2 else 1


def resolve_environment(name: str) -> None:
    """Look the environment up into the modal client's own cache, which `app.run()` reads (see above)."""
    synchronizer.create_blocking(_resolve_environment)(name)


async def _resolve_environment(name: str) -> None:
    from modal._environments import _get_environment_cached

    await _get_environment_cached(name, await _Client.from_env())


def create_scoped_proxy_token(name: str) -> tuple[str, str]:
    """(token id, token secret) of a new proxy auth token that authenticates only in the environments
    it is then allowed in (`Workspace.proxy_tokens.allow`). Modal shows the secret this once."""
    return synchronizer.create_blocking(_create_scoped_proxy_token)(name)


async def _create_scoped_proxy_token(name: str) -> tuple[str, str]:
    client = await _Client.from_env()
    request = api_pb2.WebhookTokenCreateRequest(name=name, scoped=True)
    response = await client._stub.WebhookTokenCreate(request)
    return response.token_id, response.token_secret
