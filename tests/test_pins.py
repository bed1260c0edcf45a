"""The Pulumi pins, kept in step: the Python SDK (pyproject.toml), the CLI that ./scripts/setup builds
or reuses (scripts/pulumi-cli/go.mod: the CLI's module and the sdk module it is built with), the CLI
the GitHub workflow installs, and what the README says about them. The CLI is deliberately newer than
the SDK (operators run a CLI newer than the SDK, so the tests do too); a bump then says here which
place was missed."""

from __future__ import annotations

import re

import yaml

from tests.pulumi_release import CLI_GO_MOD, REPO_ROOT, cli_release, go_mod_pins, release_key, sdk_release

README = REPO_ROOT / "README.md"


def test_the_cli_is_built_from_one_release_of_its_module_and_the_sdk_module() -> None:
    pins = go_mod_pins()
    assert set(pins) == {"pkg", "sdk"} and pins["pkg"] == pins["sdk"], pins


def test_the_cli_is_not_older_than_the_sdk() -> None:
    assert release_key(cli_release()) >= release_key(sdk_release()), (cli_release(), sdk_release())


def test_the_workflow_installs_the_cli_the_tests_run() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "stack.yml").read_text())
    assert str(workflow["env"]["PULUMI_VERSION"]) == cli_release()


def test_the_readme_states_the_supported_cli_range_and_the_pins() -> None:
    text = README.read_text()
    supported = re.findall(r"Supported CLI releases: (\d+\.\d+\.\d+) to (\d+\.\d+\.\d+)", text)
    assert supported == [(sdk_release(), cli_release())]  # from the SDK's release up to the tested CLI
    assert f"pulumi version                           # v{cli_release()}\n" in text
    assert f"--version {cli_release()}`" in text  # the official installer's command
    assert f"the Python SDK is {sdk_release()} (`pyproject.toml`" in text


def test_the_cli_build_module_keeps_the_fork_the_cli_itself_replaces() -> None:
    text = CLI_GO_MOD.read_text()
    assert re.search(r"^replace github\.com/atotto/clipboard => github\.com/tgummerer/clipboard ", text, re.MULTILINE)
    assert re.search(r"^tool github\.com/pulumi/pulumi/pkg/v3/cmd/pulumi$", text, re.MULTILINE)
