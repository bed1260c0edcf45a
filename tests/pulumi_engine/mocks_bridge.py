"""Runs a real Pulumi program under `pulumi.runtime.set_mocks` with its dynamic resources sent
through `Engine`, the way the engine serves a program's RegisterResource calls.

Under mocks the SDK sends each registration to a `MockMonitor`. In pulumi 3.272.0
`MockMonitor.RegisterResource` (pulumi/runtime/mocks.py) deserializes `request.object` with
`rpc.deserialize_properties` and hands only `MockResourceArgs(typ, name, inputs, provider,
resource_id, custom, transforms)` to `Mocks.new_resource`: dependencies, protect,
additionalSecretOutputs, deleteBeforeReplace and custom timeouts are NOT in MockResourceArgs, and
`inputs` is the SDK's view (a secret nested in an object marks the whole object secret; None
dropped). A dynamic resource's inputs there carry `__provider` (secret: `serialize_as_secret_always`
defaults to True) and every secret input as the SDK secret marker.

So `EngineMonitor` subclasses `MockMonitor` and reads the whole RegisterResourceRequest instead:
inputs decoded losslessly from the wire, options from their fields. Dynamic resources (type
"pulumi-python:dynamic...") go to a `Deployment`; the rest fall back to the given `Mocks`.
`desired_from_mock_args` covers callers that only have MockResourceArgs.
"""

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from . import properties as props
from .engine import DeploymentError, DeploymentResult, DesiredResource, Engine, parse_timeout
from .provider_server import urn_name_type

# Every Python dynamic resource's type token starts with this (pulumi/dynamic/dynamic.py).
DYNAMIC_TYPE_PREFIX = "pulumi-python:dynamic"
STACK_TYPE = "pulumi:pulumi:Stack"


def is_dynamic(type_: str) -> bool:
    return type_.startswith(DYNAMIC_TYPE_PREFIX)


def engine_urn(parent: str, type_: str, name: str) -> str:
    """The URN the engine gives a resource: unlike MockMonitor.make_urn, the root stack is not
    part of its children's type chain (`generateURN` in pkg/resource/deploy/step_generator.go)."""
    qualified = type_
    if parent:
        parent_type = parent.split("::")[2]
        if parent_type != STACK_TYPE:
            qualified = f"{parent_type}${type_}"
    return f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::{qualified}::{name}"


def desired_from_register_request(request: resource_pb2.RegisterResourceRequest, urn: str) -> DesiredResource:
    unsupported = [name for name, present in (
        ("ignoreChanges", bool(request.ignoreChanges)),
        ("replaceOnChanges", bool(request.replaceOnChanges)),
        ("aliases", bool(request.aliases) or bool(request.aliasSpecs) or bool(request.aliasURNs)),
        ("deletedWith", bool(request.deletedWith)),
        ("importId", bool(request.importId)),
    ) if present]
    if unsupported:
        # Refuse rather than silently deploy differently from the real engine.
        raise NotImplementedError(f"{urn}: the test engine does not model {', '.join(unsupported)}")
    timeouts = {}
    if request.HasField("customTimeouts"):
        for key in ("create", "update", "delete"):
            text = getattr(request.customTimeouts, key)
            if text:
                timeouts[key] = parse_timeout(text)
    return DesiredResource(
        urn=urn,
        inputs=props.from_struct(request.object),
        dependencies=list(request.dependencies),
        protect=request.protect if request.HasField("protect") else False,
        additional_secret_outputs=list(request.additionalSecretOutputs),
        delete_before_replace=request.deleteBeforeReplace if request.deleteBeforeReplaceDefined else None,
        retain_on_delete=request.retainOnDelete if request.HasField("retainOnDelete") else False,
        custom_timeouts=timeouts,
    )


def desired_from_mock_args(args: pulumi_mocks.MockResourceArgs, *, urn: str | None = None,
                           **options: Any) -> DesiredResource:
    """A DesiredResource from what `Mocks.new_resource` receives. The args carry neither the
    parent (the URN assumes the root stack) nor any option: pass those as keyword arguments."""
    if urn is None:
        urn = engine_urn("", args.typ, args.name)
    return DesiredResource(urn=urn, inputs=dict(args.inputs), **options)


class EchoMocks(pulumi.runtime.Mocks):
    """For non-dynamic resources: the ID is the name and the outputs echo the inputs."""

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        return args.name, dict(args.inputs)

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list]:
        return {}, []


class EngineMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, engine: Engine, deployment_operation: str, fallback: pulumi.runtime.Mocks | None = None):
        super().__init__(fallback or EchoMocks())
        self.deployment = engine.begin(deployment_operation)
        self.registrations: list[DesiredResource] = []
        self.stack_outputs: dict[str, Any] = {}
        # The SDK registers from executor threads; the engine handles one registration at a time.
        self._lock = threading.Lock()

    def RegisterResource(self, request: resource_pb2.RegisterResourceRequest) -> Any:
        if not is_dynamic(request.type):
            return super().RegisterResource(request)
        urn = engine_urn(request.parent, request.type, request.name)
        desired = desired_from_register_request(request, urn)
        with self._lock:
            # Dependencies on resources the engine does not manage (components, mocked ones) are
            # the program's business, not the engine's ordering.
            desired.dependencies = [d for d in desired.dependencies if is_dynamic(urn_name_type(d)[1])]
            self.registrations.append(desired)
            result = self.deployment.register(desired)
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, result.id, result.outputs)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=result.id, object=props.to_struct(result.outputs))

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn.split("::")[2] == STACK_TYPE:
            self.stack_outputs = props.from_struct(request.outputs)
        return super().RegisterResourceOutputs(request)


@dataclass
class ProgramRun:
    result: DeploymentResult
    stack_outputs: dict[str, Any]
    registrations: list[DesiredResource]
    error: BaseException | None = field(default=None)


def run_program(engine: Engine, operation: str, program: Callable[[], Any], *, project: str = "project",
                stack: str = "stack", fallback: pulumi.runtime.Mocks | None = None) -> ProgramRun:
    """Runs `program` (e.g. `lambda: runpy.run_path("infra", run_name="__main__")`) as `pulumi
    preview` / `pulumi up` would, then lets the engine run the deletes the program implies.

    A program error (an exception, or a registration the engine refused) is returned in `error`
    and recorded in `result.errors`; as in the real engine nothing is deleted after it.
    """
    monitor = EngineMonitor(engine, operation, fallback)
    _quiet_refused_registrations(asyncio.get_event_loop())
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=operation == "preview",
                             monitor=monitor)
    # set_mocks registered a root stack of its own; replace it with the one run_in_stack makes, as
    # the language host does, so that `pulumi.export`s are registered when the program finishes.
    pulumi_settings.ROOT.set(None)
    pulumi_settings.SETTINGS.rpc_manager.clear()
    pulumi_settings.SETTINGS.outputs.clear()
    error: BaseException | None = None
    try:
        _sync_await(run_in_stack(program))
    except Exception as exc:  # noqa: BLE001 - reported to the caller like the CLI reports it
        error = exc
    finally:
        # A failed registration leaves output futures behind; never let them leak into the next run.
        pulumi_settings.SETTINGS.rpc_manager.clear()
        pulumi_settings.SETTINGS.outputs.clear()
    deployment = monitor.deployment
    if error is not None and not isinstance(error, DeploymentError):
        deployment.abort(f"program failed: {type(error).__name__}: {error}")
    elif error is not None:
        deployment.abort(str(error))
    result = deployment.finish()
    return ProgramRun(result=result, stack_outputs=monitor.stack_outputs, registrations=monitor.registrations,
                      error=error)


def _quiet_refused_registrations(loop: asyncio.AbstractEventLoop) -> None:
    """A refused registration fails every output future of the resource; the SDK never awaits them
    all, so asyncio would log "Future exception was never retrieved" for each at garbage
    collection. The failure is already in the result; drop that noise and nothing else."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), DeploymentError):
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
