"""RPCs for the workspace's named objects: client hello, environments, secrets, volumes, blobs.

Each method is named after the RPC it answers, takes the request message and returns the response
(or, for a server-streaming RPC, yields responses). Errors are raised as `GRPCError` with the
status and wording Modal uses, because the client maps statuses to exceptions
(NOT_FOUND -> modal.exception.NotFoundError, ALREADY_EXISTS -> AlreadyExistsError, ...).

Secret values go into the state and never back out: like Modal, responses carry secret *keys* only.

Where Modal's answer is unknown, `EnvironmentAnswers` (the plane's `environment_answers`) offers
each plausible one, so the providers can be tested under all of them.
"""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from modal_proto import api_pb2

from .state import Environment, Secret, Volume

if TYPE_CHECKING:
    from .blob_server import BlobStore
    from .state import ControlPlaneState

# Volume files are served in blocks of this size, the client's own `BLOCK_SIZE` (8 MiB): it
# computes how many bytes each block URL must yield from it.
VOLUME_BLOCK_SIZE = 8 * 1024 * 1024

CREATE_IF_MISSING = api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
CREATE_FAIL_IF_EXISTS = api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS
CREATE_OVERWRITE_IF_EXISTS = api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS
ANONYMOUS_CREATION_TYPES = (
    api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL,
    api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
)


# What `EnvironmentCreate` may answer for a name that already exists (see EnvironmentAnswers).
ExistingCreateAnswer = Literal["succeed", "already_exists", "permission_denied"]
EXISTING_CREATE_ANSWERS: tuple[ExistingCreateAnswer, ...] = ("succeed", "already_exists", "permission_denied")
# What any RPC may answer for an environment name that does not exist.
MISSING_ENVIRONMENT_STATUSES = (Status.INVALID_ARGUMENT, Status.NOT_FOUND)


@dataclass
class EnvironmentAnswers:
    """How the plane answers about environments where the real server's answer is unknown.

    `create_existing`: `EnvironmentCreate` of a name that exists. 1.6.4's
    `Environment.objects.create` has no `allow_existing` and catches nothing, and Modal's own servicer
    (modal-client test/conftest.py, `EnvironmentCreate`) silently succeeds: "succeed" is the default.
    The real server may as well answer ALREADY_EXISTS, or PERMISSION_DENIED to a token that may use
    the environment but not create one ("already_exists", "permission_denied").

    `missing_status`: the status of "Environment '<name>' not found", for every RPC that names an
    environment that does not exist. Modal's servicer answers `EnvironmentGetOrCreate` of a missing
    name with INVALID_ARGUMENT (the default; the client raises InvalidError); NOT_FOUND (NotFoundError)
    is the other plausible answer. One server resolves environment names for every RPC, so one status
    serves them all.

    `created_by_another_client_first`: names whose next `EnvironmentCreate` arrives just after
    another client created that environment: the race between a look-up and a create, made
    repeatable."""

    create_existing: ExistingCreateAnswer = "succeed"
    missing_status: Status = Status.INVALID_ARGUMENT
    created_by_another_client_first: set[str] = field(default_factory=set)


class ObjectRpcs:
    state: ControlPlaneState
    blobs: BlobStore
    blob_url: str
    now: Callable[[], float]
    environment_answers: EnvironmentAnswers

    # ---- helpers -------------------------------------------------------------------------------

    def _environment(self, name: str) -> Environment:
        env = self.state.environment(name)
        if env is None:
            missing = name or self.state.default_environment
            raise GRPCError(self.environment_answers.missing_status, f"Environment '{missing}' not found")
        return env

    def _object(self, object_id: str, kind: type, label: str):
        obj = self.state.by_id.get(object_id)
        if not isinstance(obj, kind):
            raise GRPCError(Status.NOT_FOUND, f"{label} '{object_id}' not found")
        return obj

    # ---- client --------------------------------------------------------------------------------

    async def ClientHello(self, request: Empty) -> api_pb2.ClientHelloResponse:
        return api_pb2.ClientHelloResponse()

    # ---- environments --------------------------------------------------------------------------

    def _environment_metadata(self, env: Environment) -> api_pb2.EnvironmentMetadata:
        return api_pb2.EnvironmentMetadata(
            name=env.name,
            settings=api_pb2.EnvironmentSettings(
                image_builder_version=env.settings["image_builder_version"],
                webhook_suffix=env.settings["webhook_suffix"],
            ),
        )

    async def EnvironmentCreate(self, request: api_pb2.EnvironmentCreateRequest) -> Empty:
        """A new environment; for an existing name, whatever `environment_answers.create_existing` says."""
        answers = self.environment_answers
        name = request.name
        with self.state.lock:
            if name in answers.created_by_another_client_first:
                answers.created_by_another_client_first.discard(name)
                if name not in self.state.environments:
                    self.state.add_environment(name, self.now())
            if name in self.state.environments:
                if answers.create_existing == "already_exists":
                    raise GRPCError(Status.ALREADY_EXISTS, f"Environment '{name}' already exists")
                if answers.create_existing == "permission_denied":
                    raise GRPCError(
                        Status.PERMISSION_DENIED, f"You do not have permission to create environment '{name}'"
                    )
                return Empty()  # "succeed": Modal's servicer leaves the existing one as it is
            self.state.add_environment(name, self.now())
        return Empty()

    async def EnvironmentList(self, request: Empty) -> api_pb2.EnvironmentListResponse:
        with self.state.lock:
            items = [
                api_pb2.EnvironmentListItem(
                    name=env.name,
                    environment_id=env.id,
                    webhook_suffix=env.settings["webhook_suffix"],
                    image_builder_version=env.settings["image_builder_version"],
                    created_at=env.created_at,
                    default=env.name == self.state.default_environment,
                )
                for env in self.state.environments.values()
            ]
        return api_pb2.EnvironmentListResponse(items=items)

    async def EnvironmentDelete(self, request: api_pb2.EnvironmentDeleteRequest) -> Empty:
        """A missing name is answered like any missing environment (`missing_status`); Modal's
        servicer ignores it, which a provider that confirms its delete by a look-up takes the same way."""
        with self.state.lock:
            self._environment(request.name)
            if request.name == self.state.default_environment:
                raise GRPCError(Status.FAILED_PRECONDITION, "The default environment cannot be deleted")
            self.state.remove_environment(request.name)
        return Empty()

    async def EnvironmentGetOrCreate(
        self, request: api_pb2.EnvironmentGetOrCreateRequest
    ) -> api_pb2.EnvironmentGetOrCreateResponse:
        """A look-up (or create-if-missing). An empty name is the workspace's default environment, as
        Modal's servicer resolves it; a missing one is `missing_status` (INVALID_ARGUMENT there)."""
        name = request.deployment_name or self.state.default_environment
        with self.state.lock:
            env = self.state.environment(name)
            if env is None:
                if request.object_creation_type != CREATE_IF_MISSING:
                    self._environment(name)  # raises Modal's "not found"
                env = self.state.add_environment(name, self.now())
            return api_pb2.EnvironmentGetOrCreateResponse(
                environment_id=env.id, metadata=self._environment_metadata(env)
            )

    async def EnvironmentUpdate(self, request: api_pb2.EnvironmentUpdateRequest) -> api_pb2.EnvironmentListItem:
        with self.state.lock:
            env = self._environment(request.current_name)
            if request.HasField("name") and request.name.value != env.name:
                new_name = request.name.value
                if new_name in self.state.environments:
                    raise GRPCError(Status.ALREADY_EXISTS, f"Environment '{new_name}' already exists")
                old_name = env.name
                del self.state.environments[old_name]
                env.name = new_name
                self.state.environments[new_name] = env
                if self.state.default_environment == old_name:  # a renamed default stays the default
                    self.state.default_environment = new_name
                for obj in self.state.by_id.values():
                    if getattr(obj, "environment", None) == old_name:
                        obj.environment = new_name
            if request.HasField("web_suffix"):
                env.settings["webhook_suffix"] = request.web_suffix.value
            if request.image_builder_version:
                env.settings["image_builder_version"] = request.image_builder_version
            return api_pb2.EnvironmentListItem(
                name=env.name, environment_id=env.id, webhook_suffix=env.settings["webhook_suffix"]
            )

    # ---- secrets -------------------------------------------------------------------------------

    def _secret_metadata(self, secret: Secret) -> api_pb2.SecretMetadata:
        return api_pb2.SecretMetadata(
            name=secret.name,
            environment_name=secret.environment,
            keys=sorted(secret.values),
            creation_info=api_pb2.CreationInfo(created_at=secret.created_at, created_by="control-plane"),
        )

    async def SecretGetOrCreate(self, request: api_pb2.SecretGetOrCreateRequest) -> api_pb2.SecretGetOrCreateResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            values = dict(request.env_dict)
            if request.object_creation_type in ANONYMOUS_CREATION_TYPES:
                secret = Secret(self.state.new_id("st"), "", env.name, values, self.now())
                self.state.by_id[secret.id] = secret
            else:
                name = request.deployment_name
                secret = env.secrets.get(name)
                creation = request.object_creation_type
                if secret is None:
                    if creation not in (CREATE_IF_MISSING, CREATE_FAIL_IF_EXISTS, CREATE_OVERWRITE_IF_EXISTS):
                        raise GRPCError(Status.NOT_FOUND, f"Secret '{name}' not found in environment '{env.name}'")
                    secret = self.state.add_secret(env, name, values, self.now())
                elif creation == CREATE_FAIL_IF_EXISTS:
                    raise GRPCError(
                        Status.ALREADY_EXISTS, f"Secret '{name}' already exists in environment '{env.name}'"
                    )
                elif creation == CREATE_OVERWRITE_IF_EXISTS:
                    secret.values = values
                missing = sorted(set(request.required_keys) - set(secret.values))
                if missing:
                    raise GRPCError(
                        Status.NOT_FOUND, f"Secret '{name}' is missing required key(s): {', '.join(missing)}"
                    )
            return api_pb2.SecretGetOrCreateResponse(secret_id=secret.id, metadata=self._secret_metadata(secret))

    async def SecretGetInfo(self, request: api_pb2.SecretGetInfoRequest) -> api_pb2.SecretGetInfoResponse:
        with self.state.lock:
            secret = self._object(request.secret_id, Secret, "Secret")
            return api_pb2.SecretGetInfoResponse(metadata=self._secret_metadata(secret))

    async def SecretUpdate(self, request: api_pb2.SecretUpdateRequest) -> Empty:
        with self.state.lock:
            secret = self._object(request.secret_id, Secret, "Secret")
            for update in request.updates:
                if update.HasField("value"):
                    secret.values[update.key] = update.value
                else:  # like Modal: an update without a value removes its key
                    secret.values.pop(update.key, None)
        return Empty()

    async def SecretDelete(self, request: api_pb2.SecretDeleteRequest) -> Empty:
        with self.state.lock:
            secret = self._object(request.secret_id, Secret, "Secret")
            del self.state.by_id[secret.id]
            env = self.state.environment(secret.environment)
            if env is not None and env.secrets.get(secret.name) is secret:
                del env.secrets[secret.name]
        return Empty()

    async def SecretList(self, request: api_pb2.SecretListRequest) -> api_pb2.SecretListResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            secrets = _page(list(env.secrets.values()), request.pagination)
            items = [
                api_pb2.SecretListItem(
                    label=secret.name,
                    secret_id=secret.id,
                    created_at=secret.created_at,
                    environment_name=env.name,
                    metadata=self._secret_metadata(secret),
                )
                for secret in secrets
            ]
        return api_pb2.SecretListResponse(items=items, environment_name=env.name)

    # ---- volumes -------------------------------------------------------------------------------
    #
    # Two families of file RPCs, one per volume version (modal 1.6.4, `modal/volume.py`): the client
    # lists a v1 volume with VolumeListFiles, writes to it with MountPutFile + VolumePutFiles and
    # removes from it with VolumeRemoveFile; a v2 volume with VolumeListFiles2, VolumePutFiles2 (plus
    # block PUTs) and VolumeRemoveFile2. It reads files of both with VolumeGetFile2, and Modal's
    # servicer takes VolumePutFiles2 for v1 volumes too ("VolumePutFiles2 should support volumefs1
    # volumes now"): those two serve both versions. Whether the others serve a volume of the other
    # version is unknown, so here they refuse it, and a caller that picks the wrong family fails.

    def _volume(self, volume_id: str, rpc: str, *, v1: bool = True, v2: bool = True) -> Volume:
        """The volume of that id, refused (INVALID_ARGUMENT) when `rpc` does not serve its version."""
        volume = self._object(volume_id, Volume, "Volume")
        if not (v1 if volume.is_v1 else v2):
            version = 1 if volume.is_v1 else 2
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"{rpc} does not serve Volume '{volume_id}': it is a v{version} volume"
            )
        return volume

    def _volume_metadata(self, volume: Volume) -> api_pb2.VolumeMetadata:
        return api_pb2.VolumeMetadata(
            name=volume.name,
            version=volume.version,
            creation_info=api_pb2.CreationInfo(created_at=volume.created_at, created_by="control-plane"),
        )

    async def VolumeGetOrCreate(self, request: api_pb2.VolumeGetOrCreateRequest) -> api_pb2.VolumeGetOrCreateResponse:
        """A new volume gets the version asked for, UNSPECIFIED included (the client takes it for v1),
        as Modal's servicer records it. An existing one answers with its own version whatever was
        asked: the client compares a version it asked for itself (`_validate_volume_version`)."""
        with self.state.lock:
            env = self._environment(request.environment_name)
            if request.object_creation_type in ANONYMOUS_CREATION_TYPES:
                volume = Volume(self.state.new_id("vo"), "", env.name, self.now(), request.version)
                self.state.by_id[volume.id] = volume
            else:
                name = request.deployment_name
                volume = env.volumes.get(name)
                creation = request.object_creation_type
                if volume is None:
                    if creation not in (CREATE_IF_MISSING, CREATE_FAIL_IF_EXISTS):
                        raise GRPCError(Status.NOT_FOUND, f"Volume '{name}' not found in environment '{env.name}'")
                    volume = self.state.add_volume(env, name, self.now(), request.version)
                elif creation == CREATE_FAIL_IF_EXISTS:
                    raise GRPCError(
                        Status.ALREADY_EXISTS, f"Volume '{name}' already exists in environment '{env.name}'"
                    )
            return api_pb2.VolumeGetOrCreateResponse(
                volume_id=volume.id, version=volume.version, metadata=self._volume_metadata(volume)
            )

    async def VolumeHeartbeat(self, request: api_pb2.VolumeHeartbeatRequest) -> Empty:
        with self.state.lock:
            self._object(request.volume_id, Volume, "Volume")
        return Empty()

    async def VolumeList(self, request: api_pb2.VolumeListRequest) -> api_pb2.VolumeListResponse:
        with self.state.lock:
            env = self._environment(request.environment_name)
            volumes = _page(list(env.volumes.values()), request.pagination)
            items = [
                api_pb2.VolumeListItem(
                    label=volume.name,
                    volume_id=volume.id,
                    created_at=volume.created_at,
                    metadata=self._volume_metadata(volume),
                )
                for volume in volumes
            ]
        return api_pb2.VolumeListResponse(items=items, environment_name=env.name)

    async def VolumeDelete(self, request: api_pb2.VolumeDeleteRequest) -> Empty:
        with self.state.lock:
            volume = self._object(request.volume_id, Volume, "Volume")
            del self.state.by_id[volume.id]
            env = self.state.environment(volume.environment)
            if env is not None and env.volumes.get(volume.name) is volume:
                del env.volumes[volume.name]
        return Empty()

    async def VolumeCommit(self, request: api_pb2.VolumeCommitRequest) -> api_pb2.VolumeCommitResponse:
        """Both versions. Every write here reaches the volume as it is made, so a commit has nothing
        left to persist; it still names a volume that must exist (Modal's servicer: NOT_FOUND)."""
        with self.state.lock:
            self._object(request.volume_id, Volume, "Volume")
        return api_pb2.VolumeCommitResponse(skip_reload=False)

    async def VolumeReload(self, request: api_pb2.VolumeReloadRequest) -> Empty:
        """Both versions; like a commit, nothing to bring in here (every reader sees every write)."""
        with self.state.lock:
            self._object(request.volume_id, Volume, "Volume")
        return Empty()

    # v1 file RPCs.

    async def VolumeListFiles(
        self, request: api_pb2.VolumeListFilesRequest
    ) -> AsyncIterator[api_pb2.VolumeListFilesResponse]:
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumeListFiles", v2=False)
            entries = list_volume(volume, request.path, recursive=request.recursive)
        yield api_pb2.VolumeListFilesResponse(entries=_at_most(entries, request.max_entries))

    async def VolumePutFiles(self, request: api_pb2.VolumePutFilesRequest) -> Empty:
        """v1 writes: the contents of each file went up first with MountPutFile, by sha256, as the
        client's `_VolumeUploadContextManager` sends them; refusing to overwrite as Modal's servicer does."""
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumePutFiles", v2=False)
            missing = sorted({file.sha256_hex for file in request.files} - set(self.state.mount_files))
            if missing:
                raise GRPCError(Status.FAILED_PRECONDITION, f"File contents not uploaded: {missing[:3]}")
            for file in request.files:
                if request.disallow_overwrite_existing_files and normalize_path(file.filename) in volume.files:
                    raise GRPCError(Status.ALREADY_EXISTS, f"{file.filename}: already exists")
            for file in request.files:
                write_file(volume, file.filename, self.state.mount_files[file.sha256_hex], self.now())
        return Empty()

    async def VolumeRemoveFile(self, request: api_pb2.VolumeRemoveFileRequest) -> Empty:
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumeRemoveFile", v2=False)
            remove_path(volume, request.path, recursive=request.recursive)
        return Empty()

    async def VolumeGetFile(self, request: api_pb2.VolumeGetFileRequest) -> api_pb2.VolumeGetFileResponse:
        """The v1 read (1.6.4 itself reads both versions with VolumeGetFile2): the bytes of the range
        inline, or, past one block, in a blob, as Modal's servicer answers with `data_blob_id`."""
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumeGetFile", v2=False)
            path = normalize_path(request.path)
            if path not in volume.files:
                raise GRPCError(Status.NOT_FOUND, f"No such file: {request.path}")
            data = volume.files[path]
        start = min(request.start, len(data))
        end = len(data) if not request.len else min(len(data), start + request.len)
        piece = data[start:end]
        response = api_pb2.VolumeGetFileResponse(size=len(data), start=start, len=end - start)
        if len(piece) > VOLUME_BLOCK_SIZE:
            with self.state.lock:
                blob_id = self.state.new_id("bl")
            with self.blobs.lock:
                self.blobs.blobs[blob_id] = piece
            response.data_blob_id = blob_id
        else:
            response.data = piece
        return response

    # v2 file RPCs (VolumeGetFile2 and VolumePutFiles2 serve v1 volumes too, see above).

    async def VolumeListFiles2(
        self, request: api_pb2.VolumeListFiles2Request
    ) -> AsyncIterator[api_pb2.VolumeListFiles2Response]:
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumeListFiles2", v1=False)
            entries = list_volume(volume, request.path, recursive=request.recursive)
        yield api_pb2.VolumeListFiles2Response(entries=_at_most(entries, request.max_entries))

    async def VolumeGetFile2(self, request: api_pb2.VolumeGetFile2Request) -> api_pb2.VolumeGetFile2Response:
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumeGetFile2")
            path = normalize_path(request.path)
            if path not in volume.files:
                raise GRPCError(Status.NOT_FOUND, f"No such file: {request.path}")
            data = volume.files[path]
        start = min(request.start, len(data))
        end = len(data) if not request.len else min(len(data), start + request.len)
        # One URL per BLOCK_SIZE-aligned block the range touches, each serving exactly the bytes
        # of the range inside that block: what the client expects to read from it.
        urls = []
        block_start = start - start % VOLUME_BLOCK_SIZE
        while block_start < end:
            piece = data[max(start, block_start) : min(end, block_start + VOLUME_BLOCK_SIZE)]
            urls.append(f"{self.blob_url}/blocks/{self.blobs.put_block(piece)}")
            block_start += VOLUME_BLOCK_SIZE
        return api_pb2.VolumeGetFile2Response(get_urls=urls, size=len(data), start=start, len=end - start)

    async def VolumePutFiles2(self, request: api_pb2.VolumePutFiles2Request) -> api_pb2.VolumePutFiles2Response:
        missing = []
        for file_index, file in enumerate(request.files):
            for block_index, block in enumerate(file.blocks):
                with self.blobs.lock:
                    present = block.contents_sha256.hex() in self.blobs.blocks
                if not present:
                    missing.append(
                        api_pb2.VolumePutFiles2Response.MissingBlock(
                            file_index=file_index,
                            block_index=block_index,
                            put_url=f"{self.blob_url}/blocks/{block.contents_sha256.hex()}",
                        )
                    )
        if missing:
            return api_pb2.VolumePutFiles2Response(missing_blocks=missing)
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumePutFiles2")
            for file in request.files:
                path = normalize_path(file.path)
                if request.disallow_overwrite_existing_files and path in volume.files:
                    raise GRPCError(Status.ALREADY_EXISTS, f"{file.path}: already exists")
            for file in request.files:
                with self.blobs.lock:
                    data = b"".join(self.blobs.blocks[block.contents_sha256.hex()] for block in file.blocks)
                write_file(volume, file.path, data[: file.size], self.now())
        return api_pb2.VolumePutFiles2Response()

    async def VolumeRemoveFile2(self, request: api_pb2.VolumeRemoveFile2Request) -> Empty:
        with self.state.lock:
            volume = self._volume(request.volume_id, "VolumeRemoveFile2", v1=False)
            remove_path(volume, request.path, recursive=request.recursive)
        return Empty()

    # ---- blobs ---------------------------------------------------------------------------------

    async def BlobCreate(self, request: api_pb2.BlobCreateRequest) -> api_pb2.BlobCreateResponse:
        with self.state.lock:
            blob_id = self.state.new_id("bl")
        return api_pb2.BlobCreateResponse(
            blob_ids=[blob_id], upload_urls=api_pb2.UploadUrlList(items=[f"{self.blob_url}/blobs/{blob_id}"])
        )

    async def BlobGet(self, request: api_pb2.BlobGetRequest) -> api_pb2.BlobGetResponse:
        return api_pb2.BlobGetResponse(download_url=f"{self.blob_url}/blobs/{request.blob_id}")


# ---- volume file semantics, shared with the test helpers -------------------------------------------


def normalize_path(path: str) -> str:
    """Volume paths are relative to the volume root: "/a//b/" and "a/b" name the same thing."""
    normalized = posixpath.normpath("/" + path).lstrip("/")
    return "" if normalized == "." else normalized


def write_file(volume: Volume, path: str, data: bytes, now: float) -> None:
    path = normalize_path(path)
    volume.files[path] = bytes(data)
    volume.mtimes[path] = now


def remove_path(volume: Volume, path: str, *, recursive: bool) -> None:
    path = normalize_path(path)
    if path in volume.files:
        del volume.files[path]
        volume.mtimes.pop(path, None)
        return
    prefix = path + "/" if path else ""
    children = [p for p in volume.files if p.startswith(prefix)]
    if not children:
        raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {path}")
    if not recursive:
        raise GRPCError(Status.INVALID_ARGUMENT, f"{path} is a directory; pass recursive=True")
    for child in children:
        del volume.files[child]
        volume.mtimes.pop(child, None)


def list_volume(volume: Volume, path: str, *, recursive: bool) -> list[api_pb2.FileEntry]:
    """Entries under `path` as Modal lists them: a file path lists itself; a directory lists its
    children (directories are implied by the files in them), or everything below it if recursive."""
    path = normalize_path(path)
    file_type = api_pb2.FileEntry.FileType
    if path in volume.files:
        return [_file_entry(volume, path)]
    prefix = path + "/" if path else ""
    below = sorted(p for p in volume.files if p.startswith(prefix))
    if not below and path:
        raise GRPCError(Status.NOT_FOUND, f"No such file or directory: {path}")
    entries: dict[str, api_pb2.FileEntry] = {}
    for file_path in below:
        parts = file_path[len(prefix) :].split("/")
        depth = len(parts) if recursive else 1
        for level in range(1, depth + 1):
            entry_path = prefix + "/".join(parts[:level])
            if entry_path in entries:
                continue
            if entry_path == file_path:
                entries[entry_path] = _file_entry(volume, file_path)
            else:
                entries[entry_path] = api_pb2.FileEntry(path=entry_path, type=file_type.DIRECTORY)
    return list(entries.values())


def _file_entry(volume: Volume, path: str) -> api_pb2.FileEntry:
    return api_pb2.FileEntry(
        path=path,
        type=api_pb2.FileEntry.FileType.FILE,
        size=len(volume.files[path]),
        mtime=int(volume.mtimes.get(path, 0)),
    )


def _at_most(entries: list, max_entries: int) -> list:
    """A listing cut to `max_entries` when the request sets one (0: all of them)."""
    return entries[:max_entries] if max_entries else entries


def _page(objects: list, pagination: api_pb2.ListPagination) -> list:
    """Newest first, created strictly before `created_before` when given, at most `max_objects`."""
    objects = sorted(objects, key=lambda obj: obj.created_at, reverse=True)
    if pagination.created_before:
        objects = [obj for obj in objects if obj.created_at < pagination.created_before]
    if pagination.max_objects:
        objects = objects[: pagination.max_objects]
    return objects
