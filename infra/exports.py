"""Stack outputs: where the API is, what is deployed, and how to try it by hand.

`pulumi stack output` shows these after `pulumi up`. The API key is never an output: the snippets
read it from the `GLM_API_KEY` environment variable, which the operator fills from the stack's
secret config (`pulumi config get glm-modal:apiKey`). The proxy auth tokens Modal's edge wants are
outputs, their secrets as Pulumi secrets (`--show-secrets` prints them): `client_headers` is what
each client sends, and the snippets send the stack's own token from `GLM_MODAL_KEY`/`GLM_MODAL_SECRET`.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING

import pulumi

from infra.settings import API_KEY_KEY, config_key
from infra.smoke import SMOKE_PROMPT, deployment_version_number, smoke_request_body

if TYPE_CHECKING:
    from infra.resources import StackResources
    from infra.settings import StackSettings

# The environment variable the snippets read the API key from.
API_KEY_ENV_VAR = "GLM_API_KEY"
# ... and the proxy auth token's id and secret, for an edge that requires one.
EDGE_KEY_ENV_VAR = "GLM_MODAL_KEY"
EDGE_SECRET_ENV_VAR = "GLM_MODAL_SECRET"

# Path of the OpenAI-compatible API under the app's web URL (SGLang serves /v1/...).
OPENAI_API_PATH = "/v1"


def openai_base_url(web_url: str) -> str:
    return web_url.rstrip("/") + OPENAI_API_PATH


def curl_snippet(base_url: str, served_name: str, *, edge_auth: bool = True) -> str:
    # The headers reach curl on stdin (`-H @-`, from the shell's builtin printf), not as arguments: a
    # `-H "... $GLM_API_KEY"` is expanded into curl's argv, which any user sees in `ps`.
    body = json.dumps(smoke_request_body(served_name))
    if edge_auth:
        headers = (
            f"printf 'Authorization: Bearer %s\\nModal-Key: %s\\nModal-Secret: %s\\n' "
            f'"${API_KEY_ENV_VAR}" "${EDGE_KEY_ENV_VAR}" "${EDGE_SECRET_ENV_VAR}" |\n'
        )
    else:
        headers = f"printf 'Authorization: Bearer %s\\n' \"${API_KEY_ENV_VAR}\" |\n"
    return headers + (
        f'  curl -sS {shlex.quote(base_url + "/chat/completions")} \\\n'
        f'  -H @- -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(body)}"
    )


def openai_snippet(base_url: str, served_name: str, *, edge_auth: bool = True) -> str:
    # Modal's edge reads its token from two headers, which the SDK sends on every request.
    edge_headers = (
        f'    default_headers={{"Modal-Key": os.environ["{EDGE_KEY_ENV_VAR}"], '
        f'"Modal-Secret": os.environ["{EDGE_SECRET_ENV_VAR}"]}},\n'
        if edge_auth
        else ""
    )
    return (
        "import os\n"
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f'    base_url="{base_url}",\n'
        f'    api_key=os.environ["{API_KEY_ENV_VAR}"],\n'
        f"{edge_headers}"
        ")\n"
        "reply = client.chat.completions.create(\n"
        f'    model="{served_name}",\n'
        f'    messages=[{{"role": "user", "content": "{SMOKE_PROMPT}"}}],\n'
        "    max_tokens=16,\n"
        '    extra_body={"chat_template_kwargs": {"enable_thinking": False}},\n'
        ")\n"
        "print(reply.choices[0].message.content)\n"
    )


def downloaded_commit(result: object) -> str:
    """The commit the download job recorded ("" when its files carried no Hub metadata)."""
    return (result.get("commit") or "") if isinstance(result, dict) else ""


def export_all(settings: StackSettings, resources: StackResources) -> None:
    cfg = settings.deployment
    served_name = cfg.model.served_name
    base_url = resources.app.web_url.apply(openai_base_url)

    pulumi.export("openai_base_url", base_url)
    pulumi.export("app_name", cfg.app_name)
    pulumi.export("app_id", resources.app.app_id)
    pulumi.export("deployment_version", resources.app.deployment_version.apply(deployment_version_number))
    # The deployment this stack made: its tag, the commit it came from, when (ISO 8601, UTC).
    pulumi.export("deployment_tag", resources.app.tag)
    pulumi.export("deployment_commit", resources.app.commit)
    pulumi.export("deployed_at", resources.app.deployed_at)
    # The commit the model revision resolved to when the weights were downloaded (pin it on prod).
    pulumi.export("model_commit", resources.download.result.apply(downloaded_commit))
    pulumi.export("served_model_name", served_name)
    pulumi.export("modal_environment", resources.environment.name)
    pulumi.export("weights_volume", resources.weights_volume.name)
    pulumi.export("kernels_volume", resources.kernels_volume.name)
    pulumi.export("hf_token_secret", resources.hf_token_secret.name)
    pulumi.export("api_key_secret", resources.api_key_secret.name)
    pulumi.export("smoke_test", "on" if resources.smoke_test is not None else "off")
    edge_auth = cfg.edge.requires_proxy_auth
    pulumi.export("smoke_test_setup", smoke_test_setup(settings.stack, edge_auth=edge_auth))
    pulumi.export("smoke_test_curl", base_url.apply(lambda url: curl_snippet(url, served_name, edge_auth=edge_auth)))
    pulumi.export(
        "smoke_test_openai_python", base_url.apply(lambda url: openai_snippet(url, served_name, edge_auth=edge_auth))
    )
    export_edge(settings, resources)


def smoke_test_setup(stack: str, *, edge_auth: bool) -> str:
    """The shell lines that fill the snippets' variables from the stack (the secrets never in argv)."""
    lines = [f"export {API_KEY_ENV_VAR}=$(pulumi config get {config_key(API_KEY_KEY)} --stack {stack})"]
    if edge_auth:
        lines += [
            f"export {EDGE_KEY_ENV_VAR}=$(pulumi stack output stack_proxy_token_id --stack {stack})",
            f"export {EDGE_SECRET_ENV_VAR}="
            f"$(pulumi stack output stack_proxy_token_secret --show-secrets --stack {stack})",
        ]
    return "\n".join(lines)


def export_edge(settings: StackSettings, resources: StackResources) -> None:
    """Who may pass Modal's edge: the tokens by name, and what each client sends (a secret)."""
    tokens = resources.edge_tokens
    pulumi.export("edge_auth", "proxy auth" if settings.deployment.edge.requires_proxy_auth else "open")
    pulumi.export("stack_proxy_token_id", tokens.stack_token.token_id)
    pulumi.export("stack_proxy_token_secret", pulumi.Output.secret(tokens.stack_token.token_secret))
    pulumi.export("client_proxy_token_ids", {name: token.token_id for name, token in tokens.clients.items()})
    # One secret output: the Modal-Key/Modal-Secret pair of each client token, by name.
    pulumi.export(
        "client_headers",
        pulumi.Output.secret(
            pulumi.Output.from_input({name: tokens.headers(token) for name, token in tokens.clients.items()})
        ),
    )
