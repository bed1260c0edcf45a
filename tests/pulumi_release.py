"""The Pulumi releases this repository pins, read from where each is pinned.

- the Python SDK: pyproject.toml (`pulumi==X`), what the program and the dynamic providers run on;
- the CLI: scripts/pulumi-cli/go.mod (the CLI's module `pkg/v3` and the `sdk/v3` module it is built
  with), what ./scripts/setup builds or reuses and what the tests run. It is deliberately the newest
  release the Go module proxy serves, newer than the SDK: operators run a CLI newer than the SDK.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CLI_GO_MOD = REPO_ROOT / "scripts" / "pulumi-cli" / "go.mod"


def sdk_release() -> str:
    """The pinned Python SDK, e.g. "3.272.0"."""
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(dep.split("==", 1)[1] for dep in dependencies if dep.startswith("pulumi=="))


def go_mod_pins() -> dict[str, str]:
    """The two pulumi modules the CLI is built from, e.g. {"pkg": "3.277.0", "sdk": "3.277.0"}."""
    return dict(re.findall(r"^\s*github\.com/pulumi/pulumi/(pkg|sdk)/v3 v(\S+)", CLI_GO_MOD.read_text(), re.MULTILINE))


def cli_release() -> str:
    """The pinned CLI (the CLI's own module, `pkg/v3`), e.g. "3.277.0"."""
    return go_mod_pins()["pkg"]


def release_key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))
