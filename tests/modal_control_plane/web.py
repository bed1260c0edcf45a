"""What answers at a deployed app's web URL: the app's containers, speaking SGLang's HTTP API.

`WebFront` is a small HTTP server on 127.0.0.1; the control plane hands out its URLs for web
endpoints (`ControlPlane(web_url_of=front.url_for)`), then `front.attach(cp)`. Each request first
meets Modal's edge (edge.py): an endpoint defined with `requires_proxy_auth` answers 401 there to a
request without the `Modal-Key`/`Modal-Secret` of a token valid in the app's environment, and then
no container starts and none sees the request. A request the edge lets through goes to a container
of the live version of the app that serves the URL, as Modal routes it (containers.py): a running
one, or a new one (a cold start). The container answers /health, /health_generate, /metrics and
/v1/chat/completions like SGLang 0.5.23 (with `--enable-metrics`): the first three without its API
key, as sglang/srt/utils/auth.py `decide_request_auth` leaves /health*, /ready* and /metrics open;
the chat endpoint wants the Bearer key THAT CONTAINER read from its secret when it
started, never the secret's value of the moment: a key rotated on Modal is refused by a container
that started before, as SGLang refuses it.

`health_status`/`chat_status` choose the answers. Every request the front receives is recorded:
`requests` (method, path, authorized: the container accepted the Bearer key), `served_by` the
container (task id), None when none saw it (no deployed app serves the URL, or the edge refused it),
and `edge_records` the edge's verdict (`EdgeRecord`); `refused_at_edge()` lists the 401s.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from . import edge

if TYPE_CHECKING:
    from email.message import Message

    from .server import ControlPlane
    from .state import Container

# The variable of the container's secrets that holds the key SGLang requires.
API_KEY_VARIABLE = "API_KEY"
NO_APP = "no_app"  # EdgeRecord.reason when no deployed app serves the URL (Modal answers 404)


@dataclass(frozen=True)
class EdgeRecord:
    """What the edge made of one request. `reason`: NO_APP or an edge.Verdict reason (edge.OPEN,
    AUTHENTICATED, MISSING, INVALID); `status`: the edge's own answer (401, 404), 0 when the request
    went on to a container (`task_id`); `token_id`: the Modal-Key sent, if any (never the secret)."""

    method: str
    path: str
    reason: str
    status: int
    token_id: str = ""
    task_id: str | None = None


class WebFront:
    def __init__(self, key_variable: str = API_KEY_VARIABLE):
        self.key_variable = key_variable
        self.health_status = 200
        self.chat_status = 200
        self.requests: list[tuple[str, str, bool]] = []
        self.served_by: list[str | None] = []
        self.edge_records: list[EdgeRecord] = []
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

    def refused_at_edge(self) -> list[EdgeRecord]:
        """The requests the edge answered 401 itself (no container saw them)."""
        with self._lock:
            return [record for record in self.edge_records if record.status == 401]

    def _route(self, method: str, path: str, headers: Message) -> tuple[Container | None, EdgeRecord]:
        """The edge's verdict on a request and, if it passed, the container that takes it."""
        if self._cp is None:
            return None, EdgeRecord(method, path, NO_APP, 404)
        url = f"http://127.0.0.1:{self.port}{path}"
        with self._cp.state.lock:
            found = self._cp.containers.web_function_at(url)
            if found is None:
                return None, EdgeRecord(method, path, NO_APP, 404)
            app, record = found
            verdict = edge.judge(self._cp.state, app, record, url, headers)
            if not verdict.passed:
                return None, EdgeRecord(method, path, verdict.reason, verdict.status, verdict.token_id)
            container = self._cp.containers.serve(app, record)
            return container, EdgeRecord(method, path, verdict.reason, 0, verdict.token_id, container.task_id)

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

            def _reply_text(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, method: str) -> tuple[Container | None, bool, EdgeRecord]:
                container, record = front._route(method, self.path, self.headers)
                key = container.secret_values.get(front.key_variable) if container is not None else None
                authorized = bool(key) and self.headers.get("Authorization", "") == f"Bearer {key}"
                with front._lock:
                    front.requests.append((method, self.path, authorized))
                    front.served_by.append(container.task_id if container is not None else None)
                    front.edge_records.append(record)
                return container, authorized, record

            def _refused(self, record: EdgeRecord) -> bool:
                """Answer for the edge when it refused the request; whether it did."""
                if record.status != 401:
                    return False
                self._reply_text(401, edge.refusal_body(record.reason))
                return True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                container, _, record = self._serve("GET")
                if self._refused(record):
                    return
                if container is None:
                    self._reply(404, {"error": "not found"})
                elif self.path.endswith(("/health", "/health_generate")):
                    self._reply(front.health_status, {"status": "ok" if front.health_status == 200 else "loading"})
                elif self.path.endswith("/metrics"):
                    self._reply_text(200, "# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs 0\n")
                else:
                    self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                container, authorized, record = self._serve("POST")
                if self._refused(record):
                    return
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
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    self._reply(200, {"object": "chat.completion", "model": request.get("model"), "choices": [choice]})

        return Handler
