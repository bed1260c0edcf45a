"""RPCs for apps: deploys and ephemeral runs, images, mounts, functions, classes.

A deploy (`modal deploy`, `App.deploy()`, `modal.runner.deploy_app`) in modal 1.6.4 runs (the
middle part concurrently, so its calls interleave differently from run to run):
AppGetByDeploymentName -> AppCreate (or AppGetLayout when the name is already deployed) ->
EnvironmentGetOrCreate -> FunctionPrecreate per function -> the objects functions depend on
(SecretGetOrCreate, VolumeGetOrCreate, MountGetOrCreate + MountBatchedCheckExistence + MountPutFile,
ImageGetOrCreate + ImageJoinStreaming per layer) -> FunctionCreate per function -> ClassCreate per
class -> AppPublish. An ephemeral run (`with app.run():`) is the same without the name lookup and
without publishing, plus AppHeartbeat while it runs and AppClientDisconnect at the end.

Images are never built: each requested layer is recorded (`state.images`, and per app in
`App.images`) and reported as built successfully.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from modal_proto import api_pb2

from .rpc_objects import ObjectRpcs
from .state import IMAGE_BUILDER_VERSION, WORKSPACE, App, Deployment, FunctionRecord, ImageLayer, Mount

if TYPE_CHECKING:
    from .containers import Containers
    from .functions import FunctionRunner

# What the fake image builder reports about every image: the Python of the test process (the
# client compares it with its own when it serializes functions) and our builder version.
PYTHON_VERSION_INFO_FORMAT = "Python {major}.{minor}.{micro}"

# Only pickle is offered for function inputs and outputs, so the runner always knows how to
# decode arguments and encode results (the client would otherwise prefer CBOR where offered).
SUPPORTED_DATA_FORMATS = [api_pb2.DATA_FORMAT_PICKLE]

APP_STATES = {
    api_pb2.APP_STATE_EPHEMERAL: "ephemeral",
    api_pb2.APP_STATE_DETACHED: "ephemeral",
    api_pb2.APP_STATE_DEPLOYED: "deployed",
    api_pb2.APP_STATE_STOPPED: "stopped",
}
APP_STATE_PROTO = {
    "initializing": api_pb2.APP_STATE_INITIALIZING,
    "ephemeral": api_pb2.APP_STATE_EPHEMERAL,
    "deployed": api_pb2.APP_STATE_DEPLOYED,
    "stopped": api_pb2.APP_STATE_STOPPED,
}


# `publish_noop`: when a deploy is answered as a no-op (see AppPublish).
NOOP_WHEN_UNCHANGED = "when-unchanged"
NOOP_NEVER = "never"
PUBLISH_NOOP_MODES = (NOOP_WHEN_UNCHANGED, NOOP_NEVER)


def _definition_id(definition: api_pb2.Function) -> str:
    """Like Modal's "de-" ids, one per distinct function definition: the same definition (image, mounts,
    secrets, volumes, resources, ...) has the same id however often it is deployed. The client loads
    mounts concurrently, so their order varies from deploy to deploy: a set, not a list, to compare."""
    canonical = api_pb2.Function()
    canonical.CopyFrom(definition)
    mount_ids = sorted(canonical.mount_ids)
    del canonical.mount_ids[:]
    canonical.mount_ids.extend(mount_ids)
    return "de-" + hashlib.sha256(canonical.SerializeToString(deterministic=True)).hexdigest()[:16]


# How long one AppGetLogs request of a running app waits before it ends empty.
LOG_POLL_SECONDS = 0.5


class AppRpcs(ObjectRpcs):
    runner: FunctionRunner
    containers: Containers
    publish_noop: str
    stopping_seconds: float
    # (environment, "<app>-<label>") -> URL of a web endpoint; None: Modal's *.modal.run scheme.
    web_url_of: Callable[[str, str], str] | None

    def _deployed_app(self, environment: str, name: str) -> App | None:
        env = self._environment(environment)
        app = env.apps.get(name)
        return app if app is not None and app.state == "deployed" else None

    # ---- apps ----------------------------------------------------------------------------------

    async def AppCreate(self, request: api_pb2.AppCreateRequest) -> api_pb2.AppCreateResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            app = App(
                id=self.state.new_id("ap"),
                name=request.description,
                environment=env.name,
                created_at=self.now(),
                state=APP_STATES.get(request.app_state, "initializing"),
                detached=request.app_state == api_pb2.APP_STATE_DETACHED,
                tags=dict(request.tags),
            )
            self.state.by_id[app.id] = app
            if app.state == "ephemeral":
                self.state.ephemeral_apps.append(app)
        return api_pb2.AppCreateResponse(
            app_id=app.id,
            app_page_url=f"https://modal.com/apps/{WORKSPACE}/{env.name}/{app.id}",
            app_logs_url=f"https://modal.com/logs/{app.id}",
        )

    async def AppGetByDeploymentName(
        self, request: api_pb2.AppGetByDeploymentNameRequest
    ) -> api_pb2.AppGetByDeploymentNameResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            app = self._deployed_app(env.name, request.name)
            if app is None:
                return api_pb2.AppGetByDeploymentNameResponse(environment_name=env.name)
            return api_pb2.AppGetByDeploymentNameResponse(
                app_id=app.id, environment_name=env.name, lifecycle=self._lifecycle(app)
            )

    async def AppGetOrCreate(self, request: api_pb2.AppGetOrCreateRequest) -> api_pb2.AppGetOrCreateResponse:
        with self.state.lock:
            by_id = self.state.by_id.get(request.app_name)
            creates = request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
            if isinstance(by_id, App) and not creates:
                # Like Modal (`App.lookup`'s docstring in 1.6.4): an app id finds that app, ephemeral or
                # stopped, whatever the environment.
                return api_pb2.AppGetOrCreateResponse(app_id=by_id.id)
            env = self._environment(request.environment_name)
            app = self._deployed_app(env.name, request.app_name)
            if app is None:
                if request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                    raise GRPCError(Status.NOT_FOUND, f"App '{request.app_name}' not found in environment '{env.name}'")
                app = App(self.state.new_id("ap"), request.app_name, env.name, self.now(), state="deployed")
                self.state.by_id[app.id] = app
                env.apps[app.name] = app
        return api_pb2.AppGetOrCreateResponse(app_id=app.id)

    async def AppGetLifecycle(self, request: api_pb2.AppGetLifecycleRequest) -> api_pb2.AppGetLifecycleResponse:
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            return api_pb2.AppGetLifecycleResponse(lifecycle=self._lifecycle(app))

    def _reported_state(self, app: App) -> int:
        """The state Modal reports, which says more than ours: a detached app is DETACHED while its
        client is connected and DETACHED_DISCONNECTED after (modal/cli/app.py lists both as
        "ephemeral (detached)"); a stopped app is STOPPING for `stopping_seconds` after its stop (how long
        Modal takes is not documented), and STOPPED from then on. Lookups by name never find a stopping
        app (Modal's servicer forgets the deployment name at AppStop), whatever it reports."""
        if app.state == "ephemeral" and app.detached:
            return api_pb2.APP_STATE_DETACHED_DISCONNECTED if app.disconnected else api_pb2.APP_STATE_DETACHED
        if app.state == "stopped" and self.now() < app.stopped_at + self.stopping_seconds:
            return api_pb2.APP_STATE_STOPPING
        return APP_STATE_PROTO[app.state]

    def _lifecycle(self, app: App) -> api_pb2.AppLifecycle:
        return api_pb2.AppLifecycle(
            app_state=self._reported_state(app),
            created_at=app.created_at,
            deployed_at=app.deployed_at,
            version=app.deployment_version,
            stopped_at=app.stopped_at,  # 0 while it runs, as Modal's unset timestamps
        )

    async def AppGetLayout(self, request: api_pb2.AppGetLayoutRequest) -> api_pb2.AppGetLayoutResponse:
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            layout = api_pb2.AppLayout(
                function_ids={tag: fn.id for tag, fn in app.functions.items()},
                class_ids=dict(app.classes),
            )
            for fn in app.functions.values():
                if fn.handle_metadata is not None:
                    layout.objects.append(api_pb2.Object(object_id=fn.id, function_handle_metadata=fn.handle_metadata))
        return api_pb2.AppGetLayoutResponse(app_layout=layout)

    async def AppHeartbeat(self, request: api_pb2.AppHeartbeatRequest) -> Empty:
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            if app.state == "stopped":
                raise GRPCError(Status.FAILED_PRECONDITION, "App is stopped")
        return Empty()

    async def AppSetTags(self, request: api_pb2.AppSetTagsRequest) -> Empty:
        with self.state.lock:
            self._object(request.app_id, App, "App").tags = dict(request.tags)
        return Empty()

    async def AppClientDisconnect(self, request: api_pb2.AppClientDisconnectRequest) -> Empty:
        # Like Modal: stops an app that is still running ephemerally (its running calls end with it)
        # or never finished deploying; a detached app keeps running until its last call ends; a
        # no-op for a deployed app.
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            app.disconnected = True
            if app.state not in ("initializing", "ephemeral"):
                return Empty()
            if not app.detached:
                app.state = "stopped"
                app.stopped_at = self.now()
        if app.detached:
            self.runner.stop_if_done(app.id)
        else:
            self.runner.cancel_app(app.id)
        return Empty()

    async def AppPublish(self, request: api_pb2.AppPublishRequest) -> api_pb2.AppPublishResponse:
        """A deploy. Like Modal since "Introduce no-op deployments to AppPublish" (Modal's servicer:
        `app_publish_is_noop`): a deploy of an app whose live version already has exactly these
        function definitions is answered with `deployed_at = 0` and changes nothing: no version, no
        history entry, no tag, containers untouched; modal 1.6.4 then prints "Deployment skipped: no
        changes detected!" and skips the recreate strategy's container stop. Whether Modal always
        does so is not documented: `publish_noop=NOOP_NEVER` makes every deploy a new version."""
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            env = self._environment(app.environment)
            if request.app_state == api_pb2.APP_STATE_DEPLOYED:
                previous = env.apps.get(request.name)
                if previous is not None and previous is not app and previous.state == "deployed":
                    raise GRPCError(Status.ALREADY_EXISTS, f"App '{request.name}' is already deployed")
                page = f"https://modal.com/apps/{WORKSPACE}/{app.environment}/deployed/{request.name}"
                if self._publish_is_noop(app, request):
                    return api_pb2.AppPublishResponse(url=page, deployed_at=0.0)
                app.classes = dict(request.class_ids)
                app.tags.update(request.tags)
                app.name = request.name
                app.state = "deployed"
                commit_info = api_pb2.CommitInfo()
                commit_info.CopyFrom(request.commit_info)
                self._record_deployment(app, tag=request.deployment_tag, commit_info=commit_info)
                env.apps[app.name] = app
            else:
                app.classes = dict(request.class_ids)
                app.tags.update(request.tags)
                app.state = APP_STATES.get(request.app_state, app.state)
                page = f"https://modal.com/apps/{WORKSPACE}/{app.environment}/deployed/{app.name}"
        # Like Modal, the URL printed after "View Deployment:" is the app's dashboard page.
        return api_pb2.AppPublishResponse(url=page, deployed_at=app.deployed_at)

    def _publish_is_noop(self, app: App, request: api_pb2.AppPublishRequest) -> bool:
        live = app.deployment
        if self.publish_noop == NOOP_NEVER or app.state != "deployed" or live is None:
            return False
        return dict(request.definition_ids) == live.definition_ids and dict(request.class_ids) == live.classes

    def _record_deployment(self, app: App, *, tag: str, commit_info: object, rollback_version: int = 0) -> None:
        app.deployment_version += 1
        app.deployed_at = self.now()
        app.history.append(
            Deployment(
                version=app.deployment_version,
                deployed_at=app.deployed_at,
                tag=tag,
                commit_info=commit_info,
                functions={tag_: copy.copy(record) for tag_, record in app.functions.items()},
                classes=dict(app.classes),
                rollback_version=rollback_version,
            )
        )
        self.containers.outdate(app)

    async def AppRollback(self, request: api_pb2.AppRollbackRequest) -> api_pb2.AppRollbackResponse:
        """Like Modal's servicer: a new version that brings back the functions (and the tag) of an
        earlier one. A negative version counts back from the live one (-1: the one before it); 0, or
        counting back past version 1, is INVALID_ARGUMENT; a version not in the history NOT_FOUND."""
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            if app.state != "deployed":
                raise GRPCError(Status.FAILED_PRECONDITION, f"App '{app.name}' is not deployed")
            if request.version < 0:
                wanted = app.deployment_version + request.version
                if wanted <= 0:
                    raise GRPCError(Status.INVALID_ARGUMENT, "Rollback request exceeds number of App deployments.")
            elif request.version > 0:
                wanted = request.version
            else:
                raise GRPCError(Status.INVALID_ARGUMENT, "Invalid rollback version request.")
            target = next((d for d in app.history if d.version == wanted), None)
            if target is None:
                raise GRPCError(Status.NOT_FOUND, "Rollback version not found in App history.")
            for tag, saved in target.functions.items():
                record = app.functions.get(tag)
                if record is not None:
                    vars(record).update(vars(copy.copy(saved)))
            app.classes = dict(target.classes)
            self._record_deployment(app, tag=target.tag, commit_info=target.commit_info, rollback_version=wanted)
        page = f"https://modal.com/apps/{WORKSPACE}/{app.environment}/deployed/{app.name}"
        return api_pb2.AppRollbackResponse(url=page, deployed_at=app.deployed_at)

    async def AppRollover(self, request: api_pb2.AppRolloverRequest) -> api_pb2.AppRolloverResponse:
        """`modal app rollover`: fresh containers of the same version's functions, as a new entry in the
        history with the live version's tag (Modal's servicer re-publishes the live definitions). The
        running containers are outdated (they drain); with `--strategy recreate` the client then stops
        them (TaskList + ContainerStop, as after a recreate deploy). Never a no-op: making new
        containers is its purpose, and Modal documents it as a new history entry."""
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            live = app.deployment
            if app.state != "deployed" or live is None:
                raise GRPCError(Status.INVALID_ARGUMENT, f"App '{app.name}' is not deployed")
            self._record_deployment(app, tag=live.tag, commit_info=live.commit_info)
        page = f"https://modal.com/apps/{WORKSPACE}/{app.environment}/deployed/{app.name}"
        return api_pb2.AppRolloverResponse(url=page, deployed_at=app.deployed_at)

    async def AppStop(self, request: api_pb2.AppStopRequest) -> Empty:
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            app.state = "stopped"
            app.stopped_at = self.now()
            self.containers.stop_all(app)
            self.runner.cancel_app(app.id)
        return Empty()

    async def AppGetLogs(self, request: api_pb2.AppGetLogsRequest) -> AsyncIterator[api_pb2.TaskLogsBatch]:
        """Functions here print nothing to Modal's log, so the stream only ever says when the app is
        done; while it runs, each request waits a moment and ends empty (the client asks again)."""
        deadline = self.now() + min(request.timeout or 0.0, LOG_POLL_SECONDS)
        while True:
            with self.state.lock:
                app = self.state.by_id.get(request.app_id)
                done = not isinstance(app, App) or app.state == "stopped"
            if done:
                yield api_pb2.TaskLogsBatch(app_done=True)
                return
            if self.now() >= deadline:
                return
            await asyncio.sleep(0.05)

    async def AppList(self, request: api_pb2.AppListRequest) -> api_pb2.AppListResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            self.containers.scale_down_idle()  # n_running_tasks counts what exists now
            apps = [
                api_pb2.AppListResponse.AppListItem(
                    app_id=app.id,
                    name=app.name if app.state == "deployed" else "",
                    description=app.name,
                    state=self._reported_state(app),
                    n_running_tasks=len(app.live_containers),
                    created_at=app.created_at,
                    stopped_at=app.stopped_at,
                )
                for app in self.state.all_apps()
                if app.environment == env.name
            ]
        return api_pb2.AppListResponse(apps=apps)

    async def AppDeploymentHistory(
        self, request: api_pb2.AppDeploymentHistoryRequest
    ) -> api_pb2.AppDeploymentHistoryResponse:
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            history = [
                api_pb2.AppDeploymentHistory(
                    app_id=app.id,
                    version=deployment.version,
                    deployed_at=deployment.deployed_at,
                    tag=deployment.tag,
                    commit_info=deployment.commit_info,
                    rollback_version=deployment.rollback_version,
                    rollback_allowed=deployment.version != app.deployment_version,
                )
                for deployment in app.history
            ]
        return api_pb2.AppDeploymentHistoryResponse(app_deployment_histories=history)

    async def TaskList(self, request: api_pb2.TaskListRequest) -> api_pb2.TaskListResponse:
        """The containers that exist (containers.py), of one app or of the whole environment."""
        with self.state.lock:
            if request.app_id:
                self._object(request.app_id, App, "App")
            env = self._environment(request.environment_name)
            return api_pb2.TaskListResponse(tasks=self.containers.task_stats(env.name, request.app_id))

    async def ContainerStop(self, request: api_pb2.ContainerStopRequest) -> api_pb2.ContainerStopResponse:
        with self.state.lock:
            if not self.containers.stop(request.task_id):
                raise GRPCError(Status.NOT_FOUND, f"Task '{request.task_id}' not found")
        return api_pb2.ContainerStopResponse()

    # ---- images --------------------------------------------------------------------------------

    def _image_metadata(self) -> api_pb2.ImageMetadata:
        python = PYTHON_VERSION_INFO_FORMAT.format(
            major=sys.version_info.major, minor=sys.version_info.minor, micro=sys.version_info.micro
        )
        return api_pb2.ImageMetadata(python_version_info=python, image_builder_version=IMAGE_BUILDER_VERSION)

    async def ImageGetOrCreate(self, request: api_pb2.ImageGetOrCreateRequest) -> api_pb2.ImageGetOrCreateResponse:
        # Identical image definitions get the same id, like Modal's image cache: a redeploy of an
        # unchanged app "builds" nothing.
        definition = request.image.SerializeToString(deterministic=True) + request.builder_version.encode()
        image_id = "im-" + hashlib.sha256(definition).hexdigest()[:16]
        with self.state.lock:
            if image_id not in self.state.images:
                image = request.image
                self.state.images[image_id] = ImageLayer(
                    id=image_id,
                    base_images=[{"docker_tag": b.docker_tag, "image_id": b.image_id} for b in image.base_images],
                    dockerfile_commands=list(image.dockerfile_commands),
                    secret_ids=list(image.secret_ids),
                    build_function=image.build_function.definition or image.build_function_def,
                    context_files=[f.filename for f in image.context_files],
                    builder_version=request.builder_version,
                )
            app = self.state.by_id.get(request.app_id)
            if isinstance(app, App) and self.state.images[image_id] not in app.images:
                app.images.append(self.state.images[image_id])
            already_built = image_id in self.state.built_images
        if already_built:
            return api_pb2.ImageGetOrCreateResponse(
                image_id=image_id,
                result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
                metadata=self._image_metadata(),
            )
        return api_pb2.ImageGetOrCreateResponse(image_id=image_id)

    async def ImageJoinStreaming(
        self, request: api_pb2.ImageJoinStreamingRequest
    ) -> AsyncIterator[api_pb2.ImageJoinStreamingResponse]:
        with self.state.lock:
            if request.image_id not in self.state.images:
                raise GRPCError(Status.NOT_FOUND, f"Image '{request.image_id}' not found")
            self.state.built_images.add(request.image_id)
        yield api_pb2.ImageJoinStreamingResponse(
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
            metadata=self._image_metadata(),
            eof=True,
        )

    # ---- mounts (local source shipped with a deploy) -------------------------------------------

    async def MountGetOrCreate(self, request: api_pb2.MountGetOrCreateRequest) -> api_pb2.MountGetOrCreateResponse:
        files = {f.filename: f.sha256_hex for f in request.files}
        with self.state.lock:
            missing = sorted({sha for sha in files.values() if sha not in self.state.mount_files})
            if missing:
                raise GRPCError(Status.FAILED_PRECONDITION, f"Mount files not uploaded: {missing[:3]}")
            checksum = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()
            # The same files are the same mount, as Modal deduplicates them: a redeploy of unchanged
            # source refers to the same mount id, so its function definitions are unchanged too.
            mount = Mount("mo-" + checksum[:16], files)
            self.state.mounts[mount.id] = mount
            self.state.by_id[mount.id] = mount
            app = self.state.by_id.get(request.app_id)
            if isinstance(app, App):
                app.mounts.append(mount.id)
        return api_pb2.MountGetOrCreateResponse(
            mount_id=mount.id, handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=checksum)
        )

    async def MountBatchedCheckExistence(
        self, request: api_pb2.MountBatchedCheckExistenceRequest
    ) -> api_pb2.MountBatchedCheckExistenceResponse:
        with self.state.lock:
            missing = [sha for sha in request.sha256_hex_hashes if sha not in self.state.mount_files]
        return api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing)

    async def MountPutFile(self, request: api_pb2.MountPutFileRequest) -> api_pb2.MountPutFileResponse:
        if request.WhichOneof("data_oneof") == "data_blob_id":
            with self.blobs.lock:
                data = self.blobs.blobs.get(request.data_blob_id)
            if data is None:
                raise GRPCError(Status.NOT_FOUND, f"Blob '{request.data_blob_id}' not found")
        elif request.WhichOneof("data_oneof") == "data":
            data = request.data
        else:  # an existence check only
            with self.state.lock:
                return api_pb2.MountPutFileResponse(exists=request.sha256_hex in self.state.mount_files)
        if hashlib.sha256(data).hexdigest() != request.sha256_hex:
            raise GRPCError(Status.INVALID_ARGUMENT, "Mount file contents do not match their sha256")
        with self.state.lock:
            self.state.mount_files[request.sha256_hex] = data
        return api_pb2.MountPutFileResponse(exists=True)

    # ---- functions and classes -----------------------------------------------------------------

    def _web_url(self, app: App, label: str) -> str:
        """Modal's URL scheme: https://<workspace>[-<env suffix>]--<app>-<label>[-dev].modal.run"""
        env = self._environment(app.environment)
        suffix = env.settings["webhook_suffix"]
        host = WORKSPACE + (f"-{suffix}" if suffix else "")
        slug = re.sub(r"[^a-z0-9-]+", "-", f"{app.name}-{label}".lower()).strip("-")
        if self.web_url_of is not None:
            return self.web_url_of(app.environment, slug)
        dev = "-dev" if app.state in ("ephemeral",) else ""
        return f"https://{host}--{slug}{dev}.modal.run"

    def _register_function(self, app: App, function_id: str, tag: str) -> FunctionRecord:
        record = self.state.by_id.get(function_id)
        if not isinstance(record, FunctionRecord):
            record = FunctionRecord(id=function_id, app_id=app.id, tag=tag)
            self.state.by_id[function_id] = record
        app.functions[tag] = record
        return record

    def _handle_metadata(
        self, app: App, record: FunctionRecord, definition: api_pb2.Function | api_pb2.FunctionPrecreateRequest
    ) -> api_pb2.FunctionHandleMetadata:
        is_web = bool(definition.webhook_config.type)
        record.web_url = self._web_url(app, record.tag) if is_web else ""
        metadata = api_pb2.FunctionHandleMetadata(
            function_name=definition.function_name,
            function_type=definition.function_type,
            web_url=record.web_url,
            definition_id=record.definition_id,
            function_schema=definition.function_schema,
            app_id=app.id,
            supported_input_formats=SUPPORTED_DATA_FORMATS,
            supported_output_formats=SUPPORTED_DATA_FORMATS,
        )
        if isinstance(definition, api_pb2.Function):
            metadata.is_method = definition.is_method
            metadata.class_parameter_info.CopyFrom(definition.class_parameter_info)
            if definition.is_server:
                # `app.server` endpoints are served through Modal's "flash" routing layer; the
                # client reads their URL from this field (Server.get_url()).
                record.web_url = self._web_url(app, record.tag)
                metadata.web_url = record.web_url
                metadata._experimental_flash_urls.append(record.web_url)
        class_name = record.tag.removesuffix(".*")
        for method_name, method in definition.method_definitions.items():
            method_url = self._web_url(app, f"{class_name}-{method_name}") if method.webhook_config.type else ""
            metadata.method_handle_metadata[method_name].CopyFrom(
                api_pb2.FunctionHandleMetadata(
                    function_name=method.function_name,
                    function_type=method.function_type,
                    web_url=method_url,
                    is_method=True,
                    use_method_name=method_name,
                    function_schema=method.function_schema,
                    app_id=app.id,
                    supported_input_formats=SUPPORTED_DATA_FORMATS,
                    supported_output_formats=SUPPORTED_DATA_FORMATS,
                )
            )
            if method_url and not record.web_url:
                record.web_url = method_url
        return metadata

    async def FunctionPrecreate(self, request: api_pb2.FunctionPrecreateRequest) -> api_pb2.FunctionPrecreateResponse:
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            function_id = request.existing_function_id or self.state.new_id("fu")
            record = self._register_function(app, function_id, request.function_name)
            metadata = self._handle_metadata(app, record, request)
        return api_pb2.FunctionPrecreateResponse(function_id=function_id, handle_metadata=metadata)

    async def FunctionCreate(self, request: api_pb2.FunctionCreateRequest) -> api_pb2.FunctionCreateResponse:
        function_data = api_pb2.FunctionData()
        if request.function_data.ranked_functions:
            function_data.CopyFrom(request.function_data)
            definition = request.function_data.ranked_functions[0].function
        else:
            definition = request.function
            function_data.ranked_functions.append(api_pb2.FunctionData.RankedFunction(rank=0, function=definition))
            function_data.function_name = definition.function_name
        with self.state.lock:
            app = self._object(request.app_id, App, "App")
            # Like Modal, refuse definitions that point at objects this workspace does not have
            # (e.g. a volume id hydrated against another control plane).
            referenced = [
                *definition.secret_ids,
                *(mount.volume_id for mount in definition.volume_mounts),
                *definition.mount_ids,
            ]
            unknown = [object_id for object_id in referenced if object_id not in self.state.by_id]
            if definition.image_id and definition.image_id not in self.state.images:
                unknown.append(definition.image_id)
            if unknown:
                raise GRPCError(
                    Status.NOT_FOUND,
                    f"Function '{definition.function_name}' refers to unknown object(s): {', '.join(unknown)}",
                )
            function_id = request.existing_function_id or self.state.new_id("fu")
            record = self._register_function(app, function_id, definition.function_name)
            record.definition_id = _definition_id(definition)
            record.image_id = definition.image_id
            record.secret_ids = list(definition.secret_ids)
            record.volume_mounts = {m.mount_path: m.volume_id for m in definition.volume_mounts}
            record.gpu = definition.resources.gpu_config.gpu_type
            record.is_class = definition.is_class
            record.is_server = definition.is_server
            metadata = self._handle_metadata(app, record, definition)
            function_data.web_url = record.web_url
            record.definition = function_data
            record.handle_metadata = metadata
        return api_pb2.FunctionCreateResponse(
            function_id=function_id, handle_metadata=metadata, function_data=function_data
        )

    def _function_by_tag(self, environment: str, app_name: str, tag: str) -> FunctionRecord:
        env = self._environment(environment)
        app = self._deployed_app(env.name, app_name)
        if app is None:
            raise GRPCError(Status.NOT_FOUND, f"App '{app_name}' not found in environment '{env.name}'")
        record = app.functions.get(tag)
        if record is None or record.definition is None:
            raise GRPCError(Status.NOT_FOUND, f"Function '{tag}' not found in app '{app_name}'")
        return record

    async def FunctionGet(self, request: api_pb2.FunctionGetRequest) -> api_pb2.FunctionGetResponse:
        with self.state.lock:
            record = self._function_by_tag(request.environment_name, request.app_name, request.object_tag)
            return api_pb2.FunctionGetResponse(
                function_id=record.id, handle_metadata=record.handle_metadata, function=record.definition
            )

    async def FunctionGetById(self, request: api_pb2.FunctionGetByIdRequest) -> api_pb2.FunctionGetByIdResponse:
        with self.state.lock:
            record = self._object(request.function_id, FunctionRecord, "Function")
            return api_pb2.FunctionGetByIdResponse(function=record.definition, handle_metadata=record.handle_metadata)

    async def ClassCreate(self, request: api_pb2.ClassCreateRequest) -> api_pb2.ClassCreateResponse:
        with self.state.lock:
            self._object(request.app_id, App, "App")
            class_id = request.existing_class_id or self.state.new_id("cs")
        return api_pb2.ClassCreateResponse(class_id=class_id, handle_metadata=api_pb2.ClassHandleMetadata())

    async def ClassGet(self, request: api_pb2.ClassGetRequest) -> api_pb2.ClassGetResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            app = self._deployed_app(env.name, request.app_name)
            if app is None or request.object_tag not in app.classes:
                raise GRPCError(Status.NOT_FOUND, f"Class '{request.object_tag}' not found in app '{request.app_name}'")
            service = app.functions.get(f"{request.object_tag}.*")
            metadata = api_pb2.ClassHandleMetadata()
            if service is not None:
                metadata.class_function_id = service.id
                if service.handle_metadata is not None:
                    metadata.class_function_metadata.CopyFrom(service.handle_metadata)
            return api_pb2.ClassGetResponse(class_id=app.classes[request.object_tag], handle_metadata=metadata)

    # ---- function calls ------------------------------------------------------------------------

    async def FunctionMap(self, request: api_pb2.FunctionMapRequest) -> api_pb2.FunctionMapResponse:
        with self.state.lock:
            record = self._object(request.function_id, FunctionRecord, "Function")
            app = self._object(record.app_id, App, "App")
            if app.state == "stopped":
                raise GRPCError(Status.FAILED_PRECONDITION, f"App '{app.name}' is stopped")
        call = self.runner.start(record, app, list(request.pipelined_inputs))
        return api_pb2.FunctionMapResponse(
            function_call_id=call.id,
            function_call_jwt=f"jwt-{call.id}",
            pipelined_inputs=[
                api_pb2.FunctionPutInputsResponseItem(idx=inp.idx, input_id=inp.id, input_jwt=f"jwt-{inp.id}")
                for inp in call.inputs
            ],
            max_inputs_outstanding=1000,
        )

    async def FunctionPutInputs(self, request: api_pb2.FunctionPutInputsRequest) -> api_pb2.FunctionPutInputsResponse:
        call = self.runner.get(request.function_call_id)
        inputs = self.runner.add_inputs(call, list(request.inputs))
        return api_pb2.FunctionPutInputsResponse(
            inputs=[
                api_pb2.FunctionPutInputsResponseItem(idx=inp.idx, input_id=inp.id, input_jwt=f"jwt-{inp.id}")
                for inp in inputs
            ]
        )

    async def FunctionFinishInputs(self, request: api_pb2.FunctionFinishInputsRequest) -> Empty:
        self.runner.get(request.function_call_id)
        return Empty()

    async def FunctionGetOutputs(
        self, request: api_pb2.FunctionGetOutputsRequest
    ) -> api_pb2.FunctionGetOutputsResponse:
        call = self.runner.get(request.function_call_id)
        wanted = None
        if request.HasField("start_idx"):
            wanted = range(request.start_idx, request.end_idx + 1)
        # Long-poll like Modal: answer as soon as an output is ready, or empty-handed at the timeout.
        # An output older than Modal keeps results is left out: no output and no unfinished input is
        # how the client knows it expired (functions.py).
        outputs = await self.runner.wait_outputs(call, wanted, timeout=max(0.0, request.timeout))
        return api_pb2.FunctionGetOutputsResponse(
            outputs=outputs,
            num_unfinished_inputs=call.unfinished(),
            last_entry_id=str(len(outputs)),
        )

    async def FunctionCallFromId(
        self, request: api_pb2.FunctionCallFromIdRequest
    ) -> api_pb2.FunctionCallFromIdResponse:
        call = self.runner.get(request.function_call_id)
        return api_pb2.FunctionCallFromIdResponse(
            function_call_id=call.id,
            num_inputs=len(call.inputs),
            metadata=api_pb2.FunctionCallHandleMetadata(app_id=call.app_id, function_id=call.function_id),
        )

    async def FunctionCallCancel(self, request: api_pb2.FunctionCallCancelRequest) -> Empty:
        """`FunctionCall.cancel(terminate_containers=...)`: an InputCancellation in the function's main
        thread, or its containers killed (functions.py says what each does, and from where)."""
        call = self.runner.get(request.function_call_id)
        self.runner.cancel(call, terminate_containers=request.terminate_containers)
        return Empty()

    async def FunctionGetCurrentStats(self, request: api_pb2.FunctionGetCurrentStatsRequest) -> api_pb2.FunctionStats:
        with self.state.lock:
            self._object(request.function_id, FunctionRecord, "Function")
        return api_pb2.FunctionStats(backlog=0, num_total_tasks=0)
