"""The engine harness plans and applies like `pulumi preview/up/refresh/destroy` (see engine.py)."""

import json
from pathlib import Path

from . import properties as props
from .conftest import CANARY, UNKNOWN_DIFF_PROVIDER, file_resource, urn_of
from .engine import (
    CREATE_REPLACEMENT,
    DELETE,
    DELETE_REPLACED,
    REPLACE,
    DesiredResource,
    Engine,
    State,
    check_failure_message,
    parse_timeout,
)
from .provider_server import CheckFailure, ProviderServer


def _stack(files: Path, **contents: str) -> list:
    """a <- b <- c: each depends on the one before it."""
    names = list(contents)
    return [file_resource(name, files, content, dependencies=[urn_of(n) for n in names[:i]])
            for i, (name, content) in enumerate(contents.items())]


def _methods(result) -> list[tuple[str, str]]:
    return [(c.method, c.urn.rsplit("::", 1)[-1]) for c in result.calls]


def test_preview_of_a_new_stack_only_checks(engine: Engine, files: Path) -> None:
    result = engine.preview(_stack(files, a="1", b="2"))
    assert result.ok and result.counts["create"] == 2
    assert _methods(result) == [("Check", "a"), ("Check", "b")]
    assert result.ids[urn_of("a")] == ""  # unknown until created
    assert not list(files.iterdir()) and engine.state.resources == {}


def test_up_then_identical_up_makes_no_mutating_call(engine: Engine, files: Path) -> None:
    first = engine.up(_stack(files, a="1", b="2"))
    assert first.ok and first.counts["create"] == 2
    assert [m for m in _methods(first) if m[0] == "Create"] == [("Create", "a"), ("Create", "b")]
    assert first.stdout_lines == ["creating a.txt", "creating b.txt"]
    second = engine.up(_stack(files, a="1", b="2"))
    assert second.ok and second.counts["same"] == 2 and second.mutating_calls == []
    assert _methods(second) == [("Check", "a"), ("Diff", "a"), ("Check", "b"), ("Diff", "b")]
    assert second.stdout_lines == []
    assert second.outputs == first.outputs


def test_change_updates_only_that_resource(engine: Engine, files: Path) -> None:
    engine.up(_stack(files, a="1", b="2"))
    result = engine.up(_stack(files, a="1", b="22"))
    assert result.counts == {"create": 0, "update": 1, "replace": 0, "delete": 0, "same": 1}
    assert [m for m in _methods(result) if m[0] == "Update"] == [("Update", "b")]
    assert (files / "b.txt").read_text() == "22"


def test_replace_creates_the_new_one_before_deleting_the_old(engine: Engine, files: Path) -> None:
    engine.up([file_resource("a", files, "x")])
    result = engine.up([file_resource("a", files, "x", filename="renamed.txt")])
    assert result.ok and result.counts["replace"] == 1
    assert result.step(urn_of("a")).keys == ("filename",)
    assert [m[0] for m in _methods(result)] == ["Check", "Diff", "Check", "Create", "Delete"]
    assert [s.op for s in result.steps] == [REPLACE, CREATE_REPLACEMENT, DELETE_REPLACED]
    assert sorted(p.name for p in files.iterdir()) == ["renamed.txt"]
    assert engine.state.get(urn_of("a")).id.endswith("renamed.txt") and engine.state.pending_deletes == []


def test_delete_before_replace_option_deletes_first(engine: Engine, files: Path) -> None:
    engine.up([file_resource("a", files, "x", delete_before_replace=True)])
    result = engine.up([file_resource("a", files, "x", filename="b.txt", delete_before_replace=True)])
    assert [m[0] for m in _methods(result)] == ["Check", "Diff", "Check", "Delete", "Create"]
    assert sorted(p.name for p in files.iterdir()) == ["b.txt"]


def test_removed_resources_are_deleted_dependents_first(engine: Engine, files: Path) -> None:
    engine.up(_stack(files, a="1", b="2", c="3"))
    result = engine.up(_stack(files, a="1"))
    assert result.ops(DELETE) == [urn_of("c"), urn_of("b")]
    assert list(engine.state.resources) == [urn_of("a")]
    assert engine.destroy().ops(DELETE) == [urn_of("a")]
    assert not list(files.iterdir()) and engine.state.resources == {}


def test_preview_counts_changes_but_changes_nothing(engine: Engine, files: Path) -> None:
    engine.up(_stack(files, a="1", b="2", c="3"))
    before = {p.name: p.read_text() for p in files.iterdir()}
    result = engine.preview([file_resource("a", files, "changed"), file_resource("b", files, "2", filename="new.txt"),
                             file_resource("d", files, "4")])
    assert result.ok
    assert result.counts == {"create": 1, "update": 1, "replace": 1, "delete": 1, "same": 0}
    assert result.mutating_calls == [] and {c.method for c in result.calls} == {"Check", "Diff"}
    assert {p.name: p.read_text() for p in files.iterdir()} == before
    assert set(engine.state.resources) == {urn_of("a"), urn_of("b"), urn_of("c")}


def test_protected_resources_are_never_deleted_nor_replaced(engine: Engine, files: Path) -> None:
    engine.up([file_resource("a", files, protect=True), file_resource("b", files)])
    refused = engine.up([file_resource("a", files, filename="other.txt", protect=True)])
    assert not refused.ok and "marked for protection" in refused.errors[0]
    assert refused.mutating_calls == [] and (files / "a.txt").exists() and (files / "b.txt").exists()
    preview = engine.destroy(preview=True)
    assert not preview.ok and "cannot be deleted" in preview.errors[0]
    destroy = engine.destroy()
    assert not destroy.ok and "because it is protected" in destroy.errors[0]
    assert (files / "a.txt").exists() and urn_of("a") in engine.state.resources
    # Unprotecting in the program (an up), then destroying, works.
    assert engine.up([file_resource("a", files)]).ok
    assert engine.destroy().ok and engine.state.resources == {}


def test_secret_inputs_stay_secret_and_derived_outputs_need_additional_secret_outputs(
        engine: Engine, files: Path) -> None:
    plain = engine.up([file_resource("a", files, token=props.secret(CANARY))])
    outputs = plain.outputs[urn_of("a")]
    assert props.is_secret(outputs["token"]) and not props.is_secret(outputs["token_digest"])
    marked = engine.up([file_resource("a", files, token=props.secret(CANARY),
                                      additional_secret_outputs=["token_digest"])])
    assert marked.counts["same"] == 1
    assert props.is_secret(marked.outputs[urn_of("a")]["token_digest"])
    assert props.is_secret(engine.state.get(urn_of("a")).outputs["token_digest"])
    for line in plain.stdout_lines + marked.stdout_lines + plain.stderr_lines:
        assert CANARY not in line


def test_check_failure_fails_the_deployment_before_any_create(engine: Engine, files: Path) -> None:
    result = engine.up([file_resource("a", files, content=7.0), file_resource("b", files)])
    assert not result.ok
    assert [(urn, f.property) for urn, f in result.check_failures] == [(urn_of("a"), "content")]
    assert result.errors[0] == ("pulumi-python:dynamic/sample:File resource 'a': property content value {7} "
                                "has a problem: content must be a string")
    assert result.calls_of("Create") == [] and engine.state.resources == {}
    assert engine.preview([file_resource("a", files, filename="../x")]).check_failures[0][1].property == "filename"


def test_check_failure_on_a_secret_property_prints_it_like_the_engine_does() -> None:
    desired = DesiredResource(urn=urn_of("a"), inputs={"token": props.secret(CANARY)})
    message = check_failure_message(desired, CheckFailure("token", "too short"))
    # Go's %v of a *Secret: the engine's own diagnostic would show the plaintext.
    assert f"value {{&{{{{{CANARY}}}}}}}" in message


def test_provider_error_leaves_nothing_half_done_and_a_rerun_converges(engine: Engine, files: Path) -> None:
    failing = engine.up([file_resource("a", files), file_resource("b", files, extra={"fail": "create"}),
                         file_resource("c", files)])
    assert not failing.ok and "injected create failure" in failing.errors[0]
    assert list(engine.state.resources) == [urn_of("a")]  # b failed, c was never attempted
    fixed = engine.up([file_resource("a", files), file_resource("b", files), file_resource("c", files)])
    assert fixed.ok and fixed.counts == {"create": 2, "update": 0, "replace": 0, "delete": 0, "same": 1}


def test_no_deletes_after_a_failed_program(engine: Engine, files: Path) -> None:
    engine.up([file_resource("a", files), file_resource("b", files)])
    result = engine.up([file_resource("a", files, content=1.0)])  # b is gone, but a is invalid
    assert not result.ok and result.calls_of("Delete") == [] and (files / "b.txt").exists()


def test_refresh_notices_drift_and_disappearance(engine: Engine, files: Path) -> None:
    engine.up([file_resource("a", files, "1"), file_resource("b", files, "2")])
    (files / "a.txt").write_text("drifted")
    (files / "b.txt").unlink()
    preview = engine.refresh(preview=True)
    assert [s.detail for s in preview.steps] == ["changed", "deleted"]
    assert set(engine.state.resources) == {urn_of("a"), urn_of("b")}
    refreshed = engine.refresh()
    assert [m[0] for m in _methods(refreshed)] == ["Read", "Diff", "Read"]
    assert refreshed.step(urn_of("a")).keys  # the provider's diff says it drifted
    assert engine.state.get(urn_of("a")).outputs["content"] == "drifted"
    assert list(engine.state.resources) == [urn_of("a")]
    # Diff compares the program with the refreshed OUTPUTS: a is put back, b is re-created.
    result = engine.up([file_resource("a", files, "1"), file_resource("b", files, "2")])
    assert result.counts == {"create": 1, "update": 1, "replace": 0, "delete": 0, "same": 0}
    assert (files / "a.txt").read_text() == "1" and (files / "b.txt").read_text() == "2"


def test_unknown_diff_falls_back_to_the_engines_input_diff(engine: Engine, files: Path) -> None:
    engine.up([file_resource("a", files, "1")])
    # The NEW inputs' provider answers the diff; this one says DIFF_UNKNOWN, so the engine diffs
    # the inputs itself, and the serialized provider is one of them.
    swapped = engine.up([file_resource("a", files, "1", provider=UNKNOWN_DIFF_PROVIDER)])
    assert swapped.counts["update"] == 1 and swapped.step(urn_of("a")).keys == ("__provider",)
    same = engine.up([file_resource("a", files, "1", provider=UNKNOWN_DIFF_PROVIDER)])
    assert same.counts["same"] == 1 and same.mutating_calls == []
    changed = engine.up([file_resource("a", files, "2", provider=UNKNOWN_DIFF_PROVIDER)])
    assert changed.counts["update"] == 1 and changed.step(urn_of("a")).keys == ("content",)


def test_preview_passes_unknowns_and_returns_inputs_as_outputs(engine: Engine, files: Path) -> None:
    result = engine.preview([file_resource("a", files, props.UNKNOWN)])
    assert result.ok
    assert result.outputs[urn_of("a")]["content"] == props.UNKNOWN
    assert result.calls[0].request["news"]["content"] == props.UNKNOWN


def test_state_survives_a_new_engine_and_server(files: Path, tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    with ProviderServer() as server:
        assert Engine(server, State(state_file)).up(_stack(files, a="1", b="2")).ok
    saved = json.loads(state_file.read_text())
    assert [r["urn"] for r in saved["resources"]] == [urn_of("a"), urn_of("b")]
    with ProviderServer() as server:
        again = Engine(server, State(state_file)).up(_stack(files, a="1", b="2"))
    assert again.counts["same"] == 2 and again.mutating_calls == []


def test_custom_timeouts_are_sent_in_seconds(engine: Engine, files: Path) -> None:
    assert parse_timeout("1h30m") == 5400.0 and parse_timeout("90s") == 90.0 and parse_timeout("") == 0.0
    result = engine.up([file_resource("a", files, custom_timeouts={"create": 120.0})])
    assert result.ok and result.calls_of("Create")[0].request["timeout"] == 120.0
