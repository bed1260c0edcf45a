"""What answers at a deployed app's web URL: the app's containers, speaking SGLang's HTTP API.

`WebFront` is a small HTTP server on 127.0.0.1; the control plane hands out its URLs for web
endpoints (`ControlPlane(web_url_of=front.url_for)`), then `front.attach(cp)`. Each request goes to
a container of the live version of the app that serves the URL, as Modal routes it (containers.py):
a running one, or a new one (a cold start). The container answers /health and
/v1/chat/completions like SGLang, and the chat endpoint wants the Bearer key THAT CONTAINER read
from its secret when it started, never the secret's value of the moment: a key rotated on Modal is
refused by a container that started before, as SGLang refuses it.

`health_status`/`chat_status` choose the answers; `requests` records (method, path, authorized),
and `served_by` the container (task id) of each request, None when no deployed app serves the URL.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import ControlPlane
    from .state import Container

# The variable of the container's secrets that holds the key SGLang requires.
API_KEY_VARIABLE = "API_KEY"


class WebFront:
    def __init__(self, key_variable: str = API_KEY_VARIABLE):
        self.key_variable = key_variable
        self.health_status = 200
        self.chat_status = 200
        self.requests: list[tuple[str, str, bool]] = []
        self.served_by: list[str | None] = []
        self._cp: ControlPlane | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> WebFront:
        self._thread.start()
        return self

    def attach(self, cp: ControlPlane) -> WebFront:
        self._cp = cp
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, environment: str, slug: str) -> str:
        return f"http://127.0.0.1:{self.port}/{environment}/{slug}"

    def chat_requests(self) -> list[tuple[str, str, bool]]:
        with self._lock:
            return [r for r in self.requests if r[1].endswith("/v1/chat/completions")]

    def _container_for(self, path: str) -> Container | None:
        if self._cp is None:
            return None
        with self._cp.state.lock:
            return self._cp.containers.for_web_request(f"http://127.0.0.1:{self.port}{path}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def _reply(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, method: str) -> tuple[Container | None, bool]:
                container = front._container_for(self.path)
                key = container.secret_values.get(front.key_variable) if container is not None else None
                authorized = bool(key) and self.headers.get("Authorization", "") == f"Bearer {key}"
                with front._lock:
                    front.requests.append((method, self.path, authorized))
                    front.served_by.append(container.task_id if container is not None else None)
                return container, authorized

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                container, _ = self._serve("GET")
                if container is None or not self.path.endswith("/health"):
                    self._reply(404, {"error": "not found"})
                else:
                    self._reply(front.health_status, {"status": "ok" if front.health_status == 200 else "loading"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                container, authorized = self._serve("POST")
                if container is None or not self.path.endswith("/v1/chat/completions"):
                    self._reply(404, {"error": "not found"})
                elif not authorized:
                    self._reply(401, {"error": "unauthorized"})
                elif front.chat_status != 200:
                    # Like SGLang errors that quote the request: the key comes back in the body.
                    self._reply(front.chat_status, {"object": "error", "message": "the model is on fire",
                                                    "request_headers": dict(self.headers)})  # fmt: skip
                else:
                    message = {"role": "assistant", "content": "ready", "reasoning_content": None}
                    self._reply(200, {"object": "chat.completion", "model": request.get("model"),
                                      "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        return Handler
