"""Read the deployment config out of a Pulumi stack file (`Pulumi.<stack>.yaml`), without Pulumi.

A stack file keeps the whole `DeploymentConfig` as one structured YAML object under a single config
key, `glm-modal:deployment`. The Pulumi program reads that key with `pulumi.Config`; operators and
tests read the same file here (`python -m serving.render`), so both see the same object validated by
the same model. Pure functions: text or path in, `DeploymentConfig` out; nothing here talks to
Pulumi or Modal, and secret values (`{secure: ...}` entries) are never read.

What render prints must not carry a secret it can know. It cannot decrypt a `secure:` entry, and
prints none (inside the deployment it names their paths; it reads no other key); the ciphertext
itself is no secret (it is committed with the file, and only the stack's secrets provider opens it).
What it can know is a credential stored in plaintext (`plaintext_credentials`: the value under a
key named like one, e.g. `glm-modal:apiKey` set without --secret), which render redacts from all
it prints; and a YAML error is reported without the line of the file PyYAML would quote.
"""

from __future__ import annotations

import json
import re
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

# A config key of any namespace whose name says it holds a credential: the Pulumi program requires it
# to be a Pulumi secret (infra/settings.py), render hides a plaintext one's value.
CREDENTIAL_LIKE_KEY = re.compile(
    r"token|secret|password|passwd|passphrase|credential|api_?key|access_?key|private_?key|auth", re.IGNORECASE
)

# Said of a deployment key with no value, by render and by the Pulumi program alike.
EMPTY_DEPLOYMENT = "is empty: write the deployment object under it (`{}` deploys the production defaults)"

# Stack files live next to Pulumi.yaml, at the repository root.
REPO_ROOT = Path(__file__).resolve().parent.parent


class StackFileError(ValueError):
    """The stack file cannot be read as a deployment (missing, not YAML, no deployment object)."""


# Pulumi reads stack files with Go's yaml.v3, which differs from PyYAML's YAML 1.1 defaults in ways
# that would let `render` accept what `pulumi preview` refuses (or the reverse). This loader reads the
# way Pulumi does where it matters here: only true/false are booleans ("yes", "on" stay strings),
# no sexagesimal numbers ("1:30" is text) and no timestamps (dates stay strings); a key given twice
# is an error naming its path (yaml.v3 refuses it too, where PyYAML keeps the last); and aliases may
# not expand the document beyond a bound (yaml.v3 refuses "excessive aliasing"; PyYAML would build
# the billion laughs).
MAX_EXPANDED_NODES = 100_000
# Go's JSON encoder writes a float64 this large or larger with an exponent (1e+21), which reads back
# as a float; below it, a whole number reads back as an int.
GO_JSON_EXPONENT_FROM = 1e21


class _PulumiYamlLoader(yaml.SafeLoader):
    pass


_PulumiYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                                                                   "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}  # fmt: skip
_PulumiYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_PulumiYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+)$"), list("-+0123456789")
)
# YAML 1.2 booleans: construct only the spellings the resolver above lets through.
_PulumiYamlLoader.add_constructor("tag:yaml.org,2002:bool", lambda loader, node: node.value.lower() == "true")


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many nodes `node` stands for once every alias is expanded (counted without expanding)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a cycle counts once rather than forever
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    size = 1 + sum(_expanded_size(child, sizes) for child in children)
    sizes[id(node)] = size
    return size


def _refuse_duplicate_keys(node: yaml.Node, path: str, seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            where = f"{path}.{key}" if path else key
            if key in lines:
                raise yaml.YAMLError(f"{where}: given twice (lines {lines[key]} and {key_node.start_mark.line + 1})")
            lines[key] = key_node.start_mark.line + 1
            _refuse_duplicate_keys(value_node, where, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{index}]", seen)


def _as_pulumi_passes_it(value: Any) -> Any:
    """Values as they reach the Pulumi program: the CLI hands an object over as JSON written by Go,
    which spells a whole float64 without its fraction (8.0 arrives as 8), so the program cannot
    tell `8.0` from `8`; neither may render."""
    if isinstance(value, dict):
        return {key: _as_pulumi_passes_it(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_pulumi_passes_it(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < GO_JSON_EXPONENT_FROM:
        return int(value)
    return value


def load_yaml(text: str) -> Any:
    """YAML text -> Python data, read as Pulumi reads a stack file (see _PulumiYamlLoader)."""
    loader = _PulumiYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"aliases expand the document beyond {MAX_EXPANDED_NODES} nodes")
        _refuse_duplicate_keys(node, "", set())
        return _as_pulumi_passes_it(loader.construct_document(node))
    finally:
        loader.dispose()


def stack_file_path(stack: str, root: Path = REPO_ROOT) -> Path:
    if not stack or "/" in stack or stack.startswith("."):
        raise StackFileError(f"{stack!r} is not a stack name")
    return Path(root) / f"Pulumi.{stack}.yaml"


def _yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without the snippet of the file PyYAML quotes (its line may hold a
    credential in plaintext; Pulumi's own YAML errors give the line number alone, too)."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return str(error)
    problem = "; ".join(part for part in (error.context, error.problem) if part)
    mark = error.problem_mark or error.context_mark
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else problem


def plaintext_credentials(text: str) -> list[str]:
    """The values a stack file's text holds in plaintext under a key named like a credential
    (CREDENTIAL_LIKE_KEY), of any namespace: what render can know of the stack's secrets. A `secure:`
    entry is not one (it is a mapping, and ciphertext), nor a boolean or a list (`requireApiKey`,
    `clientTokens` are plain settings); a file that is not YAML has none that can be told."""
    try:
        config = config_mapping(text)
    except StackFileError:
        return []
    return [
        str(value)
        for key, value in config.items()
        if key != DEPLOYMENT_CONFIG_KEY
        and CREDENTIAL_LIKE_KEY.search(str(key).split(":", 1)[-1])
        and isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and str(value)
    ]


def config_mapping(text: str, source: str = "stack file") -> dict[Any, Any]:
    """The `config:` mapping of a stack file's text (raises StackFileError)."""
    try:
        document = load_yaml(text)
    except yaml.YAMLError as error:
        raise StackFileError(f"{source}: not valid YAML ({_yaml_problem(error)})") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise StackFileError(f"{source}: no `config:` mapping")
    return config


def deployment_object(text: str, source: str = "stack file") -> dict[str, Any]:
    """The raw `glm-modal:deployment` object of a stack file's text."""
    config = config_mapping(text, source)
    if DEPLOYMENT_CONFIG_KEY not in config:
        raise StackFileError(f"{source}: no `{DEPLOYMENT_CONFIG_KEY}` key under `config:`")
    value = config[DEPLOYMENT_CONFIG_KEY]
    if value is None:
        # A key with nothing under it is a lost indentation more often than a wish for the defaults;
        # the Pulumi program refuses it the same way (infra/settings.py).
        raise StackFileError(f"{source}: `{DEPLOYMENT_CONFIG_KEY}` {EMPTY_DEPLOYMENT}")
    if isinstance(value, str):
        # Pulumi hands every config value to the program as a string, an object as its JSON: a string
        # that holds a JSON object reads as that object there, so it does here too.
        value = _json_object(value)
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


def read_stack_file(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise StackFileError(f"{path}: cannot read ({error.strerror or error})") from None


def load_stack_file(path: str | Path) -> DeploymentConfig:
    return parse_deployment(read_stack_file(path), source=str(path))


def _json_object(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _secure_paths(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return [path or "(top level)"]
        return [found for key, item in value.items() for found in _secure_paths(item, f"{path}.{key}".lstrip("."))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _secure_paths(item, f"{path}[{index}]")]
    return []
