"""A Modal proxy auth token as a Pulumi resource: the `Modal-Key`/`Modal-Secret` pair that Modal's
edge wants before a request to an endpoint with `requires_proxy_auth` reaches a container.

Inputs:  name (a label: Modal's names are not unique), environment (where the token authenticates).
Outputs: name, environment, token_id, token_secret (secret), allowed (whether Modal lists it as
         allowed in the environment at the last create, update or refresh).
Id:      the token id (`wk-...`).

Created scoped (providers/modal_internals.py says why: the public create makes a workspace-wide token,
which opens every environment), then allowed in its environment; destroy revokes it there and deletes
it. Renaming it is an update (`proxy_tokens.update`); a new environment replaces it (a new token with a
new secret: clients must fetch it again).

What Modal can and cannot tell us. The secret is shown once, by the create, so:
- nothing can be adopted: a token of the same name is not ours to use (its secret is unknown, and names
  are not unique). A create never touches other tokens; one it finds with its name (the leftover of a
  create interrupted before the engine recorded it, or anyone's) is reported with its id, to delete
  with `modal workspace proxy-tokens delete <id>` once nothing uses it.
- `pulumi import` is refused: the stack could hold the token but never its secret.
- `refresh` sees whether the token still exists (deleted by hand: it leaves the state and the next `up`
  creates a new one, with a new secret) and whether it is still allowed in its environment (revoked by
  hand: `allowed` turns false, the next preview shows an update, and the `up` allows it again). It
  cannot see a leaked secret: rotate by adding a new name and removing the old one (README).
"""

from __future__ import annotations

from typing import Any

import modal
import pulumi
import pydantic
from modal.exception import NotFoundError
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, UpdateResult
from pulumi.runtime import rpc

from providers.base import EnvironmentName, InputModel, ModalProvider, precise_diff
from providers.modal_access.lookups import environment_exists, found_in
from providers.modal_access.retry import modal_call
from providers.modal_internals import create_scoped_proxy_token
from providers.shared import ProviderError, progress, register_secrets

# Inputs whose change means another token.
REPLACE_ON = ("environment",)
# Every input, in the order a diff reports them.
FIELDS = ("name", "environment")
# The output the engine must encrypt in state.
ADDITIONAL_SECRET_OUTPUTS = ("token_secret",)
# Modal's limit is not documented; a label this long is already unreadable in the dashboard.
MAX_NAME_LENGTH = 128


class ProxyTokenInputs(InputModel):
    name: str = pydantic.Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9._/:-]+$")
    environment: EnvironmentName


def _workspace() -> Any:
    return modal.Workspace.from_context()


def _tokens(environment: str | None = None) -> list[Any]:
    """Modal's list of the workspace's tokens, or of the scoped ones allowed in `environment`."""
    what = "list proxy tokens" + (f" of environment '{environment}'" if environment else "")
    if environment is None:
        return modal_call(lambda: _workspace().proxy_tokens.list(), what=what)
    # An environment deleted by hand allows nothing.
    return modal_call(lambda: found_in(environment, lambda: _workspace().proxy_tokens.list(environment)) or [],
                      what=what)  # fmt: skip


def _allowed(token_id: str, environment: str) -> bool:
    return any(token.token_id == token_id for token in _tokens(environment))


def _allow(token_id: str, environment: str) -> None:
    modal_call(
        lambda: _workspace().proxy_tokens.allow(token_id, environment),
        what=f"allow proxy token {token_id} in environment '{environment}'",
    )


def _as_secret(value: str) -> Any:
    # The wire form of a secret (see providers/secret.py `_as_secret` for why not Output.secret).
    return rpc.wrap_rpc_secret(value)


def _outputs(inputs: ProxyTokenInputs, token_id: str, token_secret: str, allowed: bool) -> dict[str, Any]:
    return {
        "name": inputs.name,
        "environment": inputs.environment,
        "token_id": token_id,
        "token_secret": _as_secret(token_secret),
        "allowed": allowed,
    }


class ProxyTokenProvider(ModalProvider):
    inputs_model = ProxyTokenInputs

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = precise_diff(olds, news, FIELDS, replace_on=REPLACE_ON, stables=("token_id",))
        if olds.get("allowed") is False and not result.replaces:
            # Revoked by hand (seen by a refresh): the update allows it again.
            result.changed.append("allowed")
            result.changes = True
        return result

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = self.validated(props)
        where = f"proxy token '{inputs.name}'"
        namesakes = [token.token_id for token in _tokens() if token.name == inputs.name]
        token_id, token_secret = modal_call(create_scoped_proxy_token, inputs.name, what=f"create {where}")
        register_secrets([token_secret])
        _allow(token_id, inputs.environment)
        progress(f"{where} created ({token_id}), allowed in environment '{inputs.environment}'")
        if namesakes:
            progress(
                f"{where}: other tokens of this name exist ({', '.join(namesakes)}), not held by this stack "
                "(e.g. left by an interrupted create: nobody knows their secrets); delete each with "
                "`modal workspace proxy-tokens delete <id>` once nothing uses it"
            )
        return CreateResult(token_id, _outputs(inputs, token_id, token_secret, allowed=True))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        secret = props.get("token_secret")
        if not isinstance(secret, str) or not secret:
            raise ProviderError(
                f"proxy token {id_}: Modal shows a token's secret only when it is created, so an imported "
                "token could never be handed to a client; let the stack create its own (`pulumi up`) and "
                "delete this one when nothing uses it"
            )
        register_secrets([secret])
        found = next((token for token in _tokens() if token.token_id == id_), None)
        if found is None:
            return ReadResult("", {})  # deleted on Modal: the engine drops it, the next `up` creates a new one
        environment = props.get("environment", "")
        allowed = bool(environment) and _allowed(id_, environment)
        outputs = {**props, "name": found.name, "token_secret": _as_secret(secret), "allowed": allowed}
        return ReadResult(id_, outputs)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        inputs = self.validated(news)
        secret = olds.get("token_secret") or ""
        register_secrets([secret])
        if olds.get("name") != inputs.name:
            modal_call(
                lambda: _workspace().proxy_tokens.update(id_, name=inputs.name),
                what=f"rename proxy token {id_} to '{inputs.name}'",
            )
            progress(f"proxy token {id_} renamed '{inputs.name}'")
        if not _allowed(id_, inputs.environment):
            _allow(id_, inputs.environment)
            progress(f"proxy token '{inputs.name}' ({id_}) allowed in environment '{inputs.environment}' again")
        return UpdateResult(_outputs(inputs, id_, secret, allowed=True))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        environment = props.get("environment", "")
        name = props.get("name", "")

        def revoke() -> None:
            try:
                _workspace().proxy_tokens.revoke(id_, environment)
            except NotFoundError:
                pass  # the token is gone already

        def delete() -> None:
            try:
                _workspace().proxy_tokens.delete(id_)
            except NotFoundError:
                pass  # deleted by hand already (Modal's servicer answers that silently; Modal may not)

        # Revoked first, so a delete that fails afterwards still leaves the environment closed to it.
        if environment and environment_exists(environment):
            modal_call(revoke, what=f"revoke proxy token {id_} in environment '{environment}'")
        modal_call(delete, what=f"delete proxy token {id_}")
        progress(f"proxy token '{name}' ({id_}) revoked and deleted")


class ModalProxyToken(Resource, module="modal", name="ProxyToken"):
    """A scoped Modal proxy auth token allowed in one environment; its secret stays secret in state."""

    name: pulumi.Output[str]
    environment: pulumi.Output[str]
    token_id: pulumi.Output[str]
    token_secret: pulumi.Output[str]
    allowed: pulumi.Output[bool]

    def __init__(
        self,
        resource_name: str,
        *,
        name: pulumi.Input[str],
        environment: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"name": name, "environment": environment, "token_id": None, "token_secret": None, "allowed": None}
        secret_outputs = pulumi.ResourceOptions(additional_secret_outputs=list(ADDITIONAL_SECRET_OUTPUTS))
        super().__init__(ProxyTokenProvider(), resource_name, props, pulumi.ResourceOptions.merge(opts, secret_outputs))
