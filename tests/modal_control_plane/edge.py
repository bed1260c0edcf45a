"""Modal's edge in front of a deployed web endpoint: which requests may reach a container.

From Modal's docs (https://modal.com/docs/guide/webhook-proxy-auth): an endpoint defined with
`requires_proxy_auth=True` (`fastapi_endpoint`, `asgi_app`, `wsgi_app`, `web_server`) cannot be
called without a proxy auth token; clients send its id and secret in the `Modal-Key` and
`Modal-Secret` headers, and a request without them is answered 401 with the body
"modal-http: missing credentials for proxy authorization", by Modal's HTTP layer, before anything of
the app runs: no container starts and none sees the request. An endpoint without it is open: the
edge ignores these headers and lets everything through.

Which token opens which environment (state.ProxyToken.valid_in): a scoped token only the
environments it is allowed in, an unscoped (workspace-wide) one every environment of the workspace.

Unknown, and so plausible here: the answer to credentials that are there but wrong (an unknown id, a
wrong secret, a deleted token, a token not valid in the app's environment): 401 with
`INVALID_CREDENTIALS`, a text of our own (tests must not depend on it); one header without the other
counts as missing credentials. Only the two headers count: an `Authorization: Bearer` (SGLang's API
key) is no proxy auth, and the path does not matter (/health, /metrics, anything).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .containers import function_definition

if TYPE_CHECKING:
    from .state import App, ControlPlaneState, FunctionRecord

KEY_HEADER = "Modal-Key"
SECRET_HEADER = "Modal-Secret"
MISSING_CREDENTIALS = "modal-http: missing credentials for proxy authorization"  # Modal's documented body
INVALID_CREDENTIALS = "modal-http: invalid credentials for proxy authorization"  # ours: Modal's is unknown

OPEN = "open"  # the endpoint does not require proxy auth
AUTHENTICATED = "authenticated"  # it does, and the request carries a token valid in its environment
MISSING = "missing_credentials"
INVALID = "invalid_credentials"


@dataclass(frozen=True)
class Verdict:
    reason: str  # OPEN | AUTHENTICATED | MISSING | INVALID
    status: int = 0  # the edge's own answer (401, its text: `refusal_body`), or 0: on to a container
    token_id: str = ""  # the Modal-Key the request carried (never the secret)

    @property
    def passed(self) -> bool:
        return self.status == 0


def refusal_body(reason: str) -> str:
    """The text of the edge's 401 for a verdict's `reason` (MISSING or INVALID)."""
    return MISSING_CREDENTIALS if reason == MISSING else INVALID_CREDENTIALS


def requires_proxy_auth(record: FunctionRecord, url: str) -> bool:
    """Whether the endpoint at `url` was defined with `requires_proxy_auth`. A web function carries
    its webhook config itself; a class carries one per web method (the one whose URL `url` is at,
    or under; every one if none matches, the strict reading)."""
    function = function_definition(record)
    if function is None:
        return False  # not defined yet (FunctionPrecreate only): nothing could serve it
    configs = [record.definition.webhook_config, function.webhook_config]
    if any(config.requires_proxy_auth for config in configs):
        return True
    methods = record.handle_metadata.method_handle_metadata if record.handle_metadata is not None else {}
    web_methods = {name: m for name, m in function.method_definitions.items() if m.webhook_config.type}
    at_url = [
        method
        for name, method in web_methods.items()
        if (method_url := methods[name].web_url if name in methods else "")
        and (url == method_url or url.startswith(method_url.rstrip("/") + "/"))
    ]
    return any(method.webhook_config.requires_proxy_auth for method in at_url or web_methods.values())


def judge(state: ControlPlaneState, app: App, record: FunctionRecord, url: str, headers: Mapping[str, str]) -> Verdict:
    """The edge's verdict on a request to `url` (served by `record` of `app`); hold `state.lock`."""
    if not requires_proxy_auth(record, url):
        return Verdict(OPEN)
    key, secret = headers.get(KEY_HEADER) or "", headers.get(SECRET_HEADER) or ""
    if not key or not secret:
        return Verdict(MISSING, 401, key)
    token = state.proxy_tokens.get(key)
    environment = state.environment(app.environment)
    valid = (
        token is not None
        and environment is not None
        and hmac.compare_digest(secret.encode(), token.secret.encode())  # a real edge compares in constant time
        and token.valid_in(environment.id)
    )
    return Verdict(AUTHENTICATED, token_id=key) if valid else Verdict(INVALID, 401, key)
