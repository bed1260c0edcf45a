"""RPCs for proxy auth tokens ("webhook tokens" in modal_proto), as modal 1.6.4's
`Workspace.proxy_tokens` sends them (modal/_workspace.py `_WorkspaceProxyTokenManager`):

    create(name)          -> WebhookTokenCreate (`scoped` unset: False; the raw request can set it)
    update(id, name=)     -> WebhookTokenUpdate (answers the updated WebhookToken)
    list()                -> WebhookTokenList
    list(environment)     -> WebhookTokenListForEnvironment
    allow(id, environment)  -> EnvironmentGetOrCreate (the name to an id), WebhookTokenEnvironmentAdd
    revoke(id, environment) -> EnvironmentGetOrCreate, WebhookTokenEnvironmentRemove
    delete(id)            -> WebhookTokenDelete
    (none)                -> WebhookTokenEnvironmentList (in the proto; the ids a token is allowed in)

Every call hydrates the Workspace first (WorkspaceNameLookup), answered here too.

As Modal's own servicer answers them (modal-client py/test/conftest.py, "Proxy auth (webhook) tokens"):
add/remove of an unknown token is NOT_FOUND "Webhook token not found"; delete of an unknown id is
silent (by default: see `ProxyTokenAnswers.delete_missing`); ListForEnvironment lists only SCOPED
tokens explicitly allowed in that environment, an empty name meaning the default environment.
Stricter than that servicer, where it is lax and Modal surely is not: tokens keep their name,
`created_at` (the plane's clock) and `created_by`; ids are "wk-" + random and secrets "ws-" + random
(the docs' shapes), never sequential; the secret is answered by the create only (the proto's
WebhookToken has no secret field); update and EnvironmentList of an unknown token are NOT_FOUND; a
ListForEnvironment naming a missing environment is answered like any missing environment
(`EnvironmentAnswers.missing_status`), not with an empty list.

Where Modal's answer is unknown, `ProxyTokenAnswers` (the plane's `proxy_token_answers`) offers each
plausible one. Where a token is valid, and what the edge does with it: state.ProxyToken, edge.py.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from google.protobuf.empty_pb2 import Empty
from grpclib import GRPCError, Status
from modal_proto import api_pb2

from .state import USERNAME, WORKSPACE, Environment, ProxyToken

if TYPE_CHECKING:
    from .state import ControlPlaneState

TOKEN_NOT_FOUND = "Webhook token not found"  # Modal's servicer's wording
# The id of the user behind our client token (UserIdentity.user_id; its username is state.USERNAME).
CREATOR_USER_ID = "us-control-plane-test"

# Random parts as long as those of Modal's "ak-"/"as-" tokens (22 letters and digits).
_ALPHABET = string.ascii_letters + string.digits
_RANDOM_LENGTH = 22

DuplicateNameAnswer = Literal["allowed", "already_exists"]
DUPLICATE_NAME_ANSWERS: tuple[DuplicateNameAnswer, ...] = ("allowed", "already_exists")
UnknownEnvironmentAnswer = Literal["not_found", "accepted"]
UNKNOWN_ENVIRONMENT_ANSWERS: tuple[UnknownEnvironmentAnswer, ...] = ("not_found", "accepted")
MissingDeleteAnswer = Literal["silent", "not_found"]
MISSING_DELETE_ANSWERS: tuple[MissingDeleteAnswer, ...] = ("silent", "not_found")


@dataclass
class ProxyTokenAnswers:
    """How the plane answers about proxy tokens where the real server's answer is unknown.

    `duplicate_name`: a create (or a rename) to a name another token has. Modal documents names as
    optional labels ("An optional name to help identify the token"), says nothing of uniqueness, and
    third-party docs say names are not unique: "allowed" (the default). The other plausible answer:
    ALREADY_EXISTS ("already_exists"). Empty names (no name) never clash.

    `unknown_environment_id`: WebhookTokenEnvironmentAdd/Remove naming an environment id that does
    not exist (the client resolves the name to an id first, so this takes an environment deleted in
    between, or a raw request). Modal's servicer accepts any id; a server that keys associations on
    its environments would refuse it: NOT_FOUND ("not_found", the default, the stricter), or accept
    and store it, allowing nothing ("accepted"). One answer for add and remove: one server resolves
    environment ids for both.

    `delete_missing`: WebhookTokenDelete of an id that does not exist (deleted by hand already).
    Modal's servicer is silent ("silent", the default); NOT_FOUND is the other plausible answer."""

    duplicate_name: DuplicateNameAnswer = "allowed"
    unknown_environment_id: UnknownEnvironmentAnswer = "not_found"
    delete_missing: MissingDeleteAnswer = "silent"

    def __post_init__(self) -> None:
        for value, allowed in (
            (self.duplicate_name, DUPLICATE_NAME_ANSWERS),
            (self.unknown_environment_id, UNKNOWN_ENVIRONMENT_ANSWERS),
            (self.delete_missing, MISSING_DELETE_ANSWERS),
        ):
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {allowed}")


def _random(prefix: str) -> str:
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))


def add_token(state: ControlPlaneState, answers: ProxyTokenAnswers, now: float, name: str, scoped: bool) -> ProxyToken:
    """A new token (the caller holds `state.lock`); the one path for the RPC and the plane's helper."""
    check_name_free(state, answers, name)
    token = ProxyToken(_random("wk"), _random("ws"), name, scoped, now, USERNAME)
    state.proxy_tokens[token.id] = token
    return token


def check_name_free(state: ControlPlaneState, answers: ProxyTokenAnswers, name: str, owner: str = "") -> None:
    """Under `duplicate_name="already_exists"`, refuse a name another token (not `owner`) has."""
    if not name or answers.duplicate_name == "allowed":
        return
    if any(token.name == name and token.id != owner for token in state.proxy_tokens.values()):
        raise GRPCError(Status.ALREADY_EXISTS, f"A proxy token named '{name}' already exists")


def token_message(token: ProxyToken) -> api_pb2.WebhookToken:
    """What lists and updates answer: everything but the secret, which WebhookToken cannot carry."""
    creator = api_pb2.UserIdentity(user_id=CREATOR_USER_ID, username=token.created_by)
    return api_pb2.WebhookToken(
        token_id=token.id, created_at=token.created_at, scoped=token.scoped, name=token.name, created_by=creator
    )


class TokenRpcs:
    state: ControlPlaneState
    now: Callable[[], float]
    proxy_token_answers: ProxyTokenAnswers
    _environment: Callable[[str], Environment]  # rpc_objects.ObjectRpcs: by name, or Modal's "not found"

    def _token(self, token_id: str) -> ProxyToken:
        token = self.state.proxy_tokens.get(token_id)
        if token is None:
            raise GRPCError(Status.NOT_FOUND, TOKEN_NOT_FOUND)
        return token

    def _environment_id(self, environment_id: str) -> str:
        """The id of an existing environment, else `unknown_environment_id`'s answer."""
        if isinstance(self.state.by_id.get(environment_id), Environment):
            return environment_id
        if self.proxy_token_answers.unknown_environment_id == "not_found":
            raise GRPCError(Status.NOT_FOUND, f"Environment '{environment_id}' not found")
        return environment_id

    async def WorkspaceNameLookup(self, request: Empty) -> api_pb2.WorkspaceNameLookupResponse:
        """`Workspace.from_context()` hydrates with this before every proxy token call."""
        return api_pb2.WorkspaceNameLookupResponse(workspace_name=WORKSPACE, username=USERNAME)

    async def WebhookTokenCreate(self, request: api_pb2.WebhookTokenCreateRequest) -> api_pb2.TokenCreateResponse:
        with self.state.lock:
            token = add_token(self.state, self.proxy_token_answers, self.now(), request.name, request.scoped)
            return api_pb2.TokenCreateResponse(token_id=token.id, token_secret=token.secret)

    async def WebhookTokenUpdate(self, request: api_pb2.WebhookTokenUpdateRequest) -> api_pb2.WebhookToken:
        """A new name; an empty one removes it (the client's docstring). Answers the updated token."""
        with self.state.lock:
            token = self._token(request.token_id)
            check_name_free(self.state, self.proxy_token_answers, request.name, owner=token.id)
            token.name = request.name
            return token_message(token)

    async def WebhookTokenList(self, request: Empty) -> api_pb2.WebhookTokenListResponse:
        with self.state.lock:
            return api_pb2.WebhookTokenListResponse(tokens=[token_message(t) for t in self.state.proxy_tokens.values()])

    async def WebhookTokenListForEnvironment(
        self, request: api_pb2.WebhookTokenListForEnvironmentRequest
    ) -> api_pb2.WebhookTokenListResponse:
        """Scoped tokens allowed in the environment, as Modal's servicer "mirrors the server": an
        unscoped token, valid there too, is not listed."""
        with self.state.lock:
            env = self._environment(request.environment_name)
            tokens = [t for t in self.state.proxy_tokens.values() if t.scoped and env.id in t.environment_ids]
            return api_pb2.WebhookTokenListResponse(tokens=[token_message(t) for t in tokens])

    async def WebhookTokenEnvironmentAdd(self, request: api_pb2.WebhookTokenEnvironmentAddRequest) -> Empty:
        """Stored for an unscoped token too (as Modal's servicer does), where it changes nothing."""
        with self.state.lock:
            token = self._token(request.token_id)
            token.environment_ids.add(self._environment_id(request.environment_id))
        return Empty()

    async def WebhookTokenEnvironmentRemove(self, request: api_pb2.WebhookTokenEnvironmentRemoveRequest) -> Empty:
        """Silent for an environment the token was not allowed in (Modal's servicer discards)."""
        with self.state.lock:
            token = self._token(request.token_id)
            token.environment_ids.discard(self._environment_id(request.environment_id))
        return Empty()

    async def WebhookTokenEnvironmentList(
        self, request: api_pb2.WebhookTokenEnvironmentListRequest
    ) -> api_pb2.WebhookTokenEnvironmentListResponse:
        """The environment ids a token is allowed in, sorted (Modal's servicer)."""
        with self.state.lock:
            token = self._token(request.token_id)
            return api_pb2.WebhookTokenEnvironmentListResponse(environment_ids=sorted(token.environment_ids))

    async def WebhookTokenDelete(self, request: api_pb2.TokenDeleteRequest) -> Empty:
        with self.state.lock:
            missing = self.state.proxy_tokens.pop(request.token_id, None) is None
            if missing and self.proxy_token_answers.delete_missing == "not_found":
                raise GRPCError(Status.NOT_FOUND, TOKEN_NOT_FOUND)
        return Empty()
