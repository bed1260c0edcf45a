"""The typed settings of one stack, read from `pulumi config` and validated before anything is declared.

A stack file holds one structured key, `glm-modal:deployment` (the whole `DeploymentConfig`, the same
model the container runs), a few keys that only infra reads, and two secrets set with
`pulumi config set --secret`. Everything is checked here, at program start, so a bad stack file fails
`pulumi preview` before a single resource is registered, with one line per problem that starts with
the config key and the property inside it, e.g.

    glm-modal:deployment.parallelism.tp: 4 must equal hardware.gpu_count (8): ...

The failure is a `pulumi.RunError`: the language host prints its message as an error and exits
non-zero without the program's stack trace (any other exception is printed with one). Secret values
never appear in these messages.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi
from pulumi.runtime import config as runtime_config
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from infra import messages
from infra.costs import COSTS_KEY, CostSettings, load_costs
from providers.base import EnvironmentName
from serving.config import DeploymentConfig, format_errors
from serving.modal_rules import check_deployment_tag

# The config namespace (the project name in Pulumi.yaml, so keys read `glm-modal:<key>`) and the
# structured key holding the whole deployment, as the stack-file reader spells them.
from serving.stack_file import CREDENTIAL_LIKE_KEY, DEPLOYMENT_KEY, EMPTY_DEPLOYMENT, PROJECT

# Secret keys: set with `pulumi config set --secret`, stored encrypted in the stack file.
HF_TOKEN_KEY = "hfToken"
API_KEY_KEY = "apiKey"
SECRET_KEYS = (HF_TOKEN_KEY, API_KEY_KEY)

# Stacks that serve real users: their volumes stay protected and their API key must be strong,
# whatever the stack file says. A typo in a prod stack file must not make the 700 GB volume deletable.
PRODUCTION_STACKS = ("prod",)

# The shortest API key a stack that requires one accepts: 32 characters of `openssl rand -hex 16`.
MIN_REQUIRED_API_KEY_LENGTH = 32

# Hugging Face user access tokens: "hf_" and letters and digits; anything else is a pasted wrong value.
HF_TOKEN_SHAPE = re.compile(r"hf_[A-Za-z0-9]{16,}")

# Names of client proxy auth tokens (`glm-modal:clientTokens`): they label tokens in Modal's dashboard
# and name the stack's outputs, so they stay short and plain.
MAX_CLIENT_TOKEN_NAME = 40
CLIENT_TOKEN_NAME = re.compile(rf"[a-z0-9][a-z0-9-]{{0,{MAX_CLIENT_TOKEN_NAME - 1}}}")

# Credentials the Modal provider reads from the stack (providers/base.py) and the shape Modal gives
# them (`ak-`/`as-` and 22 letters or digits, as `modal token new` writes them to ~/.modal.toml).
MODAL_TOKEN_SHAPES = {
    "modal:tokenId": re.compile(r"ak-[A-Za-z0-9]{22}"),
    "modal:tokenSecret": re.compile(r"as-[A-Za-z0-9]{22}"),
}

# A config key of any namespace whose name says it holds a credential (CREDENTIAL_LIKE_KEY, defined in
# serving/stack_file.py so render finds plaintext ones by the same names) must be a Pulumi secret.


def _check_client_token_name(name: str) -> str:
    if not CLIENT_TOKEN_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a token name: lowercase letters, digits and '-', starting with a letter or digit, "
            f"at most {MAX_CLIENT_TOKEN_NAME} characters (e.g. 'search-team')"
        )
    return name


def _distinct_names(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"names {repeated} appear more than once; each client token is named once")
    return names


ClientTokenName = Annotated[str, AfterValidator(_check_client_token_name)]


class InfraSettings(BaseModel):
    """The keys only infra reads (camelCase, as Pulumi config keys are spelled).

    Strict: a stack file value "yes" is not a boolean, and an unknown key is a typo.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    # The Modal environment every object of this stack lives in (created or adopted). Checked by the
    # environment provider's own rule, so a name it would reject fails here, naming this key.
    modal_environment: EnvironmentName = Field(alias="modalEnvironment")
    # Pulumi `protect` on both volumes: `pulumi destroy` then refuses to delete them. The weights
    # volume holds ~700 GB that take up to an hour to download again.
    protect_volumes: bool = Field(True, alias="protectVolumes")
    # After a deployment that changed, wait for /health and send one chat request (costs a cold start).
    smoke_test: bool = Field(False, alias="smokeTest")
    # Demand a strong API key (at least MIN_REQUIRED_API_KEY_LENGTH characters).
    require_api_key: bool = Field(True, alias="requireApiKey")

    # --- how the app is deployed (Modal's `App.deploy(tag=, strategy=)`) ---
    # The tag each deploy carries (`modal app history` shows it). Unset: the git commit of this
    # checkout, "<commit>-dirty" when it has uncommitted changes (infra/source_version.py).
    deploy_tag: Annotated[str, AfterValidator(check_deployment_tag)] | None = Field(None, alias="deployTag")
    # "rolling": new containers take over while the old ones drain (no gap in serving).
    # "recreate": the old containers are stopped as part of the deploy (never two versions at once,
    # and never 16 GPUs for one model during the switch; requests wait for a cold start).
    deploy_strategy: Literal["rolling", "recreate"] = Field("rolling", alias="deployStrategy")

    # --- who gets past Modal's edge (deployment.edge.requires_proxy_auth) ---
    # One proxy auth token per consuming team or service, by name (the stack keeps one more for its
    # own smoke test and keep-alive). Removing a name revokes and deletes its token at the next `up`.
    client_tokens: Annotated[list[ClientTokenName], AfterValidator(_distinct_names)] = Field(
        [], alias="clientTokens"
    )
    # A production stack serves without proxy auth only when this says so, deliberately.
    allow_public_endpoint: bool = Field(False, alias="allowPublicEndpoint")


# Config keys InfraSettings reads, by their stack-file spelling.
INFRA_KEYS = tuple(field.alias for field in InfraSettings.model_fields.values())
BOOLEAN_KEYS = tuple(f.alias for f in InfraSettings.model_fields.values() if f.annotation in (bool, "bool"))
# Structured (list) keys: the language host hands them over as JSON text.
LIST_KEYS = ("clientTokens",)


@dataclass(frozen=True)
class StackSettings:
    """Everything the program needs to declare one stack."""

    stack: str
    deployment: DeploymentConfig
    infra: InfraSettings
    # Pulumi secrets: encrypted in state, masked in diffs and outputs.
    hf_token: pulumi.Output[str]
    api_key: pulumi.Output[str]
    # `glm-modal:costs`: prices and durations of the preview's cost lines (infra/costs.py).
    costs: CostSettings = CostSettings()

    @property
    def protect_volumes(self) -> bool:
        return self.infra.protect_volumes


class InvalidStackConfig(pulumi.RunError):
    """A stack file that cannot be deployed; the message lists every problem, one per line."""

    def __init__(self, stack: str, problems: list[str]):
        # A problem may quote a rejected value, and a hostile one can hold a secret of the stack
        # (`load` registered them all before building any): every problem is redacted.
        self.problems = [messages.redact(problem) for problem in problems]
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(
            f"stack '{stack}' has invalid configuration (Pulumi.{stack}.yaml); nothing was changed:\n{lines}"
        )


def load(stack: str | None = None) -> StackSettings:
    """Reads and validates the current stack's config; raises InvalidStackConfig listing every problem."""
    stack = stack or pulumi.get_stack()
    messages.use_stack_secrets(_stack_secret_values())
    raw = _namespace_config()
    problems: list[str] = []

    deployment = _deployment(raw.get(DEPLOYMENT_KEY), problems)
    infra = _infra(raw, problems)
    hf_token = _secret(raw, HF_TOKEN_KEY, stack, problems)
    api_key = _secret(raw, API_KEY_KEY, stack, problems)
    costs, cost_problems = load_costs(
        raw.get(COSTS_KEY), deployment.hardware.gpu_type if deployment else None, config_key(COSTS_KEY)
    )
    problems += cost_problems

    if hf_token is not None and not HF_TOKEN_SHAPE.fullmatch(hf_token):
        problems.append(
            f"{config_key(HF_TOKEN_KEY)}: does not look like a Hugging Face token ('hf_' and letters and digits)"
        )
    if api_key is not None:
        problems += _api_key_problems(api_key, infra)
    if infra is not None and stack in PRODUCTION_STACKS:
        if not infra.protect_volumes:
            problems.append(
                f"{config_key('protectVolumes')}: must be true on the {stack} stack (its volumes hold data)"
            )
        if not infra.require_api_key:
            problems.append(f"{config_key('requireApiKey')}: must be true on the {stack} stack")
    if infra is not None and deployment is not None:
        problems += _edge_problems(stack, deployment, infra)

    problems += _credential_problems(stack)
    if problems:
        raise InvalidStackConfig(stack, problems)
    assert deployment is not None and infra is not None and hf_token is not None and api_key is not None
    assert costs is not None
    return StackSettings(
        stack=stack,
        deployment=deployment,
        infra=infra,
        hf_token=pulumi.Output.secret(hf_token),
        api_key=pulumi.Output.secret(api_key),
        costs=costs,
    )


def _stack_secret_values() -> list[Any]:
    """Every config value the stack keeps secret, whether or not it is valid: our secret keys (also
    when stored in plaintext by mistake) and every key the runtime marks secret, of any namespace. (A
    credential of another namespace in plaintext is a problem named without its value.)"""
    ours = {config_key(name) for name in SECRET_KEYS}
    return [value for key, value in _all_config().items() if key in ours or runtime_config.is_config_secret(key)]


def _all_config() -> dict[str, Any]:
    """Every key of the stack, of any namespace (the SDK has no listing API for this: the language
    host puts the whole map in the runtime config, and PULUMI_CONFIG is its fallback)."""
    return {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}


def _namespace_config() -> dict[str, Any]:
    """Every `glm-modal:*` key of the stack, by its short name."""
    prefix = f"{PROJECT}:"
    return {key[len(prefix) :]: value for key, value in _all_config().items() if key.startswith(prefix)}


def _credential_problems(stack: str) -> list[str]:
    """Credentials outside our own secret keys: in plaintext, or not shaped like one (never quoted)."""
    problems = []
    # Our own keys are checked by name above: the secrets as secrets, the plain settings as settings.
    ours = {config_key(key) for key in (*SECRET_KEYS, *INFRA_KEYS, DEPLOYMENT_KEY)}
    for key, value in sorted(_all_config().items()):
        name = key.split(":", 1)[-1]
        if key in ours or not (CREDENTIAL_LIKE_KEY.search(name) or key in MODAL_TOKEN_SHAPES):
            continue
        if not runtime_config.is_config_secret(key):
            problems.append(
                f"{key}: a credential stored in plaintext in the stack file; remove it and set it with "
                f"`pulumi config set --secret {key} --stack {stack}`"
            )
        elif key in MODAL_TOKEN_SHAPES and not MODAL_TOKEN_SHAPES[key].fullmatch(str(value)):
            problems.append(f"{key}: does not look like a Modal token ({MODAL_TOKEN_SHAPES[key].pattern[:3]}...)")
    given = [key for key in MODAL_TOKEN_SHAPES if key in _all_config()]
    if len(given) == 1:
        missing = next(key for key in MODAL_TOKEN_SHAPES if key not in given)
        problems.append(f"{missing}: missing; a Modal token is an id and a secret, set both or neither")
    return problems


def _deployment(value: Any, problems: list[str]) -> DeploymentConfig | None:
    if value is None:
        problems.append(f"{config_key(DEPLOYMENT_KEY)}: missing; the stack file must hold the whole deployment object")
        return None
    if value == "":
        # What Pulumi hands over for a key with nothing under it (render says the same).
        problems.append(f"{config_key(DEPLOYMENT_KEY)}: {EMPTY_DEPLOYMENT}")
        return None
    if runtime_config.is_config_secret(config_key(DEPLOYMENT_KEY)):
        # The deployment reaches the containers in plaintext (an image environment variable).
        problems.append(
            f"{config_key(DEPLOYMENT_KEY)}: holds a secret value; secrets belong in their own keys "
            f"({', '.join(config_key(k) for k in SECRET_KEYS)}), never in the deployment"
        )
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        problems.append(
            f"{config_key(DEPLOYMENT_KEY)}: must be an object (structured YAML under the key), not a string"
        )
        return None
    try:
        return DeploymentConfig.model_validate(value)
    except ValidationError as error:
        problems += [f"{config_key(DEPLOYMENT_KEY)}.{line}" for line in format_errors(error)]
        return None


def _infra(raw: dict[str, Any], problems: list[str]) -> InfraSettings | None:
    values = {key: value for key, value in raw.items() if key not in (DEPLOYMENT_KEY, COSTS_KEY, *SECRET_KEYS)}
    # Plain settings, never secrets: one set with --secret may hold a value meant for a secret key,
    # which the checks below would quote back. Reported without looking at the value.
    set_as_secret = [key for key in INFRA_KEYS if key in values and runtime_config.is_config_secret(config_key(key))]
    for key in set_as_secret:
        del values[key]
        problems.append(
            f"{config_key(key)}: set as a secret; it is a plain setting: `pulumi config set {config_key(key)} ...`"
        )
    for key in LIST_KEYS:
        if isinstance(values.get(key), str):
            try:
                values[key] = json.loads(values[key])
            except json.JSONDecodeError:
                pass  # left as text: reported as "not a list" below
    for key in BOOLEAN_KEYS:
        # Config values reach the program as strings; only Pulumi's own spellings are booleans.
        if values.get(key) in ("true", "false"):
            values[key] = values[key] == "true"
    try:
        return InfraSettings.model_validate(values)
    except ValidationError as error:
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"])
            if key in set_as_secret:
                continue  # already reported
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                known = (DEPLOYMENT_KEY, COSTS_KEY, *INFRA_KEYS, *SECRET_KEYS)
                message = f"unknown setting (known: {', '.join(known)})"
            elif item["type"] == "missing":
                message = "missing; set it in the stack file"
            elif item["type"] == "bool_type":
                message = f"expected true or false, got {item['input']!r}"
            problems.append(f"{config_key(key)}: {message}")
        return None


def _secret(raw: dict[str, Any], key: str, stack: str, problems: list[str]) -> str | None:
    value = raw.get(key)
    # Without a value on the command line the CLI prompts for it, so it stays out of shell history and `ps`.
    how = f"pulumi config set --secret {config_key(key)} --stack {stack}"
    if value is None or value == "":
        problems.append(f"{config_key(key)}: missing secret; set it with `{how}`")
        return None
    if not runtime_config.is_config_secret(config_key(key)):
        # Never echo the value: it may already be a real token committed in plaintext.
        problems.append(f"{config_key(key)}: stored in plaintext in the stack file; remove it and set it with `{how}`")
        return None
    if not isinstance(value, str) or value != value.strip() or any(_is_control(ch) for ch in value):
        # An HTTP header cannot carry a control character, and strips whitespace at either end.
        problems.append(f"{config_key(key)}: must not start or end with whitespace or hold control characters")
        return None
    return value


def _edge_problems(stack: str, deployment: DeploymentConfig, infra: InfraSettings) -> list[str]:
    """A production endpoint open to anyone only when the stack file says so in two places."""
    edge_key = f"{config_key(DEPLOYMENT_KEY)}.edge.requires_proxy_auth"
    if deployment.edge.requires_proxy_auth and infra.allow_public_endpoint:
        return [f"{config_key('allowPublicEndpoint')}: true, but {edge_key} is true: remove one of them"]
    if not deployment.edge.requires_proxy_auth and stack in PRODUCTION_STACKS and not infra.allow_public_endpoint:
        return [
            f"{config_key('allowPublicEndpoint')}: must be true for the {stack} stack to serve without proxy auth "
            f"({edge_key} is false: anyone who finds the URL starts {deployment.hardware.modal_gpu} containers); "
            f"set {edge_key} back to true, or set `{config_key('allowPublicEndpoint')}: true` to mean it"
        ]
    return []


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch).startswith("C")


def _api_key_problems(api_key: str, infra: InfraSettings | None) -> list[str]:
    problems = []
    if api_key.startswith("-"):
        # SGLang's argument parser would take it for a flag (serving/lifecycle.py refuses it too).
        problems.append(f"{config_key(API_KEY_KEY)}: must not start with '-'")
    if infra is not None and infra.require_api_key and len(api_key) < MIN_REQUIRED_API_KEY_LENGTH:
        problems.append(
            f"{config_key(API_KEY_KEY)}: too short for a stack with requireApiKey: at least "
            f"{MIN_REQUIRED_API_KEY_LENGTH} characters (e.g. `openssl rand -hex 16`)"
        )
    return problems


def config_key(name: str) -> str:
    """A short key as the stack file and `pulumi config` spell it: `glm-modal:<name>`."""
    return f"{PROJECT}:{name}"
