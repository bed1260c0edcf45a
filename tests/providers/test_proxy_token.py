"""ModalProxyToken through the real dynamic-provider gRPC server, the real modal client and the local
control plane: a scoped token allowed in its environment, whose secret stays a secret; renamed in
place, re-allowed after a hand revoke, re-created after a hand delete, revoked and deleted on destroy.
Hand actions go through the public modal client, as an operator's `modal workspace proxy-tokens`."""

from __future__ import annotations

from typing import Any

import modal
import pytest

from providers.proxy_token import ADDITIONAL_SECRET_OUTPUTS, ModalProxyToken, ProxyTokenProvider
from tests.modal_control_plane.rpc_objects import MISSING_ENVIRONMENT_STATUSES
from tests.providers.grpc_harness import PROVIDER_MUTATIONS, desired, engine, mutating_rpcs, serve, urn_of
from tests.pulumi_engine import properties as wire
from tests.pulumi_engine.provider_server import ProviderCallError

ENV = "glm-prod"
URN = urn_of(ModalProxyToken, "client-proxy-token-search")
LABEL = f"{ENV}/glm-5.1-production/clients/search"


def token(name: str = LABEL, environment: str = ENV):
    return desired(
        ModalProxyToken, ProxyTokenProvider(), "client-proxy-token-search",
        {"name": name, "environment": environment},
        additional_secret_outputs=ADDITIONAL_SECRET_OUTPUTS,
    )  # fmt: skip


def on_modal(cp: Any, token_id: str) -> Any:
    with cp.state.lock:
        return cp.state.proxy_tokens.get(token_id)


def allowed_in(cp: Any, token_id: str, environment: str = ENV) -> bool:
    found = on_modal(cp, token_id)
    return found is not None and cp.state.environments[environment].id in found.environment_ids



def test_create_makes_a_scoped_token_allowed_in_its_environment_whose_secret_stays_secret(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment(ENV)
    with serve(cp) as server:
        eng = engine(server)
        assert eng.preview([token()]).ok
        assert cp.calls == []  # a preview never asks Modal

        up = eng.up([token()])
        assert up.ok, up.errors
        outputs = up.outputs[URN]
        token_id = eng.state.resources[URN].id
        assert outputs["token_id"] == token_id
        found = on_modal(cp, token_id)
        # Scoped: it opens only the environments it is allowed in, not the whole workspace.
        assert found.scoped and found.name == LABEL and allowed_in(cp, token_id)
        assert wire.is_secret(outputs["token_secret"]) and wire.reveal(outputs["token_secret"]) == found.secret
        assert found.secret not in wire.outside_secrets(outputs) + " ".join(server.stdout_lines)
        assert outputs["allowed"] is True

        mark = cp.mark()
        again = eng.up([token()])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == [] and again.calls_of(*PROVIDER_MUTATIONS) == []


def test_a_rename_is_an_update_of_the_same_token_and_a_new_environment_a_new_token(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment(ENV)
    cp.create_environment("glm-staging")
    with serve(cp) as server:
        eng = engine(server)
        first = eng.up([token()])
        assert first.ok, first.errors
        token_id = first.outputs[URN]["token_id"]
        secret = wire.reveal(first.outputs[URN]["token_secret"])

        renamed = eng.up([token(name=f"{LABEL}-v2")])
        assert renamed.ok and renamed.counts["update"] == 1, renamed.errors
        assert on_modal(cp, token_id).name == f"{LABEL}-v2"
        # Same token, same secret: clients keep working.
        assert renamed.outputs[URN]["token_id"] == token_id
        assert wire.reveal(renamed.outputs[URN]["token_secret"]) == secret

        moved = eng.up([token(name=f"{LABEL}-v2", environment="glm-staging")])
        assert moved.ok and moved.counts["replace"] == 1, moved.errors
        new_id = moved.outputs[URN]["token_id"]
        assert new_id != token_id and on_modal(cp, token_id) is None  # the old one revoked and deleted
        assert allowed_in(cp, new_id, "glm-staging") and not allowed_in(cp, new_id, ENV)


def test_a_hand_revoke_is_drift_that_the_next_up_repairs(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment(ENV)
    with serve(cp) as server:
        eng = engine(server)
        up = eng.up([token()])
        assert up.ok, up.errors
        token_id = up.outputs[URN]["token_id"]

        mark = cp.mark()
        unchanged = eng.refresh()
        assert unchanged.ok and unchanged.steps[0].keys == ()
        assert mutating_rpcs(cp, mark) == []

        modal.Workspace.from_context().proxy_tokens.revoke(token_id, ENV)  # by hand
        drifted = eng.refresh()
        assert drifted.ok, drifted.errors
        assert eng.state.resources[URN].outputs["allowed"] is False

        preview = eng.preview([token()])
        assert preview.ok and preview.counts["update"] == 1  # shown as a change still to be made
        repaired = eng.up([token()])
        assert repaired.ok and repaired.counts["update"] == 1, repaired.errors
        assert allowed_in(cp, token_id) and repaired.outputs[URN]["token_id"] == token_id
        assert eng.up([token()]).counts["same"] == 1


def test_a_hand_delete_drops_the_token_and_the_next_up_makes_a_new_one(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment(ENV)
    with serve(cp) as server:
        eng = engine(server)
        token_id = eng.up([token()]).outputs[URN]["token_id"]
        modal.Workspace.from_context().proxy_tokens.delete(token_id)

        gone = eng.refresh()
        assert gone.ok and gone.steps[0].detail == "deleted" and eng.state.resources == {}
        again = eng.up([token()])
        assert again.ok and again.counts["create"] == 1
        assert again.outputs[URN]["token_id"] != token_id and allowed_in(cp, again.outputs[URN]["token_id"])


def test_destroy_revokes_and_deletes_the_token(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment(ENV)
    with serve(cp) as server:
        eng = engine(server)
        token_id = eng.up([token()]).outputs[URN]["token_id"]
        mark = cp.mark()
        assert eng.destroy().ok
        assert on_modal(cp, token_id) is None
        assert mutating_rpcs(cp, mark) == ["WebhookTokenEnvironmentRemove", "WebhookTokenDelete"]


@pytest.mark.parametrize("status", MISSING_ENVIRONMENT_STATUSES, ids=lambda status: status.name)
def test_destroy_after_its_environment_was_deleted_by_hand_still_deletes_the_token(modal_control_plane, status):
    cp = modal_control_plane
    cp.environment_answers.missing_status = status
    cp.create_environment(ENV)
    with serve(cp) as server:
        eng = engine(server)
        token_id = eng.up([token()]).outputs[URN]["token_id"]
        cp.delete_environment(ENV)
        destroyed = eng.destroy()
        assert destroyed.ok, destroyed.errors
        assert on_modal(cp, token_id) is None


def test_a_create_leaves_namesakes_alone_and_names_them(modal_control_plane):
    """Names are not unique on Modal and a secret is shown once: a token of the same name (left by an
    interrupted create, or anyone's) can be neither adopted nor assumed to be ours."""
    cp = modal_control_plane
    cp.create_environment(ENV)
    leftover = modal.Workspace.from_context().proxy_tokens.create(name=LABEL)
    with serve(cp) as server:
        up = engine(server).up([token()])
        assert up.ok, up.errors
        server.wait_for_stdout(lambda line: leftover.token_id in line and "modal workspace proxy-tokens delete" in line)
        assert up.outputs[URN]["token_id"] != leftover.token_id
    assert on_modal(cp, leftover.token_id) is not None


def test_an_import_is_refused_because_the_secret_cannot_be_read_back(modal_control_plane):
    cp = modal_control_plane
    cp.create_environment(ENV)
    existing = modal.Workspace.from_context().proxy_tokens.create(name=LABEL)
    with serve(cp) as server, pytest.raises(ProviderCallError, match="only when it is created"):
        server.read(existing.token_id, URN, {**token().inputs, "environment": ENV})
