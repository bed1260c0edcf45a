"""Proxy auth tokens through the real client, and Modal's edge through real HTTP: no request without
valid credentials reaches a container, so none costs a GPU-second (rpc_tokens.py, edge.py, containers.py)."""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import modal
import pytest
from google.protobuf.empty_pb2 import Empty
from modal.exception import AlreadyExistsError, InvalidError, NotFoundError
from modal_proto import api_pb2

from . import edge_app
from .calls import is_mutating
from .clock import MovableClock, plane_with_clock
from .containers import DEFAULT_SCALEDOWN_WINDOW_SECONDS
from .edge import INVALID, MISSING, MISSING_CREDENTIALS
from .rpc_tokens import ProxyTokenAnswers
from .server import ControlPlane
from .state import USERNAME
from .web import WebFront

APP = "edge"
ENV = "staging"  # the app's environment; "main" is the other one
WINDOW = edge_app.SCALEDOWN_WINDOW_SECONDS
GPUS = edge_app.GPU_COUNT


def stub_call(rpc: str, request):
    """A raw RPC through the in-process client's own stub (for what the public API does not send or return)."""
    from modal._utils.async_utils import synchronizer
    from modal.client import _Client

    async def run():
        client = await _Client.from_env()
        return await getattr(client._stub, rpc)(request)

    return synchronizer.create_blocking(run)()


def tokens():
    """The public proxy token API of modal 1.6.4, as a user calls it."""
    return modal.Workspace.from_context().proxy_tokens


@dataclass
class Rig:
    cp: ControlPlane
    clock: MovableClock
    front: WebFront

    def deploy(self, environment: str = ENV) -> dict[str, str]:
        edge_app.app.deploy(name=APP, environment_name=environment)
        return self.cp.app(APP, environment).web_urls

    def request(self, url: str, path: str = "/health", headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, str]:  # fmt: skip
        """(status, body) of one request to the front, as any HTTP client would send it."""
        request = urllib.request.Request(url.rstrip("/") + path, data=body, headers=headers or {},
                                         method="POST" if body is not None else "GET")  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


@contextlib.contextmanager
def _rig(monkeypatch: pytest.MonkeyPatch, **options) -> Iterator[Rig]:
    """A control plane on a clock the test moves, with its web front, and an environment besides "main"."""
    front = WebFront().start()
    try:
        with plane_with_clock(monkeypatch, web_url_of=front.url_for, **options) as (cp, clock):
            front.attach(cp)
            cp.create_environment(ENV)
            yield Rig(cp, clock, front)
    finally:
        front.stop()


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    with _rig(monkeypatch) as running:
        yield running


# ---- the token RPCs ----------------------------------------------------------------------------


def test_a_created_token_shows_its_secret_once_and_lists_without_it(rig):
    cp = rig.cp
    before = cp.now()
    created = tokens().create(name="ci")
    listed = tokens().list()

    assert created.token_id.startswith("wk-") and created.token_secret.startswith("ws-")
    assert len(created.token_id) > len("wk-") + 16 and created.token_id[3:] != created.token_secret[3:]
    assert [(t.token_id, t.name, t.scoped, t.created_by) for t in listed] == [(created.token_id, "ci", False, USERNAME)]
    # The plane's clock, to the client's rounding (created_at is a localized datetime).
    assert abs(listed[0].created_at.timestamp() - before) < 5
    raw = stub_call("WebhookTokenList", Empty())
    assert created.token_secret not in str(raw)
    assert not any("secret" in field.name for field in api_pb2.WebhookToken.DESCRIPTOR.fields)
    # Random, not sequential: another token shares nothing with the first.
    other = tokens().create(name="ci")
    assert other.token_id != created.token_id and other.token_secret != created.token_secret


def test_the_public_create_is_workspace_wide_and_a_raw_one_may_be_scoped(rig):
    public = tokens().create(name="wide")
    scoped = stub_call("WebhookTokenCreate", api_pb2.WebhookTokenCreateRequest(name="narrow", scoped=True))

    assert {t.name: t.scoped for t in tokens().list()} == {"wide": False, "narrow": True}
    # Workspace-wide: valid in every environment, allowed or not; scoped: nowhere until allowed.
    assert rig.cp.proxy_tokens_valid_in(ENV) == rig.cp.proxy_tokens_valid_in("main") == [public.token_id]
    tokens().allow(scoped.token_id, ENV)
    assert rig.cp.proxy_tokens_valid_in(ENV) == [public.token_id, scoped.token_id]
    assert rig.cp.proxy_tokens_valid_in("main") == [public.token_id]


def test_allow_list_revoke_for_an_environment(rig):
    cp = rig.cp
    scoped = stub_call("WebhookTokenCreate", api_pb2.WebhookTokenCreateRequest(name="s", scoped=True))
    wide = tokens().create(name="w")
    tokens().allow(scoped.token_id, ENV)
    tokens().allow(wide.token_id, ENV)  # accepted, as Modal's servicer does; it changes nothing

    # Only scoped tokens allowed there are listed for an environment (Modal's servicer).
    assert [t.token_id for t in tokens().list(ENV)] == [scoped.token_id]
    assert tokens().list("main") == []
    in_main = cp.create_proxy_token("m", environments=["main"])
    assert [t.token_id for t in tokens().list("")] == [in_main.token_id]  # "": the default environment
    environment_ids = stub_call(
        "WebhookTokenEnvironmentList", api_pb2.WebhookTokenEnvironmentListRequest(token_id=scoped.token_id)
    ).environment_ids
    assert list(environment_ids) == [cp.state.environments[ENV].id]

    tokens().revoke(scoped.token_id, ENV)
    tokens().revoke(scoped.token_id, ENV)  # not allowed there any more: silent
    assert tokens().list(ENV) == [] and cp.proxy_tokens_valid_in(ENV) == [wide.token_id]
    assert cp.proxy_tokens_valid_in() == [wide.token_id, in_main.token_id]
    with pytest.raises(InvalidError, match="Environment 'nowhere' not found"):
        tokens().list("nowhere")


def test_update_renames_and_answers_the_token(rig):
    created = tokens().create(name="old")
    assert tokens().update(created.token_id, name="new") is None  # the public call drops the answer

    answer = stub_call("WebhookTokenUpdate", api_pb2.WebhookTokenUpdateRequest(token_id=created.token_id, name="x"))
    assert (answer.token_id, answer.name, answer.created_by.username) == (created.token_id, "x", USERNAME)
    tokens().update(created.token_id, name="")  # an empty name removes it
    assert [t.name for t in tokens().list()] == [""]
    with pytest.raises(NotFoundError, match="Webhook token not found"):
        tokens().update("wk-missing", name="x")


def test_unknown_tokens_are_not_found_and_their_delete_is_silent(rig):
    with pytest.raises(NotFoundError, match="Webhook token not found"):
        tokens().allow("wk-missing", ENV)
    with pytest.raises(NotFoundError, match="Webhook token not found"):
        tokens().revoke("wk-missing", ENV)
    with pytest.raises(NotFoundError, match="Webhook token not found"):
        stub_call("WebhookTokenEnvironmentList", api_pb2.WebhookTokenEnvironmentListRequest(token_id="wk-missing"))

    created = tokens().create(name="gone")
    tokens().delete(created.token_id)
    tokens().delete(created.token_id)  # Modal's servicer: silent
    assert tokens().list() == []


def test_a_deleted_environment_allows_nothing_and_its_namesake_starts_empty(rig):
    cp = rig.cp
    issued = cp.create_proxy_token("t", environments=[ENV])
    cp.delete_environment(ENV)
    cp.create_environment(ENV)
    assert cp.proxy_tokens_valid_in(ENV) == [] and cp.proxy_token(issued.token_id).environment_ids == set()


@pytest.mark.parametrize(
    ("rpc", "mutating"),
    [
        ("WebhookTokenCreate", True), ("WebhookTokenUpdate", True), ("WebhookTokenEnvironmentAdd", True),
        ("WebhookTokenEnvironmentRemove", True), ("WebhookTokenDelete", True), ("WebhookTokenList", False),
        ("WebhookTokenListForEnvironment", False), ("WebhookTokenEnvironmentList", False),
    ],
)  # fmt: skip
def test_token_rpcs_are_classified_in_the_call_log(rpc, mutating):
    assert is_mutating(rpc, Empty()) is mutating


# ---- switches where Modal's answer is unknown --------------------------------------------------


@pytest.mark.parametrize("answer", ["allowed", "already_exists"])
def test_duplicate_names_follow_the_switch(monkeypatch, answer):
    with _rig(monkeypatch, proxy_token_answers=ProxyTokenAnswers(duplicate_name=answer)) as rig:
        first = tokens().create(name="same")
        tokens().create()  # unnamed tokens never clash
        tokens().create()
        if answer == "allowed":
            tokens().create(name="same")
            assert [t.name for t in tokens().list()].count("same") == 2
        else:
            with pytest.raises(AlreadyExistsError):
                tokens().create(name="same")
            other = tokens().create(name="other")
            with pytest.raises(AlreadyExistsError):
                tokens().update(other.token_id, name="same")
            tokens().update(first.token_id, name="same")  # its own name is no clash
            with pytest.raises(ValueError, match="already exists"):
                rig.cp.create_proxy_token("same")  # by hand too


@pytest.mark.parametrize("answer", ["not_found", "accepted"])
def test_an_unknown_environment_id_follows_the_switch(rig, answer):
    rig.cp.proxy_token_answers = ProxyTokenAnswers(unknown_environment_id=answer)
    issued = rig.cp.create_proxy_token("t")
    add = api_pb2.WebhookTokenEnvironmentAddRequest(token_id=issued.token_id, environment_id="en-missing")
    remove = api_pb2.WebhookTokenEnvironmentRemoveRequest(token_id=issued.token_id, environment_id="en-missing")
    if answer == "not_found":
        for rpc, request in (("WebhookTokenEnvironmentAdd", add), ("WebhookTokenEnvironmentRemove", remove)):
            with pytest.raises(NotFoundError):
                stub_call(rpc, request)
        assert rig.cp.proxy_token(issued.token_id).environment_ids == set()
    else:
        stub_call("WebhookTokenEnvironmentAdd", add)
        assert rig.cp.proxy_token(issued.token_id).environment_ids == {"en-missing"}
        assert rig.cp.proxy_tokens_valid_in(ENV) == rig.cp.proxy_tokens_valid_in("main") == []
        stub_call("WebhookTokenEnvironmentRemove", remove)
        assert rig.cp.proxy_token(issued.token_id).environment_ids == set()


@pytest.mark.parametrize("answer", ["silent", "not_found"])
def test_deleting_a_missing_token_follows_the_switch(rig, answer):
    rig.cp.proxy_token_answers = ProxyTokenAnswers(delete_missing=answer)
    if answer == "silent":
        tokens().delete("wk-missing")
    else:
        with pytest.raises(NotFoundError):
            tokens().delete("wk-missing")


def test_a_switch_takes_only_its_answers():
    with pytest.raises(ValueError):
        ProxyTokenAnswers(duplicate_name="unique")  # type: ignore[arg-type]


# ---- the edge ----------------------------------------------------------------------------------


def _assert_nothing_started(rig: Rig, refused: int) -> None:
    cp = rig.cp
    assert cp.containers_started() == 0 and cp.gpu_seconds() == 0
    assert cp.app(APP, ENV).containers == []
    assert len(rig.front.refused_at_edge()) == refused and set(rig.front.served_by) == {None}


WRONG_CREDENTIALS = ["wrong secret", "unknown id", "revoked", "deleted", "other environment", "unscoped deleted"]


@pytest.mark.parametrize("case", WRONG_CREDENTIALS)
def test_wrong_credentials_are_refused_at_the_edge_and_start_nothing(rig, case):
    cp = rig.cp
    url = rig.deploy()["Server.*"]
    scoped = cp.create_proxy_token("scoped", environments=[ENV])
    headers = scoped.headers
    if case == "wrong secret":
        headers = {**headers, "Modal-Secret": "ws-" + "x" * 22}
    elif case == "unknown id":
        headers = {**headers, "Modal-Key": "wk-" + "y" * 22}
    elif case == "revoked":
        cp.revoke_proxy_token(scoped.token_id, ENV)  # by hand, as in the dashboard
    elif case == "deleted":
        tokens().delete(scoped.token_id)
    elif case == "other environment":
        headers = cp.create_proxy_token("main's", environments=["main"]).headers
    elif case == "unscoped deleted":
        wide = tokens().create(name="wide")
        tokens().delete(wide.token_id)
        headers = {"Modal-Key": wide.token_id, "Modal-Secret": wide.token_secret}

    for path in ("/health", "/v1/chat/completions", "/metrics"):
        status, _ = rig.request(url, path, headers)
        assert status == 401  # the text for wrong credentials is not Modal's documented one: not asserted

    _assert_nothing_started(rig, refused=3)
    assert {record.reason for record in rig.front.edge_records} == {INVALID}
    assert all(headers["Modal-Secret"] not in str(record) for record in rig.front.edge_records)


@pytest.mark.parametrize("path", ["/health", "/health_generate", "/metrics", "/v1/models", "/no/such/path", ""])
def test_a_request_without_credentials_gets_modals_401_whatever_its_path(rig, path):
    url = rig.deploy()["Server.*"]
    status, body = rig.request(url, path)
    assert (status, body.strip()) == (401, MISSING_CREDENTIALS)  # stripped: a final newline is unknown
    _assert_nothing_started(rig, refused=1)
    # Still recorded for those who count what the front received; the container never saw it.
    assert rig.front.requests == [("GET", urllib.parse.urlsplit(url).path + path, False)]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer the-sglang-api-key"},  # SGLang's key is no proxy auth
        {"Modal-Key": "wk-only-the-id"},  # one header without the other
        {"Modal-Secret": "ws-only-the-secret"},
        {"Modal-Key": "", "Modal-Secret": ""},
    ],
)
def test_partial_or_other_credentials_count_as_missing(rig, headers):
    url = rig.deploy()["Server.*"]
    body = b'{"model": "m", "messages": []}'
    status, text = rig.request(url, "/v1/chat/completions", {**headers, "Content-Type": "application/json"}, body)
    assert (status, text.strip()) == (401, MISSING_CREDENTIALS)
    _assert_nothing_started(rig, refused=1)
    assert [record.reason for record in rig.front.edge_records] == [MISSING]


def test_a_valid_token_reaches_a_container_which_costs_its_gpus(rig):
    cp = rig.cp
    url = rig.deploy()["Server.*"]
    issued = cp.create_proxy_token("client", environments=[ENV])

    status, _ = rig.request(url, "/health", issued.headers)
    assert status == 200
    container = cp.app(APP, ENV).containers[0]
    assert (cp.containers_started(), cp.containers_started(APP, ENV)) == (1, 1)
    assert (container.gpus, container.scaledown_window) == (GPUS, WINDOW)
    assert rig.front.edge_records[0].token_id == issued.token_id
    assert rig.front.served_by == [container.task_id]
    # Past the edge, paths are the server's business: SGLang serves /metrics without its API key.
    assert rig.request(url, "/metrics", issued.headers)[0] == 200
    assert cp.containers_started() == 1 and container.requests == 2

    rig.clock.advance(100)
    assert GPUS * 100 <= cp.gpu_seconds(APP, ENV) < GPUS * 130  # real time flows a little too


def test_an_idle_container_scales_down_after_its_window_and_a_later_request_cold_starts(rig):
    cp = rig.cp
    url = rig.deploy()["Server.*"]
    headers = cp.create_proxy_token("client", environments=[ENV]).headers
    assert rig.request(url, "/health", headers)[0] == 200
    first = cp.app(APP, ENV).containers[0]

    rig.clock.advance(WINDOW - 100)
    assert rig.request(url, "/health", headers)[0] == 200  # within the window: the same container
    rig.clock.advance(WINDOW - 10)  # past the first window, within the second request's
    assert cp.gpu_seconds() > 0 and first.state == "running" and cp.containers_started() == 1

    rig.clock.advance(20)
    life = first.last_request_at - first.enqueued_at + WINDOW
    assert cp.gpu_seconds() == pytest.approx(GPUS * life) and first.state == "stopped"
    assert first.stopped_at == pytest.approx(first.last_request_at + WINDOW)
    assert life == pytest.approx(2 * WINDOW - 100, abs=5)
    assert cp.app(APP, ENV).live_containers == []

    assert rig.request(url, "/health", headers)[0] == 200
    assert cp.containers_started() == 2 and rig.front.served_by[-1] != first.task_id


def test_scoped_and_unscoped_tokens_open_the_environments_they_are_valid_in(rig):
    url = rig.deploy()["Server.*"]
    wide = tokens().create(name="wide")  # the public create: workspace-wide
    scoped = stub_call("WebhookTokenCreate", api_pb2.WebhookTokenCreateRequest(name="scoped", scoped=True))
    wide_headers = {"Modal-Key": wide.token_id, "Modal-Secret": wide.token_secret}
    scoped_headers = {"Modal-Key": scoped.token_id, "Modal-Secret": scoped.token_secret}

    assert rig.request(url, "/health", scoped_headers)[0] == 401  # scoped, allowed nowhere yet
    assert rig.request(url, "/health", wide_headers)[0] == 200
    tokens().allow(scoped.token_id, ENV)
    assert rig.request(url, "/health", scoped_headers)[0] == 200
    tokens().revoke(scoped.token_id, ENV)
    assert rig.request(url, "/health", scoped_headers)[0] == 401
    tokens().revoke(wide.token_id, ENV)  # revoking where it was never allowed does not narrow it
    assert rig.request(url, "/health", wide_headers)[0] == 200
    rig.cp.allow_proxy_token(scoped.token_id, ENV)  # by hand
    assert rig.request(url, "/health", scoped_headers)[0] == 200
    assert rig.cp.containers_started() == 1 and len(rig.front.refused_at_edge()) == 2


def test_a_web_function_with_proxy_auth_is_guarded_too(rig):
    url = rig.deploy()["guarded"]
    assert rig.request(url)[0] == 401 and rig.cp.containers_started() == 0
    headers = rig.cp.create_proxy_token("client", environments=[ENV]).headers
    assert rig.request(url, "/health", headers)[0] == 200
    container = rig.cp.app(APP, ENV).containers[0]
    assert container.gpus == 0 and rig.cp.gpu_seconds() == 0  # no GPU: no GPU-seconds
    assert container.scaledown_window == DEFAULT_SCALEDOWN_WINDOW_SECONDS  # it sets none


def test_an_endpoint_without_proxy_auth_ignores_the_headers(rig):
    url = rig.deploy()["open_server"]
    assert rig.request(url)[0] == 200
    assert rig.request(url, "/health", {"Modal-Key": "wk-nonsense", "Modal-Secret": "ws-nonsense"})[0] == 200
    assert rig.cp.containers_started() == 1 and rig.front.refused_at_edge() == []
    assert {record.reason for record in rig.front.edge_records} == {"open"}
    assert rig.cp.app(APP, ENV).containers[0].gpus == 1


def test_a_request_nobody_serves_is_a_404_with_no_container(rig):
    rig.deploy()
    status, _ = rig.request(rig.front.url_for(ENV, "nothing-here"))
    assert status == 404 and rig.cp.containers_started() == 0
    assert [(r.reason, r.status) for r in rig.front.edge_records] == [("no_app", 404)]


def test_a_scaled_down_container_is_gone_from_the_task_list(rig):
    cp = rig.cp
    url = rig.deploy()["Server.*"]
    assert rig.request(url, "/health", cp.create_proxy_token(environments=[ENV]).headers)[0] == 200
    app_id = cp.app(APP, ENV).id
    listed = stub_call("TaskList", api_pb2.TaskListRequest(environment_name=ENV, app_id=app_id))
    assert len(listed.tasks) == 1
    rig.clock.advance(WINDOW + 1)
    listed = stub_call("TaskList", api_pb2.TaskListRequest(environment_name=ENV, app_id=app_id))
    assert list(listed.tasks) == []
