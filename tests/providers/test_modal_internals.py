"""The installed modal client still has every private part providers/modal_internals.py uses.

That module is written against modal 1.6.4. After a modal upgrade, a failure here names what is gone
or changed: rework that use in providers/modal_internals.py (and its docstring's version) first. The
calls themselves are exercised against the local control plane by the secret, app and base tests."""

from __future__ import annotations

import importlib
from unittest import mock

import grpclib
import modal
import pytest
from modal._grpc_client import grpc_error_to_modal_exception
from modal_proto import api_pb2, modal_api_grpc

from providers.modal_internals import grpc_status

USED_BY = "providers/modal_internals.py (written for modal 1.6.4)"

# (module, dotted attribute path) of each private or pinned attribute that module calls.
ATTRIBUTES = [
    ("modal", "Secret._get_keys"),
    ("modal.client", "_Client.from_env"),
    ("modal.client", "_Client._stub"),
    ("modal._utils.async_utils", "synchronizer.create_blocking"),
    ("modal", "App.registered_functions"),
    ("modal", "App.registered_classes"),
    ("modal", "Volume._get_metadata"),
    ("modal._environments", "_get_environment_cached"),
    ("modal._environments", "ENVIRONMENT_CACHE"),
]

# The control-plane RPCs it calls through `_Client._stub`.
RPCS = ["SecretUpdate", "AppGetLayout", "WebhookTokenCreate"]

# message -> the fields it sets (requests) or reads (responses).
FIELDS = {
    "SecretUpdateRequest": {"secret_id", "updates"},
    "SecretUpdateRequest.Update": {"key", "value"},
    "AppGetLayoutRequest": {"app_id"},
    "AppGetLayoutResponse": {"app_layout"},
    "AppLayout": {"objects", "function_ids"},
    "Object": {"object_id", "function_handle_metadata"},
    "FunctionHandleMetadata": {"function_name", "web_url", "method_handle_metadata"},
    "VolumeMetadata": {"version"},
    "WebhookTokenCreateRequest": {"name", "scoped"},
    "TokenCreateResponse": {"token_id", "token_secret"},
}


@pytest.mark.parametrize(("module_name", "path"), ATTRIBUTES)
def test_the_private_attributes_exist(module_name: str, path: str):
    value = importlib.import_module(module_name)
    for part in path.split("."):
        assert hasattr(value, part), f"modal {modal.__version__} has no {module_name}.{path}, which {USED_BY} uses"
        value = getattr(value, part)


def test_an_update_without_a_value_still_means_remove_the_key():
    # `remove_secret_keys` relies on `value` being optional (proto3 `optional`): unset, the key goes.
    update = api_pb2.SecretUpdateRequest.Update(key="K")
    assert not update.HasField("value"), (
        f"modal {modal.__version__}: SecretUpdateRequest.Update.value is no longer optional ({USED_BY})"
    )


@pytest.mark.parametrize("rpc", RPCS)
def test_the_rpcs_exist_on_the_service_and_the_client_stub(rpc: str):
    service = api_pb2.DESCRIPTOR.services_by_name["ModalClient"]
    assert rpc in service.methods_by_name, f"modal {modal.__version__}: service ModalClient has no {rpc} ({USED_BY})"
    stub = modal_api_grpc.ModalClientModal(mock.Mock(), mock.Mock(), "unused")
    assert hasattr(stub, rpc), f"modal {modal.__version__}: `_Client._stub` has no {rpc} ({USED_BY})"


@pytest.mark.parametrize(("message", "fields"), sorted(FIELDS.items()))
def test_the_messages_have_the_fields_we_use(message: str, fields: set[str]):
    outer, _, nested = message.partition(".")
    descriptor = api_pb2.DESCRIPTOR.message_types_by_name.get(outer)
    if descriptor is not None and nested:
        descriptor = descriptor.nested_types_by_name.get(nested)
    assert descriptor is not None, f"modal {modal.__version__}: modal_proto has no message {message} ({USED_BY})"
    missing = fields - set(descriptor.fields_by_name)
    assert not missing, f"modal {modal.__version__}: {message} lost {sorted(missing)} ({USED_BY})"


def test_modal_errors_still_carry_their_grpc_status():
    error = grpc_error_to_modal_exception(grpclib.GRPCError(grpclib.Status.ABORTED, "x"))
    assert grpc_status(error) == grpclib.Status.ABORTED, (
        f"modal {modal.__version__} no longer sets `_grpc_status` on its exceptions ({USED_BY}): "
        "ABORTED would no longer be retried"
    )


def test_an_apps_local_state_still_holds_its_functions_and_classes():
    app = modal.App("internals-probe")

    @app.function(serialized=True)
    def probe() -> None: ...

    @app.cls(serialized=True)
    class Probe:
        @modal.method()
        def go(self) -> None: ...

    from providers.modal_internals import app_objects

    functions, classes = app_objects(app)
    assert probe in functions.values() and "Probe.*" in functions and set(classes) == {"Probe"}, (
        f"modal {modal.__version__}: App.registered_functions/classes no longer list what it holds ({USED_BY})"
    )


def test_a_volume_still_tells_its_version_from_its_metadata(modal_control_plane):
    from providers.modal_internals import volume_version

    modal.Volume.objects.create("plain")  # no version asked for: v1 to the client
    modal.Volume.objects.create("two", version=2)
    versions = {name: volume_version(modal.Volume.from_name(name).hydrate()) for name in ("plain", "two")}
    assert versions == {"plain": 1, "two": 2}, (
        f"modal {modal.__version__}: `Volume._get_metadata().version` no longer tells the version ({USED_BY})"
    )


def test_the_public_proxy_token_create_still_makes_workspace_wide_tokens():
    # The reason `create_scoped_proxy_token` exists: when the public call learns to ask for a scoped
    # token, use it instead and drop the private one.
    import inspect

    from modal._workspace import _WorkspaceProxyTokenManager

    parameters = set(inspect.signature(_WorkspaceProxyTokenManager.create).parameters)
    assert parameters == {"self", "name"}, (
        f"modal {modal.__version__}: proxy_tokens.create now takes {sorted(parameters - {'self'})}: if it can "
        f"make a scoped token, use it instead of the private call in {USED_BY}"
    )
