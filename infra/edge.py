"""Who gets past Modal's edge: the stack's proxy auth tokens, and the preview's word on an open endpoint.

With `deployment.edge.requires_proxy_auth` (the default), Modal answers every request to the server
that lacks a valid `Modal-Key`/`Modal-Secret` pair with 401 before any container starts. The stack
makes the pairs: one token per name in `glm-modal:clientTokens`, plus its own (`stack`), which the
smoke test sends and the keep-alive reads from a Modal secret. Each is scoped to the stack's
environment, so staging's tokens never open prod.

Rotation with overlap: add a new name, `pulumi up`, move the client to the new token, then remove the
old name and `pulumi up` again, which revokes and deletes the old token. Tokens are kept while the
edge is open (requires_proxy_auth false), so closing it again needs no new secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.settings import DEPLOYMENT_KEY, PRODUCTION_STACKS, StackSettings, config_key
from providers.proxy_token import ModalProxyToken
from providers.secret import ModalSecret

# The name of the token the stack keeps for itself. Client tokens are labelled under "clients/" and
# their resources are named apart, so a client may be called this too.
STACK_TOKEN = "stack"


@dataclass(frozen=True)
class EdgeTokens:
    stack_token: ModalProxyToken
    clients: dict[str, ModalProxyToken]
    # The Modal secret holding the stack token for the keep-alive; None when nothing reads it.
    keepalive_secret: ModalSecret | None

    def headers(self, token: ModalProxyToken) -> pulumi.Output[dict[str, str]]:
        """What a client sends Modal's edge: the token's id and secret (a secret Output)."""
        return pulumi.Output.secret(
            pulumi.Output.all(token.token_id, token.token_secret).apply(
                lambda pair: {"Modal-Key": pair[0], "Modal-Secret": pair[1]}
            )
        )


def token_label(environment: str, app_name: str, name: str, *, client: bool) -> str:
    """How a token is named on Modal: where it works, for which app, for whom (names are not unique;
    this makes them readable in `modal workspace proxy-tokens list`)."""
    return f"{environment}/{app_name}/{'clients/' if client else ''}{name}"


def declare_tokens(settings: StackSettings, env_name: pulumi.Output[str]) -> EdgeTokens:
    cfg = settings.deployment

    def token(resource_name: str, name: str, *, client: bool) -> ModalProxyToken:
        label = env_name.apply(lambda env: token_label(env, cfg.app_name, name, client=client))
        return ModalProxyToken(resource_name, name=label, environment=env_name)

    stack_token = token("stack-proxy-token", STACK_TOKEN, client=False)
    clients = {name: token(f"client-proxy-token-{name}", name, client=True) for name in settings.infra.client_tokens}

    keepalive_secret = None
    if cfg.keepalive.enabled and cfg.edge.requires_proxy_auth:
        names = cfg.secrets
        keepalive_secret = ModalSecret(
            "edge-token-secret",
            name=names.edge_token,
            environment=env_name,
            values=pulumi.Output.all(stack_token.token_id, stack_token.token_secret).apply(
                lambda pair: {names.edge_token_id_key: pair[0], names.edge_token_secret_key: pair[1]}
            ),
        )
    return EdgeTokens(stack_token=stack_token, clients=clients, keepalive_secret=keepalive_secret)


def open_endpoint_warning(settings: StackSettings) -> str | None:
    """The preview's warning for an endpoint anyone may call (a prod one only gets here when
    `allowPublicEndpoint` says it is meant: infra/settings.py refuses it otherwise)."""
    cfg = settings.deployment
    if cfg.edge.requires_proxy_auth:
        return None
    where = "this production stack" if settings.stack in PRODUCTION_STACKS else f"stack '{settings.stack}'"
    return (
        f"{config_key(DEPLOYMENT_KEY)}.edge.requires_proxy_auth is false: {where} serves without proxy auth, so "
        f"any request to its URL (no key, a wrong key, any path, /metrics, /health_generate) starts a "
        f"{cfg.hardware.modal_gpu} container and pays its cold start and {cfg.scaling.scaledown_window} s "
        "scaledown window; set it to true to have Modal's edge refuse them before any container starts."
    )


def warn_if_open(settings: StackSettings) -> None:
    warning = open_endpoint_warning(settings)
    if warning is not None:
        pulumi.log.warn(warning)
