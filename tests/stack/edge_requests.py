"""The requests an idle deployment meets from anyone who knows its URL, and how they are sent: shared
by the edge-auth stack tests and bench/exposure.py, so the bench measures what the tests assert."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from infra.smoke import smoke_request_body
from tests.modal_control_plane import ControlPlane

from .harness import TEST_API_KEY

Request = tuple[str, dict[str, str], dict | None]  # URL, headers, JSON body (None: a GET)


def http_status(url: str, headers: dict[str, str], body: dict | None = None, timeout: float = 60) -> int:
    """The status the edge (or the server behind it) answers with; an error status is an answer too."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def hostile_requests(cp: ControlPlane, outputs: dict, client: str) -> dict[str, Request]:
    """Anonymous and hostile requests to the deployed server of a stack with these outputs: none
    carries the headers of a token allowed in its environment. `client` names one of the stack's
    client tokens, whose key is sent with a wrong secret. Makes on `cp` a token of another
    environment and one revoked by hand."""
    environment = outputs["modal_environment"]
    base = outputs["openai_base_url"].removesuffix("/v1")
    chat_url = f"{base}/v1/chat/completions"
    chat = smoke_request_body(outputs["served_model_name"])
    known = outputs["client_headers"][client]
    cp.create_environment("elsewhere")
    elsewhere = cp.create_proxy_token("another environment's", environments=["elsewhere"])
    revoked = cp.create_proxy_token("revoked by hand", environments=[environment])
    cp.revoke_proxy_token(revoked.token_id, environment)
    bearer = {"Authorization": f"Bearer {TEST_API_KEY}"}
    return {
        "no headers": (chat_url, {}, chat),
        "wrong secret": (chat_url, {**known, "Modal-Secret": "ws-not-the-secret"}, chat),
        "revoked token": (chat_url, revoked.headers, chat),
        "token of another environment": (chat_url, elsewhere.headers, chat),
        "the API key alone": (chat_url, bearer, chat),
        "/health_generate": (f"{base}/health_generate", bearer, None),  # SGLang leaves it open
        "/metrics": (f"{base}/metrics", {}, None),  # SGLang leaves it open
        "a random path": (f"{base}/wp-login.php", {}, None),
    }
