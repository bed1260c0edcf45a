"""`python -m serving.render` never prints a secret it can know (serving/stack_file.py's docstring):
the credentials a stack file holds in plaintext are redacted from its output and its errors, in
every spelling; a YAML error does not quote the file's line; `secure:` entries are never read."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import yaml

from serving import render
from serving.log_redaction import MIN_HIDDEN_PIECE, REDACTED, secret_spellings
from serving.stack_file import DEPLOYMENT_CONFIG_KEY, PROJECT, plaintext_credentials

# Credentials committed in plaintext by mistake: the project's own key, and another namespace's.
PLAINTEXT_API_KEY = "Zk8/q2+Wc1vR0pX9yT2mLb7Gh4Nf6Js5Ae0Dk3Ro1U="
REGISTRY_PASSWORD = "p9Xv2LqT7mWc4RzB"
CIPHERTEXT = "v1:c2VjcmV0LWNpcGhlcnRleHQ=:AAAABBBBCCCC"


def stack_file(tmp_path: Path, deployment: dict, **config: object) -> Path:
    path = tmp_path / "Pulumi.test.yaml"
    document = {"config": {DEPLOYMENT_CONFIG_KEY: deployment, **config}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_render(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = render.main(["--file", str(path)])
    return status, out.getvalue(), err.getvalue()


def assert_hidden(secret: str, text: str) -> None:
    assert not [spelling for spelling in secret_spellings(secret) if spelling in text], text
    pieces = {secret[i : i + MIN_HIDDEN_PIECE] for i in range(len(secret) - MIN_HIDDEN_PIECE + 1)}
    assert not [piece for piece in pieces if piece in text], text


CREDENTIALS = {
    f"{PROJECT}:apiKey": PLAINTEXT_API_KEY,
    "registry:password": REGISTRY_PASSWORD,
    f"{PROJECT}:hfToken": {"secure": CIPHERTEXT},
    # Plain settings with credential-like names: not credentials.
    f"{PROJECT}:requireApiKey": True,
    f"{PROJECT}:clientTokens": ["search-team"],
}


def test_the_plaintext_credentials_are_the_string_values_under_credential_names(tmp_path: Path) -> None:
    text = stack_file(tmp_path, {}, **CREDENTIALS).read_text()
    assert sorted(plaintext_credentials(text)) == sorted([PLAINTEXT_API_KEY, REGISTRY_PASSWORD])
    assert plaintext_credentials("config: [") == []


def test_a_rejected_value_holding_a_plaintext_credential_is_redacted(tmp_path: Path) -> None:
    path = stack_file(tmp_path, {"model": {"served_name": f" --api-key {PLAINTEXT_API_KEY}"}}, **CREDENTIALS)
    status, out, err = run_render(path)

    assert status == render.EXIT_INVALID and out == ""
    assert f"{DEPLOYMENT_CONFIG_KEY}.model.served_name: ' --api-key {REDACTED}'" in err
    assert_hidden(PLAINTEXT_API_KEY, err)


def test_a_valid_value_holding_a_plaintext_credential_is_redacted_from_the_commands(tmp_path: Path) -> None:
    # A valid model name and app name, each holding a credential: both reach the rendered argv or env.
    deployment = {"model": {"served_name": f"glm/{REGISTRY_PASSWORD}"}, "app_name": f"glm-{REGISTRY_PASSWORD.lower()}"}
    status, out, err = run_render(stack_file(tmp_path, deployment, **CREDENTIALS))

    assert status == 0, err
    launch = json.loads(out)["launch"]
    assert launch[launch.index("--served-model-name") + 1] == f"glm/{REDACTED}"
    assert_hidden(REGISTRY_PASSWORD, out)
    assert CIPHERTEXT not in out + err


def test_a_yaml_error_names_the_line_without_quoting_it(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(f"config:\n  {PROJECT}:apiKey: {PLAINTEXT_API_KEY}: oops\n  {DEPLOYMENT_CONFIG_KEY}: {{}}\n")
    status, out, err = run_render(path)

    assert status == render.EXIT_INVALID and out == ""
    assert "not valid YAML (mapping values are not allowed here (line 2, column" in err, err
    assert_hidden(PLAINTEXT_API_KEY, err)
