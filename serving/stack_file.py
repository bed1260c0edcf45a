"""Read the deployment config out of a Pulumi stack file (`Pulumi.<stack>.yaml`), without Pulumi.

A stack file keeps the whole `DeploymentConfig` as one structured YAML object under a single config
key, `glm-modal:deployment`. The Pulumi program reads that key with `pulumi.Config`; operators and
tests read the same file here (`python -m serving.render`), so both see the same object validated by
the same model. Pure functions: text or path in, `DeploymentConfig` out; nothing here talks to
Pulumi or Modal, and secret values (`{secure: ...}` entries) are never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serving.config import DeploymentConfig

# The Pulumi project name (Pulumi.yaml `name:`): config keys in a stack file are namespaced by it.
PROJECT = "glm-modal"

# The one key holding the deployment, as `pulumi.Config().require_object(DEPLOYMENT_KEY)` reads it
# and as it is spelled in the stack file (DEPLOYMENT_CONFIG_KEY).
DEPLOYMENT_KEY = "deployment"
DEPLOYMENT_CONFIG_KEY = f"{PROJECT}:{DEPLOYMENT_KEY}"

# Stack files live next to Pulumi.yaml, at the repository root.
REPO_ROOT = Path(__file__).resolve().parent.parent


class StackFileError(ValueError):
    """The stack file cannot be read as a deployment (missing, not YAML, no deployment object)."""


def stack_file_path(stack: str, root: Path = REPO_ROOT) -> Path:
    if not stack or "/" in stack or stack.startswith("."):
        raise StackFileError(f"{stack!r} is not a stack name")
    return Path(root) / f"Pulumi.{stack}.yaml"


def deployment_object(text: str, source: str = "stack file") -> dict[str, Any]:
    """The raw `glm-modal:deployment` object of a stack file's text."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise StackFileError(f"{source}: not valid YAML ({error})") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise StackFileError(f"{source}: no `config:` mapping")
    if DEPLOYMENT_CONFIG_KEY not in config:
        raise StackFileError(f"{source}: no `{DEPLOYMENT_CONFIG_KEY}` key under `config:`")
    value = config[DEPLOYMENT_CONFIG_KEY]
    if value is None:
        value = {}  # an empty key means "all defaults"
    if not isinstance(value, dict):
        raise StackFileError(f"{source}: `{DEPLOYMENT_CONFIG_KEY}` must be a YAML object, got {type(value).__name__}")
    secure = _secure_paths(value)
    if secure:
        # Encrypted values belong in their own keys (`pulumi config set --secret`); the deployment
        # reaches the container in plaintext, so it must not carry any.
        raise StackFileError(
            f"{source}: `{DEPLOYMENT_CONFIG_KEY}` holds secret values at {', '.join(secure)}; "
            "secrets are separate keys set with `pulumi config set --secret`"
        )
    return value


def parse_deployment(text: str, source: str = "stack file") -> DeploymentConfig:
    """Stack file text -> validated DeploymentConfig (raises StackFileError or pydantic's ValidationError)."""
    return DeploymentConfig.model_validate(deployment_object(text, source))


def load_stack_file(path: str | Path) -> DeploymentConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise StackFileError(f"{path}: cannot read ({error.strerror or error})") from None
    return parse_deployment(text, source=str(path))


def _secure_paths(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return [path or "(top level)"]
        return [found for key, item in value.items() for found in _secure_paths(item, f"{path}.{key}".lstrip("."))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _secure_paths(item, f"{path}[{index}]")]
    return []
