"""HttpCheck's own code paths where the bearer token could leak, run in this process against a real
local HTTP server (the end-to-end behaviour through the engine is in tests/stack/test_smoke_test.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from providers.http_check import BODY_EXCERPT_CHARS, HttpCheckFailed, HttpCheckInputs, HttpCheckProvider, run_check
from providers.shared import ProviderError

TOKEN = "tok-canary-5d1e9b7c3a2f"


def props(**changes: object) -> dict:
    return {"base_url": "http://127.0.0.1:9", "request_path": "/v1/chat/completions", "request_body": {}, **changes}


@pytest.fixture
def echoing_server() -> Iterator[str]:
    """/health answers 200; the POST answers 500 with a body that echoes the token right across the
    point where the error's excerpt is cut."""
    body = ("e" * (BODY_EXCERPT_CHARS - 8) + TOKEN).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(200, b"ok")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(500, body)

        def _answer(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_error_body_cut_through_the_echoed_token_leaves_no_fragment_of_it(echoing_server):
    inputs = HttpCheckInputs.model_validate(props(base_url=echoing_server, bearer_token=TOKEN))
    # The provider registers the token before it runs the check; do the same here.
    HttpCheckProvider._inputs(props(base_url=echoing_server, bearer_token=TOKEN))

    with pytest.raises(HttpCheckFailed) as raised:
        run_check(inputs, sleep=lambda _: None)

    message = str(raised.value)
    assert "answered 500" in message
    assert TOKEN[:8] not in message  # "tok-cana": what a cut before redaction leaves


def test_invalid_inputs_at_create_are_reported_without_their_values():
    # pydantic's own message quotes the offending input (`input_value=...`): here, the token.
    with pytest.raises(ProviderError) as raised:
        HttpCheckProvider().create(props(bearer_token={"value": TOKEN}))

    message = str(raised.value)
    assert "bearer_token" in message
    assert "canary" not in message
