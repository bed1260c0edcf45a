"""ModalSecret through the real dynamic-provider gRPC server, the real modal client and the local
control plane. The canary test drives every operation with a recognisable secret value and looks
for it in everything the provider sends back or prints."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from grpclib import Status

from providers.secret import ADDITIONAL_SECRET_OUTPUTS, ModalSecret, SecretProvider
from tests.modal_control_plane.rpc_objects import MISSING_ENVIRONMENT_STATUSES
from tests.providers.grpc_harness import (
    IMPORT_READ_HAS_NO_PROVIDER,
    PROVIDER_MUTATIONS,
    desired,
    engine,
    import_read,
    mutating_rpcs,
    serve,
    urn_of,
)
from tests.pulumi_engine import properties as wire
from tests.pulumi_engine.engine import ResourceState, check_failure_message

ENV = "main"
URN = urn_of(ModalSecret, "hf")


def secret(values: dict[str, Any], name: str = "hf", **inputs: Any):
    return desired(
        ModalSecret, SecretProvider(), "hf", {"name": name, "environment": ENV, "values": values, **inputs},
        secret_inputs=("values",), additional_secret_outputs=ADDITIONAL_SECRET_OUTPUTS,
    )  # fmt: skip



def test_lifecycle_adopt_noop_update_and_destroy(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.preview([secret({"HF_TOKEN": "hf_one"})]).ok
        assert cp.calls == []

        up = eng.up([secret({"HF_TOKEN": "hf_one"})])
        assert up.ok, up.errors
        assert cp.secret_values("hf") == {"HF_TOKEN": "hf_one"}
        outputs = up.outputs[URN]
        assert outputs["key_names"] == ["HF_TOKEN"]
        assert outputs["secret_id"] == cp.state.environments[ENV].secrets["hf"].id
        assert wire.is_secret(outputs["values_digest"])  # additional_secret_outputs: encrypted in state
        assert "values" not in outputs

        mark = cp.mark()
        again = eng.up([secret({"HF_TOKEN": "hf_one"})])
        assert again.ok and again.counts["same"] == 1
        assert cp.calls_since(mark) == [] and again.calls_of(*PROVIDER_MUTATIONS) == []

        mark = cp.mark()
        changed = eng.up([secret({"HF_TOKEN": "hf_two", "EXTRA": "x"})])
        assert changed.ok and changed.counts["update"] == 1  # a value change is an in-place update
        # Secret.objects.create finds it exists, Secret.update writes the declared values.
        assert mutating_rpcs(cp, mark) == ["SecretGetOrCreate", "SecretUpdate"]
        assert cp.secret_values("hf") == {"HF_TOKEN": "hf_two", "EXTRA": "x"}
        assert cp.state.environments[ENV].secrets["hf"].id == outputs["secret_id"]  # the same secret

        mark = cp.mark()
        shrunk = eng.up([secret({"HF_TOKEN": "hf_two"})])
        assert shrunk.ok
        assert cp.secret_values("hf") == {"HF_TOKEN": "hf_two"}  # overwritten whole: EXTRA is gone
        assert mutating_rpcs(cp, mark) == ["SecretGetOrCreate", "SecretUpdate", "SecretUpdate"]

        renamed = eng.up([secret({"HF_TOKEN": "hf_two"}, name="hf-v2")])
        assert renamed.ok and renamed.counts["replace"] == 1
        assert set(cp.state.environments[ENV].secrets) == {"hf-v2"}

        assert eng.destroy().ok
        assert cp.state.environments[ENV].secrets == {}


def test_create_adopts_a_hand_made_secret_and_overwrites_it(modal_control_plane):
    cp = modal_control_plane
    cp.create_secret("hf", {"OLD_KEY": "old"}, environment=ENV)
    with serve(cp) as server:
        up = engine(server).up([secret({"HF_TOKEN": "declared"})])
        assert up.ok, up.errors
        server.wait_for_stdout(lambda line: "already existed: adopted, its values overwritten" in line)
    assert cp.secret_values("hf") == {"HF_TOKEN": "declared"}


def test_diff_compares_values_by_digest_and_never_calls_modal(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([secret({"A": "1", "B": "2"})]).ok
        state = eng.state.resources[URN]
        mark = cp.mark()

        def diff(values: dict[str, str], **changes: Any):
            news = wire.reveal({**secret(values).inputs, **changes})
            return server.diff(state.id, URN, state.outputs, news, state.inputs)

        assert diff({"B": "2", "A": "1"}).changes == "none"  # order does not matter
        value_change = diff({"A": "1", "B": "3"})
        assert (value_change.changes, value_change.replaces) == ("some", [])
        assert diff({"A": "1"}).changes == "some"
        assert diff({"A": "1", "B": "2"}, name="other").replaces == ["name"]
        assert diff({"A": "1", "B": "2"}, environment="dev").replaces == ["environment"]
        assert cp.calls_since(mark) == []


@pytest.mark.parametrize("status", MISSING_ENVIRONMENT_STATUSES, ids=lambda status: status.name)
def test_refresh_after_its_environment_was_deleted_by_hand_drops_the_secret(modal_control_plane, status):
    """Deleting an environment deletes its secrets; Modal may answer a look-up in a missing environment
    with INVALID_ARGUMENT (its servicer's status) or NOT_FOUND: under both, the secret is gone."""
    cp = modal_control_plane
    cp.environment_answers.missing_status = status
    cp.create_environment("staging")
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([secret({"HF_TOKEN": "declared-value"}, environment="staging")]).ok
        cp.delete_environment("staging")
        gone = eng.refresh()
        assert gone.ok, gone.errors
        assert gone.steps[0].detail == "deleted" and eng.state.resources == {}


def test_refresh_notices_drift_and_the_next_up_restores_the_declared_values(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([secret({"HF_TOKEN": "declared"})]).ok

        mark = cp.mark()
        unchanged = eng.refresh()
        assert unchanged.ok and unchanged.steps[0].keys == ()  # no drift: nothing to do
        assert mutating_rpcs(cp, mark) == []

        cp.create_secret("hf", {"HF_TOKEN": "edited-by-hand", "NEW": "x"}, environment=ENV)  # re-created
        drifted = eng.refresh()
        assert drifted.ok and drifted.steps[0].keys == ("*",)  # the provider's diff says "some"
        assert eng.state.resources[URN].outputs["key_names"] == ["HF_TOKEN", "NEW"]

        up = eng.up([secret({"HF_TOKEN": "declared"})])
        assert up.ok and up.counts["update"] == 1
        assert cp.secret_values("hf") == {"HF_TOKEN": "declared"}

        cp.state.environments[ENV].secrets.pop("hf")  # deleted by hand
        gone = eng.refresh()
        assert gone.steps[0].detail == "deleted" and eng.state.resources == {}


@IMPORT_READ_HAS_NO_PROVIDER
def test_import_reads_an_existing_secret_by_id(modal_control_plane):
    cp = modal_control_plane
    existing = cp.create_secret("hf", {"HF_TOKEN": "x"}, environment=ENV).id
    with serve(cp) as server:
        read = import_read(server, f"{ENV}/hf", URN)
        assert read.id == f"{ENV}/hf"
        assert read.properties["secret_id"] == existing
        assert read.properties["key_names"] == ["HF_TOKEN"]
        # Modal never gives the values back and the import declares none: nothing to vouch for, the
        # next `up` writes the program's values.
        assert wire.is_secret(read.properties["values_digest"]) and wire.reveal(read.properties["values_digest"]) == ""
        assert {k: v for k, v in read.inputs.items() if k != "__provider"} == {"name": "hf", "environment": ENV}
        assert import_read(server, f"{ENV}/missing", URN).id == ""
    assert mutating_rpcs(cp, 0) == []


def test_an_import_returns_the_declared_values_only_as_a_secret(modal_control_plane):
    """The engine re-marks what `read` returns only where the request's inputs held a secret
    (`annotateSecrets`), and `pulumi import` applies no additional_secret_outputs. Here the declared
    values come as the read's state and no inputs are sent, so the engine has nothing to copy
    secretness from: whatever stays secret was marked by the provider itself."""
    cp = modal_control_plane
    canary = f"canary-{uuid.uuid4().hex}"
    cp.create_secret("hf", {"HF_TOKEN": canary}, environment=ENV)
    declared = secret({"HF_TOKEN": canary})
    with serve(cp) as server:
        read = server.read(f"{ENV}/hf", URN, declared.inputs)
        assert read.id == f"{ENV}/hf" and read.inputs is not None
        assert wire.reveal(read.inputs["values"]) == {"HF_TOKEN": canary}  # still there, for the input check
        assert canary not in wire.outside_secrets(read.inputs) + wire.outside_secrets(read.properties)
        assert wire.is_secret(read.properties["values_digest"])

        # The imported state works as any other: the program's next `up` finds nothing to do.
        eng = engine(server)
        eng.state.resources[URN] = ResourceState(
            urn=URN, type=declared.type, id=read.id, inputs=read.inputs, outputs=read.properties,
            additional_secret_outputs=list(ADDITIONAL_SECRET_OUTPUTS),
        )  # fmt: skip
        up = eng.up([declared])
        assert up.ok and up.counts["same"] == 1, up.errors
        assert canary not in wire.outside_secrets(eng.state.resources[URN].inputs)
        assert canary not in " ".join(up.stdout_lines + up.stderr_lines + up.errors)
    assert mutating_rpcs(cp, 0) == []


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED])
def test_every_mutating_call_survives_two_transient_failures(modal_control_plane, status):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        cp.fail_next("SecretGetOrCreate", 2, status)
        mark = cp.mark()
        assert eng.up([secret({"K": "create"})]).ok
        # Two failed creates, the create, the lookup of its id.
        assert cp.rpcs_called(mark) == ["SecretGetOrCreate"] * 4
        assert cp.secret_values("hf") == {"K": "create"}

        cp.fail_next("SecretUpdate", 2, status)
        mark = cp.mark()
        assert eng.up([secret({"K": "update"})]).ok
        assert cp.rpcs_called(mark).count("SecretUpdate") == 3
        assert cp.secret_values("hf") == {"K": "update"}

        cp.fail_next("SecretDelete", 2, status)
        mark = cp.mark()
        assert eng.destroy().ok
        assert cp.rpcs_called(mark).count("SecretDelete") == 3
        assert cp.state.environments[ENV].secrets == {}


def test_a_failed_update_keeps_the_old_state_and_a_rerun_converges(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        eng = engine(server)
        assert eng.up([secret({"K": "v1"})]).ok
        before = eng.state.resources[URN].outputs

        cp.fail_next("SecretGetOrCreate", 1, Status.PERMISSION_DENIED, "not allowed")
        failed = eng.up([secret({"K": "v2"})])
        assert not failed.ok and "write secret 'hf' in environment 'main' failed" in failed.errors[0]
        assert eng.state.resources[URN].outputs == before
        assert cp.secret_values("hf") == {"K": "v1"}

        assert eng.up([secret({"K": "v2"})]).ok
        assert cp.secret_values("hf") == {"K": "v2"}


def test_the_secret_values_never_appear_in_outputs_diffs_logs_or_errors(modal_control_plane):
    cp = modal_control_plane
    canary = f"canary-{uuid.uuid4().hex}"
    canary2 = f"canary-{uuid.uuid4().hex}"
    seen: list[str] = []  # every text the user or the state could show

    with serve(cp) as server:
        eng = engine(server)
        results = [
            eng.preview([secret({"HF_TOKEN": canary})]),
            eng.up([secret({"HF_TOKEN": canary})]),
            eng.refresh(),
            eng.up([secret({"HF_TOKEN": canary})]),
            eng.preview([secret({"HF_TOKEN": canary2})]),
            eng.up([secret({"HF_TOKEN": canary2})]),
        ]
        # Modal echoing a value in an error: our message must still not show it.
        cp.fail_next("SecretGetOrCreate", 1, Status.INVALID_ARGUMENT, f"value {canary} is not allowed")
        failed = eng.up([secret({"HF_TOKEN": canary})])
        assert not failed.ok and "[secret] is not allowed" in failed.errors[0]
        results.append(failed)
        # Too many throttles: the retry lines and the final error.
        cp.fail_next("SecretGetOrCreate", 4, Status.RESOURCE_EXHAUSTED, f"slow down {canary}")
        results.append(eng.up([secret({"HF_TOKEN": canary})]))
        # Check failures, as the engine prints them with the program's values.
        bad = secret({"HF TOKEN": canary, "OK": 5})
        checked = server.check(bad.urn, bad.inputs)
        assert {f.property for f in checked.failures} == {"values.HF TOKEN", "values.OK"}
        seen += [check_failure_message(bad, failure) for failure in checked.failures]
        not_a_map = secret(canary)  # the whole secret field is wrong: still named, never printed
        checked = server.check(not_a_map.urn, not_a_map.inputs)
        assert [f.property for f in checked.failures] == ["values (secret)"]
        seen += [check_failure_message(not_a_map, failure) for failure in checked.failures]
        results.append(eng.destroy())

        for result in results:
            seen += result.errors + result.stdout_lines + result.stderr_lines
            seen += [wire.outside_secrets(outputs) for outputs in result.outputs.values()]
        for state in eng.state.resources.values():
            seen += [wire.outside_secrets(state.inputs), wire.outside_secrets(state.outputs)]
    seen += server.stdout_lines + server.stderr_lines  # after stop(): every line has been read
    assert any("transient ResourceExhaustedError" in line for line in server.stdout_lines)

    text = "\n".join(seen)
    assert "[secret]" in text  # the redaction did happen somewhere, so the scan saw real errors
    assert canary not in text and canary2 not in text
    assert canary not in json.dumps([(c.rpc, c.args) for c in cp.calls])


def test_check_rejects_bad_inputs_property_by_property(modal_control_plane):
    cp = modal_control_plane
    with serve(cp) as server:
        bad = desired(
            ModalSecret, SecretProvider(), "hf",
            {"name": "", "environment": "", "values": {}, "value": "typo"},
        )  # fmt: skip
        failures = {f.property: f.reason for f in server.check(bad.urn, bad.inputs).failures}
        assert set(failures) == {"name", "environment", "values (secret)", "value"}
        assert "at least one key" in failures["values (secret)"]

        missing = desired(ModalSecret, SecretProvider(), "hf", {})
        failures = {f.property: f.reason for f in server.check(missing.urn, missing.inputs).failures}
        assert set(failures) == {"name", "environment", "values (secret)"}
        assert all(reason == "Field required" for reason in failures.values())
    assert cp.calls == []
