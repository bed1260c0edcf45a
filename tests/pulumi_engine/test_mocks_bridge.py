"""A real Pulumi program under set_mocks, its dynamic resources served by the engine harness."""

from pathlib import Path

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from . import properties as props
from .conftest import CANARY, urn_of
from .engine import Engine, State
from .mocks_bridge import EchoMocks, desired_from_mock_args, run_program
from .provider_server import ProviderServer
from .sample_provider import File


def _program(files: Path, *, content: str = "1", with_b: bool = True, fail: bool = False):
    def program() -> None:
        a = File("a", {"directory": str(files), "filename": "a.txt", "content": content,
                       "token": pulumi.Output.secret(CANARY)},
                 pulumi.ResourceOptions(additional_secret_outputs=["token_digest"], protect=True))
        pulumi.export("a_path", a.path)
        pulumi.export("digest", a.token_digest)
        if with_b:
            b = File("b", {"directory": str(files), "filename": "b.txt", "content": a.path},
                     pulumi.ResourceOptions(depends_on=[a], delete_before_replace=True))
            pulumi.export("b_size", b.size)
        if fail:
            raise ValueError("the program found a bad config")
    return program


def test_preview_and_up_of_a_program(engine: Engine, files: Path) -> None:
    preview = run_program(engine, "preview", _program(files))
    assert preview.error is None and preview.result.ok
    assert {c.method for c in preview.result.calls} == {"Check"}
    assert preview.result.counts["create"] == 2 and not list(files.iterdir())
    # Computed outputs of resources that do not exist yet are unknown to the program.
    assert preview.stack_outputs["a_path"] == props.UNKNOWN
    a, b = preview.registrations
    assert (a.urn, a.protect, a.additional_secret_outputs) == (urn_of("a"), True, ["token_digest"])
    assert (b.dependencies, b.delete_before_replace, b.protect) == ([urn_of("a")], True, False)
    assert props.is_secret(a.inputs["__provider"]) and props.is_secret(a.inputs["token"])

    up = run_program(engine, "up", _program(files))
    assert up.error is None and up.result.counts["create"] == 2
    assert up.stack_outputs["a_path"] == str(files / "a.txt")
    assert (files / "b.txt").read_text() == str(files / "a.txt")  # b's input was a's output
    assert props.is_secret(up.stack_outputs["digest"])  # additional_secret_outputs reached the program
    assert up.stack_outputs["b_size"] == len(str(files / "a.txt"))

    again = run_program(engine, "up", _program(files))
    assert again.result.counts["same"] == 2 and again.result.mutating_calls == []


def test_preview_of_a_change_shows_dependents_as_unknown_updates(engine: Engine, files: Path) -> None:
    run_program(engine, "up", _program(files))
    preview = run_program(engine, "preview", _program(files, content="2"))
    # a's update returns its inputs as outputs in preview, so a.path is unknown and b's input
    # changes to unknown: the real engine also previews b as an update.
    assert preview.result.counts["update"] == 2 and preview.result.mutating_calls == []
    up = run_program(engine, "up", _program(files, content="2"))
    assert up.result.counts == {"create": 0, "update": 1, "replace": 0, "delete": 0, "same": 1}


def test_dropping_a_resource_deletes_it_unless_the_program_failed(engine: Engine, files: Path) -> None:
    run_program(engine, "up", _program(files))
    failed = run_program(engine, "up", _program(files, with_b=False, fail=True))
    assert isinstance(failed.error, ValueError) and not failed.result.ok
    assert failed.result.calls_of("Delete") == [] and (files / "b.txt").exists()
    dropped = run_program(engine, "up", _program(files, with_b=False))
    assert dropped.result.ops("delete") == [urn_of("b")] and not (files / "b.txt").exists()


def test_invalid_input_fails_the_program_with_the_property_named(engine: Engine, files: Path) -> None:
    def program() -> None:
        File("a", {"directory": str(files), "filename": "a/b", "content": "x"})

    run = run_program(engine, "preview", program)
    assert run.error is not None and not run.result.ok
    assert [f.property for _, f in run.result.check_failures] == ["filename"]


def test_mock_args_become_desired_resources(files: Path) -> None:
    class Capture(EchoMocks):
        def __init__(self) -> None:
            self.args: list[pulumi_mocks.MockResourceArgs] = []

        def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
            self.args.append(args)
            return super().new_resource(args)

    capture = Capture()
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(capture, preview=False)
    File("a", {"directory": str(files), "filename": "a.txt", "content": "x", "token": pulumi.Output.secret(CANARY)})
    _sync_await(wait_for_rpcs())
    (args,) = capture.args
    desired = desired_from_mock_args(args, protect=True)
    assert desired.urn == urn_of("a") and desired.protect
    assert props.is_secret(desired.inputs["__provider"]) and props.is_secret(desired.inputs["token"])
    with ProviderServer() as server:
        result = Engine(server, State()).up([desired])
    assert result.ok and (files / "a.txt").read_text() == "x"
