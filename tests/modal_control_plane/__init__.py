"""A local Modal control plane for offline tests: the real modal client, speaking gRPC to us.

The `modal_control_plane` fixture (fixtures.py, re-exported by tests/conftest.py) starts one per
test in a few milliseconds, on 127.0.0.1 only, and points this process's modal client at it. It
yields a `ControlPlane` (server.py):

    def test_something(modal_control_plane):
        cp = modal_control_plane
        cp.create_secret("hf", {"HF_TOKEN": "x"})              # seed state directly, or ...
        modal.Volume.objects.create("weights")                  # ... through the real client
        cp.script_function("download_model", seconds=0.1, writes={("weights", "GLM/ok"): b"1"})
        mark = cp.mark()
        ...code under test...
        assert cp.mutating_calls(since=mark) == []

Reaching it:   cp.url, cp.client_env (MODAL_SERVER_URL, tokens, MODAL_CONFIG_PATH, HOME),
               cp.subprocess_env(base=None, environment=None) for subprocesses.
Call log:      cp.calls -> [CallRecord(rpc, mutating, args, ts, metadata)], cp.mark(),
               cp.calls_since(mark), cp.rpcs_called(since=0), cp.mutating_calls(since=0),
               cp.clear_calls().
Faults:        cp.fail_next(rpc, n=1, status=Status.UNAVAILABLE, message=...),
               cp.add_latency(rpc, seconds), cp.pending_failures(rpc).
               The client retries some statuses itself: see client_retries.py.
State:         cp.state.environments[env].{settings, secrets[name].values, volumes[name].files,
               apps[name]} (App: id, state, deployment_version, functions, classes, images,
               image_env, web_urls, web_url, history/deployment: each version's tag, commit_info
               and rollback_version); cp.state.ephemeral_apps; cp.app(name, environment).
               Helpers: create_environment, delete_environment, create_environment_concurrently,
               create_secret, secret_values, create_volume(version=1|2), put_file, remove_file,
               volume_files, read_file (environment None: the workspace's default one).
Switches:      ControlPlane(default_environment="main"); cp.environment_answers.create_existing
               ("succeed" | "already_exists" | "permission_denied"), .missing_status
               (INVALID_ARGUMENT | NOT_FOUND): see rpc_objects.EnvironmentAnswers. Volumes keep the
               version they were created with and are served by that version's file RPCs.
               cp.proxy_token_answers.duplicate_name ("allowed" | "already_exists"),
               .unknown_environment_id ("not_found" | "accepted"), .delete_missing ("silent" |
               "not_found"): see rpc_tokens.ProxyTokenAnswers (also ControlPlane(proxy_token_answers=)).
Proxy tokens:  through the client (`modal.Workspace.from_context().proxy_tokens`: rpc_tokens.py), or
               by hand: cp.create_proxy_token(name="", scoped=True, environments=()) -> IssuedToken
               (token_id, token_secret, .headers), cp.allow_proxy_token(id, environment=None),
               cp.revoke_proxy_token(id, environment=None), cp.delete_proxy_token(id),
               cp.proxy_token(id), cp.proxy_tokens_valid_in(environment=None); cp.state.proxy_tokens.
Edge and cost: web.WebFront (the URLs of web endpoints) answers 401 before any container for an
               endpoint with requires_proxy_auth and no valid Modal-Key/Modal-Secret (edge.py);
               front.requests, .served_by, .edge_records, .refused_at_edge(). Containers scale down
               after their window on the plane's clock (containers.py): cp.containers_started(app=None,
               environment=None), cp.gpu_seconds(app=None, environment=None).
Functions:     cp.script_function(tag, seconds=, result=, error=, writes=),
               cp.on_function(tag, handler(args, kwargs, volumes)), cp.function_calls.
               Tags are Modal's: "download_model", "Server.*", "Server.method".
Errors:        RPCs not implemented here answer UNIMPLEMENTED naming the RPC; a crash inside the
               control plane fails the test (cp.server_errors).
"""

from .calls import CallRecord
from .functions import FunctionCall, ScriptedOutcome, UnscriptedFunctionError, VolumeAccess
from .server import TOKEN_ID, TOKEN_SECRET, ControlPlane, IssuedToken

__all__ = [
    "TOKEN_ID",
    "TOKEN_SECRET",
    "CallRecord",
    "ControlPlane",
    "IssuedToken",
    "FunctionCall",
    "ScriptedOutcome",
    "UnscriptedFunctionError",
    "VolumeAccess",
]
