"""One Pulumi release everywhere: the Python SDK (pyproject.toml), the CLI that ./scripts/setup builds
(scripts/pulumi-cli/go.mod: the CLI's module and the sdk module it is built with) and the CLI the
GitHub workflow installs. A bump is then one release in three places, and this test says which
one was missed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def sdk_pin() -> str:
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(dep.split("==", 1)[1] for dep in dependencies if dep.startswith("pulumi=="))


def go_mod_pins() -> dict[str, str]:
    text = (REPO_ROOT / "scripts" / "pulumi-cli" / "go.mod").read_text()
    return dict(re.findall(r"^\s*github\.com/pulumi/pulumi/(pkg|sdk)/v3 v3\.(\S+)", text, re.MULTILINE))


def test_the_sdk_the_built_cli_and_the_workflow_cli_are_one_release() -> None:
    release = sdk_pin()
    assert go_mod_pins() == {"pkg": release.removeprefix("3."), "sdk": release.removeprefix("3.")}
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "stack.yml").read_text())
    assert str(workflow["env"]["PULUMI_VERSION"]) == release


def test_the_cli_build_module_keeps_the_fork_the_cli_itself_replaces() -> None:
    text = (REPO_ROOT / "scripts" / "pulumi-cli" / "go.mod").read_text()
    assert re.search(r"^replace github\.com/atotto/clipboard => github\.com/tgummerer/clipboard ", text, re.MULTILINE)
    assert re.search(r"^tool github\.com/pulumi/pulumi/pkg/v3/cmd/pulumi$", text, re.MULTILINE)
