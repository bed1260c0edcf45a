"""The provider server is started and called the way the engine does it (see provider_server.py)."""

import os
import threading
from pathlib import Path

import pytest

from . import properties as props
from .conftest import CANARY, FILE_PROVIDER, file_resource, urn_of
from .provider_server import (
    REPO_ROOT,
    VENV_PYTHON,
    ProviderCallError,
    ProviderServer,
    ProviderStartError,
    launch_for_project,
)


def _process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def test_starts_like_the_engine_shim(tmp_path: Path) -> None:
    base_env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path), "PYTHONHOME": "/nowhere"}
    with ProviderServer(base_env=base_env, extra_env={"MODAL_SERVER_URL": "http://127.0.0.1:1"},
                        project="glm") as server:
        assert server.process.args == [str(VENV_PYTHON), "-u", "-m", "pulumi.dynamic"]
        assert Path(os.readlink(f"/proc/{server.process.pid}/cwd")) == REPO_ROOT
        env = _process_environ(server.process.pid)
        assert "PYTHONPATH" not in env and "PYTHONHOME" not in env
        assert env["PATH"].split(os.pathsep)[0] == str(VENV_PYTHON.parent)
        assert env["MODAL_SERVER_URL"] == "http://127.0.0.1:1"
        assert env["PULUMI_PROJECT"] == "glm"
        assert server.accept_secrets is False
        assert server.supports_preview is False
        assert server.plugin_version == "0.1.0"
        assert [c.method for c in server.calls] == ["GetPluginInfo", "Configure"]
    assert server.process.returncode is not None


def test_check_echoes_inputs_and_re_marks_the_secret_ones(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files, token=props.secret(CANARY))
    checked = server.check(desired.urn, desired.inputs)
    assert checked.failures == []
    assert props.is_secret(checked.inputs["token"]) and props.is_secret(checked.inputs["__provider"])
    assert not props.is_secret(checked.inputs["content"])
    # The provider itself got plaintext: the engine strips secrets for acceptSecrets=False.
    sent = server.calls[-1].request["news"]
    assert sent["token"] == CANARY and not props.contains_secrets(sent)


def test_check_failures_name_each_property(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files, content=3.0, filename="x/y")
    checked = server.check(desired.urn, desired.inputs)
    assert sorted(f.property for f in checked.failures) == ["content", "filename"]
    assert all(f.reason for f in checked.failures)


def test_full_lifecycle_through_grpc(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files, content="one", token=props.secret(CANARY))
    inputs = server.check(desired.urn, desired.inputs).inputs
    created = server.create(desired.urn, inputs)
    path = files / "a.txt"
    assert created.id == str(path) and path.read_text() == "one"
    assert created.properties["size"] == 3.0  # protobuf numbers are doubles

    news = server.check(desired.urn, {**desired.inputs, "content": "two"}, inputs).inputs
    diff = server.diff(created.id, desired.urn, created.properties, news, inputs)
    assert (diff.changes, diff.replaces) == ("some", [])
    # Diff and Update get the OLD OUTPUTS as olds, and the old inputs separately.
    assert server.calls[-1].request["olds"]["path"] == str(path)
    assert server.calls[-1].request["old_inputs"] == props.strip_secrets(inputs)
    outputs = server.update(created.id, desired.urn, created.properties, news, inputs)
    assert path.read_text() == "two" and outputs["content"] == "two"

    path.write_text("drifted")
    read = server.read(created.id, desired.urn, outputs, news)
    assert read.id == created.id and read.properties["content"] == "drifted"

    server.delete(created.id, desired.urn, outputs, news)
    assert not path.exists()
    assert server.read(created.id, desired.urn, outputs, news).id == ""  # gone: the engine drops it
    assert [c.method for c in server.mutating_calls()] == ["Create", "Update", "Delete"]
    assert server.stdout_lines == ["creating a.txt", "updating a.txt", "deleting a.txt"]


def test_replacing_property_is_reported(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files)
    inputs = server.check(desired.urn, desired.inputs).inputs
    created = server.create(desired.urn, inputs)
    news = server.check(desired.urn, {**desired.inputs, "filename": "b.txt"}, inputs).inputs
    diff = server.diff(created.id, desired.urn, created.properties, news, inputs)
    assert diff.replace and diff.replaces == ["filename"]
    # The Python dynamic server never forwards stables, changed keys or a detailed diff.
    assert (diff.stables, diff.diffs, diff.detailed_diff) == ([], [], None)


def test_only_outputs_under_a_secret_input_key_come_back_secret(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files, token=props.secret(CANARY))
    created = server.create(desired.urn, server.check(desired.urn, desired.inputs).inputs)
    assert props.is_secret(created.properties["token"])
    assert props.reveal(created.properties["token"]) == CANARY
    assert props.is_secret(created.properties["__provider"])
    # Derived from the secret but under another key: plaintext unless additional_secret_outputs.
    assert not props.is_secret(created.properties["token_digest"])


def test_preview_create_and_update_never_reach_the_provider(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files)
    inputs = server.check(desired.urn, desired.inputs, allow_unknowns=True).inputs
    before = len(server.calls)
    preview = server.create(desired.urn, inputs, preview=True)
    assert preview.id == "" and preview.properties == inputs
    assert server.update("id", desired.urn, {}, inputs, {}, preview=True) == inputs
    assert len(server.calls) == before and not list(files.iterdir())


def test_provider_exception_is_a_call_error_with_the_traceback(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files, extra={"fail": "create"})
    inputs = server.check(desired.urn, desired.inputs).inputs
    with pytest.raises(ProviderCallError) as raised:
        server.create(desired.urn, inputs)
    assert raised.value.method == "Create"
    assert "Traceback" in raised.value.details and "injected create failure" in raised.value.details


def test_stack_config_reaches_configure_in_plaintext(files: Path) -> None:
    config = {"project:banner": props.secret("from-config:")}
    with ProviderServer(config=config) as server:
        desired = file_resource("a", files, content="x")
        server.create(desired.urn, server.check(desired.urn, desired.inputs).inputs)
    assert (files / "a.txt").read_text() == "from-config:x"


def test_unknowns_reach_check_only_when_allowed(server: ProviderServer, files: Path) -> None:
    desired = file_resource("a", files, content=props.UNKNOWN)
    checked = server.check(desired.urn, desired.inputs, allow_unknowns=True)
    assert checked.failures == [] and checked.inputs["content"] == props.UNKNOWN
    # Outside preview the engine drops unknowns, so the provider sees the property missing.
    assert [f.property for f in server.check(desired.urn, desired.inputs).failures] == ["content"]


def test_launch_follows_pulumi_yaml_main_and_virtualenv(tmp_path: Path) -> None:
    (tmp_path / "infra").mkdir()
    (tmp_path / ".venv").symlink_to(VENV_PYTHON.parent.parent)
    yaml = "name: glm\nruntime:\n  name: python\n  options:\n    virtualenv: .venv\n"
    (tmp_path / "Pulumi.yaml").write_text(yaml)
    spec = launch_for_project(tmp_path, base_env={})
    assert (spec.cwd, spec.python) == (tmp_path, tmp_path / ".venv" / "bin" / "python")
    assert spec.env["PULUMI_RUNTIME_VIRTUALENV"] == ".venv" and spec.env["PULUMI_PROJECT"] == "glm"
    # With `main: infra/` the provider runs in infra/ and the shim looks for infra/.venv (pulumi/pulumi#7061).
    (tmp_path / "Pulumi.yaml").write_text(yaml + "main: infra/\n")
    with pytest.raises(ProviderStartError, match="infra/.venv"):
        launch_for_project(tmp_path, base_env={})
    (tmp_path / "infra" / ".venv").symlink_to("../.venv")
    spec = launch_for_project(tmp_path, base_env={"PATH": os.environ["PATH"]})
    assert spec.cwd == tmp_path / "infra"
    with ProviderServer.for_launch(spec) as server:
        assert Path(os.readlink(f"/proc/{server.process.pid}/cwd")) == tmp_path / "infra"
        assert server.project == "glm"
        # Only installed packages and the program directory are importable there: a provider
        # module that is merely in the repository (like this test's) cannot be unpickled.
        with pytest.raises(ProviderCallError, match="No module named 'tests'"):
            server.check(urn_of("a"), {"__provider": FILE_PROVIDER, "content": "x"})


def test_urns_are_parsed_like_the_engine() -> None:
    urn = urn_of("weights")
    assert urn == "urn:pulumi:stack::project::pulumi-python:dynamic/sample:File::weights"
    assert FILE_PROVIDER["value"]  # the pickled provider is small and by reference
    assert len(FILE_PROVIDER["value"]) < 200


def test_progress_lines_arrive_while_the_call_is_still_running(server: ProviderServer, files: Path) -> None:
    release = files.parent / "release"
    desired = file_resource("slow", files, extra={"wait_for": str(release)})
    inputs = server.check(desired.urn, desired.inputs).inputs
    worker = threading.Thread(target=server.create, args=(desired.urn, inputs))
    worker.start()
    try:
        assert server.wait_for_stdout(lambda line: line == "creating slow.txt") == "creating slow.txt"
        assert not (files / "slow.txt").exists()  # the create has not finished yet
    finally:
        release.touch()
        worker.join(timeout=60)
    assert (files / "slow.txt").exists()


def test_a_server_that_never_prints_a_port_fails_to_start() -> None:
    with pytest.raises(ProviderStartError, match="did not print a port"):
        ProviderServer(python="/bin/false").start()
