"""The parts of the modal client that are not its public API, all in one place, written against
modal 1.6.4 (the version pinned in pyproject.toml).

modal 1.6.4 has no public call for some of what the providers need:
- the gRPC status of an error: modal sets `_grpc_status` on its exceptions; the public `.status`
  warns about its deprecation;
- a secret's key names: `Secret._get_keys` (SecretInfo carries none);
- creating or overwriting a secret in one call that returns its id: `Secret._create_deployed`;
- a deployment's version and the web URLs of a deployed class's methods: the control-plane RPCs
  AppGetByDeploymentName and AppGetLayout, through the client's own retrying stub `_Client._stub`
  (run blocking with modal's `synchronizer`);
- an app's functions by tag: `App.registered_functions`, public but marked to go away in 1.7.

Everything else in providers/ goes through this module. tests/providers/test_modal_internals.py
checks that the installed client still has each of these and names the one that is gone, so a modal
upgrade starts there.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import grpclib
import modal
from modal._utils.async_utils import synchronizer
from modal.client import _Client
from modal_proto import api_pb2


def grpc_status(error: BaseException) -> grpclib.Status | None:
    """The gRPC status a modal exception came from, if any."""
    return getattr(error, "_grpc_status", None)


def secret_key_names(secret: Any) -> list[str]:
    """The keys Modal returned when the secret handle was hydrated (no extra call), sorted."""
    return sorted(secret._get_keys())


def write_secret(name: str, values: Mapping[str, str], *, environment: str, overwrite: bool) -> str:
    """Create the secret, or with `overwrite` replace the whole of an existing one, in one call; its id.

    Without `overwrite`, a secret of that name raises AlreadyExistsError. This is what
    `modal secret create [--force]` runs: one SecretGetOrCreate (CREATE_FAIL_IF_EXISTS, or
    CREATE_OVERWRITE_IF_EXISTS), and unlike the public `Secret.objects.create` it returns the id."""
    return modal.Secret._create_deployed(name, dict(values), environment_name=environment, overwrite=overwrite)


def app_functions(app: Any) -> dict[str, Any]:
    """The app's plain functions by name (not the "Cls.*" service functions of its classes).

    `App.registered_functions` warns that it goes away in 1.7, and the warning would only clutter
    `pulumi up`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        functions = dict(app.registered_functions)
    return {tag: function for tag, function in functions.items() if "." not in tag}


def deployment_info(name: str, environment: str) -> dict[str, Any] | None:
    """{app_id, deployment_version, web_urls} of the app deployed as `name`, or None when none is.

    App.lookup's info leaves out the deployment version, and nothing public lists the web URLs of a
    deployed class's methods, so this asks the control plane directly."""
    return synchronizer.create_blocking(_deployment_info)(name, environment)


async def _deployment_info(name: str, environment: str) -> dict[str, Any] | None:
    client = await _Client.from_env()
    found = await client._stub.AppGetByDeploymentName(
        api_pb2.AppGetByDeploymentNameRequest(name=name, environment_name=environment)
    )
    if not found.app_id:
        return None
    layout = await client._stub.AppGetLayout(api_pb2.AppGetLayoutRequest(app_id=found.app_id))
    return {
        "app_id": found.app_id,
        "deployment_version": int(found.lifecycle.version),
        "web_urls": _web_urls(layout.app_layout),
    }


def _web_urls(app_layout: Any) -> dict[str, str]:
    """{endpoint: url} of a deployed app, endpoints named "function" or "Class.method"."""
    tags = {object_id: tag for tag, object_id in app_layout.function_ids.items()}
    web_urls: dict[str, str] = {}
    for obj in app_layout.objects:
        if not obj.HasField("function_handle_metadata"):
            continue
        metadata = obj.function_handle_metadata
        tag = tags.get(obj.object_id, metadata.function_name)
        class_name = tag.removesuffix(".*")
        methods = {m: meta.web_url for m, meta in metadata.method_handle_metadata.items() if meta.web_url}
        for method_name, url in methods.items():
            web_urls[f"{class_name}.{method_name}"] = url
        if metadata.web_url and not methods:
            web_urls[class_name] = metadata.web_url  # a web function, or an `app.server` class
    return dict(sorted(web_urls.items()))
