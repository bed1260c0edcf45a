"""The HTTP side of the control plane: where Modal would hand out S3/R2 URLs.

The modal client moves bulk data over plain HTTP, outside gRPC:
- blobs (large function arguments/results, large mount files): `BlobCreate` returns an upload URL
  that the client PUTs to, checking that the response's ETag is the md5 of the body (as S3 does);
  `BlobGet` returns a URL it GETs.
- volume blocks (8 MiB pieces of volume files, addressed by sha256): `VolumePutFiles2` names the
  blocks it lacks and a PUT URL for each; `VolumeGetFile2` returns one GET URL per block.

Both live in one aiohttp app bound to 127.0.0.1 on a free port, on the control plane's loop.
"""

from __future__ import annotations

import hashlib
import threading

from aiohttp import web


class BlobStore:
    """Blobs by id and volume blocks by sha256 hex, shared with the gRPC handlers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blobs: dict[str, bytes] = {}
        self.blocks: dict[str, bytes] = {}

    def put_block(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self.lock:
            self.blocks[digest] = data
        return digest


def build_app(store: BlobStore) -> web.Application:
    async def put_blob(request: web.Request) -> web.Response:
        body = await request.read()
        with store.lock:
            store.blobs[request.match_info["blob_id"]] = body
        # S3 answers a single-part upload with the quoted md5 hex of the body; the client checks it.
        return web.Response(headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    async def get_blob(request: web.Request) -> web.Response:
        with store.lock:
            body = store.blobs.get(request.match_info["blob_id"])
        if body is None:
            return web.Response(status=404, text="no such blob")
        return web.Response(body=body)

    async def put_block(request: web.Request) -> web.Response:
        body = await request.read()
        expected = request.match_info["sha256"]
        if hashlib.sha256(body).hexdigest() != expected:
            return web.Response(status=400, text="block contents do not match their sha256")
        store.put_block(body)
        # The client hands this body back in VolumePutFiles2 as the block's `put_response`.
        return web.Response(body=expected.encode())

    async def get_block(request: web.Request) -> web.Response:
        with store.lock:
            body = store.blocks.get(request.match_info["sha256"])
        if body is None:
            return web.Response(status=404, text="no such block")
        return web.Response(body=body)

    app = web.Application(client_max_size=1024**3)
    app.add_routes(
        [
            web.put("/blobs/{blob_id}", put_blob),
            web.get("/blobs/{blob_id}", get_blob),
            web.put("/blocks/{sha256}", put_block),
            web.get("/blocks/{sha256}", get_block),
        ]
    )
    return app


async def start(store: BlobStore) -> tuple[web.AppRunner, str]:
    """Serve the blob app on 127.0.0.1:<free port>; returns the runner and the base URL."""
    runner = web.AppRunner(build_app(store), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # aiohttp exposes no public accessor
    return runner, f"http://127.0.0.1:{port}"
